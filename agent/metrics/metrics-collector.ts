/**
 * The agent's metrics loop: every interval it samples the host, its instances' process groups and
 * its router's traffic, and sends one MetricsReport to the coordinator. A report made while the
 * coordinator is unreachable is dropped (a gap in the graphs): memory never grows with an outage.
 */
import type { Clock, ClockTimer } from '../../common/clock.js';
import type { Logger } from '../../common/logger.js';
import type { MetricsReport } from '../../proto/loader.js';
import { HostUsage } from './host-usage.js';
import { ProcessGroupUsage, type ProcessGroupUsageOptions } from './process-group-usage.js';
import { TrafficRecorder, type TrafficEntry } from './traffic-recorder.js';

/** Default interval between two reports, ms. */
export const DEFAULT_METRICS_INTERVAL_MS = 10_000;

/** Options of {@link MetricsCollector}. */
export interface MetricsCollectorOptions {
  /** The data dir: its filesystem's usage and I/O are reported. */
  dataDir: string;
  /** Interval between reports, ms. Default 10 s; the coordinator may change it ({@link setInterval}). */
  intervalMs?: number;
  /** Running instances: key → pid of the process-group leader. */
  instances(): ReadonlyMap<string, number>;
  /** Requests in flight to an instance through this agent's router. */
  inFlight(instanceKey: string): number;
  /** Sends a report; returns false when it was dropped (no coordinator). */
  send(report: MetricsReport): boolean;
  /** Tuning of the /proc reader (tests, other kernels). */
  proc?: ProcessGroupUsageOptions;
  clock: Clock;
  logger: Logger;
}

export type MetricsCollectorState = 'idle' | 'running' | 'closed';

/** Samples and ships metrics on a timer. */
export class MetricsCollector {
  readonly #o: MetricsCollectorOptions;
  readonly #logger: Logger;
  readonly #traffic = new TrafficRecorder();
  readonly #host: HostUsage;
  readonly #groups: ProcessGroupUsage;
  #intervalMs: number;
  #state: MetricsCollectorState = 'idle';
  #timer: ClockTimer | null = null;
  #busy = false;
  #lastAt: number;

  constructor(options: MetricsCollectorOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'metrics' });
    this.#intervalMs = options.intervalMs ?? DEFAULT_METRICS_INTERVAL_MS;
    this.#host = new HostUsage(options.dataDir);
    this.#groups = new ProcessGroupUsage(options.proc);
    this.#lastAt = options.clock.now();
  }

  get state(): MetricsCollectorState {
    return this.#state;
  }

  /** Feeds one finished router request (the router's `onAccess`). Cheap: O(1), no allocation per request. */
  recordAccess(entry: TrafficEntry): void {
    this.#traffic.record(entry, this.#o.clock.now());
  }

  /** Starts the loop; idempotent. */
  start(): void {
    if (this.#state !== 'idle') return;
    this.#state = 'running';
    // A first host sample primes the CPU and I/O counters the first report's rates need.
    this.#host.sample(this.#o.clock.now()).catch((err: unknown) => this.#logger.debug({ err }, 'first host sample failed'));
    this.#schedule();
  }

  /** Changes the interval (from the coordinator's Welcome); takes effect at the next tick. */
  setInterval(ms: number): void {
    if (ms <= 0 || ms === this.#intervalMs) return;
    this.#intervalMs = ms;
    if (this.#state === 'running' && this.#timer) {
      this.#o.clock.clearTimeout(this.#timer);
      this.#schedule();
    }
  }

  /** Stops the loop; idempotent. */
  close(): void {
    this.#state = 'closed';
    if (this.#timer) this.#o.clock.clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** Makes one report now (the loop calls it every interval). */
  async collect(): Promise<MetricsReport> {
    const now = this.#o.clock.now();
    const intervalMs = Math.max(1, now - this.#lastAt);
    this.#lastAt = now;
    const host = await this.#host.sample(now);
    const usage = this.#groups.sample(this.#o.instances(), now);
    const traffic = this.#traffic.take((key) => this.#o.inFlight(key), now);
    return {
      ts: now,
      intervalMs,
      host,
      instances: [...usage].map(([key, u]) => ({ key, cpuPct: u.cpuPct, rssBytes: u.rssBytes, processes: u.processes })),
      apps: traffic.apps,
      backends: traffic.backends,
    };
  }

  #schedule(): void {
    this.#timer = this.#o.clock.setTimeout(() => {
      this.#timer = null;
      if (this.#state !== 'running') return;
      this.#tick();
      this.#schedule();
    }, this.#intervalMs);
    this.#timer.unref?.();
  }

  #tick(): void {
    if (this.#busy) return;
    this.#busy = true;
    this.collect()
      .then((report) => {
        if (this.#state === 'running' && !this.#o.send(report)) this.#logger.debug('no coordinator: metrics report dropped');
      })
      .catch((err: unknown) => this.#logger.warn({ err }, 'metrics sample failed'))
      .finally(() => {
        this.#busy = false;
      });
  }
}
