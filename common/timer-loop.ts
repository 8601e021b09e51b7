import type { Clock, ClockTimer } from './clock.js';

/** Options of {@link TimerLoop}. */
export interface TimerLoopOptions {
  clock: Clock;
  /** Pause between the end of one run and the start of the next, ms. */
  intervalMs: number;
  /** One turn of the loop. */
  run(): void;
  /** Told of a run that threw; the loop goes on. */
  onError(err: unknown): void;
}

/**
 * A background loop on an injected clock: `run` every `intervalMs` until {@link close}. Its timer
 * never keeps the process alive.
 */
export class TimerLoop {
  readonly #o: TimerLoopOptions;
  #timer: ClockTimer | null = null;
  #closed = false;

  constructor(options: TimerLoopOptions) {
    this.#o = options;
  }

  /** True between {@link start} and {@link close}. */
  get running(): boolean {
    return this.#timer !== null && !this.#closed;
  }

  /** Starts the loop; idempotent, and a closed loop stays closed. */
  start(): void {
    if (this.#timer || this.#closed) return;
    this.#schedule();
  }

  /** Stops the loop; idempotent. */
  close(): void {
    this.#closed = true;
    if (this.#timer) this.#o.clock.clearTimeout(this.#timer);
  }

  #schedule(): void {
    this.#timer = this.#o.clock.setTimeout(() => {
      try {
        this.#o.run();
      } catch (err) {
        this.#o.onError(err);
      }
      if (!this.#closed) this.#schedule();
    }, this.#o.intervalMs);
    this.#timer.unref?.();
  }
}
