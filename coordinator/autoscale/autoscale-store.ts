/**
 * Autoscale policies and the decisions made under them, in SQLite (shares the {@link Store}'s
 * one connection).
 */
import type { SqlDatabase } from '../store/sql.js';
import type { Store } from '../store/store.js';

/** What `hangar autoscale TYPE --min N --max M [--p95 MS] [--cpu PCT]` sets. */
export interface AutoscalePolicy {
  app: string;
  type: string;
  min: number;
  max: number;
  /** Target p95 latency of the app's requests, ms; null: not a criterion. */
  p95Ms: number | null;
  /** Target mean CPU per instance, % of one core; null: not a criterion. */
  cpuPct: number | null;
}

/** One change the autoscaler made. */
export interface AutoscaleDecision {
  ts: number;
  app: string;
  type: string;
  from: number;
  to: number;
  reason: string;
}

/** See the file comment. */
export class AutoscaleStore {
  readonly #db: SqlDatabase;

  constructor(store: Store) {
    this.#db = store.database;
  }

  listPolicies(app?: string): AutoscalePolicy[] {
    const rows = (
      app === undefined
        ? this.#db.prepare('SELECT * FROM autoscale_policies ORDER BY app, type').all()
        : this.#db.prepare('SELECT * FROM autoscale_policies WHERE app = ? ORDER BY type').all(app)
    ) as { app: string; type: string; min: number; max: number; p95_ms: number | null; cpu_pct: number | null }[];
    return rows.map((r) => ({ app: r.app, type: r.type, min: r.min, max: r.max, p95Ms: r.p95_ms, cpuPct: r.cpu_pct }));
  }

  setPolicy(p: AutoscalePolicy, now: number): void {
    this.#db
      .prepare(
        `INSERT INTO autoscale_policies (app, type, min, max, p95_ms, cpu_pct, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(app, type) DO UPDATE SET min = excluded.min, max = excluded.max, p95_ms = excluded.p95_ms, cpu_pct = excluded.cpu_pct`,
      )
      .run(p.app, p.type, p.min, p.max, p.p95Ms, p.cpuPct, now);
  }

  /** True when there was a policy. */
  deletePolicy(app: string, type: string): boolean {
    return this.#db.prepare('DELETE FROM autoscale_policies WHERE app = ? AND type = ?').run(app, type).changes > 0;
  }

  addDecision(d: AutoscaleDecision): void {
    this.#db
      .prepare('INSERT INTO autoscale_decisions (ts, app, type, from_quantity, to_quantity, reason) VALUES (?, ?, ?, ?, ?, ?)')
      .run(d.ts, d.app, d.type, d.from, d.to, d.reason);
  }

  /** Newest first. */
  listDecisions(app: string, limit = 20): AutoscaleDecision[] {
    const rows = this.#db
      .prepare('SELECT ts, app, type, from_quantity, to_quantity, reason FROM autoscale_decisions WHERE app = ? ORDER BY id DESC LIMIT ?')
      .all(app, limit) as { ts: number; app: string; type: string; from_quantity: number; to_quantity: number; reason: string }[];
    return rows.map((r) => ({ ts: r.ts, app: r.app, type: r.type, from: r.from_quantity, to: r.to_quantity, reason: r.reason }));
  }
}
