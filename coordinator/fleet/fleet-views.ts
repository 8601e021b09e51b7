import type { AgentView, PsRow } from '../../common/api-types.js';
import type { Clock } from '../../common/clock.js';
import { instanceName } from '../../common/vocabulary.js';
import type { Store } from '../store/store.js';
import type { InstanceLimitsView } from './agent-reports.js';
import type { Fleet } from './fleet.js';

/** Options of {@link FleetViews}. */
export interface FleetViewsOptions {
  store: Store;
  fleet: Pick<Fleet, 'isUp'>;
  clock: Clock;
  /** An agent silent this long is shown `down`, ms. */
  agentDownAfterMs: number;
  /** The agent's host usage from its last metrics report, or null. */
  usageOf?(agent: string): { cpuPct: number; memoryUsedMb: number } | null;
  /** An instance's memory against its limits, as its agent last reported, or null. */
  limitsOf?(key: string): InstanceLimitsView | null;
}

/** The fleet as the API shows it: agents (`hangar agents`) and an app's instances (`hangar ps`). */
export class FleetViews {
  readonly #o: FleetViewsOptions;

  constructor(options: FleetViewsOptions) {
    this.#o = options;
  }

  agentViews(): AgentView[] {
    // Counted in one pass: filtering the instances once per agent is quadratic in the fleet.
    const placed = this.#o.store.countInstancesByAgent();
    const now = this.#o.clock.now();
    return this.#o.store.listAgents().map((a) => {
      const usage = this.#o.usageOf?.(a.name) ?? null;
      return {
        name: a.name,
        state: this.#o.fleet.isUp(a.name) && now - a.lastSeen < this.#o.agentDownAfterMs ? 'up' : 'down',
        address: a.address,
        routerPort: a.routerPort,
        instances: placed.get(a.name) ?? 0,
        capacity: { cpus: a.cpus, memoryMb: a.memoryMb, maxInstances: a.maxInstances },
        lastSeen: new Date(a.lastSeen).toISOString(),
        version: a.version,
        cpuPct: usage?.cpuPct ?? null,
        memoryUsedMb: usage?.memoryUsedMb ?? null,
      };
    });
  }

  psRows(app: string): PsRow[] {
    return this.#o.store.listInstances({ app }).map((i) => {
      const limits = this.#o.limitsOf?.(i.key) ?? null;
      return {
        id: instanceName(i),
        type: i.type,
        release: `v${i.release}`,
        agent: i.agent,
        state: i.desired === 'drain' ? 'stopping' : i.state,
        pid: i.pid,
        port: i.port,
        restarts: i.restarts,
        since: new Date(i.since).toISOString(),
        reason: limits?.reason ?? null,
        memoryBytes: limits?.memoryLimitBytes ? limits.memoryBytes : null,
        memoryLimitBytes: limits?.memoryLimitBytes ?? null,
        cpuLimit: limits?.cpuLimit ?? null,
      };
    });
  }
}
