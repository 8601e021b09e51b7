/**
 * `hangar restart`: a rolling restart of an app's instances (all, one type, or one instance),
 * one instance at a time and health-gated like a rollout: the next instance restarts only once
 * the previous one is back up (a web instance: its health check passed and it is routable again),
 * so the others keep serving throughout. An instance that crashes or does not come back within the
 * health timeout stops the restart (the rest keep running as they were) and says why.
 *
 * A web instance that is the app's only routable one is not left alone with nobody to serve:
 * first a stand-in of the same release is placed beside it (Heroku's preboot), and once every
 * router has the stand-in, the instance restarts as usual; the stand-in is drained at the end.
 * Without room for one, the instance restarts in place and the output says so.
 *
 * Restarts are in memory: a coordinator restart forgets one under way, which leaves every
 * instance running (some restarted, some not) — nothing to repair.
 */
import { randomUUID } from 'node:crypto';
import type { Clock } from '../../common/clock.js';
import type { DeployLine, DeployView } from '../../common/api-types.js';
import { describeError, HangarError, type ErrorCode } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { instanceName } from '../../common/vocabulary.js';
import type { DesiredStateSync } from '../fleet/desired-state-sync.js';
import type { Fleet } from '../fleet/fleet.js';
import type { InstanceRow, Store } from '../store/store.js';

/** Log lines of a failing instance shown by a failed restart. */
const LOG_TAIL_LINES = 20;
/** How long a finished restart stays readable, ms. */
const KEEP_FINISHED_MS = 10 * 60_000;

/** Options of {@link RollingRestarts}. */
export interface RollingRestartOptions {
  store: Pick<Store, 'listInstances' | 'bumpRestart' | 'getApp' | 'holdFromRoutes' | 'nextGeneration'>;
  fleet: Pick<Fleet, 'routesApplied' | 'place' | 'drain'>;
  sync: Pick<DesiredStateSync, 'requestSync'>;
  clock: Clock;
  logger: Logger;
  /** How long one instance has to be up again, ms. */
  healthTimeoutMs: number;
  /** A restarted instance that crashed this many times stops the restart at once. */
  crashLimit: number;
}

/**
 * One instance's turn. A web instance is first held out of every router (`unrouting`, until
 * every agent applied routes without it: in-flight requests finish, new ones go elsewhere), then
 * restarted (`restarting`, until a new process is up: its health check passed), then let back in
 * (`rerouting`, until every router has it again) before the next one leaves. Other types are
 * only restarted. `pid`/`startedAt` tell the new process from the old.
 */
interface Turn {
  key: string;
  name: string;
  phase: 'unrouting' | 'restarting' | 'rerouting';
  generation: number;
  pid: number | null;
  startedAt: number | null;
  /** When the phase began. */
  at: number;
}

/**
 * A web instance started beside the app's only routable one for the time of its restart:
 * `starting` until it is up, `routing` until every router has it, then `serving`.
 */
interface StandIn {
  key: string;
  name: string;
  phase: 'starting' | 'routing' | 'serving';
  generation: number;
  at: number;
}

interface RestartRecord {
  id: string;
  app: string;
  release: number | null;
  queue: string[];
  turn: Turn | null;
  standIn: StandIn | null;
  status: 'rolling_out' | 'succeeded' | 'failed';
  error: string | null;
  errorCode: ErrorCode | null;
  lines: DeployLine[];
  createdAt: number;
  finishedAt: number | null;
  done: number;
  total: number;
}

/** Rolling restarts, one at a time per app; {@link tick} moves them on. */
export class RollingRestarts {
  readonly #o: RollingRestartOptions;
  readonly #logger: Logger;
  readonly #restarts = new Map<string, RestartRecord>();

  constructor(options: RollingRestartOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'rolling-restart' });
  }

  /** The restart under way for an app, if any. */
  active(app: string): { id: string } | null {
    for (const r of this.#restarts.values()) if (r.app === app && r.status === 'rolling_out') return { id: r.id };
    return null;
  }

  /** The running instances of `app` (of `target` only — a type, or a name like `web.1` — when given), in restart order. */
  running(app: string, target?: string): InstanceRow[] {
    return this.#o.store
      .listInstances({ app })
      .filter((i) => i.desired === 'run')
      .filter((i) => target === undefined || target === i.type || target === instanceName(i))
      .sort((a, b) => a.type.localeCompare(b.type) || a.idx - b.idx);
  }

  /** Starts restarting `instances` (running instances of `app`) in the order given; returns the restart's id. */
  start(app: string, instances: readonly InstanceRow[]): string {
    const now = this.#o.clock.now();
    this.#forgetOld(now);
    const id = randomUUID();
    const record: RestartRecord = {
      id,
      app,
      release: this.#o.store.getApp(app)?.currentRelease ?? null,
      queue: instances.map((i) => i.key),
      turn: null,
      standIn: null,
      status: 'rolling_out',
      error: null,
      errorCode: null,
      lines: [],
      createdAt: now,
      finishedAt: null,
      done: 0,
      total: instances.length,
    };
    this.#restarts.set(id, record);
    this.#line(record, `-----> Restarting ${instances.length} instance(s) of ${app}, one at a time`);
    this.#logger.info({ app, instances: instances.length }, 'rolling restart started');
    this.tick();
    return id;
  }

  /** Level-triggered on the instance rows: restarts the next instance once the last is back up. */
  tick(): void {
    const now = this.#o.clock.now();
    for (const r of this.#restarts.values()) {
      if (r.status !== 'rolling_out') continue;
      try {
        this.#advance(r, now);
      } catch (err) {
        this.#logger.error({ err, app: r.app }, 'rolling restart step failed');
      }
    }
  }

  #advance(r: RestartRecord, now: number): void {
    const store = this.#o.store;
    const rows = new Map(store.listInstances({ app: r.app }).map((i) => [i.key, i]));
    if (!this.#standInReady(r, rows, now)) return;
    const turn = r.turn;
    if (turn) {
      const row = rows.get(turn.key);
      if (!row || row.desired !== 'run') {
        // Scaled down or replaced meanwhile: nothing left to wait for.
        this.#line(r, `-----> ${turn.name}: no longer running; skipped`);
        r.turn = null;
      } else if (turn.phase === 'unrouting') {
        if (!this.#o.fleet.routesApplied(turn.generation, turn.at)) return;
        this.#restart(r, turn, row, now);
        return;
      } else if (turn.phase === 'restarting') {
        const fresh = row.pid !== turn.pid || row.startedAt !== turn.startedAt;
        if (row.state === 'crashed' && fresh && row.restarts >= this.#o.crashLimit) {
          this.#failWith(r, row, `${turn.name} keeps crashing after its restart (${row.message || `restarted ${row.restarts} times`}).`);
          return;
        }
        if (!(fresh && row.state === 'up')) {
          if (now - turn.at > this.#o.healthTimeoutMs) {
            const seconds = Math.round(this.#o.healthTimeoutMs / 1000);
            const state = `state ${row.state}${row.message ? `: ${row.message}` : ''}`;
            this.#failWith(r, row, `${turn.name} did not come back healthy within ${seconds} s (${state}).`);
          }
          return;
        }
        r.done++;
        this.#line(r, `-----> ${turn.name}: up again (${r.done}/${r.total})`);
        if (row.type !== 'web') {
          r.turn = null;
        } else {
          store.holdFromRoutes(row.key, null, now);
          r.turn = { ...turn, phase: 'rerouting', generation: store.nextGeneration(), at: now };
          this.#o.sync.requestSync();
          return;
        }
      } else {
        if (!this.#o.fleet.routesApplied(turn.generation, turn.at)) return;
        r.turn = null;
      }
    }
    for (;;) {
      const key = r.queue.shift();
      if (key === undefined) break;
      const row = rows.get(key);
      if (!row || row.desired !== 'run') continue;
      const next: Turn = {
        key,
        name: instanceName(row),
        phase: 'unrouting',
        generation: 0,
        pid: row.pid,
        startedAt: row.startedAt,
        at: now,
      };
      if (
        row.type === 'web' &&
        row.state === 'up' &&
        r.standIn === null &&
        this.#alone(row, rows) &&
        this.#placeStandIn(r, row, rows, now)
      ) {
        r.queue.unshift(key);
        return;
      }
      r.turn = next;
      if (row.type === 'web' && row.state === 'up') {
        next.generation = store.nextGeneration();
        store.holdFromRoutes(key, next.generation, now);
        this.#line(r, `-----> ${next.name}: draining from the routers`);
        this.#o.sync.requestSync();
      } else {
        this.#restart(r, next, row, now);
      }
      return;
    }
    this.#dismissStandIn(r, rows);
    r.status = 'succeeded';
    r.finishedAt = now;
    this.#line(r, `-----> Restarted ${r.done} instance(s); all healthy`);
    this.#logger.info({ app: r.app }, 'rolling restart done');
  }

  /** True when no web instance of the app but `row` is routable (up, wanted, not held out). */
  #alone(row: InstanceRow, rows: ReadonlyMap<string, InstanceRow>): boolean {
    for (const other of rows.values()) {
      if (
        other.key !== row.key &&
        other.type === 'web' &&
        other.desired === 'run' &&
        other.state === 'up' &&
        other.drainGeneration === null
      ) {
        return false;
      }
    }
    return true;
  }

  /** Places a stand-in for `row` on the same release; false (and says so) when there is no room. */
  #placeStandIn(r: RestartRecord, row: InstanceRow, rows: ReadonlyMap<string, InstanceRow>, now: number): boolean {
    const used = new Set([...rows.values()].filter((i) => i.release === row.release && i.type === row.type).map((i) => i.idx));
    let idx = 1;
    while (used.has(idx)) idx++;
    try {
      this.#o.fleet.place(r.app, row.release, [{ type: row.type, idx }]);
    } catch (err) {
      this.#line(r, `-----> No room for a stand-in (${describeError(err)}); ${instanceName(row)} restarts in place: requests wait for it`);
      return false;
    }
    const placed = this.#o.store
      .listInstances({ app: r.app })
      .find((i) => i.release === row.release && i.type === row.type && i.idx === idx);
    if (!placed) return false;
    r.standIn = { key: placed.key, name: instanceName(placed), phase: 'starting', generation: 0, at: now };
    this.#line(r, `-----> ${instanceName(row)} is the only web instance: starting ${r.standIn.name} beside it while it restarts`);
    return true;
  }

  /**
   * Moves a stand-in on (up, then in every router); true once the restart may go on (there is
   * none, it serves, or it is gone). One that does not come up fails the restart.
   */
  #standInReady(r: RestartRecord, rows: ReadonlyMap<string, InstanceRow>, now: number): boolean {
    const standIn = r.standIn;
    if (standIn === null || standIn.phase === 'serving') return true;
    const row = rows.get(standIn.key);
    if (!row || row.desired !== 'run') {
      // Scaled away meanwhile (the autoscaler, a `hangar scale`): the restart goes on without it.
      r.standIn = null;
      return true;
    }
    if (standIn.phase === 'starting') {
      if (row.state === 'up') {
        r.standIn = { ...standIn, phase: 'routing', generation: this.#o.store.nextGeneration(), at: now };
        this.#o.sync.requestSync();
      } else if ((row.state === 'crashed' && row.restarts >= this.#o.crashLimit) || now - standIn.at > this.#o.healthTimeoutMs) {
        this.#failWith(
          r,
          row,
          `the stand-in ${standIn.name} did not come up healthy (state ${row.state}${row.message ? `: ${row.message}` : ''}).`,
        );
      }
      return false;
    }
    if (!this.#o.fleet.routesApplied(standIn.generation, standIn.at)) return false;
    r.standIn = { ...standIn, phase: 'serving' };
    this.#line(r, `-----> ${standIn.name}: up and in every router`);
    return true;
  }

  /** Drains the stand-in (the restarted instance serves again). */
  #dismissStandIn(r: RestartRecord, rows: ReadonlyMap<string, InstanceRow>): void {
    const row = r.standIn === null ? undefined : rows.get(r.standIn.key);
    r.standIn = null;
    if (row && row.desired === 'run') {
      this.#o.fleet.drain([row]);
      this.#line(r, `-----> ${instanceName(row)}: draining (the stand-in is no longer needed)`);
    }
  }

  #restart(r: RestartRecord, turn: Turn, row: InstanceRow, now: number): void {
    r.turn = { ...turn, phase: 'restarting', pid: row.pid, startedAt: row.startedAt, at: now };
    this.#o.store.bumpRestart(row.key);
    this.#line(r, `-----> ${turn.name}: restarting`);
    this.#o.sync.requestSync();
  }

  #failWith(r: RestartRecord, row: InstanceRow, message: string): void {
    // Should it recover after all, it serves again.
    this.#o.store.holdFromRoutes(row.key, null, this.#o.clock.now());
    this.#o.sync.requestSync();
    const standIn = r.standIn;
    if (standIn !== null && standIn.phase === 'serving' && standIn.key !== row.key) {
      // The stand-in serves in its place: the instance that did not come back goes instead (the
      // formation keeps its count, and the app its one healthy web instance).
      r.standIn = null;
      this.#o.fleet.drain([row]);
      this.#line(r, `-----> ${standIn.name} serves in place of ${instanceName(row)}, which is drained`, 'stderr');
    } else {
      this.#dismissStandIn(r, new Map(this.#o.store.listInstances({ app: r.app }).map((i) => [i.key, i])));
    }
    const lines = row.logTail.split('\n').filter((l) => l.trim() !== '');
    if (lines.length > 0) {
      this.#line(r, `-----> Last log lines of ${instanceName(row)}:`, 'stderr');
      for (const l of lines.slice(-LOG_TAIL_LINES)) this.#line(r, `       ${l}`, 'stderr', `app[${instanceName(row)}]`);
    }
    const left = r.queue.length;
    const rest = left > 0 ? ` The other ${left} instance(s) were not restarted.` : '';
    r.status = 'failed';
    r.error = `${message}${rest} See \`hangar logs -a ${r.app} --source ${instanceName(row)}\`.`;
    r.errorCode = 'RELEASE_UNHEALTHY';
    r.finishedAt = this.#o.clock.now();
    r.queue = [];
    this.#line(r, `-----> Restart failed: ${message}${rest}`, 'stderr');
    this.#logger.warn({ app: r.app, instance: row.key }, `rolling restart failed: ${message}`);
  }

  #forgetOld(now: number): void {
    for (const [id, r] of this.#restarts) {
      if (r.finishedAt !== null && now - r.finishedAt > KEEP_FINISHED_MS) this.#restarts.delete(id);
    }
  }

  #line(r: RestartRecord, line: string, stream: 'stdout' | 'stderr' = 'stdout', source = 'hangar'): void {
    r.lines.push({ seq: r.lines.length + 1, ts: new Date(this.#o.clock.now()).toISOString(), source, stream, line });
  }

  /** A restart as the API shows it (the shape of a deploy), with output lines after `after`. */
  view(id: string, app: string, after: number): DeployView {
    const r = this.#restarts.get(id);
    if (!r || r.app !== app) throw new HangarError('DEPLOY_NOT_FOUND', `No restart ${id} for ${app} (finished ones are kept 10 minutes).`);
    const lines = r.lines.filter((l) => l.seq > after);
    return {
      id: r.id,
      app: r.app,
      release: r.release === null ? null : `v${r.release}`,
      status: r.status,
      error: r.error,
      errorCode: r.errorCode,
      lines,
      next: lines.length > 0 ? (lines[lines.length - 1] as DeployLine).seq : after,
      createdAt: new Date(r.createdAt).toISOString(),
      finishedAt: r.finishedAt === null ? null : new Date(r.finishedAt).toISOString(),
    };
  }
}
