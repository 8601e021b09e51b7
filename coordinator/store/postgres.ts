/**
 * The PostgreSQL engine of store/sql.ts: one libpq connection (pg-native, synchronous like
 * better-sqlite3), server-side prepared statements, `?` placeholders rewritten to `$n`, BIGINT
 * and NUMERIC read back as numbers, nested transactions as savepoints. A lost connection (the
 * primary moved, a restart) is opened again on the next statement outside a transaction; inside
 * one, the transaction fails and is retried by whoever called it, as after any error.
 */
import { createRequire } from 'node:module';
import { HangarError, describeError } from '../../common/errors.js';
import {
  ConstraintError,
  type ConstraintKind,
  type SqlDatabase,
  type SqlRunResult,
  type SqlStatement,
  type SqlTransaction,
} from './sql.js';

/** The parts of pg-native (and its libpq handle) used here. */
interface NativeClient {
  connectSync(url: string): void;
  querySync(text: string, values?: (string | null)[]): Record<string, unknown>[];
  prepareSync(name: string, text: string, nParams: number): void;
  executeSync(name: string, values: (string | null)[]): Record<string, unknown>[];
  pq: { cmdTuples(): string; finish(): void; resultErrorFields(): { sqlState?: string } | undefined };
}

interface TypeParsers {
  setTypeParser(oid: number, parse: (text: string) => unknown): void;
  getTypeParser(oid: number, format?: string): (text: string) => unknown;
}

const require = createRequire(import.meta.url);

/**
 * Finished clients, kept reachable: libpq's binding closes its poll handle (embedded in the
 * client) asynchronously, and a client collected before that close completes crashes the process
 * (libuv's uv__finish_close assertion). Clients are finished only on close and reconnect: few.
 */
const finished: NativeClient[] = [];

function finish(client: NativeClient): void {
  client.pq.finish();
  finished.push(client);
}

/** int8 and numeric as JS numbers: every integer Hangar stores (Unix ms, sizes, counters) fits. */
function typeParsers(): TypeParsers {
  const types = require('pg-types') as TypeParsers;
  const own = Object.create(types) as TypeParsers;
  const parsers = new Map<number, (text: string) => unknown>([
    [20, Number],
    [1700, Number],
  ]);
  own.getTypeParser = (oid, format) => parsers.get(oid) ?? types.getTypeParser(oid, format);
  return own;
}

/** A statement as sent: its text with `$n` placeholders, and the names of `@name` ones in order. */
interface Translated {
  text: string;
  count: number;
  names: string[] | null;
}

/**
 * Rewrites `?` and `@name` placeholders (better-sqlite3's) to `$1…$n`, leaving quoted strings,
 * identifiers and comments alone. A name used twice is one parameter.
 */
export function numberPlaceholders(sql: string): Translated {
  let out = '';
  let n = 0;
  const names: string[] = [];
  for (let i = 0; i < sql.length; i++) {
    const c = sql[i] as string;
    if (c === "'" || c === '"') {
      const end = sql.indexOf(c, i + 1);
      const stop = end < 0 ? sql.length : end;
      out += sql.slice(i, stop + 1);
      i = stop;
    } else if (c === '-' && sql[i + 1] === '-') {
      const end = sql.indexOf('\n', i);
      const stop = end < 0 ? sql.length : end;
      out += sql.slice(i, stop);
      i = stop - 1;
    } else if (c === '?') {
      out += `$${++n}`;
    } else if (c === '@' && /[A-Za-z_]/.test(sql[i + 1] ?? '')) {
      const name = /^[A-Za-z_][A-Za-z0-9_]*/.exec(sql.slice(i + 1))?.[0] as string;
      let index = names.indexOf(name);
      if (index < 0) index = names.push(name) - 1;
      out += `$${index + 1}`;
      i += name.length;
    } else {
      out += c;
    }
  }
  if (n > 0 && names.length > 0) throw new Error(`a statement mixes ? and @name placeholders: ${sql}`);
  return { text: out, count: n || names.length, names: names.length > 0 ? names : null };
}

function encode(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (Buffer.isBuffer(value)) return `\\x${value.toString('hex')}`;
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint') return String(value);
  throw new TypeError(`cannot bind a value of type ${typeof value}: use a string, number, Buffer or null`);
}

/**
 * A PostgreSQL array literal of numbers or texts, bound as one parameter (`?::bigint[]`,
 * `?::text[]`): what `unnest` inserts of many rows in one statement take.
 */
export function arrayLiteral(values: readonly (number | string)[]): string {
  return `{${values.map((v) => (typeof v === 'number' ? String(v) : `"${v.replace(/["\\]/g, '\\$&')}"`)).join(',')}}`;
}

/** SQLSTATEs of the constraints {@link ConstraintError} stands for: unique_violation, foreign_key_violation. */
const CONSTRAINT_STATES: Record<string, ConstraintKind> = { '23505': 'unique', '23503': 'foreign_key' };

/** SQLSTATE classes of a connection that is gone: 08 (connection), 57P01–57P03 (shutdown). */
function connectionLost(err: unknown, client: NativeClient): boolean {
  const state = client.pq.resultErrorFields()?.sqlState;
  if (state !== undefined && (state.startsWith('08') || /^57P0[123]$/.test(state))) return true;
  return /server closed the connection|no connection to the server|terminating connection|connection .*(refused|reset|lost)|could not connect/i.test(
    describeError(err),
  );
}

export interface PostgresDatabaseOptions {
  url: string;
  /** SQL run on every new connection (session settings), after the built-in ones. */
  onConnect?: readonly string[];
}

export class PostgresDatabase implements SqlDatabase {
  readonly engine = 'postgres' as const;
  readonly #url: string;
  readonly #onConnect: string[];
  readonly #types = typeParsers();
  /** Translated text and statement name per SQL string. */
  readonly #statements = new Map<string, Translated & { name: string }>();
  /** Statement names prepared on the current connection. */
  #prepared = new Set<string>();
  #client: NativeClient | null = null;
  #depth = 0;
  #closed = false;
  #onError: ((err: unknown) => void) | null = null;

  constructor(options: PostgresDatabaseOptions) {
    this.#url = options.url;
    this.#onConnect = [...(options.onConnect ?? [])];
    this.#connection();
  }

  get open(): boolean {
    return !this.#closed;
  }

  /** Calls `fn` with every error a statement fails with (before it is thrown). */
  onError(fn: (err: unknown) => void): void {
    this.#onError = fn;
  }

  /** Runs `sql` now and again on every later connection (a session setting). */
  addSessionSetting(sql: string): void {
    this.#onConnect.push(sql);
    this.exec(sql);
  }

  prepare(sql: string): SqlStatement {
    let s = this.#statements.get(sql);
    if (!s) {
      s = { ...numberPlaceholders(sql), name: `hangar_${this.#statements.size + 1}` };
      this.#statements.set(sql, s);
    }
    return this.#statement(s, false);
  }

  #statement(s: Translated & { name: string }, plucked: boolean): SqlStatement {
    const rows = (params: unknown[]): Record<string, unknown>[] => this.#execute(s, params).rows;
    const first = (r: Record<string, unknown> | undefined): unknown => (plucked && r ? Object.values(r)[0] : r);
    return {
      run: (...params) => this.#execute(s, params).result,
      get: (...params) => first(rows(params)[0]),
      all: (...params) => (plucked ? rows(params).map((r) => Object.values(r)[0]) : rows(params)),
      pluck: () => this.#statement(s, true),
    };
  }

  #execute(s: Translated & { name: string }, params: unknown[]): { rows: Record<string, unknown>[]; result: SqlRunResult } {
    let values: (string | null)[];
    if (s.names) {
      const named = params[0] as Record<string, unknown> | undefined;
      if (params.length !== 1 || typeof named !== 'object' || named === null)
        throw new RangeError(`the statement takes named parameters: ${s.text}`);
      values = s.names.map((name) => {
        if (!(name in named)) throw new RangeError(`missing named parameter @${name}: ${s.text}`);
        return encode(named[name]);
      });
    } else {
      if (params.length !== s.count) throw new RangeError(`the statement takes ${s.count} parameters, ${params.length} given: ${s.text}`);
      values = params.map(encode);
    }
    return this.#withConnection((client) => {
      if (!this.#prepared.has(s.name)) {
        client.prepareSync(s.name, s.text, s.count);
        this.#prepared.add(s.name);
      }
      const rows = client.executeSync(s.name, values);
      return { rows, result: { changes: Number(client.pq.cmdTuples()) || 0 } };
    });
  }

  exec(sql: string): void {
    this.#withConnection((client) => client.querySync(sql));
  }

  transaction<T>(fn: () => T): SqlTransaction<T> {
    const run = (() => this.#inTransaction(fn)) as SqlTransaction<T>;
    run.immediate = run;
    return run;
  }

  #inTransaction<T>(fn: () => T): T {
    const depth = this.#depth;
    const savepoint = `hangar_sp_${depth}`;
    this.exec(depth === 0 ? 'BEGIN' : `SAVEPOINT ${savepoint}`);
    this.#depth++;
    try {
      const result = fn();
      this.#depth--;
      this.exec(depth === 0 ? 'COMMIT' : `RELEASE SAVEPOINT ${savepoint}`);
      return result;
    } catch (err) {
      this.#depth = depth;
      try {
        if (this.#client) this.exec(depth === 0 ? 'ROLLBACK' : `ROLLBACK TO SAVEPOINT ${savepoint}`);
      } catch {
        // The connection is gone: the server rolled the transaction back with it.
      }
      throw err;
    }
  }

  close(): void {
    this.#closed = true;
    if (this.#client) finish(this.#client);
    this.#client = null;
  }

  #connection(): NativeClient {
    if (this.#closed) throw new Error('the database is closed');
    if (this.#client) return this.#client;
    const Client = require('pg-native') as new (config: { types: TypeParsers }) => NativeClient;
    const client = new Client({ types: this.#types });
    try {
      client.connectSync(this.#url);
      for (const sql of ["SET client_min_messages = 'warning'", ...this.#onConnect]) client.querySync(sql);
    } catch (err) {
      finish(client);
      throw new HangarError(
        'DATABASE_UNAVAILABLE',
        `Cannot reach the PostgreSQL database (${describeError(err).trim().split('\n')[0]}); check that it runs and that --database-url is right.`,
        { cause: err },
      );
    }
    this.#client = client;
    this.#prepared = new Set();
    return client;
  }

  /** Runs `fn` on the connection; outside a transaction, a lost connection is opened again once. */
  #withConnection<T>(fn: (client: NativeClient) => T): T {
    const client = this.#connection();
    try {
      return fn(client);
    } catch (err) {
      this.#onError?.(err);
      const constraint = CONSTRAINT_STATES[client.pq.resultErrorFields()?.sqlState ?? ''];
      if (constraint) throw new ConstraintError(constraint, { cause: err });
      if (!connectionLost(err, client)) throw err;
      finish(client);
      this.#client = null;
      if (this.#depth > 0)
        throw new HangarError('DATABASE_UNAVAILABLE', 'The connection to PostgreSQL was lost in a transaction; try again.', { cause: err });
      return fn(this.#connection());
    }
  }
}
