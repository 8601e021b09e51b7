/** What agents report, as the coordinator keeps it: samples, stored rows and each agent's last report. */

/** One minute, ms: the rollups' resolution. */
export const MINUTE = 60_000;

/** Traffic figures of one sample (what a router saw over `intervalMs`). */
export interface TrafficSample {
  requests: number;
  p50: number;
  p95: number;
  p99: number;
  s2: number;
  s3: number;
  s4: number;
  s5: number;
  inFlight: number;
  intervalMs: number;
}

/** CPU and memory of one instance's process group. */
export interface UsageSample {
  cpuPct: number;
  rssBytes: number;
  processes: number;
}

/** What a stored sample is about: a host, an instance's usage, an app's or a backend's traffic. */
export type MetricScope = 'host' | 'instance' | 'app' | 'backend';

/** A stored sample or rollup (`data`: its JSON). */
export interface MetricRow {
  ts: number;
  agent: string;
  scope: MetricScope;
  app: string;
  subject: string;
  data: string;
}

/** An agent's last report, kept in memory. */
export interface LatestReport {
  ts: number;
  intervalMs: number;
  host: Record<string, number>;
  instances: Map<string, UsageSample>;
  apps: Map<string, TrafficSample>;
  backends: Map<string, TrafficSample>;
}
