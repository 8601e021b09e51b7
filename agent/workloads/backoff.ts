/**
 * Restart backoff for supervised processes: exponential delays with jitter, reset by a stable
 * run, and crash-loop detection. Pure logic; the caller measures run lengths with its own clock.
 */

/** Tuning of {@link Backoff}. Every field is optional; defaults are listed per field. */
export interface BackoffOptions {
  /** Delay before the first restart, in ms. Default 1000. */
  initialMs?: number;
  /** Upper bound of any delay, jitter included, in ms. Default 60000. */
  maxMs?: number;
  /** Multiplier applied per consecutive restart. Default 2. */
  factor?: number;
  /** Random spread applied to each delay, as a fraction of it (0.1 = ±10%). Default 0.1. */
  jitter?: number;
  /** A run at least this long (ms) counts as healthy and resets the attempt count. Default 10000. */
  stableMs?: number;
  /** This many consecutive short runs make a crash loop. Default 5. */
  crashLoopThreshold?: number;
  /** Source of randomness in [0, 1) for the jitter. Default `Math.random`; tests pass their own. */
  random?: () => number;
}

/** What the caller should do after a process exited, as decided by {@link Backoff.recordExit}. */
export interface BackoffDecision {
  /** Restart attempt this delay belongs to, from 1. */
  attempt: number;
  /** How long to wait before restarting, in ms. */
  delayMs: number;
  /** Consecutive runs shorter than `stableMs`, this one included. */
  shortRuns: number;
  /** True once `shortRuns` reached `crashLoopThreshold`: the delay is then `maxMs`. */
  crashLoop: boolean;
  /** True only for the exit that made the crash loop start (to report it once). */
  crashLoopStarted: boolean;
}

const DEFAULTS = {
  initialMs: 1000,
  maxMs: 60_000,
  factor: 2,
  jitter: 0.1,
  stableMs: 10_000,
  crashLoopThreshold: 5,
} as const;

/**
 * Tracks consecutive exits of one process and turns each into a restart delay.
 *
 * Attempt `n` waits `min(maxMs, initialMs * factor^(n-1))`, spread by ±`jitter` and capped at
 * `maxMs`. A run of at least `stableMs` starts counting again from attempt 1. After
 * `crashLoopThreshold` consecutive short runs every further restart waits `maxMs`.
 */
export class Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly factor: number;
  readonly jitter: number;
  readonly stableMs: number;
  readonly crashLoopThreshold: number;
  readonly #random: () => number;
  #attempt = 0;
  #shortRuns = 0;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = options.initialMs ?? DEFAULTS.initialMs;
    this.maxMs = options.maxMs ?? DEFAULTS.maxMs;
    this.factor = options.factor ?? DEFAULTS.factor;
    this.jitter = options.jitter ?? DEFAULTS.jitter;
    this.stableMs = options.stableMs ?? DEFAULTS.stableMs;
    this.crashLoopThreshold = options.crashLoopThreshold ?? DEFAULTS.crashLoopThreshold;
    this.#random = options.random ?? Math.random;
    if (!(this.initialMs >= 0) || !(this.maxMs >= this.initialMs) || !(this.factor >= 1)) {
      throw new RangeError('backoff needs 0 <= initialMs <= maxMs and factor >= 1');
    }
    if (!(this.jitter >= 0 && this.jitter <= 1) || !(this.crashLoopThreshold >= 1)) {
      throw new RangeError('backoff needs 0 <= jitter <= 1 and crashLoopThreshold >= 1');
    }
  }

  /** Restart attempts counted since the last stable run (or reset). */
  get attempt(): number {
    return this.#attempt;
  }

  /** Consecutive short runs since the last stable run (or reset). */
  get shortRuns(): number {
    return this.#shortRuns;
  }

  /** True while the consecutive short runs are at or above the crash-loop threshold. */
  get inCrashLoop(): boolean {
    return this.#shortRuns >= this.crashLoopThreshold;
  }

  /** The jittered delay for restart attempt `attempt` (from 1), in ms, never above `maxMs`. */
  delayFor(attempt: number): number {
    const exponent = Math.max(0, attempt - 1);
    const base = Math.min(this.maxMs, this.initialMs * this.factor ** exponent);
    return this.#spread(base);
  }

  /**
   * Records that the process exited after running `runMs` and returns how long to wait before
   * the next start.
   */
  recordExit(runMs: number): BackoffDecision {
    if (runMs >= this.stableMs) {
      this.#attempt = 0;
      this.#shortRuns = 0;
    } else {
      this.#shortRuns += 1;
    }
    this.#attempt += 1;
    const crashLoop = this.inCrashLoop;
    return {
      attempt: this.#attempt,
      delayMs: crashLoop ? this.#spread(this.maxMs) : this.delayFor(this.#attempt),
      shortRuns: this.#shortRuns,
      crashLoop,
      crashLoopStarted: crashLoop && this.#shortRuns === this.crashLoopThreshold,
    };
  }

  /** Forgets every recorded exit, as after a deliberate restart. */
  reset(): void {
    this.#attempt = 0;
    this.#shortRuns = 0;
  }

  #spread(base: number): number {
    const offset = base * this.jitter * (2 * this.#random() - 1);
    return Math.round(Math.min(this.maxMs, Math.max(0, base + offset)));
  }
}
