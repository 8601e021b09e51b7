import type { Clock } from '../../common/clock.js';
import { INSTANCE_STATES, isOneOf, type InstanceState } from '../../common/vocabulary.js';
import type { InstanceStatus__Output } from '../../proto/loader.js';
import type { Store } from '../store/store.js';
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

  constructor(options: AgentReportsOptions) {
    this.#o = options;
  }

  onHello(agent: string, hello: Hello__Output): void {
    const now = this.#o.clock.now();
    const existing = this.#o.store.getAgent(agent);
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

  onHeartbeat(agent: string, statuses: InstanceStatus__Output[]): void {
    this.#o.store.touchAgent(agent, this.#o.clock.now());
    this.applyStatuses(agent, statuses);
  }

  /** Records instance states an agent reports; syncs routes when a web instance's health changed. */
  applyStatuses(agent: string, statuses: readonly InstanceStatus__Output[]): void {
    let routesChanged = false;
    this.#o.store.transaction(() => {
      for (const s of statuses) {
        const state: InstanceState = isOneOf(INSTANCE_STATES, s.state) ? s.state : 'starting';
        const row = this.#o.store.getInstance(s.key);
        if (!row || row.agent !== agent) {
          this.#limits.delete(s.key);
          continue;
        }
        this.#recordLimits(s);
        const pid = s.pid || null;
        const port = s.port || null;
        const since = Number(s.since) || row.since;
        // Heartbeats repeat what is known: only a change is written.
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
        this.#o.store.updateInstanceStatus(s.key, {
          state,
          pid: s.pid || null,
          port: s.port || null,
          restarts: s.restarts,
          since: Number(s.since) || this.#o.clock.now(),
          message: s.message,
          logTail: s.logTail,
        });
        if (row.type === 'web' && (row.state === 'up') !== (state === 'up')) routesChanged = true;
        if (row.type === 'web' && state === 'up' && row.port !== (s.port || null)) routesChanged = true;
      }
    });
    if (routesChanged) this.#o.sync.requestSync();
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

/** An instance's memory against its limit, CPU limit, and why its last run ended. */
export interface InstanceLimitsView {
  memoryBytes: number;
  memoryLimitBytes: number | null;
  cpuLimit: number | null;
  reason: 'oom' | null;
}
