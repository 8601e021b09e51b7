/**
 * Day partitions of the PostgreSQL log and metric tables (postgres-migrations.ts step 2): each
 * partitioned table holds one child per UTC day, named `<table>_YYYYMMDD`, covering
 * [day start, next day start) in Unix ms of its range column. Stores create the partitions a write
 * needs ahead of it, and age retention drops whole days instead of deleting rows.
 *
 * Writes always go through the parent table: the write fence's statement triggers sit on parents
 * (a direct write to a child would not be fenced), and a `DROP` fires no trigger at all, so a
 * caller that drops partitions checks its leader epoch itself first.
 */
import { HangarError } from '../../common/errors.js';
import { FENCED_MESSAGE, isFencedError } from '../ha/write-fence.js';
import type { SqlDatabase } from './sql.js';

/** The partitioned tables and the column each is ranged on. */
export const DAY_PARTITIONED_TABLES = {
  log_lines: 'ts',
  metric_samples: 'ts',
  metric_rollups: 'minute',
} as const;

export type DayPartitionedTable = keyof typeof DAY_PARTITIONED_TABLES;

/** One UTC day, ms. */
export const DAY_MS = 86_400_000;

/** The start of the UTC day holding `ms`. */
export function dayStart(ms: number): number {
  return Math.floor(ms / DAY_MS) * DAY_MS;
}

/** The child table's name for the UTC day starting at `start`. */
export function partitionName(table: DayPartitionedTable, start: number): string {
  const d = new Date(start);
  const yyyymmdd = `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}${String(d.getUTCDate()).padStart(2, '0')}`;
  return `${table}_${yyyymmdd}`;
}

/**
 * Creates every missing day partition of `table` from the day of `fromMs` to the day of `toMs`,
 * both included. Idempotent and safe beside another coordinator doing the same (`IF NOT EXISTS`
 * under an advisory lock per table).
 */
export function ensureDayPartitions(db: SqlDatabase, table: DayPartitionedTable, fromMs: number, toMs: number): void {
  if (db.engine !== 'postgres') throw new Error('day partitions exist only on PostgreSQL');
  const first = dayStart(Math.min(fromMs, toMs));
  const last = dayStart(Math.max(fromMs, toMs));
  const existing = new Set(existingDayPartitions(db, table).map((p) => p.start));
  const missing: number[] = [];
  for (let start = first; start <= last; start += DAY_MS) if (!existing.has(start)) missing.push(start);
  if (missing.length === 0) return;
  db.transaction(() => {
    db.prepare('SELECT pg_advisory_xact_lock(7081003, ?)').get(Object.keys(DAY_PARTITIONED_TABLES).indexOf(table));
    for (const start of missing) {
      db.exec(
        `CREATE TABLE IF NOT EXISTS ${partitionName(table, start)} PARTITION OF ${table} FOR VALUES FROM (${start}) TO (${start + DAY_MS})`,
      );
    }
  })();
}

/** The day partitions of `table`, oldest first. */
export function existingDayPartitions(db: SqlDatabase, table: DayPartitionedTable): { name: string; start: number }[] {
  const names = db
    .prepare(
      `SELECT c.relname AS name FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid
         JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = ? AND p.relnamespace = current_schema()::regnamespace`,
    )
    .pluck()
    .all(table) as string[];
  const days: { name: string; start: number }[] = [];
  const pattern = new RegExp(`^${table}_(\\d{4})(\\d{2})(\\d{2})$`);
  for (const name of names) {
    const m = pattern.exec(name);
    if (m) days.push({ name, start: Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) });
  }
  return days.sort((a, b) => a.start - b.start);
}

/**
 * Drops every day partition of `table` that ends at or before `beforeMs` (whole days only) and
 * returns the names dropped. A `DROP` is not fenced: the caller checks it still leads first.
 */
export function dropDayPartitionsBefore(db: SqlDatabase, table: DayPartitionedTable, beforeMs: number): string[] {
  const dropped: string[] = [];
  for (const p of existingDayPartitions(db, table)) {
    if (p.start + DAY_MS > beforeMs) break;
    db.exec(`DROP TABLE IF EXISTS ${p.name}`);
    dropped.push(p.name);
  }
  return dropped;
}

/** The leader epoch a store's partition drops run under, and what to call when another coordinator leads. */
export interface PartitionFence {
  epoch: number;
  onFenced: () => void;
}

/**
 * Runs `fn` (partition drops, say) in one transaction that first checks the lease row still
 * carries the fence's epoch, holding it `FOR SHARE` so that no other coordinator takes the lease
 * over until the transaction is done: what `fn` does is not fenced otherwise. No fence is a
 * coordinator alone on its database (not fenced, as its writes are not). Throws `NOT_LEADER`
 * (a fenced error) when another coordinator leads, after calling `onFenced` (as for a fenced
 * write inside `fn`).
 */
export function asLeader<T>(db: SqlDatabase, fence: PartitionFence | undefined, fn: () => T): T {
  try {
    return db.transaction(() => {
      if (fence !== undefined) {
        const current = db.prepare('SELECT epoch FROM coordinator_lease WHERE id = 1 FOR SHARE').pluck().get() as number | undefined;
        if (current !== fence.epoch) {
          throw new HangarError(
            'NOT_LEADER',
            `${FENCED_MESSAGE}: the lease carries epoch ${String(current)}, this coordinator's is ${fence.epoch}; nothing was dropped`,
          );
        }
      }
      return fn();
    })();
  } catch (err) {
    if (isFencedError(err)) fence?.onFenced();
    throw err;
  }
}

/**
 * The day partitions of one table known to exist, so that a write creates the ones it needs
 * without asking the database each time: a lookup per row, a `CREATE` only for a new day.
 */
export class DayPartitionSet {
  readonly #db: SqlDatabase;
  readonly #table: DayPartitionedTable;
  #days: Set<number> | null = null;

  constructor(db: SqlDatabase, table: DayPartitionedTable) {
    this.#db = db;
    this.#table = table;
  }

  /** Creates the missing partitions holding each of `times` (Unix ms). Call outside a transaction. */
  ensure(times: Iterable<number>): void {
    this.#days ??= new Set(existingDayPartitions(this.#db, this.#table).map((p) => p.start));
    const days = this.#days;
    let missing: Set<number> | null = null;
    for (const t of times) {
      const day = dayStart(t);
      if (!days.has(day)) (missing ??= new Set()).add(day);
    }
    if (!missing) return;
    for (const day of missing) {
      ensureDayPartitions(this.#db, this.#table, day, day);
      days.add(day);
    }
  }

  /** Today's and tomorrow's partitions, made ahead of the writes that need them. */
  ensureAhead(now: number): void {
    this.ensure([now, now + DAY_MS]);
  }

  /** Forgets what it knew (partitions were dropped): read again on the next {@link ensure}. */
  reset(): void {
    this.#days = null;
  }
}
