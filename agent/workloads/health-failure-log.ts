/**
 * Says why a web instance's health checks fail without flooding its logs: the first failure of a
 * kind is a line at once; identical ones after it are counted and summarised at most once per
 * {@link HealthFailureLog} interval (or when the reason changes). Pure: the caller passes the time.
 */

/** Default time between two summary lines of one repeated failure, ms. */
export const HEALTH_SUMMARY_INTERVAL_MS = 30_000;

export class HealthFailureLog {
  readonly #intervalMs: number;
  #reason = '';
  #repeats = 0;
  #lastLineAt = 0;

  constructor(intervalMs = HEALTH_SUMMARY_INTERVAL_MS) {
    this.#intervalMs = intervalMs;
  }

  /** A failed check: the line to write now, or null when it is only counted. */
  failed(reason: string, now: number): string | null {
    if (reason !== this.#reason) {
      const before = this.#flush();
      this.#reason = reason;
      this.#repeats = 0;
      this.#lastLineAt = now;
      return before ? `${before}; now: Health check failed: ${reason}` : `Health check failed: ${reason}`;
    }
    this.#repeats++;
    if (now - this.#lastLineAt < this.#intervalMs) return null;
    this.#lastLineAt = now;
    return this.#flush();
  }

  /** A passing check: the summary of failures not yet said (or null); the next failure is new. */
  passed(): string | null {
    const line = this.#flush();
    this.#reason = '';
    return line;
  }

  #flush(): string | null {
    if (this.#repeats === 0) return null;
    const line = `Health check failed ${this.#repeats} more time(s) the same way: ${this.#reason}`;
    this.#repeats = 0;
    return line;
  }
}
