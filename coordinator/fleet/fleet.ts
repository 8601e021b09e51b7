import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/logger.js';
import { instanceKey, instanceName } from '../../common/vocabulary.js';
import { holdsPlacement } from '../releases/deploy-status.js';
import { newInstanceRow, type AgentRow, type InstanceRow, type ReleaseRow, type Store } from '../store/store.js';
import type { AgentHub } from './agent-hub.js';
import type { DesiredStateSync } from './desired-state-sync.js';
import { freeIndexes, placeInstances } from './scheduler.js';
import type { SingletonFence } from './singleton-fence.js';

/** Options of {@link Fleet}. */
export interface FleetOptions {
  store: Store;
  hub: Pick<AgentHub, 'connected' | 'isConnected' | 'appliedGeneration'>;
  /** Told of every change of placement. */
  sync: Pick<DesiredStateSync, 'requestSync'>;
  clock: Clock;
  logger: Logger;
  /** Longest wait for every router to drop a draining instance before it is stopped anyway, ms. */
  drainTimeoutMs: number;
  /** An agent silent this long is shown `down`, ms. */
  agentDownAfterMs: number;
  /** One-off runs not over on an agent: they take its slots too. Default none. */
  runsOn?: (agent: string) => number;
  /** A singleton on a lost agent moves only once that agent's lease ran out. */
  fence: Pick<SingletonFence, 'blockerFor'>;
}

/** The process types a release runs (every Procfile entry but `release`). */
export function runnableTypes(release: ReleaseRow): string[] {
  return Object.keys(release.procfile).filter((t) => t !== 'release');
}

/**
 * Placement: which agent runs each instance. Places and drains instances to match formations,
 * finishes drains once every router dropped them, and moves instances off agents that are down.
 * What each agent is then told is assembled by {@link DesiredStateAssembler}.
 */
export class Fleet {
  readonly #o: FleetOptions;
  readonly #logger: Logger;
  /** Agents are not judged down before the coordinator has run for the liveness window. */
  readonly #startedAt: number;
  #lastLostCheck = -Infinity;
  #lastLostWarning = '';

  constructor(options: FleetOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'fleet' });
    this.#startedAt = options.clock.now();
  }

  // ---------------------------------------------------------------- placement

  /**
   * Makes the instances of the app's current release match its formation: places missing ones
   * (spread across agents) and drains extra ones (highest index first). Throws NO_CAPACITY or
   * NO_AGENTS when something cannot be placed (nothing is changed then).
   */
  reconcileFormation(app: string): void {
    const store = this.#o.store;
    const appRow = store.requireApp(app);
    if (appRow.currentRelease === null) return;
    const release = store.getRelease(app, appRow.currentRelease);
    if (!release) return;
    if (store.activeDeploys().some((d) => d.app === app && holdsPlacement(d.status))) return;
    const formation = store.getFormation(app);
    store.transaction(() => {
      const all = store.listInstances();
      const running = all.filter((i) => i.app === app && i.release === release.version && i.desired === 'run');
      const toAdd: { type: string; idx: number }[] = [];
      const toDrain: InstanceRow[] = [];
      for (const type of runnableTypes(release)) {
        const want = formation[type] ?? 0;
        const have = running.filter((i) => i.type === type).sort((a, b) => a.idx - b.idx);
        if (have.length < want) {
          // Rows still draining keep their keys until every router dropped them.
          const used = all.filter((i) => i.app === app && i.release === release.version && i.type === type).map((i) => i.idx);
          for (const idx of freeIndexes(used, want - have.length)) toAdd.push({ type, idx });
        } else if (have.length > want) {
          toDrain.push(...have.slice(want));
        }
      }
      this.place(app, release.version, toAdd);
      if (toDrain.length > 0) this.drain(toDrain);
    });
    this.#o.sync.requestSync();
  }

  /**
   * Places new instances of a release (spread across agents). Throws NO_CAPACITY or NO_AGENTS
   * when something cannot be placed (nothing is changed then).
   */
  place(app: string, release: number, toAdd: readonly { type: string; idx: number }[]): void {
    if (toAdd.length === 0) return;
    const store = this.#o.store;
    const now = this.#o.clock.now();
    store.transaction(() => {
      const all = store.listInstances();
      const loads = countByAgent(all);
      const agents = store.listAgents().map((a) => ({
        name: a.name,
        up: this.isUp(a.name),
        maxInstances: a.maxInstances,
        load: (loads.get(a.name) ?? 0) + (this.#o.runsOn?.(a.name) ?? 0),
      }));
      const placed = placeInstances(
        agents,
        all.map((i) => ({ agent: i.agent, app: i.app, type: i.type })),
        toAdd.map((t) => ({ app, type: t.type })),
      );
      toAdd.forEach((t, n) => {
        store.insertInstance(
          newInstanceRow(
            {
              key: instanceKey({ app, type: t.type, idx: t.idx, release }),
              app,
              type: t.type,
              idx: t.idx,
              release,
              agent: placed[n] as string,
            },
            now,
          ),
        );
      });
    });
    this.#o.sync.requestSync();
  }

  /**
   * Takes instances out of every router first; they are stopped once every connected agent has
   * applied the routes without them (or after the drain timeout).
   */
  drain(instances: readonly InstanceRow[]): void {
    if (instances.length === 0) return;
    const generation = this.#o.store.nextGeneration();
    const now = this.#o.clock.now();
    for (const i of instances) this.#o.store.markDraining(i.key, generation, now);
    this.#o.sync.requestSync();
  }

  /** Removes instances from desired state at once: their agents stop them. */
  remove(instances: readonly InstanceRow[]): void {
    for (const i of instances) this.#o.store.deleteInstance(i.key);
    if (instances.length > 0) this.#o.sync.requestSync();
  }

  /** Periodic work: finish drains whose routes every agent applied; move instances off down agents. */
  tick(): void {
    const now = this.#o.clock.now();
    if (now - this.#lastLostCheck >= 1000) {
      this.#lastLostCheck = now;
      this.#replaceLost(now);
    }
    const draining = this.#o.store.listDraining();
    if (draining.length === 0) return;
    const finished = draining.filter((i) => this.routesApplied(i.drainGeneration ?? 0, i.drainStarted ?? now));
    this.remove(finished);
  }

  /**
   * True once every router that may route to the app has applied desired state of `generation`
   * or later (or the drain timeout since `since` passed): a change of routes made then is in force.
   */
  routesApplied(generation: number, since: number): boolean {
    const now = this.#o.clock.now();
    // Every router that may still have the instance must have dropped it: the connected agents,
    // and those seen lately that are reconnecting (e.g. after a coordinator restart).
    const routers = new Set(this.#o.hub.connected());
    for (const a of this.#o.store.listAgents()) if (now - a.lastSeen < this.#o.agentDownAfterMs) routers.add(a.name);
    const allApplied = [...routers].every((a) => this.#o.hub.isConnected(a) && (this.#o.hub.appliedGeneration(a) ?? 0) >= generation);
    return allApplied || now - since > this.#o.drainTimeoutMs;
  }

  isUp(agent: string): boolean {
    return this.#o.hub.isConnected(agent);
  }

  /** How long the agent has been down (0 when up), counted from the coordinator's start at most. */
  #downFor(a: AgentRow, now: number): number {
    if (this.isUp(a.name) && now - a.lastSeen < this.#o.agentDownAfterMs) return 0;
    return now - Math.max(a.lastSeen, this.#startedAt);
  }

  /**
   * Instances of agents down for `agentDownAfterMs` are placed on agents that are up, under the
   * same names (web.1 stays web.1). The down agent, when it comes back, no longer finds them in its
   * desired state and stops its copies; draining ones are simply forgotten.
   */
  #replaceLost(now: number): void {
    const store = this.#o.store;
    const agents = store.listAgents();
    const lost = new Set(agents.filter((a) => this.#downFor(a, now) >= this.#o.agentDownAfterMs).map((a) => a.name));
    if (lost.size === 0) return;
    const all = store.listInstances();
    const stranded = all.filter((i) => lost.has(i.agent));
    if (stranded.length === 0) return;
    const kept = all.filter((i) => !lost.has(i.agent));
    const placed = kept.map((i) => ({ agent: i.agent, app: i.app, type: i.type }));
    // Kept up to date as instances are placed: counting `placed` per candidate is quadratic in the fleet.
    const loads = countByAgent(placed);
    const moves: { instance: InstanceRow; to: string }[] = [];
    const unplaced: string[] = [];
    const waiting: string[] = [];
    for (const i of stranded) {
      if (i.desired !== 'run') continue;
      // Never two copies: the lost agent stops its singletons when its lease runs out; only then.
      const release = store.getRelease(i.app, i.release);
      const blocked = release ? this.#o.fence.blockerFor(release, i.type) : null;
      if (blocked !== null) {
        waiting.push(`${i.app} ${instanceName(i)}: ${blocked}`);
        continue;
      }
      const candidates = agents.map((a) => ({
        name: a.name,
        up: !lost.has(a.name) && this.isUp(a.name),
        maxInstances: a.maxInstances,
        load: loads.get(a.name) ?? 0,
      }));
      try {
        const [to] = placeInstances(candidates, placed, [{ app: i.app, type: i.type }]);
        if (!to) throw new Error('no agent');
        placed.push({ agent: to, app: i.app, type: i.type });
        loads.set(to, (loads.get(to) ?? 0) + 1);
        moves.push({ instance: i, to });
      } catch {
        unplaced.push(`${i.app} ${instanceName(i)}`);
      }
    }
    const forgotten = stranded.filter((i) => i.desired !== 'run');
    if (moves.length === 0 && forgotten.length === 0) {
      if (waiting.length > 0 && unplaced.length === 0) {
        const said = waiting.map((w) => w.replace(/ \d+ s more/, '')).join('; ');
        if (said !== this.#lastLostWarning) {
          this.#lastLostWarning = said;
          this.#logger.info({ instances: waiting }, 'singletons of a down agent wait for its lease before moving');
        }
        return;
      }
      const warning = unplaced.join(', ');
      if (warning !== this.#lastLostWarning) {
        this.#lastLostWarning = warning;
        this.#logger.warn({ instances: unplaced }, 'instances of a down agent cannot be placed elsewhere (no agent up with room)');
      }
      return;
    }
    store.transaction(() => {
      for (const m of moves) store.moveInstance(m.instance.key, m.to, now, `moved from ${m.instance.agent}, which is down`);
      for (const i of forgotten) store.deleteInstance(i.key);
    });
    for (const m of moves) {
      this.#logger.info({ instance: m.instance.key, from: m.instance.agent, to: m.to }, 'agent down: instance placed on another agent');
    }
    this.#o.sync.requestSync();
  }
}

/** How many of `items` each agent holds. */
function countByAgent(items: readonly { agent: string }[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const i of items) counts.set(i.agent, (counts.get(i.agent) ?? 0) + 1);
  return counts;
}
