/**
 * The autoscaler: every `intervalMs` it looks at each policy's process type over the recent
 * window (p95 latency of the app's requests, mean CPU per instance) and changes the formation
 * through the same path as `hangar scale`. No flapping: a change needs the pressure (or the calm)
 * to last `sustainMs`; scaling down needs every figure well under target (hysteresis band
 * `downRatio`); and after a change, cool-downs keep the next one back.
 */
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/logger.js';
import { TimerLoop } from '../../common/timer-loop.js';
import type { AutoscaleDecision, AutoscalePolicy, AutoscaleStore } from './autoscale-store.js';
import type { Fleet } from '../fleet/fleet.js';
import type { MetricsStore } from '../metrics/metrics-store.js';
import type { Store } from '../store/store.js';

/** Knobs of the decision logic; defaults suit production, tests shorten them. */
export interface AutoscaleTuning {
  /** Figures are taken over this recent window, ms. Default 60 s. */
  windowMs: number;
  /** Pressure (or calm) must last this long before a change, ms. Default 30 s. */
  sustainMs: number;
  /** No scale-up sooner than this after any change, ms. Default 60 s. */
  upCooldownMs: number;
  /** No scale-down sooner than this after any change, ms. Default 180 s. */
  downCooldownMs: number;
  /** Scale down only when every figure is under target × this. Default 0.5. */
  downRatio: number;
  /** Fewer requests than this in the window count as no traffic (p95 unknown). Default 5. */
  minRequests: number;
}

export const DEFAULT_TUNING: AutoscaleTuning = {
  windowMs: 60_000,
  sustainMs: 30_000,
  upCooldownMs: 60_000,
  downCooldownMs: 180_000,
  downRatio: 0.5,
  minRequests: 5,
};

/** What the autoscaler sees of a process type over the window. */
export interface Observation {
  /** Current quantity (formation). */
  quantity: number;
  /** p95 latency of the app's requests, ms; null without (enough) traffic. */
  p95Ms: number | null;
  /** Mean CPU per instance of the type, % of one core; null without samples. */
  cpuPct: number | null;
}

/** Memory of one policy between evaluations. */
export interface ScalerState {
  /** Since when the figures have been over target (null: they are not). */
  highSince: number | null;
  /** Since when they have been well under target. */
  lowSince: number | null;
  /** When the autoscaler last changed this type. */
  lastChangeAt: number | null;
}

export const INITIAL_STATE: ScalerState = { highSince: null, lowSince: null, lastChangeAt: null };

/** A change to make. */
export interface Change {
  to: number;
  reason: string;
}

/**
 * The pure decision: the next state, and the change to make now (or null). Out-of-range
 * quantities are brought into [min, max] at once.
 */
export function decide(
  policy: AutoscalePolicy,
  state: ScalerState,
  obs: Observation,
  now: number,
  tuning: AutoscaleTuning = DEFAULT_TUNING,
): { state: ScalerState; change: Change | null } {
  const q = obs.quantity;
  if (q < policy.min)
    return {
      state: { highSince: null, lowSince: null, lastChangeAt: now },
      change: { to: policy.min, reason: `below the minimum of ${policy.min}` },
    };
  if (q > policy.max)
    return {
      state: { highSince: null, lowSince: null, lastChangeAt: now },
      change: { to: policy.max, reason: `above the maximum of ${policy.max}` },
    };

  // How far over target, as a ratio (>1: over); the worst figure counts.
  const ratios: { ratio: number; what: string }[] = [];
  if (policy.p95Ms !== null && obs.p95Ms !== null)
    ratios.push({ ratio: obs.p95Ms / policy.p95Ms, what: `p95 ${Math.round(obs.p95Ms)} ms vs target ${policy.p95Ms} ms` });
  if (policy.cpuPct !== null && obs.cpuPct !== null)
    ratios.push({ ratio: obs.cpuPct / policy.cpuPct, what: `CPU ${Math.round(obs.cpuPct)}% vs target ${policy.cpuPct}%` });
  const worst = ratios.reduce<{ ratio: number; what: string } | null>((a, b) => (a === null || b.ratio > a.ratio ? b : a), null);
  const high = worst !== null && worst.ratio > 1;
  // No traffic and no CPU samples count as calm.
  const low = worst === null || worst.ratio < tuning.downRatio;

  const next: ScalerState = {
    highSince: high ? (state.highSince ?? now) : null,
    lowSince: low ? (state.lowSince ?? now) : null,
    lastChangeAt: state.lastChangeAt,
  };
  const sinceChange = state.lastChangeAt === null ? Infinity : now - state.lastChangeAt;
  if (
    high &&
    worst &&
    q < policy.max &&
    next.highSince !== null &&
    now - next.highSince >= tuning.sustainMs &&
    sinceChange >= tuning.upCooldownMs
  ) {
    // Grow in proportion to the overload (at most doubling), by at least one.
    const to = Math.min(policy.max, Math.max(q + 1, Math.min(q * 2, Math.ceil(q * worst.ratio))));
    return { state: { highSince: null, lowSince: null, lastChangeAt: now }, change: { to, reason: `${worst.what}` } };
  }
  if (low && q > policy.min && next.lowSince !== null && now - next.lowSince >= tuning.sustainMs && sinceChange >= tuning.downCooldownMs) {
    const reason = worst === null ? 'no traffic' : `${worst.what}`;
    return { state: { highSince: null, lowSince: null, lastChangeAt: now }, change: { to: q - 1, reason } };
  }
  return { state: next, change: null };
}

/** Options of {@link Autoscaler}. */
export interface AutoscalerOptions {
  store: Store;
  policies: AutoscaleStore;
  metrics: MetricsStore;
  fleet: Pick<Fleet, 'reconcileFormation'>;
  clock: Clock;
  logger: Logger;
  /** Period of evaluation, ms. Default 10 s. */
  intervalMs?: number;
  tuning?: Partial<AutoscaleTuning>;
  /** Called with every decision after it was applied (the hook for the `hangar` log source). */
  onDecision?: (decision: AutoscaleDecision) => void;
}

/** Runs {@link decide} for every policy on a timer and applies the changes. */
export class Autoscaler {
  readonly #o: AutoscalerOptions;
  readonly #logger: Logger;
  readonly #tuning: AutoscaleTuning;
  readonly #states = new Map<string, ScalerState>();
  readonly #loop: TimerLoop;

  constructor(options: AutoscalerOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'autoscaler' });
    this.#tuning = { ...DEFAULT_TUNING, ...options.tuning };
    this.#loop = new TimerLoop({
      clock: options.clock,
      intervalMs: options.intervalMs ?? 10_000,
      run: () => this.tick(),
      onError: (err) => this.#logger.error({ err }, 'autoscaler tick failed'),
    });
  }

  /** Starts the loop; idempotent. */
  start(): void {
    this.#loop.start();
  }

  close(): void {
    this.#loop.close();
  }

  /** Forgets a policy's memory (when it changes or is removed). */
  reset(app: string, type: string): void {
    this.#states.delete(`${app}\u0000${type}`);
  }

  /** Evaluates every policy once. */
  tick(): void {
    const now = this.#o.clock.now();
    const byApp = new Map<string, AutoscalePolicy[]>();
    for (const p of this.#o.policies.listPolicies()) byApp.set(p.app, [...(byApp.get(p.app) ?? []), p]);
    for (const [app, policies] of byApp) {
      const appRow = this.#o.store.getApp(app);
      if (!appRow || appRow.currentRelease === null) continue;
      const stats = this.#o.metrics.windowStats(app, now - this.#tuning.windowMs);
      const formation = this.#o.store.getFormation(app);
      for (const policy of policies) {
        const key = `${app}\u0000${policy.type}`;
        const traffic = stats.traffic;
        const cpu = stats.cpuByType.get(policy.type);
        const obs: Observation = {
          quantity: formation[policy.type] ?? 0,
          p95Ms: traffic.requests >= this.#tuning.minRequests ? traffic.p95 : null,
          cpuPct: cpu && cpu.instances > 0 ? cpu.cpuPct : null,
        };
        const { state, change } = decide(policy, this.#states.get(key) ?? INITIAL_STATE, obs, now, this.#tuning);
        this.#states.set(key, state);
        if (change) this.#apply(policy, obs.quantity, change, now);
      }
    }
  }

  #apply(policy: AutoscalePolicy, from: number, change: Change, now: number): void {
    const decision: AutoscaleDecision = { ts: now, app: policy.app, type: policy.type, from, to: change.to, reason: change.reason };
    try {
      this.#o.store.transaction(() => {
        this.#o.store.setFormation(policy.app, { [policy.type]: change.to });
        this.#o.fleet.reconcileFormation(policy.app);
        this.#o.policies.addDecision(decision);
      });
    } catch (err) {
      this.#logger.warn({ err, app: policy.app, type: policy.type, to: change.to }, 'autoscaling could not apply a change');
      return;
    }
    this.#logger.info({ app: policy.app, type: policy.type, from, to: change.to, reason: change.reason }, 'autoscaled');
    try {
      this.#o.onDecision?.(decision);
    } catch (err) {
      this.#logger.warn({ err }, 'onDecision listener threw');
    }
  }
}
