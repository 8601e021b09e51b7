/**
 * `GET /metrics`: the fleet's metrics in Prometheus text format, from the agents' last reports.
 * Labels `app`, `type`, `instance` (`web.1`) and `agent`, so a Grafana dashboard can group by
 * any of them. One prom-client Registry per coordinator (never the global default registry).
 *
 * Series:
 * - `hangar_agent_up{agent}` 1 when connected and heard from within the liveness window.
 * - `hangar_host_cpu_percent`, `hangar_host_load1`, `hangar_host_memory_used_bytes`,
 *   `hangar_host_memory_total_bytes`, `hangar_host_disk_used_bytes`, `hangar_host_disk_total_bytes`,
 *   `hangar_host_disk_read_bytes_per_second`, `hangar_host_disk_write_bytes_per_second`,
 *   `hangar_host_network_receive_bytes_per_second`, `hangar_host_network_transmit_bytes_per_second` `{agent}`.
 * - `hangar_instance_cpu_percent`, `hangar_instance_memory_rss_bytes`, `hangar_instance_processes`
 *   `{app,type,instance,agent}`.
 * - `hangar_http_requests_total{app,agent,status_class}` counter (agent = the router's agent).
 * - `hangar_http_request_duration_seconds{app,agent,quantile}` over the last report interval.
 * - `hangar_http_requests_in_flight{app,agent}`.
 * - `hangar_instance_http_requests_total{app,type,instance,agent,status_class}` counter.
 * - `hangar_addon_replication_lag_bytes`, `hangar_addon_replication_lag_seconds` `{app,addon,agent}`
 *   (agent = the standby's) for PostgreSQL standbys, as last measured on the primary.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import type { AgentView } from '../../common/api-types.js';
import { instanceName, parseInstanceKey } from '../../common/vocabulary.js';
import type { LatestReport } from './metric-samples.js';
import type { MetricsStore } from './metrics-store.js';
import type { InstanceRow } from '../store/store.js';

/** Options of {@link PrometheusExporter}. */
export interface PrometheusExporterOptions {
  metrics: MetricsStore;
  agents(): AgentView[];
  /** Instances in desired state (series of gone instances are left out). */
  instances(): InstanceRow[];
  /** The replication lag of PostgreSQL standbys. Default: none. */
  standbyLags?(): { app: string; addon: string; agent: string; lagBytes: number; lagSeconds: number }[];
  now(): number;
}

const HOST_SERIES: readonly [string, string, string][] = [
  ['cpu_pct', 'hangar_host_cpu_percent', 'Host CPU busy, % of all cores.'],
  ['load1', 'hangar_host_load1', 'Host load average over 1 minute.'],
  ['mem_used_bytes', 'hangar_host_memory_used_bytes', 'Host memory in use (total - available), bytes.'],
  ['mem_total_bytes', 'hangar_host_memory_total_bytes', 'Host memory, bytes.'],
  ['disk_used_bytes', 'hangar_host_disk_used_bytes', "Used bytes of the agent data dir's filesystem."],
  ['disk_total_bytes', 'hangar_host_disk_total_bytes', "Size of the agent data dir's filesystem, bytes."],
  ['disk_read_bps', 'hangar_host_disk_read_bytes_per_second', 'Disk reads, bytes per second.'],
  ['disk_write_bps', 'hangar_host_disk_write_bytes_per_second', 'Disk writes, bytes per second.'],
  ['net_rx_bps', 'hangar_host_network_receive_bytes_per_second', 'Network received (all but lo), bytes per second.'],
  ['net_tx_bps', 'hangar_host_network_transmit_bytes_per_second', 'Network sent (all but lo), bytes per second.'],
];

const CLASSES = [
  ['2xx', 's2'],
  ['3xx', 's3'],
  ['4xx', 's4'],
  ['5xx', 's5'],
] as const;

/** See the file comment. */
export class PrometheusExporter {
  readonly registry = new Registry();
  readonly #o: PrometheusExporterOptions;

  constructor(options: PrometheusExporterOptions) {
    this.#o = options;
    const registers = [this.registry];
    const fresh = (r: LatestReport) => this.#o.now() - r.ts <= Math.max(3 * r.intervalMs, 30_000);

    new Gauge({
      name: 'hangar_agent_up',
      help: 'Whether the agent is connected and heard from within the liveness window.',
      labelNames: ['agent'],
      registers,
      collect() {
        this.reset();
        for (const a of options.agents()) this.set({ agent: a.name }, a.state === 'up' ? 1 : 0);
      },
    });
    for (const [key, name, help] of HOST_SERIES) {
      new Gauge({
        name,
        help,
        labelNames: ['agent'],
        registers,
        collect() {
          this.reset();
          for (const [agent, r] of options.metrics.latest()) {
            const v = r.host[key];
            if (v !== undefined && fresh(r)) this.set({ agent }, v);
          }
        },
      });
    }
    const instanceGauge = (name: string, help: string, pick: (u: { cpuPct: number; rssBytes: number; processes: number }) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['app', 'type', 'instance', 'agent'],
        registers,
        collect() {
          this.reset();
          const live = new Set(options.instances().map((i) => `${i.agent}\u0000${i.key}`));
          for (const [agent, r] of options.metrics.latest()) {
            if (!fresh(r)) continue;
            for (const [key, u] of r.instances) {
              const p = parseInstanceKey(key);
              if (!p || !live.has(`${agent}\u0000${key}`)) continue;
              this.set({ app: p.app, type: p.type, instance: instanceName(p), agent }, pick(u));
            }
          }
        },
      });
    instanceGauge('hangar_instance_cpu_percent', "CPU of the instance's process group, % of one core.", (u) => u.cpuPct);
    instanceGauge('hangar_instance_memory_rss_bytes', "Resident memory of the instance's process group, bytes.", (u) => u.rssBytes);
    instanceGauge('hangar_instance_processes', "Processes in the instance's group.", (u) => u.processes);

    for (const [name, help, pick] of [
      [
        'hangar_addon_replication_lag_bytes',
        'WAL the PostgreSQL standby has not replayed yet, bytes.',
        (l: { lagBytes: number }) => l.lagBytes,
      ],
      [
        'hangar_addon_replication_lag_seconds',
        'How far the PostgreSQL standby replays behind its primary, seconds (0 when idle).',
        (l: { lagSeconds: number }) => l.lagSeconds,
      ],
    ] as const) {
      new Gauge({
        name,
        help,
        labelNames: ['app', 'addon', 'agent'],
        registers,
        collect() {
          this.reset();
          for (const l of options.standbyLags?.() ?? []) this.set({ app: l.app, addon: l.addon, agent: l.agent }, pick(l));
        },
      });
    }
    new Gauge({
      name: 'hangar_http_request_duration_seconds',
      help: "Request latency percentiles at the agent's router over its last report interval.",
      labelNames: ['app', 'agent', 'quantile'],
      registers,
      collect() {
        this.reset();
        for (const [agent, r] of options.metrics.latest()) {
          if (!fresh(r)) continue;
          for (const [app, t] of r.apps) {
            if (t.requests === 0) continue;
            this.set({ app, agent, quantile: '0.5' }, t.p50 / 1000);
            this.set({ app, agent, quantile: '0.95' }, t.p95 / 1000);
            this.set({ app, agent, quantile: '0.99' }, t.p99 / 1000);
          }
        }
      },
    });
    new Gauge({
      name: 'hangar_http_requests_in_flight',
      help: "Requests in flight at the agent's router at its last report.",
      labelNames: ['app', 'agent'],
      registers,
      collect() {
        this.reset();
        for (const [agent, r] of options.metrics.latest()) {
          if (fresh(r)) for (const [app, t] of r.apps) this.set({ app, agent }, t.inFlight);
        }
      },
    });
    const requests = new Counter({
      name: 'hangar_http_requests_total',
      help: "Requests through the agent's router, by status class.",
      labelNames: ['app', 'agent', 'status_class'],
      registers,
    });
    const instanceRequests = new Counter({
      name: 'hangar_instance_http_requests_total',
      help: 'Requests routed to the instance (by any router), by status class.',
      labelNames: ['app', 'type', 'instance', 'agent', 'status_class'],
      registers,
    });
    options.metrics.onReport((agent, r) => {
      for (const [app, t] of r.apps) {
        for (const [cls, field] of CLASSES) if (t[field] > 0) requests.inc({ app, agent, status_class: cls }, t[field]);
      }
      for (const [key, t] of r.backends) {
        const p = parseInstanceKey(key);
        if (!p) continue;
        for (const [cls, field] of CLASSES) {
          if (t[field] > 0)
            instanceRequests.inc({ app: p.app, type: p.type, instance: instanceName(p), agent, status_class: cls }, t[field]);
        }
      }
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}
