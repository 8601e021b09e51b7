/**
 * The one SQL surface the coordinator's stores are written against, with two engines: SQLite
 * (better-sqlite3, embedded, the default) and PostgreSQL (store/postgres.ts, for several
 * coordinators on one database). Both are synchronous, as better-sqlite3 is: a store method runs
 * its statements and transaction in one go, so no other request interleaves with it.
 *
 * The SQL is the common dialect of the two: `?` placeholders, `ON CONFLICT … DO …` upserts,
 * `RETURNING`, `COALESCE`, integers as 64-bit numbers. What differs (DDL, full-text search,
 * partitions, locks) lives in per-engine code and migrations.
 */
import Database from 'better-sqlite3';

export type SqlEngine = 'sqlite' | 'postgres';

/** A value bound to a placeholder. */
export type SqlValue = string | number | bigint | Buffer | null;

export interface SqlRunResult {
  /** Rows inserted, updated or deleted. */
  changes: number;
}

/**
 * A prepared statement; rows come back as objects keyed by column name. Parameters are
 * {@link SqlValue}s in placeholder order, or one object for `@name` placeholders.
 */
export interface SqlStatement {
  run(...params: unknown[]): SqlRunResult;
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
  /** The statement returning only each row's first column. */
  pluck(): SqlStatement;
}

/** A transaction around `fn`: call it to run; `.immediate()` takes the write lock up front. */
export interface SqlTransaction<T> {
  (): T;
  immediate(): T;
}

export interface SqlDatabase {
  readonly engine: SqlEngine;
  readonly open: boolean;
  prepare(sql: string): SqlStatement;
  /** Runs one or more statements without parameters. */
  exec(sql: string): void;
  /** Nested calls are savepoints inside the outer transaction. */
  transaction<T>(fn: () => T): SqlTransaction<T>;
  close(): void;
}

/** Where a coordinator keeps its state: a SQLite file, or a PostgreSQL URL. */
export type DatabaseLocation = { engine: 'sqlite'; path: string } | { engine: 'postgres'; url: string };

/** True for a `postgres://` or `postgresql://` URL. */
export function isPostgresUrl(value: string): boolean {
  return /^postgres(ql)?:\/\//i.test(value);
}

/** SQLite through better-sqlite3: the statements are better-sqlite3's own. */
export class SqliteDatabase implements SqlDatabase {
  readonly engine = 'sqlite' as const;
  /** For what only SQLite has (pragmas, functions, ATTACH): the stores that need it. */
  readonly raw: Database.Database;

  constructor(path: string, options: { busyTimeoutMs?: number } = {}) {
    this.raw = new Database(path);
    this.raw.pragma('journal_mode = WAL');
    this.raw.pragma('synchronous = NORMAL');
    this.raw.pragma('foreign_keys = ON');
    this.raw.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
    // Overwritten and deleted cells are zeroed: no clear config value survives in free pages.
    this.raw.pragma('secure_delete = ON');
  }

  get open(): boolean {
    return this.raw.open;
  }

  prepare(sql: string): SqlStatement {
    return this.raw.prepare(sql);
  }

  exec(sql: string): void {
    this.raw.exec(sql);
  }

  transaction<T>(fn: () => T): SqlTransaction<T> {
    const t = this.raw.transaction(fn);
    const run = (() => t()) as SqlTransaction<T>;
    run.immediate = () => t.immediate();
    return run;
  }

  close(): void {
    if (this.raw.open) this.raw.close();
  }
}
