/**
 * Metrics the agents report: the last report of each agent in memory (Prometheus, `hangar
 * agents`, the autoscaler), raw samples in SQLite for a short window, and 1-minute rollups for a
 * long one. Writes are buffered and go in one transaction per flush; rollups and pruning run once
 * a minute. Shares the {@link Store}'s one connection (one writer). On PostgreSQL, samples and
 * rollups are partitioned by day (store/postgres-partitions.ts): made ahead of each flush that
 * needs them, and retention drops whole days (as leader) before deleting what is left past it.
 */
import { asLeader, DayPartitionSet, dropDayPartitionsBefore, type PartitionFence } from '../store/postgres-partitions.js';
import { arrayLiteral } from '../store/postgres.js';
import type { SqlDatabase, SqlStatement } from '../store/sql.js';
import type { AgentMetricsView, AppMetricsView } from '../../common/api-types.js';
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/logger.js';
import { TimerLoop } from '../../common/timer-loop.js';
import { parseInstanceKey } from '../../common/vocabulary.js';
import type { MetricsReport__Output, TrafficStats__Output } from '../../proto/loader.js';
import type { InstanceRow, Store } from '../store/store.js';
import { MINUTE, type LatestReport, type MetricRow, type MetricScope, type TrafficSample, type UsageSample } from './metric-samples.js';
import { HostSum, TrafficSum, UsageSum } from './metric-sums.js';
import { agentMetricsView, appMetricsView } from './metrics-views.js';

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
  /**
   * On PostgreSQL, the leader epoch day partitions are dropped under (checked against the lease,
   * as a `DROP` is not fenced); `onFenced` when another coordinator leads. Default: none.
   */
  fence?: PartitionFence;
}

interface Accumulator {
  minute: number;
  agent: string;
  scope: MetricScope;
  app: string;
  subject: string;
  sum: TrafficSum | UsageSum | HostSum;
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

/** See the file comment. */
export class MetricsStore {
  readonly #o: MetricsStoreOptions;
  readonly #db: SqlDatabase;
  readonly #logger: Logger;
  readonly #latest = new Map<string, LatestReport>();
  #pending: MetricRow[] = [];
  /** Rollups of the current (and just finished) minute, by minute, scope, subject and agent. */
  readonly #minutes = new Map<string, Accumulator>();
  readonly #loop: TimerLoop;
  #closed = false;
  #lastMaintenance = 0;
  /** Listeners of every ingested report (Prometheus counters). */
  readonly #listeners: ((agent: string, report: LatestReport) => void)[] = [];
  readonly #insert: SqlStatement;
  readonly #insertRollup: SqlStatement;
  /** The day partitions of samples and rollups, on PostgreSQL. */
  readonly #partitions: { samples: DayPartitionSet; rollups: DayPartitionSet } | null;

  constructor(options: MetricsStoreOptions) {
    this.#o = options;
    this.#db = options.store.database;
    this.#logger = options.logger.child({ component: 'metrics-store' });
    this.#loop = new TimerLoop({
      clock: options.clock,
      intervalMs: options.flushMs ?? 1000,
      run: () => {
        this.flush();
        const now = this.#o.clock.now();
        if (now - this.#lastMaintenance >= MINUTE) {
          this.#lastMaintenance = now;
          this.maintain(now);
        }
      },
      onError: (err) => this.#logger.error({ err }, 'failed to write metrics'),
    });
    this.#insert = this.#db.prepare('INSERT INTO metric_samples (ts, agent, scope, app, subject, data) VALUES (?, ?, ?, ?, ?, ?)');
    this.#insertRollup = this.#db.prepare(
      `INSERT INTO metric_rollups (minute, agent, scope, app, subject, data) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (scope, subject, agent, minute) DO UPDATE SET app = excluded.app, data = excluded.data`,
    );
    this.#partitions =
      this.#db.engine === 'postgres'
        ? { samples: new DayPartitionSet(this.#db, 'metric_samples'), rollups: new DayPartitionSet(this.#db, 'metric_rollups') }
        : null;
  }

  get #rawRetention(): number {
    return this.#o.rawRetentionMs ?? 3_600_000;
  }

  /** Starts the flush loop; idempotent. */
  start(): void {
    if (this.#closed || this.#loop.running) return;
    this.#lastMaintenance = this.#o.clock.now();
    if (this.#partitions) {
      this.#partitions.samples.ensureAhead(this.#lastMaintenance);
      this.#partitions.rollups.ensureAhead(this.#lastMaintenance);
    }
    this.#loop.start();
  }

  /** Writes what is buffered and stops. Idempotent; call before the store closes. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#loop.close();
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
    const push = (scope: MetricScope, app: string, subject: string, value: object) => {
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
  #accumulate(ts: number, agent: string, scope: MetricScope, app: string, subject: string, value: object): void {
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
    if (this.#partitions) {
      try {
        this.#partitions.samples.ensure(rows.map((r) => r.ts));
        this.#partitions.rollups.ensure(done.map((a) => a.minute));
      } catch (err) {
        // Kept for the next flush, as when the transaction below fails.
        this.#pending = rows.concat(this.#pending);
        for (const a of done) this.#minutes.set(`${a.minute}\u0000${a.scope}\u0000${a.subject}\u0000${a.agent}`, a);
        throw err;
      }
    }
    this.#db.transaction(() => {
      if (this.#partitions) this.#insertMany(rows);
      else for (const r of rows) this.#insert.run(r.ts, r.agent, r.scope, r.app, r.subject, r.data);
      for (const a of done) this.#insertRollup.run(a.minute, a.agent, a.scope, a.app, a.subject, JSON.stringify(a.sum.rollup()));
    })();
  }

  /** Samples in one INSERT (PostgreSQL: arrays unnested), not a statement a row. */
  #insertMany(rows: readonly MetricRow[]): void {
    if (rows.length === 0) return;
    this.#db
      .prepare(
        'INSERT INTO metric_samples (ts, agent, scope, app, subject, data) SELECT * FROM unnest(?::bigint[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[])',
      )
      .run(
        arrayLiteral(rows.map((r) => r.ts)),
        arrayLiteral(rows.map((r) => r.agent)),
        arrayLiteral(rows.map((r) => r.scope)),
        arrayLiteral(rows.map((r) => r.app)),
        arrayLiteral(rows.map((r) => r.subject)),
        arrayLiteral(rows.map((r) => r.data)),
      );
  }

  /**
   * Prunes raw samples and rollups past their retention. On PostgreSQL the days before it are
   * dropped first (as leader: throws `NOT_LEADER` when another coordinator leads), then the rows
   * left past it in the oldest day kept are deleted.
   */
  maintain(now: number): void {
    if (!this.#db.open) return;
    const rawCutoff = now - this.#rawRetention;
    const rollupCutoff = now - (this.#o.rollupRetentionMs ?? 30 * 86_400_000);
    if (this.#partitions) {
      this.#partitions.samples.ensureAhead(now);
      this.#partitions.rollups.ensureAhead(now);
      const dropped = asLeader(this.#db, this.#o.fence, () => [
        ...dropDayPartitionsBefore(this.#db, 'metric_samples', rawCutoff),
        ...dropDayPartitionsBefore(this.#db, 'metric_rollups', rollupCutoff),
      ]);
      if (dropped.length > 0) {
        this.#partitions.samples.reset();
        this.#partitions.rollups.reset();
        this.#logger.debug({ dropped }, 'dropped old metric partitions');
      }
    }
    this.#db.transaction(() => {
      this.#db.prepare('DELETE FROM metric_samples WHERE ts < ?').run(rawCutoff);
      this.#db.prepare('DELETE FROM metric_rollups WHERE minute < ?').run(rollupCutoff);
    })();
  }

  #samples(column: 'app' | 'agent', value: string, since: number): MetricRow[] {
    this.flush();
    return this.#db
      .prepare(`SELECT ts, agent, scope, app, subject, data FROM metric_samples WHERE ${column} = ? AND ts >= ? ORDER BY ts`)
      .all(value, since) as MetricRow[];
  }

  #rollups(column: 'app' | 'agent', value: string, since: number): MetricRow[] {
    return this.#db
      .prepare(
        `SELECT minute AS ts, agent, scope, app, subject, data FROM metric_rollups WHERE ${column} = ? AND minute >= ? ORDER BY minute`,
      )
      .all(value, Math.floor(since / MINUTE) * MINUTE) as MetricRow[];
  }

  /** Raw samples when the window fits in the raw retention, else rollups. */
  #window(column: 'app' | 'agent', value: string, since: number, now: number): MetricRow[] {
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
    return appMetricsView(app, since, now, this.#window('app', app, since, now), instances, (key) => this.#agentOf(key));
  }

  #agentOf(key: string): string | null {
    for (const [agent, r] of this.#latest) if (r.instances.has(key)) return agent;
    return null;
  }

  /** `GET /v1/agents/:agent/metrics`. */
  agentMetrics(agent: string, sinceMs: number, state: 'up' | 'down'): AgentMetricsView {
    const now = this.#o.clock.now();
    const since = now - sinceMs;
    return agentMetricsView(agent, state, since, now, this.#window('agent', agent, since, now), this.#latest.get(agent));
  }
}
