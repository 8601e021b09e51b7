import type { Clock } from '../../common/clock.js';
import { INSTANCE_STATES, isOneOf, type InstanceState } from '../../common/vocabulary.js';
import type { InstanceStatus__Output } from '../../proto/loader.js';
import type { InstanceRow, Store } from '../store/store.js';
import type { Hello__Output } from './agent-hub.js';
import type { DesiredStateSync } from './desired-state-sync.js';
import { DEFAULT_SINGLETON_LEASE_MS } from './singleton-fence.js';

/** Options of {@link AgentReports}. */
export interface AgentReportsOptions {
  store: Store;
  sync: Pick<DesiredStateSync, 'requestSync'>;
  clock: Clock;
}

/**
 * What agents report about themselves and their instances (hello, heartbeats, instance events),
 * recorded in the store. A change that alters routes sends every agent its desired state again.
 */
export class AgentReports {
  readonly #o: AgentReportsOptions;
  /** Memory against limits per instance key, as last reported (a live figure: kept in memory, not stored). */
  readonly #limits = new Map<string, InstanceLimitsView>();
  /** When agents were last heard from, not yet written: see {@link flushLiveness}. */
  #seen = new Map<string, number>();
  /**
   * Per agent, its last heartbeat's statuses as recorded (their fingerprint, the keys that are its
   * rows) and the store's placement version then: a heartbeat that repeats them while no
   * placement changed is not read against the store again (most heartbeats of a settled fleet).
   */
  readonly #recorded = new Map<string, { fingerprint: string; placementVersion: number; own: ReadonlySet<string> }>();

  constructor(options: AgentReportsOptions) {
    this.#o = options;
  }

  onHello(agent: string, hello: Hello__Output): void {
    const now = this.#o.clock.now();
    const existing = this.#o.store.getAgent(agent);
    this.#seen.delete(agent);
    this.#recorded.delete(agent);
    this.#o.store.upsertAgent({
      name: agent,
      address: hello.advertiseAddress || '127.0.0.1',
      routerPort: hello.routerPort,
      cpus: hello.capacity?.cpus ?? 1,
      memoryMb: Number(hello.capacity?.memoryMb ?? 0),
      maxInstances: hello.capacity?.maxInstances || 100,
      version: hello.version,
      lastSeen: now,
      createdAt: existing?.createdAt ?? now,
      singletonLeaseMs: hello.singletonLeaseMs || DEFAULT_SINGLETON_LEASE_MS,
    });
    this.applyStatuses(agent, hello.instances);
    // The newcomer needs its state now; the others only if its statuses changed routes (above).
    this.#o.sync.requestSync(agent);
  }

  /**
   * A heartbeat: its statuses are recorded at once, the time it was heard in memory only, until
   * the next {@link flushLiveness} (a write per heartbeat is a commit per heartbeat: a thousand
   * a second on a 2,000-agent fleet).
   */
  onHeartbeat(agent: string, statuses: InstanceStatus__Output[]): void {
    this.#seen.set(agent, this.#o.clock.now());
    const fingerprint = fingerprintOf(statuses);
    const placementVersion = this.#o.store.placementVersion;
    const recorded = this.#recorded.get(agent);
    if (recorded && recorded.fingerprint === fingerprint && recorded.placementVersion === placementVersion) {
      // The rows are as this same list left them: nothing to write, no route to change.
      for (const s of statuses) {
        if (recorded.own.has(s.key)) this.#recordLimits(s);
        else this.#limits.delete(s.key);
      }
      return;
    }
    this.#recorded.delete(agent);
    const own = this.#apply(agent, statuses);
    this.#recorded.set(agent, { fingerprint, placementVersion, own });
  }

  /** Writes when agents were last heard from, in one transaction (the coordinator's loop calls it every second, and on close). */
  flushLiveness(): void {
    if (this.#seen.size === 0) return;
    const seen = this.#seen;
    this.#seen = new Map();
    this.#o.store.touchAgents(seen);
  }

  /** Records instance states an agent reports; syncs routes when a web instance's health changed. */
  applyStatuses(agent: string, statuses: readonly InstanceStatus__Output[]): void {
    // An event (or hello) changes rows outside the heartbeats' record: the next heartbeat reads them.
    this.#recorded.delete(agent);
    this.#apply(agent, statuses);
  }

  /** {@link applyStatuses}; returns the keys that are rows of `agent`. */
  #apply(agent: string, statuses: readonly InstanceStatus__Output[]): Set<string> {
    const own = new Set<string>();
    let routesChanged = false;
    const changes: { key: string; row: InstanceRow | undefined; status: Parameters<Store['updateInstanceStatus']>[1] }[] = [];
    // One read for a heartbeat's many statuses (the agent's rows, by its index), not one per status.
    const rows = statuses.length > 1 ? new Map(this.#o.store.listInstances({ agent }).map((row) => [row.key, row] as const)) : null;
    for (const s of statuses) {
      const state: InstanceState = isOneOf(INSTANCE_STATES, s.state) ? s.state : 'starting';
      const row = rows ? (rows.get(s.key) ?? null) : this.#o.store.getInstance(s.key);
      if (!row || row.agent !== agent) {
        this.#limits.delete(s.key);
        continue;
      }
      own.add(s.key);
      this.#recordLimits(s);
      const pid = s.pid || null;
      const port = s.port || null;
      const since = Number(s.since) || row.since;
      // Heartbeats repeat what is known: only a change is written (and a transaction opened).
      if (
        row.state === state &&
        row.pid === pid &&
        row.port === port &&
        row.restarts === s.restarts &&
        row.since === since &&
        row.message === s.message &&
        row.logTail === s.logTail
      ) {
        continue;
      }
      changes.push({
        key: s.key,
        // The same key twice in one report: the second update reads the row the first one wrote.
        row: changes.some((c) => c.key === s.key) ? undefined : row,
        status: {
          state,
          pid,
          port,
          restarts: s.restarts,
          since: Number(s.since) || this.#o.clock.now(),
          message: s.message,
          logTail: s.logTail,
        },
      });
      if (row.type === 'web' && (row.state === 'up') !== (state === 'up')) routesChanged = true;
      if (row.type === 'web' && state === 'up' && row.port !== port) routesChanged = true;
    }
    if (changes.length > 0) {
      this.#o.store.transaction(() => {
        for (const c of changes) this.#o.store.updateInstanceStatus(c.key, c.status, c.row);
      });
    }
    if (routesChanged) this.#o.sync.requestSync();
    return own;
  }

  /** What the instance's agent last said of its memory and limits, or null (none reported). */
  limitsOf(key: string): InstanceLimitsView | null {
    return this.#limits.get(key) ?? null;
  }

  #recordLimits(s: InstanceStatus__Output): void {
    const limitBytes = Number(s.memoryLimitBytes);
    if (!limitBytes && !s.cpuLimit && !s.reason) {
      this.#limits.delete(s.key);
      return;
    }
    this.#limits.set(s.key, {
      memoryBytes: Number(s.memoryBytes) || 0,
      memoryLimitBytes: limitBytes || null,
      cpuLimit: s.cpuLimit || null,
      reason: s.reason === 'oom' ? 'oom' : null,
    });
  }
}

/** The fields of statuses that {@link AgentReports} records or compares, in order, as one string. */
function fingerprintOf(statuses: readonly InstanceStatus__Output[]): string {
  let f = '';
  for (const s of statuses) {
    f += `${s.key}\u0000${s.state}\u0000${s.pid}\u0000${s.port}\u0000${s.restarts}\u0000${Number(s.since)}\u0000${s.message}\u0000${s.logTail}\u0001`;
  }
  return f;
}

/** An instance's memory against its limit, CPU limit, and why its last run ended. */
export interface InstanceLimitsView {
  memoryBytes: number;
  memoryLimitBytes: number | null;
  cpuLimit: number | null;
  reason: 'oom' | null;
}
