/**
 * `hangar coordinator migrate`: copies a stopped coordinator's SQLite file into PostgreSQL, offline
 * (agents keep running their cached desired state meanwhile). The SQLite file is opened read-only
 * and never written; the target gets the PostgreSQL schema (postgres-migrations.ts), then every
 * table both schemas have is copied in one transaction, parents before children, in multi-row
 * INSERTs, and the row counts (and primary keys of the smaller tables) are compared before commit:
 * any difference rolls the whole copy back.
 *
 * Values are copied as they are: config values, add-on secrets and certificate keys stay sealed
 * with the data dir's `secret-key`, which every coordinator of the database needs a copy of.
 */
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { HangarError, describeError } from '../../common/errors.js';
import { MIGRATIONS } from './migrations.js';
import { DAY_PARTITIONED_TABLES, ensureDayPartitions, type DayPartitionedTable } from './postgres-partitions.js';
import { PostgresDatabase } from './postgres.js';
import { isPostgresUrl, type SqlDatabase } from './sql.js';
import { migrateDatabase } from './store.js';

/** Options of {@link migrateSqliteToPostgres}. */
export interface MigrateOptions {
  /** The coordinator's SQLite file (`DATA_DIR/hangar.db`). */
  from: string;
  /** `postgres://…` of an empty database (the schema is applied to it). */
  to: string;
  /** Rows per INSERT statement (fewer for wide tables: PostgreSQL takes at most 65535 parameters). Default 500. */
  batchRows?: number;
  /** Wall clock, Unix ms (the leader lease's expiry is compared with it). Default `Date.now`. */
  now?: () => number;
  /** Called before each table's copy starts and after every batch (`copied` rows so far of `total`). */
  onProgress?: (progress: { table: string; copied: number; total: number }) => void;
}

/** One copied table's rows on both sides, as verified before commit. */
export interface MigratedTable {
  table: string;
  sqliteRows: number;
  postgresRows: number;
  /** Whether the primary keys were compared too (tables small enough, with a primary key). */
  keysChecked: boolean;
}

/** What {@link migrateSqliteToPostgres} did. */
export interface MigrateResult {
  /** Copied tables, in copy order. */
  tables: MigratedTable[];
  /** Rows copied in all. */
  rows: number;
  /** Tables of the SQLite file left out, with why. */
  skipped: { table: string; reason: string }[];
  /** Columns of SQLite tables the PostgreSQL schema lacks (left out). */
  droppedColumns: { table: string; column: string }[];
  seconds: number;
}

/** Tables never copied: who is running (reset; every coordinator writes its own row). */
const RESET_TABLES: Record<string, string> = {
  coordinators: 'reset: each coordinator adds its own row when it starts',
};

/**
 * Tables whose rows the PostgreSQL migrations insert (the one-row lease and log usage): emptied
 * before the copy, and not counted as "data" when deciding whether the target is empty.
 */
const SEEDED_TABLES = new Set(['coordinator_lease', 'log_usage', 'coordinators']);

/**
 * The lease row starts free, but keeps its epoch: agents drop a leader whose epoch is older than
 * the highest they saw, so the first PostgreSQL leader must be elected above the SQLite one's.
 */
const ROW_TRANSFORMS: Record<string, (row: Map<string, unknown>) => void> = {
  coordinator_lease: (row) => {
    if (row.has('holder')) row.set('holder', null);
    if (row.has('expires_at')) row.set('expires_at', 0);
    if (row.has('api_url')) row.set('api_url', null);
    if (row.has('grpc_address')) row.set('grpc_address', null);
  },
};

/** Tables with at most this many rows also have their primary keys compared. */
const KEY_CHECK_MAX_ROWS = 200_000;

/** Most bound parameters per statement (PostgreSQL's protocol limit is 65535). */
const MAX_PARAMS = 60_000;

const DAY_MS = 86_400_000;

/** `url` with its password (and a `password=` query parameter) replaced by `****`: for messages. */
export function maskDatabaseUrl(url: string): string {
  let masked = url;
  try {
    const u = new URL(url);
    if (u.password) u.password = '****';
    if (u.searchParams.has('password')) u.searchParams.set('password', '****');
    masked = u.toString();
  } catch {
    masked = url.replace(/(\/\/[^:/@\s]*:)[^@\s]*@/, '$1****@');
  }
  return masked;
}

/** `text` with every occurrence of the URL's password replaced: for errors from libpq. */
function scrub(text: string, url: string): string {
  let password = '';
  try {
    const u = new URL(url);
    password = decodeURIComponent(u.password || u.searchParams.get('password') || '');
  } catch {
    password = '';
  }
  const out = text.split(url).join(maskDatabaseUrl(url));
  return password.length >= 1 ? out.split(password).join('****') : out;
}

function quote(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Opens the SQLite file read-only and checks it is a stopped coordinator's, at this build's schema. */
function openSource(path: string, now: number): Database.Database {
  if (!existsSync(path)) {
    throw new HangarError('BAD_INPUT', `There is no file ${path}; give --from the coordinator's hangar.db (in its --data-dir).`);
  }
  if (!statSync(path).isFile()) throw new HangarError('BAD_INPUT', `${path} is not a file; give --from the coordinator's hangar.db.`);
  let db: Database.Database;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
  } catch (err) {
    throw new HangarError('BAD_INPUT', `Could not open ${path} read-only (${describeError(err)}).`, { cause: err });
  }
  try {
    let tables: string[];
    try {
      tables = db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).pluck().all() as string[];
    } catch (err) {
      throw new HangarError(
        'BAD_INPUT',
        `${path} is not a SQLite database (${describeError(err)}); give --from the coordinator's hangar.db.`,
        {
          cause: err,
        },
      );
    }
    const version = db.pragma('user_version', { simple: true }) as number;
    if (!tables.includes('apps') || !tables.includes('releases') || version === 0) {
      throw new HangarError(
        'BAD_INPUT',
        `${path} is not a Hangar coordinator's database (no apps or releases tables); give --from DATA_DIR/hangar.db.`,
      );
    }
    if (version !== MIGRATIONS.length) {
      throw new HangarError(
        'BAD_INPUT',
        version < MIGRATIONS.length
          ? `${path} is at schema version ${version}, older than this Hangar's (${MIGRATIONS.length}): start and stop this version of the coordinator on it first, then migrate.`
          : `${path} is at schema version ${version}, newer than this Hangar's (${MIGRATIONS.length}): migrate it with the Hangar version that wrote it.`,
      );
    }
    if (tables.includes('coordinator_lease')) {
      const lease = db.prepare('SELECT holder, expires_at FROM coordinator_lease WHERE id = 1').get() as
        { holder: string | null; expires_at: number } | undefined;
      if (lease && lease.holder !== null && lease.expires_at > now) {
        throw new HangarError(
          'CONFLICT',
          `A coordinator (${lease.holder}) is running on ${path} (it holds the leader lease): stop the coordinator first, then migrate.`,
        );
      }
    }
    if (tables.includes('coordinators')) {
      const recent = db
        .prepare('SELECT name FROM coordinators WHERE last_seen > ?')
        .pluck()
        .all(now - 30_000) as string[];
      if (recent.length > 0) {
        throw new HangarError(
          'CONFLICT',
          `A coordinator (${recent.join(', ')}) was running on ${path} in the last 30 s: stop the coordinator first (wait 30 s after a crash), then migrate.`,
        );
      }
    }
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

/** Connects to the target and checks it is PostgreSQL and empty of anything but Hangar's empty schema. */
function openTarget(url: string): PostgresDatabase {
  if (!isPostgresUrl(url)) {
    throw new HangarError(
      'BAD_INPUT',
      `--to must be a PostgreSQL URL (postgres://user:password@host:5432/db), not "${maskDatabaseUrl(url)}".`,
    );
  }
  let db: PostgresDatabase;
  try {
    db = new PostgresDatabase({ url });
  } catch (err) {
    throw new HangarError(
      'DATABASE_UNAVAILABLE',
      `Cannot reach PostgreSQL at ${maskDatabaseUrl(url)} (${scrub(
        describeError((err as Error).cause ?? err)
          .trim()
          .split('\n')[0] ?? '',
        url,
      )}); check that it runs and that the URL is right.`,
      { cause: err },
    );
  }
  return db;
}

/** Tables (not partitions) of the target's current schema. */
function postgresTables(db: SqlDatabase): string[] {
  return db
    .prepare(
      `SELECT c.relname FROM pg_class c
        WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition`,
    )
    .pluck()
    .all() as string[];
}

function refuseNonEmpty(db: SqlDatabase, url: string): void {
  const tables = postgresTables(db);
  if (tables.length === 0) return;
  if (!tables.includes('hangar_schema')) {
    throw new HangarError(
      'CONFLICT',
      `The PostgreSQL database ${maskDatabaseUrl(url)} already has tables (${tables.slice(0, 5).join(', ')}${tables.length > 5 ? ', …' : ''}) and is not a Hangar database: give an empty database (createdb hangar) to --to.`,
    );
  }
  const holding: string[] = [];
  for (const t of tables) {
    if (SEEDED_TABLES.has(t) || t === 'hangar_schema') continue;
    const n = Number(
      db
        .prepare(`SELECT count(*) FROM ${quote(t)}`)
        .pluck()
        .get(),
    );
    if (n > 0) holding.push(`${t}: ${n}`);
  }
  if (holding.length > 0) {
    throw new HangarError(
      'CONFLICT',
      `The PostgreSQL database ${maskDatabaseUrl(url)} already holds Hangar data (${holding.slice(0, 4).join(', ')}${holding.length > 4 ? ', …' : ''}); nothing was copied. Migrate into an empty database.`,
    );
  }
}

interface TablePlan {
  table: string;
  columns: string[];
  /** Per column: the target is bytea (Buffers stay bytes; elsewhere they become UTF-8 text). */
  bytea: boolean[];
  primaryKey: string[];
}

/** Parents before children: Kahn's order over the foreign keys of both schemas. */
function foreignKeyOrder(tables: string[], parentsOf: Map<string, Set<string>>): string[] {
  const order: string[] = [];
  const done = new Set<string>();
  const pending = [...tables].sort();
  while (pending.length > 0) {
    const i = pending.findIndex((t) => [...(parentsOf.get(t) ?? [])].every((p) => p === t || done.has(p) || !tables.includes(p)));
    if (i < 0) throw new HangarError('INTERNAL', `The foreign keys of ${pending.join(', ')} form a cycle; they cannot be copied in order.`);
    const [t] = pending.splice(i, 1) as [string];
    order.push(t);
    done.add(t);
  }
  return order;
}

function plan(
  source: Database.Database,
  target: SqlDatabase,
): { plans: TablePlan[]; skipped: MigrateResult['skipped']; dropped: MigrateResult['droppedColumns'] } {
  const sqliteTables = source.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`).pluck().all() as string[];
  const pgTables = new Set(postgresTables(target));
  const skipped: MigrateResult['skipped'] = [];
  const dropped: MigrateResult['droppedColumns'] = [];
  const parentsOf = new Map<string, Set<string>>();
  const candidates: string[] = [];
  for (const t of sqliteTables) {
    if (t.startsWith('sqlite_')) continue;
    const reset = RESET_TABLES[t];
    if (reset !== undefined) skipped.push({ table: t, reason: reset });
    else if (t === 'hangar_schema') skipped.push({ table: t, reason: "the PostgreSQL schema's own version" });
    else if (!pgTables.has(t)) skipped.push({ table: t, reason: 'not in the PostgreSQL schema (SQLite only)' });
    else candidates.push(t);
  }
  for (const t of candidates) {
    const parents = new Set<string>();
    for (const fk of source.prepare(`PRAGMA foreign_key_list(${quote(t)})`).all() as { table: string }[]) parents.add(fk.table);
    parentsOf.set(t, parents);
  }
  const pgFks = target
    .prepare(
      `SELECT c.relname AS child, p.relname AS parent FROM pg_constraint k
         JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class p ON p.oid = k.confrelid
        WHERE k.contype = 'f' AND c.relnamespace = current_schema()::regnamespace`,
    )
    .all() as { child: string; parent: string }[];
  for (const fk of pgFks) parentsOf.get(fk.child)?.add(fk.parent);
  const plans: TablePlan[] = [];
  for (const t of foreignKeyOrder(candidates, parentsOf)) {
    const info = source.prepare(`PRAGMA table_info(${quote(t)})`).all() as { name: string; pk: number }[];
    const pgColumns = new Map(
      (
        target
          .prepare(`SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?`)
          .all(t) as { column_name: string; data_type: string }[]
      ).map((c) => [c.column_name, c.data_type]),
    );
    const columns: string[] = [];
    for (const c of info) {
      if (pgColumns.has(c.name)) columns.push(c.name);
      else dropped.push({ table: t, column: c.name });
    }
    const primaryKey = info
      .filter((c) => c.pk > 0)
      .sort((a, b) => a.pk - b.pk)
      .map((c) => c.name)
      .filter((c) => columns.includes(c));
    plans.push({ table: t, columns, bytea: columns.map((c) => pgColumns.get(c) === 'bytea'), primaryKey });
  }
  return { plans, skipped, dropped };
}

/** A row as bound: Buffers into text columns as UTF-8 text (SQLite does not enforce column types). */
function bindValue(value: unknown, bytea: boolean): unknown {
  if (Buffer.isBuffer(value) && !bytea) return value.toString('utf8');
  return value;
}

/** SHA-256 of a table's primary key tuples, sorted (the same on both sides whatever the collation). */
function keyDigest(rows: unknown[][]): string {
  const text = (v: unknown): string | null => {
    if (v === null || v === undefined) return null;
    if (Buffer.isBuffer(v)) return v.toString('hex');
    return typeof v === 'string' || typeof v === 'number' || typeof v === 'bigint' ? String(v) : JSON.stringify(v);
  };
  const keys = rows.map((r) => JSON.stringify(r.map(text)));
  keys.sort();
  const hash = createHash('sha256');
  for (const k of keys) hash.update(k).update('\n');
  return hash.digest('hex');
}

/** Creates the day partitions the log and metric rows of `table` need (one per day that has rows). */
function ensurePartitionsFor(source: Database.Database, target: SqlDatabase, table: DayPartitionedTable): void {
  const column = DAY_PARTITIONED_TABLES[table];
  const days = source
    .prepare(`SELECT DISTINCT CAST(${quote(column)} / ${DAY_MS} AS INTEGER) FROM ${quote(table)} WHERE ${quote(column)} >= 0`)
    .pluck()
    .all() as number[];
  const min = source
    .prepare(`SELECT min(${quote(column)}) FROM ${quote(table)}`)
    .pluck()
    .get() as number | null;
  if (min !== null && min < 0)
    throw new HangarError('BAD_INPUT', `${table} holds rows dated before 1970 (${column} ${min}); they cannot be partitioned by day.`);
  for (const day of days) ensureDayPartitions(target, table, day * DAY_MS, day * DAY_MS);
}

/** Copies one table in multi-row INSERTs and counts (and checks the keys of) what arrived. */
function copyTable(source: Database.Database, db: SqlDatabase, t: TablePlan, options: MigrateOptions): MigratedTable {
  const count = (sql: string, on: { prepare(sql: string): { pluck(): { get(): unknown } } }) => Number(on.prepare(sql).pluck().get());
  const total = count(`SELECT count(*) FROM ${quote(t.table)}`, source);
  options.onProgress?.({ table: t.table, copied: 0, total });
  if (t.columns.length === 0) return { table: t.table, sqliteRows: total, postgresRows: 0, keysChecked: false };
  const perStatement = Math.max(1, Math.min(options.batchRows ?? 500, Math.floor(MAX_PARAMS / t.columns.length)));
  const columnList = t.columns.map(quote).join(', ');
  const tuple = `(${t.columns.map(() => '?').join(', ')})`;
  const insert = (n: number) => db.prepare(`INSERT INTO ${quote(t.table)} (${columnList}) VALUES ${Array(n).fill(tuple).join(', ')}`);
  const full = insert(perStatement);
  const transform = ROW_TRANSFORMS[t.table];
  // 64-bit integers as bigints: nothing is rounded on the way through a JS number.
  const read = source
    .prepare(`SELECT ${columnList} FROM ${quote(t.table)}`)
    .raw(true)
    .safeIntegers(true);
  let params: unknown[] = [];
  let pending = 0;
  let copied = 0;
  const flush = () => {
    if (pending === 0) return;
    (pending === perStatement ? full : insert(pending)).run(...params);
    copied += pending;
    params = [];
    pending = 0;
    options.onProgress?.({ table: t.table, copied, total });
  };
  for (const raw of read.iterate() as IterableIterator<unknown[]>) {
    let row = raw;
    if (transform) {
      const m = new Map(t.columns.map((c, i) => [c, raw[i]]));
      transform(m);
      row = t.columns.map((c) => m.get(c));
    }
    for (let i = 0; i < row.length; i++) params.push(bindValue(row[i], t.bytea[i] ?? false));
    if (++pending === perStatement) flush();
  }
  flush();
  const postgresRows = count(`SELECT count(*) FROM ${quote(t.table)}`, db);
  let keysChecked = false;
  if (postgresRows === total && t.primaryKey.length > 0 && total <= KEY_CHECK_MAX_ROWS) {
    const keyList = t.primaryKey.map(quote).join(', ');
    const mine = keyDigest(
      source
        .prepare(`SELECT ${keyList} FROM ${quote(t.table)}`)
        .raw(true)
        .safeIntegers(true)
        .all() as unknown[][],
    );
    const theirs = keyDigest(
      (db.prepare(`SELECT ${keyList} FROM ${quote(t.table)}`).all() as Record<string, unknown>[]).map((r) => t.primaryKey.map((k) => r[k])),
    );
    if (mine !== theirs) {
      throw new HangarError(
        'INTERNAL',
        `The primary keys of ${t.table} differ between SQLite and PostgreSQL after the copy; nothing was committed.`,
      );
    }
    keysChecked = true;
  }
  return { table: t.table, sqliteRows: total, postgresRows, keysChecked };
}

/**
 * Copies the coordinator's SQLite file `from` into the PostgreSQL database `to` and verifies it;
 * see the file comment. The SQLite file is never written.
 *
 * @throws HangarError `BAD_INPUT` (missing file, not a Hangar database, old schema, not a
 *   postgres URL), `CONFLICT` (a coordinator runs on the file; the target holds data),
 *   `DATABASE_UNAVAILABLE` (cannot reach PostgreSQL), `INTERNAL` (a row refused, counts or keys
 *   differ: all rolled back).
 */
export function migrateSqliteToPostgres(options: MigrateOptions): MigrateResult {
  const started = performance.now();
  const source = openSource(options.from, (options.now ?? Date.now)());
  let target: PostgresDatabase | null = null;
  let current = '';
  try {
    target = openTarget(options.to);
    const db = target;
    refuseNonEmpty(db, options.to);
    migrateDatabase(db);
    const { plans, skipped, dropped } = plan(source, db);
    const tables: MigratedTable[] = [];
    db.transaction(() => {
      for (const t of plans) {
        current = t.table;
        if (t.table in DAY_PARTITIONED_TABLES) ensurePartitionsFor(source, db, t.table as DayPartitionedTable);
      }
      // The migrations' own rows make way for SQLite's (children first).
      for (const t of [...plans].reverse()) if (SEEDED_TABLES.has(t.table)) db.exec(`DELETE FROM ${quote(t.table)}`);
      for (const t of plans) {
        current = t.table;
        tables.push(copyTable(source, db, t, options));
      }
      current = '';
      const mismatched = tables.filter((t) => t.sqliteRows !== t.postgresRows);
      if (mismatched.length > 0) {
        throw new HangarError(
          'INTERNAL',
          `The row counts differ after the copy (${mismatched.map((t) => `${t.table}: ${t.sqliteRows} in SQLite, ${t.postgresRows} in PostgreSQL`).join('; ')}); nothing was committed.`,
          { details: { tables: mismatched } },
        );
      }
      resetSequences(
        db,
        plans.map((p) => p.table),
      );
    })();
    const rows = tables.reduce((n, t) => n + t.postgresRows, 0);
    return { tables, rows, skipped, droppedColumns: dropped, seconds: (performance.now() - started) / 1000 };
  } catch (err) {
    if (err instanceof HangarError) throw err;
    const where = current === '' ? '' : ` at table ${current}`;
    throw new HangarError(
      'INTERNAL',
      `The copy into ${maskDatabaseUrl(options.to)} failed${where} and was rolled back (${scrub(describeError(err), options.to).trim()}); the SQLite file is unchanged.`,
      { cause: err },
    );
  } finally {
    source.close();
    target?.close();
  }
}

/** Identity and serial columns continue after the highest copied value. */
function resetSequences(db: SqlDatabase, tables: string[]): void {
  const columns = db
    .prepare(
      `SELECT table_name, column_name FROM information_schema.columns
        WHERE table_schema = current_schema() AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')`,
    )
    .all() as { table_name: string; column_name: string }[];
  for (const c of columns) {
    if (!tables.includes(c.table_name)) continue;
    const sequence = db.prepare('SELECT pg_get_serial_sequence(?, ?)').pluck().get(quote(c.table_name), c.column_name) as string | null;
    if (sequence === null) continue;
    const max = db
      .prepare(`SELECT max(${quote(c.column_name)}) FROM ${quote(c.table_name)}`)
      .pluck()
      .get() as number | null;
    // is_called false: the next value is exactly the one given.
    db.prepare('SELECT setval(?::regclass, ?, false)').get(sequence, (max ?? 0) + 1);
  }
}
