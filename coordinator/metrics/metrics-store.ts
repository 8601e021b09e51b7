/**
 * Metrics the agents report: the last report of each agent in memory (Prometheus, `hangar
 * agents`, the autoscaler), raw samples in SQLite for a short window, and 1-minute rollups for a
 * long one. Writes are buffered and go in one transaction per flush; rollups and pruning run once
 * a minute. Shares the {@link Store}'s one SQLite connection (one writer).
 */
import type Database from 'better-sqlite3';
import type {
  AgentMetricsView,
  AppMetricsView,
  InstanceMetricsView,
  MetricsPoint,
  TrafficView,
  TypeMetricsView,
} from '../../common/api-types.js';
import type { Clock, ClockTimer } from '../../common/clock.js';
import type { Logger } from '../../common/logger.js';
import type { MetricsReport__Output, TrafficStats__Output } from '../../proto/loader.js';
import { instanceName, parseInstanceKey } from '../../common/vocabulary.js';
import type { InstanceRow, Store } from '../store/store.js';

/** Options of {@link MetricsStore}. */
export interface MetricsStoreOptions {
  store: Store;
  clock: Clock;
  logger: Logger;
  /** Raw samples are kept this long, ms. Default 1 h. */
  rawRetentionMs?: number;
  /** 1-minute rollups are kept this long, ms. Default 30 days. */
  rollupRetentionMs?: number;
  /** Buffered samples are written at least this often, ms. Default 1000. */
  flushMs?: number;
}

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

const MINUTE = 60_000;

type Scope = 'host' | 'instance' | 'app' | 'backend';

interface Accumulator {
  minute: number;
  agent: string;
  scope: Scope;
  app: string;
  subject: string;
  sum: TrafficSum | UsageSum | HostSum;
}

interface Row {
  ts: number;
  agent: string;
  scope: Scope;
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

function traffic(t: TrafficStats__Output, intervalMs: number): TrafficSample {
  return {
    requests: t.requests,
    p50: t.p50Ms,
    p95: t.p95Ms,
    p99: t.p99Ms,
    s2: t.status2xx,
    s3: t.status3xx,
    s4: t.status4xx,
    s5: t.status5xx,
    inFlight: t.inFlight,
    intervalMs,
  };
}

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
class UsageSum {
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

/** Parses `since` (`30s`, `15m`, `1h`, `7d`) into ms; null when not in that shape. */
export function parseSince(text: string): number | null {
  const m = /^(\d{1,6})(s|m|h|d)$/.exec(text.trim());
  if (!m) return null;
  const unit = { s: 1000, m: MINUTE, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
  return Number(m[1]) * unit;
}

/** See the file comment. */
export class MetricsStore {
  readonly #o: MetricsStoreOptions;
  readonly #db: Database.Database;
  readonly #logger: Logger;
  readonly #latest = new Map<string, LatestReport>();
  #pending: Row[] = [];
  /** Rollups of the current (and just finished) minute, by minute, scope, subject and agent. */
  readonly #minutes = new Map<string, Accumulator>();
  #timer: ClockTimer | null = null;
  #closed = false;
  #lastMaintenance = 0;
  /** Listeners of every ingested report (Prometheus counters). */
  readonly #listeners: ((agent: string, report: LatestReport) => void)[] = [];
  readonly #insert: Database.Statement;
  readonly #insertRollup: Database.Statement;

  constructor(options: MetricsStoreOptions) {
    this.#o = options;
    this.#db = options.store.database;
    this.#logger = options.logger.child({ component: 'metrics-store' });
    this.#insert = this.#db.prepare('INSERT INTO metric_samples (ts, agent, scope, app, subject, data) VALUES (?, ?, ?, ?, ?, ?)');
    this.#insertRollup = this.#db.prepare(
      'INSERT OR REPLACE INTO metric_rollups (minute, agent, scope, app, subject, data) VALUES (?, ?, ?, ?, ?, ?)',
    );
  }

  get #rawRetention(): number {
    return this.#o.rawRetentionMs ?? 3_600_000;
  }

  /** Starts the flush loop; idempotent. */
  start(): void {
    if (this.#timer || this.#closed) return;
    this.#lastMaintenance = this.#o.clock.now();
    const loop = () => {
      this.#timer = this.#o.clock.setTimeout(() => {
        try {
          this.flush();
          const now = this.#o.clock.now();
          if (now - this.#lastMaintenance >= MINUTE) {
            this.#lastMaintenance = now;
            this.maintain(now);
          }
        } catch (err) {
          this.#logger.error({ err }, 'failed to write metrics');
        }
        if (!this.#closed) loop();
      }, this.#o.flushMs ?? 1000);
      this.#timer.unref?.();
    };
    loop();
  }

  /** Writes what is buffered and stops. Idempotent; call before the store closes. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) this.#o.clock.clearTimeout(this.#timer);
    try {
      this.flush(true);
    } catch (err) {
      this.#logger.warn({ err }, 'failed to write the last metrics');
    }
  }

  /** Registers a listener of every ingested report. */
  onReport(listener: (agent: string, report: LatestReport) => void): void {
    this.#listeners.push(listener);
  }

  /** Takes one report from an agent: kept as its latest, buffered for SQLite. */
  ingest(agent: string, report: MetricsReport__Output): void {
    const ts = Number(report.ts) || this.#o.clock.now();
    const intervalMs = report.intervalMs || 10_000;
    const latest: LatestReport = { ts, intervalMs, host: { ...report.host }, instances: new Map(), apps: new Map(), backends: new Map() };
    const rows = this.#pending;
    const push = (scope: Scope, app: string, subject: string, value: object) => {
      rows.push({ ts, agent, scope, app, subject, data: JSON.stringify(value) });
      this.#accumulate(ts, agent, scope, app, subject, value);
    };
    push('host', '', agent, latest.host);
    for (const i of report.instances) {
      const u: UsageSample = { cpuPct: i.cpuPct, rssBytes: Number(i.rssBytes), processes: i.processes };
      latest.instances.set(i.key, u);
      push('instance', parseInstanceKey(i.key)?.app ?? '', i.key, u);
    }
    for (const a of report.apps) {
      const t = traffic(a, intervalMs);
      latest.apps.set(a.key, t);
      push('app', a.key, a.key, t);
    }
    for (const b of report.backends) {
      const t = traffic(b, intervalMs);
      latest.backends.set(b.key, t);
      push('backend', parseInstanceKey(b.key)?.app ?? '', b.key, t);
    }
    this.#latest.set(agent, latest);
    for (const l of this.#listeners) l(agent, latest);
    // A coordinator that cannot write keeps a bounded buffer: the oldest samples go first.
    if (rows.length > 200_000) rows.splice(0, rows.length - 200_000);
  }

  /** The last report of each agent. */
  latest(): ReadonlyMap<string, LatestReport> {
    return this.#latest;
  }

  /** Adds a sample to its minute's rollup (kept in memory, as sums, until the minute is over). */
  #accumulate(ts: number, agent: string, scope: Scope, app: string, subject: string, value: object): void {
    const minute = Math.floor(ts / MINUTE) * MINUTE;
    const k = `${minute}\u0000${scope}\u0000${subject}\u0000${agent}`;
    let acc = this.#minutes.get(k);
    if (!acc) {
      const sum = scope === 'host' ? new HostSum() : scope === 'instance' ? new UsageSum() : new TrafficSum();
      this.#minutes.set(k, (acc = { minute, agent, scope, app, subject, sum }));
    }
    const sum = acc.sum;
    if (sum instanceof TrafficSum) sum.add(value as TrafficSample, ts, agent);
    else if (sum instanceof UsageSum) sum.add(value as UsageSample, ts);
    else sum.add(value as Record<string, number>);
  }

  /**
   * Writes buffered samples, and the rollups of minutes that are over (all of them when `all`),
   * in one transaction.
   */
  flush(all = false): void {
    if (!this.#db.open) return;
    const rows = this.#pending;
    const current = Math.floor(this.#o.clock.now() / MINUTE) * MINUTE;
    const done: Accumulator[] = [];
    for (const [k, acc] of this.#minutes) {
      if (all || acc.minute < current) {
        done.push(acc);
        this.#minutes.delete(k);
      }
    }
    if (rows.length === 0 && done.length === 0) return;
    this.#pending = [];
    this.#db.transaction(() => {
      for (const r of rows) this.#insert.run(r.ts, r.agent, r.scope, r.app, r.subject, r.data);
      for (const a of done) this.#insertRollup.run(a.minute, a.agent, a.scope, a.app, a.subject, JSON.stringify(a.sum.rollup()));
    })();
  }

  /** Prunes raw samples and rollups past their retention. */
  maintain(now: number): void {
    if (!this.#db.open) return;
    this.#db.transaction(() => {
      this.#db.prepare('DELETE FROM metric_samples WHERE ts < ?').run(now - this.#rawRetention);
      this.#db.prepare('DELETE FROM metric_rollups WHERE minute < ?').run(now - (this.#o.rollupRetentionMs ?? 30 * 86_400_000));
    })();
  }

  #samples(column: 'app' | 'agent', value: string, since: number): Row[] {
    this.flush();
    return this.#db
      .prepare(`SELECT ts, agent, scope, app, subject, data FROM metric_samples WHERE ${column} = ? AND ts >= ? ORDER BY ts`)
      .all(value, since) as Row[];
  }

  #rollups(column: 'app' | 'agent', value: string, since: number): Row[] {
    return this.#db
      .prepare(
        `SELECT minute AS ts, agent, scope, app, subject, data FROM metric_rollups WHERE ${column} = ? AND minute >= ? ORDER BY minute`,
      )
      .all(value, Math.floor(since / MINUTE) * MINUTE) as Row[];
  }

  /** Raw samples when the window fits in the raw retention, else rollups. */
  #window(column: 'app' | 'agent', value: string, since: number, now: number): Row[] {
    return now - since <= this.#rawRetention ? this.#samples(column, value, since) : this.#rollups(column, value, since);
  }

  /**
   * Traffic of the app's web instances and mean CPU per instance of each process type, over
   * `[since, now]` (for the autoscaler).
   */
  windowStats(app: string, since: number): { traffic: TrafficSum; cpuByType: Map<string, { cpuPct: number; instances: number }> } {
    const rows = this.#samples('app', app, since);
    const sum = new TrafficSum();
    const usage = new Map<string, UsageSum>();
    for (const r of rows) {
      if (r.scope === 'app') sum.add(JSON.parse(r.data) as TrafficSample, r.ts, r.agent);
      else if (r.scope === 'instance') {
        let u = usage.get(r.subject);
        if (!u) usage.set(r.subject, (u = new UsageSum()));
        u.add(JSON.parse(r.data) as UsageSample, r.ts);
      }
    }
    const cpuByType = new Map<string, { cpuPct: number; instances: number }>();
    for (const [key, u] of usage) {
      const type = parseInstanceKey(key)?.type;
      if (!type) continue;
      const c = cpuByType.get(type) ?? { cpuPct: 0, instances: 0 };
      c.cpuPct += u.cpuPct;
      c.instances++;
      cpuByType.set(type, c);
    }
    for (const c of cpuByType.values()) c.cpuPct = c.instances > 0 ? c.cpuPct / c.instances : 0;
    return { traffic: sum, cpuByType };
  }

  /** `GET /v1/apps/:app/metrics`. `instances`: the app's current instances (ps). */
  appMetrics(app: string, sinceMs: number, instances: readonly InstanceRow[]): AppMetricsView {
    const now = this.#o.clock.now();
    const since = now - sinceMs;
    const rows = this.#window('app', app, since, now);
    const appTraffic = new TrafficSum();
    const backend = new Map<string, TrafficSum>();
    const usage = new Map<string, UsageSum>();
    const series = new Map<number, { traffic: TrafficSum; cpu: Map<string, UsageSum> }>();
    for (const r of rows) {
      const minute = Math.floor(r.ts / MINUTE) * MINUTE;
      let point = series.get(minute);
      if (!point) series.set(minute, (point = { traffic: new TrafficSum(), cpu: new Map() }));
      if (r.scope === 'app') {
        const t = JSON.parse(r.data) as TrafficSample;
        appTraffic.add(t, r.ts, r.agent);
        point.traffic.add(t, r.ts, r.agent);
      } else if (r.scope === 'backend') {
        let b = backend.get(r.subject);
        if (!b) backend.set(r.subject, (b = new TrafficSum()));
        b.add(JSON.parse(r.data) as TrafficSample, r.ts, r.agent);
      } else if (r.scope === 'instance') {
        const u = JSON.parse(r.data) as UsageSample;
        let s = usage.get(r.subject);
        if (!s) usage.set(r.subject, (s = new UsageSum()));
        s.add(u, r.ts);
        let c = point.cpu.get(r.subject);
        if (!c) point.cpu.set(r.subject, (c = new UsageSum()));
        c.add(u, r.ts);
      }
    }
    const instanceViews: InstanceMetricsView[] = [];
    const keys = new Set([...instances.map((i) => i.key), ...usage.keys()]);
    const rowOf = new Map(instances.map((i) => [i.key, i]));
    for (const key of keys) {
      const parts = parseInstanceKey(key);
      const row = rowOf.get(key);
      if (!parts || (!row && !usage.has(key))) continue;
      // Instances that no longer run are listed only while they have samples in the window.
      const u = usage.get(key);
      const b = backend.get(key);
      instanceViews.push({
        id: instanceName(parts),
        type: parts.type,
        release: `v${parts.release}`,
        agent: row?.agent ?? this.#agentOf(key) ?? '',
        cpuPct: u?.cpuPct ?? 0,
        rssBytes: u?.rssBytes ?? 0,
        processes: u?.processes ?? 0,
        traffic: b ? b.view() : null,
      });
    }
    instanceViews.sort(
      (a, b) => a.type.localeCompare(b.type) || a.id.localeCompare(b.id, 'en', { numeric: true }) || a.release.localeCompare(b.release),
    );
    const types = new Map<string, TypeMetricsView>();
    for (const v of instanceViews) {
      if (!rowOf.has(`${app}:${v.id}:${v.release}`)) continue;
      const t = types.get(v.type) ?? { type: v.type, instances: 0, cpuPct: 0, rssBytes: 0, traffic: null };
      t.instances++;
      t.cpuPct = Math.round((t.cpuPct + v.cpuPct) * 10) / 10;
      t.rssBytes += v.rssBytes;
      types.set(v.type, t);
    }
    const web = types.get('web');
    if (web) web.traffic = appTraffic.view();
    const points: MetricsPoint[] = [...series]
      .sort(([a], [b]) => a - b)
      .map(([minute, p]) => {
        const view = p.traffic.view();
        let cpu = 0;
        let rss = 0;
        for (const u of p.cpu.values()) {
          cpu += u.cpuPct;
          rss += u.meanRss;
        }
        return {
          ts: new Date(minute).toISOString(),
          rps: view.rps,
          p95Ms: view.p95Ms,
          status5xx: view.status['5xx'],
          cpuPct: Math.round(cpu * 10) / 10,
          rssBytes: rss,
        };
      });
    return {
      app,
      since: new Date(since).toISOString(),
      until: new Date(now).toISOString(),
      traffic: appTraffic.view(),
      types: [...types.values()],
      instances: instanceViews,
      series: points,
    };
  }

  #agentOf(key: string): string | null {
    for (const [agent, r] of this.#latest) if (r.instances.has(key)) return agent;
    return null;
  }

  /** `GET /v1/agents/:agent/metrics`. */
  agentMetrics(agent: string, sinceMs: number, state: 'up' | 'down'): AgentMetricsView {
    const now = this.#o.clock.now();
    const since = now - sinceMs;
    const rows = this.#window('agent', agent, since, now);
    const sums = new Map<string, { total: number; n: number }>();
    const usage = new Map<string, UsageSum>();
    const series = new Map<number, { cpu: number; mem: number; n: number }>();
    for (const r of rows) {
      if (r.scope === 'host') {
        const host = JSON.parse(r.data) as Record<string, number>;
        for (const [k, v] of Object.entries(host)) {
          const s = sums.get(k) ?? { total: 0, n: 0 };
          s.total += v;
          s.n++;
          sums.set(k, s);
        }
        const minute = Math.floor(r.ts / MINUTE) * MINUTE;
        const p = series.get(minute) ?? { cpu: 0, mem: 0, n: 0 };
        p.cpu += host.cpu_pct ?? 0;
        p.mem += host.mem_used_bytes ?? 0;
        p.n++;
        series.set(minute, p);
      } else if (r.scope === 'instance') {
        let u = usage.get(r.subject);
        if (!u) usage.set(r.subject, (u = new UsageSum()));
        u.add(JSON.parse(r.data) as UsageSample, r.ts);
      }
    }
    const latest = this.#latest.get(agent);
    return {
      agent,
      state,
      since: new Date(since).toISOString(),
      until: new Date(now).toISOString(),
      reportedAt: latest ? new Date(latest.ts).toISOString() : null,
      host: latest?.host ?? {},
      mean: Object.fromEntries([...sums].map(([k, s]) => [k, Math.round((s.total / s.n) * 10) / 10])),
      instances: [...usage].flatMap(([key, u]) => {
        const parts = parseInstanceKey(key);
        if (!parts || (latest && !latest.instances.has(key))) return [];
        return [
          {
            app: parts.app,
            id: instanceName(parts),
            type: parts.type,
            release: `v${parts.release}`,
            agent,
            cpuPct: u.cpuPct,
            rssBytes: u.rssBytes,
            processes: u.processes,
            traffic: null,
          },
        ];
      }),
      series: [...series]
        .sort(([a], [b]) => a - b)
        .map(([minute, p]) => ({
          ts: new Date(minute).toISOString(),
          cpuPct: Math.round((p.cpu / p.n) * 10) / 10,
          memoryUsedBytes: Math.round(p.mem / p.n),
        })),
    };
  }
}

/** Mean of each host figure over a minute. */
class HostSum {
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
