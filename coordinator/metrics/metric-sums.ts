/** Aggregation over a window or a minute: traffic (request-weighted percentiles), usage, host figures. */
import type { TrafficView } from '../../common/api-types.js';
import { MINUTE, type TrafficSample, type UsageSample } from './metric-samples.js';

/** Sums traffic samples of one subject over a window (many routers, many intervals). */
export class TrafficSum {
  requests = 0;
  #w50 = 0;
  #w95 = 0;
  #w99 = 0;
  s2 = 0;
  s3 = 0;
  s4 = 0;
  s5 = 0;
  /** In flight at each router's last sample. */
  readonly #inFlight = new Map<string, { ts: number; n: number }>();
  #from = Infinity;
  #to = -Infinity;

  add(t: TrafficSample, ts: number, router: string): void {
    this.requests += t.requests;
    this.#w50 += t.p50 * t.requests;
    this.#w95 += t.p95 * t.requests;
    this.#w99 += t.p99 * t.requests;
    this.s2 += t.s2;
    this.s3 += t.s3;
    this.s4 += t.s4;
    this.s5 += t.s5;
    const last = this.#inFlight.get(router);
    if (!last || last.ts <= ts) this.#inFlight.set(router, { ts, n: t.inFlight });
    this.#from = Math.min(this.#from, ts - t.intervalMs);
    this.#to = Math.max(this.#to, ts);
  }

  get empty(): boolean {
    return this.#to === -Infinity;
  }

  /** Percentile `w` weighted by requests. */
  #weighted(w: number): number {
    return this.requests > 0 ? Math.round((w / this.requests) * 10) / 10 : 0;
  }

  get p95(): number {
    return this.#weighted(this.#w95);
  }

  /** The view; `seconds` overrides the span the samples cover. */
  view(seconds?: number): TrafficView {
    const span = seconds ?? (this.empty ? 0 : (this.#to - this.#from) / 1000);
    let inFlight = 0;
    for (const v of this.#inFlight.values()) inFlight += v.n;
    return {
      requests: this.requests,
      rps: span > 0 ? Math.round((this.requests / span) * 100) / 100 : 0,
      p50Ms: this.#weighted(this.#w50),
      p95Ms: this.#weighted(this.#w95),
      p99Ms: this.#weighted(this.#w99),
      status: { '2xx': this.s2, '3xx': this.s3, '4xx': this.s4, '5xx': this.s5 },
      inFlight,
    };
  }

  /** A minute's rollup row. */
  rollup(): TrafficSample {
    return this.sample(MINUTE);
  }

  /** As one sample (for a rollup row). */
  sample(intervalMs: number): TrafficSample {
    const v = this.view();
    return {
      requests: this.requests,
      p50: v.p50Ms,
      p95: v.p95Ms,
      p99: v.p99Ms,
      s2: this.s2,
      s3: this.s3,
      s4: this.s4,
      s5: this.s5,
      inFlight: v.inFlight,
      intervalMs,
    };
  }
}

/** Mean CPU and last RSS of one instance over a window. */
export class UsageSum {
  #cpu = 0;
  #n = 0;
  #lastTs = -Infinity;
  rssBytes = 0;
  processes = 0;

  add(u: UsageSample, ts: number): void {
    this.#cpu += u.cpuPct;
    this.#n++;
    if (ts >= this.#lastTs) {
      this.#lastTs = ts;
      this.rssBytes = u.rssBytes;
      this.processes = u.processes;
    }
  }

  get cpuPct(): number {
    return this.#n > 0 ? Math.round((this.#cpu / this.#n) * 10) / 10 : 0;
  }

  get meanRss(): number {
    return this.rssBytes;
  }

  /** A minute's rollup row. */
  rollup(): UsageSample {
    return { cpuPct: this.cpuPct, rssBytes: this.rssBytes, processes: this.processes };
  }
}

/** Mean of each host figure over a minute. */
export class HostSum {
  readonly #sums: Record<string, number> = {};
  #n = 0;

  add(host: Record<string, number>): void {
    for (const [k, v] of Object.entries(host)) this.#sums[k] = (this.#sums[k] ?? 0) + v;
    this.#n++;
  }

  rollup(): Record<string, number> {
    return Object.fromEntries(Object.entries(this.#sums).map(([k, v]) => [k, v / Math.max(1, this.#n)]));
  }
}
