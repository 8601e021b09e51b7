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
import { HangarError } from '../../common/errors.js';

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

/** The integrity rule a write broke: a unique key (or primary key), or a foreign key. */
export type ConstraintKind = 'unique' | 'foreign_key';

/**
 * A write that broke a unique or foreign-key constraint, the same on both engines (`CONFLICT`,
 * the driver's error as `cause`): stores turn it into their own codes (`APP_EXISTS`, …) where
 * one fits.
 */
export class ConstraintError extends HangarError {
  readonly constraint: ConstraintKind;

  constructor(constraint: ConstraintKind, options: { cause: unknown }) {
    super(
      'CONFLICT',
      constraint === 'unique'
        ? 'That record exists already; pick another name or update the existing one.'
        : 'That record refers to one that does not exist (or is still referred to); create or remove that one first.',
      options,
    );
    this.constraint = constraint;
  }
}

/** True for a {@link ConstraintError} (of `kind`, when given). */
export function isConstraintError(err: unknown, kind?: ConstraintKind): err is ConstraintError {
  return err instanceof ConstraintError && (kind === undefined || err.constraint === kind);
}

/** better-sqlite3's extended result codes of the constraints {@link ConstraintError} stands for. */
const SQLITE_CONSTRAINTS: Record<string, ConstraintKind> = {
  SQLITE_CONSTRAINT_UNIQUE: 'unique',
  SQLITE_CONSTRAINT_PRIMARYKEY: 'unique',
  SQLITE_CONSTRAINT_FOREIGNKEY: 'foreign_key',
};

function sqliteError(err: unknown): unknown {
  const kind = SQLITE_CONSTRAINTS[(err as { code?: unknown } | null)?.code as string];
  return kind ? new ConstraintError(kind, { cause: err }) : err;
}

/** A better-sqlite3 statement whose constraint errors are {@link ConstraintError}s. */
function sqliteStatement(stmt: Database.Statement): SqlStatement {
  const guard =
    <A extends unknown[], R>(fn: (...args: A) => R) =>
    (...args: A): R => {
      try {
        return fn(...args);
      } catch (err) {
        throw sqliteError(err);
      }
    };
  return {
    run: guard((...params: unknown[]) => stmt.run(...params)),
    get: guard((...params: unknown[]) => stmt.get(...params)),
    all: guard((...params: unknown[]) => stmt.all(...params)),
    pluck: () => sqliteStatement(stmt.pluck()),
  };
}

/** Where a coordinator keeps its state: a SQLite file, or a PostgreSQL URL. */
export type DatabaseLocation = { engine: 'sqlite'; path: string } | { engine: 'postgres'; url: string };

/** True for a `postgres://` or `postgresql://` URL. */
export function isPostgresUrl(value: string): boolean {
  return /^postgres(ql)?:\/\//i.test(value);
}

/** SQLite through better-sqlite3: its statements, with constraint errors as {@link ConstraintError}s. */
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
    return sqliteStatement(this.raw.prepare(sql));
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
