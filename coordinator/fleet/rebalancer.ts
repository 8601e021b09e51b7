/**
 * Spreads an app's instances again when agents join or come back: after a partition every
 * instance of the cut-off agent was placed on the others, and nothing would move them back, so
 * one more lost agent could take the app down. One instance at a time, health-gated like a
 * rollout: a new copy starts on the emptiest agent, and only once it is up is an old copy on the
 * fullest agent drained (web: out of every router first) and stopped. Only what is needed moves:
 * a process type is moved only while two agents' counts of it differ by two or more.
 */
import { processSettingsOf } from '../../common/app-json.js';
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/logger.js';
import { instanceName } from '../../common/vocabulary.js';
import type { AgentRow, InstanceRow, Store } from '../store/store.js';
import { runnableTypes, type Fleet } from './fleet.js';
import { freeIndexes } from './scheduler.js';

/** Options of {@link Rebalancer}. */
export interface RebalancerOptions {
  store: Store;
  fleet: Pick<Fleet, 'place' | 'drain' | 'remove' | 'isUp'>;
  /** True while a deploy or a restart of the app moves its instances itself. */
  busy: (app: string) => boolean;
  clock: Clock;
  logger: Logger;
  /** How long the new copy of a move has to become healthy before the move is given up, ms. */
  healthTimeoutMs: number;
  /** How often to look for an uneven spread, ms. Default 2000. */
  intervalMs?: number;
}

/** The move under way: the new copy, and the old one it replaces once up. */
interface Move {
  app: string;
  newKey: string;
  oldKey: string;
  startedAt: number;
}

/** After a move failed, the app is left alone this long, ms. */
const FAILED_MOVE_COOLDOWN_MS = 60_000;

/** Moves instances so that no agent holds two more of a process type than another; see the module comment. */
export class Rebalancer {
  readonly #o: RebalancerOptions;
  readonly #logger: Logger;
  #move: Move | null = null;
  #lastLook = -Infinity;
  /** Apps whose last move failed, with when they may be looked at again. */
  readonly #cooldown = new Map<string, number>();

  constructor(options: RebalancerOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'rebalancer' });
  }

  /** The move under way, if any (for diagnostics and tests). */
  get moving(): Readonly<Move> | null {
    return this.#move;
  }

  /** Periodic work: carries a move on, or starts one where the spread is uneven. */
  tick(): void {
    const now = this.#o.clock.now();
    if (this.#move) {
      this.#carryOn(this.#move, now);
      return;
    }
    if (now - this.#lastLook < (this.#o.intervalMs ?? 2000)) return;
    this.#lastLook = now;
    const store = this.#o.store;
    const agents = store.listAgents().filter((a) => this.#o.fleet.isUp(a.name));
    if (agents.length < 2) return;
    // Counted in SQL, and an app's rows are read only when one of its instances is to move: this
    // runs every couple of seconds, and turning every instance of a large fleet into objects each
    // time would hold the event loop for a good part of that.
    const loads = store.countInstancesByAgent();
    const load = (agent: string) => loads.get(agent) ?? 0;
    const settled = store.settledApps();
    for (const app of store.listApps()) {
      // Only a settled app: nothing starting, crashing or draining, nothing of another release.
      if (app.currentRelease === null || !settled.has(app.name) || this.#o.busy(app.name)) continue;
      if ((this.#cooldown.get(app.name) ?? 0) > now) continue;
      const release = store.getRelease(app.name, app.currentRelease);
      if (!release) continue;
      const kinds = store.countAppInstancesByKind(app.name);
      for (const type of runnableTypes(release).sort()) {
        if (processSettingsOf(release.appJson, type).singleton) continue;
        const counts = kinds.get(type) ?? new Map<string, number>();
        const count = (agent: string) => counts.get(agent) ?? 0;
        // The emptiest agent with room (fewest of the type, then least loaded; the first of equals)
        // and the fullest (most, then most loaded; the last of equals), in one pass.
        const below = (a: AgentRow, b: AgentRow) => count(a.name) - count(b.name) || load(a.name) - load(b.name);
        let emptiest: AgentRow | undefined;
        let fullest: AgentRow | undefined;
        for (const a of agents) {
          if (load(a.name) < a.maxInstances && (!emptiest || below(a, emptiest) < 0)) emptiest = a;
          if (!fullest || below(a, fullest) >= 0) fullest = a;
        }
        if (!emptiest || !fullest || count(fullest.name) - count(emptiest.name) < 2) continue;
        const old = store
          .listInstances({ app: app.name })
          .filter((i) => i.type === type && i.agent === fullest.name)
          .sort((a, b) => b.idx - a.idx)[0];
        if (old) {
          this.#start(app.name, release.version, type, old, count, now);
          return;
        }
      }
    }
  }

  #start(app: string, release: number, type: string, old: InstanceRow, count: (agent: string) => number, now: number): void {
    const [idx] = freeIndexes(
      this.#o.store
        .listInstances({ app })
        .filter((i) => i.type === type && i.release === release)
        .map((i) => i.idx),
      1,
    );
    if (idx === undefined) return;
    try {
      this.#o.fleet.place(app, release, [{ type, idx }]);
    } catch (err) {
      this.#logger.warn({ err, app, type }, 'could not place an instance to spread the app');
      return;
    }
    const placed = this.#o.store.listInstances({ app }).find((i) => i.type === type && i.release === release && i.idx === idx);
    if (!placed) return;
    if (placed.agent === old.agent || count(placed.agent) + 2 > count(old.agent)) {
      // The scheduler put it where it does not even the spread: take it back.
      this.#o.fleet.remove([placed]);
      this.#cooldown.set(app, now + FAILED_MOVE_COOLDOWN_MS);
      return;
    }
    this.#move = { app, newKey: placed.key, oldKey: old.key, startedAt: now };
    this.#logger.info(
      { app, from: old.agent, to: placed.agent, instance: instanceName(old), replacement: instanceName(placed) },
      'spreading the app: a new instance starts, the old one goes once it is up',
    );
  }

  #carryOn(move: Move, now: number): void {
    const store = this.#o.store;
    const fresh = store.getInstance(move.newKey);
    const old = store.getInstance(move.oldKey);
    if (!fresh || fresh.desired !== 'run') {
      this.#move = null;
      return;
    }
    if (!old || old.desired !== 'run') {
      // Something else (a scale, a deploy) took the old one: the new one simply stays.
      this.#move = null;
      return;
    }
    if (fresh.state === 'up') {
      if (old.type === 'web' && old.state === 'up') this.#o.fleet.drain([old]);
      else this.#o.fleet.remove([old]);
      this.#logger.info({ app: move.app, instance: instanceName(old), agent: old.agent }, 'spread: the old instance goes');
      this.#move = null;
      return;
    }
    if (now - move.startedAt > this.#o.healthTimeoutMs || (fresh.state === 'crashed' && fresh.restarts >= 3)) {
      this.#o.fleet.remove([fresh]);
      this.#cooldown.set(move.app, now + FAILED_MOVE_COOLDOWN_MS);
      this.#logger.warn(
        { app: move.app, instance: instanceName(fresh), state: fresh.state },
        'spread given up: the new instance did not get healthy',
      );
      this.#move = null;
    }
  }
}
