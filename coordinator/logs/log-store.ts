import Database from 'better-sqlite3';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import type { ErrorGroupView, LogLineView } from '../../common/api-types.js';
import { installWriteFence } from '../ha/write-fence.js';
import { logSearchSchema } from './log-search.js';

/** A line as the agent sent it. */
export interface IncomingLogLine {
  seq: number;
  ts: number;
  app: string;
  source: string;
  stream: string;
  line: string;
}

/** A stored line. */
export interface StoredLogLine {
  id: number;
  ts: number;
  app: string;
  source: string;
  stream: 'stdout' | 'stderr';
  agent: string;
  line: string;
}

/** Filters of a log query. */
export interface LogQuery {
  app: string;
  /** Most lines, newest kept. */
  n: number;
  /** A process type (`web`: every web.N), an instance (`web.1`) or `router|build|release|hangar`. */
  source?: string;
  /** Only lines at or after this Unix ms. */
  since?: number;
  /** Only lines at or before this Unix ms. */
  until?: number;
  /** Only lines containing this text (case-insensitive for ASCII). */
  grep?: string;
}

/** Options of {@link LogStore}. */
export interface LogStoreOptions {
  /** The coordinator's SQLite file (its migrations applied by the Store). */
  path: string;
  /** Lines older than this are deleted, ms. Default 7 days. */
  maxAgeMs?: number;
  /**
   * Beyond this many bytes of stored log lines ({@link lineBytes} each; other tables sharing the
   * file do not count), the oldest lines are deleted. Default 1 GiB.
   */
  maxBytes?: number;
  /**
   * The grep index's own file (filled by {@link LogIndexer} in the background). Default
   * `log-search.db` beside `path`.
   */
  searchPath?: string;
  /** The leader epoch every write of this connection is fenced to (see `StoreOptions.fence`). Default: none. */
  fence?: { epoch: number; onFenced: () => void };
}

/** What a row costs beyond its text: its id, seq, ts, fd and index entries, roughly. */
const ROW_OVERHEAD_BYTES = 48;

/**
 * Bytes one line counts for size retention. Migration 7 seeds the running total with the same
 * formula in SQL ({@link LINE_BYTES_SQL}); the two must agree.
 */
export function lineBytes(l: { app: string; source: string; line: string }): number {
  return Buffer.byteLength(l.line) + Buffer.byteLength(l.app) + Buffer.byteLength(l.source) + ROW_OVERHEAD_BYTES;
}

/** {@link lineBytes} of a `log_lines` row, in SQL. */
const LINE_BYTES_SQL = `length(CAST(line AS BLOB)) + length(CAST(app AS BLOB)) + length(CAST(source AS BLOB)) + ${ROW_OVERHEAD_BYTES}`;

/** Line ids in (`after`, `to`]; either end open when left out. */
/** Where a page of a long query continues: lines with ids in (`after`, `to`], `left` more at most. */
export interface LogCursor {
  after: number;
  to: number;
  left: number;
}

/** One page of {@link LogStore.page}. */
export interface LogPage {
  lines: StoredLogLine[];
  /** Where the next page starts (send the same filters again); null on the last page. */
  next: LogCursor | null;
}

/** Most trigrams of a `--grep` needle looked up in the index; the LIKE on each row is exact anyway. */
const MAX_TRIGRAMS = 8;

/**
 * The FTS5 query (trigram tokens, ANDed) that finds every line containing `needle` and maybe a few
 * more; null when the needle is shorter than a trigram (the query scans instead).
 */
export function trigramQuery(needle: string): string | null {
  const chars = Array.from(needle);
  if (chars.length < 3) return null;
  const all = new Set<string>();
  for (let i = 0; i + 3 <= chars.length; i++) all.add(chars.slice(i, i + 3).join(''));
  const list = [...all];
  // Spread over the needle: its first and last trigrams and evenly between.
  const picked =
    list.length <= MAX_TRIGRAMS
      ? list
      : Array.from({ length: MAX_TRIGRAMS }, (_, k) => list[Math.round((k * (list.length - 1)) / (MAX_TRIGRAMS - 1))] as string);
  return [...new Set(picked)].map((t) => `"${t.replace(/"/g, '""')}"`).join(' AND ');
}

/** Rows per multi-row INSERT. */
const INSERT_CHUNK = 32;

/** Prefix of the structured lines the agent's Python hook writes (see agent/error-hook.ts). */
export const ERROR_LINE_PREFIX = 'hangar-error ';

const errorRecordSchema = z.object({
  type: z.string().min(1).max(500),
  message: z.string().max(10_000).default(''),
  file: z.string().max(2000).default(''),
  line: z.number().int().default(0),
  function: z.string().max(500).default(''),
  traceback: z.string().max(100_000).default(''),
  release: z.string().max(50).default(''),
  method: z.string().max(20).default(''),
  path: z.string().max(4000).default(''),
});

/** Parses a `hangar-error {json}` line; null when it is not one. */
export function parseErrorLine(line: string): z.infer<typeof errorRecordSchema> | null {
  if (!line.startsWith(ERROR_LINE_PREFIX)) return null;
  try {
    const parsed = errorRecordSchema.safeParse(JSON.parse(line.slice(ERROR_LINE_PREFIX.length)));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/** The error group a `hangar-error` line counts in, as the `log_errors` upsert binds it. */
export function errorGroupRow(
  l: { app: string; ts: number },
  error: NonNullable<ReturnType<typeof parseErrorLine>>,
): Record<string, unknown> {
  const location = `${error.file}:${error.line}:${error.function}`;
  return {
    app: l.app,
    fingerprint: `${error.type}|${location}`,
    type: error.type,
    location,
    message: error.message,
    ts: l.ts,
    release: error.release,
    traceback: error.traceback,
  };
}

/** An app's error groups, most recently seen first (both engines). */
export const ERROR_GROUPS_SQL =
  'SELECT type, location, message, count, first_seen, last_seen, release, traceback FROM log_errors WHERE app = ? ORDER BY last_seen DESC LIMIT 200';

/** A row of {@link ERROR_GROUPS_SQL} as the API shows it. */
export function errorGroupView(r: Record<string, unknown>): ErrorGroupView {
  return {
    type: r.type as string,
    location: r.location as string,
    message: r.message as string,
    count: r.count as number,
    firstSeen: new Date(r.first_seen as number).toISOString(),
    lastSeen: new Date(r.last_seen as number).toISOString(),
    release: r.release as string,
    traceback: r.traceback as string,
  };
}

/** A `log_lines` row (`id, ts, app, source, fd, stream_id, line`) as a stored line. */
export function storedLine(r: Record<string, unknown>, agents: ReadonlyMap<number, string>): StoredLogLine {
  return {
    id: r.id as number,
    ts: r.ts as number,
    app: r.app as string,
    source: r.source as string,
    stream: r.fd === 'stderr' ? 'stderr' : 'stdout',
    agent: agents.get(r.stream_id as number) ?? '',
    line: r.line as string,
  };
}

function isProcessType(source: string): boolean {
  return /^[A-Za-z0-9_-]+$/.test(source);
}

/** Lines within ids (`after`, `to`]. */
export interface IdRange {
  after?: number;
  to?: number;
}

/**
 * The conditions both engines filter `log_lines l` by, but `--grep`: the app, the source (a
 * process type means all its instances), the time window and the id range (`id`: the column the
 * ids are read from). Named parameters.
 */
export function logFilters(q: LogQuery, range: IdRange, id = 'l.id'): { where: string[]; params: Record<string, unknown> } {
  const where = ['l.app = @app'];
  const params: Record<string, unknown> = { app: q.app };
  if (q.source) {
    if (q.source.includes('.') || !isProcessType(q.source)) {
      where.push('l.source = @source');
      params.source = q.source;
    } else {
      // A process type means all its instances (web → web.1, web.2…), or a plain source (router).
      where.push('(l.source = @source OR (l.source >= @lo AND l.source < @hi))');
      params.source = q.source;
      params.lo = `${q.source}.`;
      params.hi = `${q.source}/`;
    }
  }
  if (q.since !== undefined) {
    where.push('l.ts >= @since');
    params.since = q.since;
  }
  if (q.until !== undefined) {
    where.push('l.ts <= @until');
    params.until = q.until;
  }
  if (range.after !== undefined && range.after >= 0) {
    where.push(`${id} > @after`);
    params.after = range.after;
  }
  if (range.to !== undefined && Number.isFinite(range.to)) {
    where.push(`${id} <= @to`);
    params.to = range.to;
  }
  return { where, params };
}

/** Reads the `limit` newest or oldest lines matching `q` in an id range (skipping `offset`), oldest first. */
export type LogSelect = (q: LogQuery, end: 'newest' | 'oldest', limit: number, range: IdRange & { offset?: number }) => StoredLogLine[];

/**
 * {@link LogStorage.page} on either engine: without a cursor, the window is fixed at the highest
 * id now (`maxId`) and starts at the `q.n`-th newest matching line; each page is the next
 * `pageSize` lines of it.
 */
export function pageLines(q: LogQuery, pageSize: number, cursor: LogCursor | undefined, maxId: () => number, select: LogSelect): LogPage {
  let after: number;
  let to: number;
  let left: number;
  if (cursor) {
    ({ after, to, left } = cursor);
  } else {
    if (q.n <= pageSize) return { lines: select(q, 'newest', q.n, {}), next: null };
    to = maxId();
    // The n-th newest matching line, and everything after it.
    const nth = select(q, 'newest', 1, { to, offset: q.n - 1 })[0];
    after = nth ? nth.id - 1 : 0;
    left = q.n;
  }
  const want = Math.min(pageSize, left);
  const lines = want > 0 ? select(q, 'oldest', want, { after, to }) : [];
  const last = lines.at(-1);
  // A short page was the last one; a full one may be followed by more.
  const more = last !== undefined && lines.length === want && left > want;
  return { lines, next: more ? { after: last.id, to, left: left - want } : null };
}

/** Result of storing one batch. */
export interface IngestResult {
  /** Highest contiguous seq stored for the agent's epoch: what to ack. */
  acked: number;
  /** Lines newly stored (duplicates left out), in order, for live subscribers. */
  inserted: StoredLogLine[];
}

type Row = Record<string, unknown>;

/**
 * What the coordinator asks of its log store, whatever the engine: {@link LogStore} on the data
 * dir's SQLite file, or `PostgresLogStore` (postgres-log-store.ts) on the coordinator's database.
 */
export interface LogStorage {
  /** Highest contiguous seq stored for an agent's epoch (0 when none). */
  acked(agent: string, epoch: string): number;
  /** Stores one batch in one transaction. */
  ingest(agent: string, epoch: string, lines: readonly IncomingLogLine[]): IngestResult;
  /** Stores several batches in one transaction; all are stored or none. */
  ingestMany(batches: readonly { agent: string; epoch: string; lines: readonly IncomingLogLine[] }[]): IngestResult[];
  /** The newest `n` lines matching the filters, oldest first. */
  query(q: LogQuery): StoredLogLine[];
  /** The newest `q.n` lines matching the filters, oldest first, a page at a time. */
  page(q: LogQuery, pageSize: number, cursor?: LogCursor): LogPage;
  /** The app's error groups, most recently seen first. */
  errors(app: string): ErrorGroupView[];
  /** Forgets an app's lines and errors (it was destroyed). */
  deleteApp(app: string): void;
  /** Applies age and size retention, `maxRows` at most a call; returns rows deleted. */
  prune(now: number, maxRows?: number): number;
  /** Bytes of stored lines ({@link lineBytes} each), as size retention counts them. */
  storedBytes(): number;
  /** Lines stored (for tests and benchmarks). */
  count(app?: string): number;
  close(): void;
}

/**
 * Log lines and grouped errors in the coordinator's SQLite database, on a connection of its own.
 * Each batch is stored in one transaction together with the highest seq stored for the agent's
 * log epoch (agent + spool identity). Agents send lines in seq order, so that high-water mark is
 * the dedupe on (agent, seq): a line at or below it was stored already and is skipped, and every
 * stored line is at or below it (a gap means lines the agent's full spool dropped). A batch sent
 * again after any restart stores nothing twice, without a unique index to slow ingestion.
 * Retention by age and size runs in small chunks. The bytes and count of stored lines are a
 * running total (`log_usage`) moved in the same transactions as the inserts and deletes, so size
 * retention neither scans the table nor counts what other tables in the file hold.
 */
export class LogStore implements LogStorage {
  readonly #db: Database.Database;
  readonly #maxAgeMs: number;
  readonly #maxBytes: number;
  readonly #streams = new Map<string, { id: number; acked: number }>();
  readonly #agents = new Map<number, string>();
  /** The committed `log_usage` row. */
  readonly #usage: { bytes: number; lines: number };
  readonly #addUsage: Database.Statement;
  /** How far the grep index reaches: lines with a higher id are scanned. */
  readonly #indexedTo: Database.Statement;
  /** Highest id given to a line: ids are never given out twice (the grep index keys on them). */
  #lastId: number;
  readonly #queries = new Map<string, Database.Statement>();
  readonly #insert: Database.Statement;
  /** Inserts {@link INSERT_CHUNK} rows in one statement: far fewer calls into SQLite per batch. */
  readonly #insertChunk: Database.Statement;
  /** Stores one batch; runs inside {@link #ingestManyTx}'s transaction. */
  readonly #ingestBatch: (streamId: number, acked: number, lines: readonly IncomingLogLine[], out: StoredLogLine[]) => number;
  readonly #ingestManyTx: (
    batches: readonly { lines: readonly IncomingLogLine[] }[],
    streams: readonly { id: number; acked: number }[],
  ) => IngestResult[];

  constructor(options: LogStoreOptions) {
    this.#db = new Database(options.path);
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('synchronous = NORMAL');
    this.#db.pragma('busy_timeout = 5000');
    // Fewer, larger checkpoints: the hot right edges of the indexes are copied once, not each time.
    this.#db.pragma('wal_autocheckpoint = 10000');
    this.#db.prepare('ATTACH DATABASE ? AS search').run(options.searchPath ?? join(dirname(options.path), 'log-search.db'));
    this.#db.pragma('search.journal_mode = WAL');
    this.#db.exec(logSearchSchema('search'));
    // Every ingest transaction that inserts lines also updates log_usage (checked): one check a
    // transaction instead of one a line.
    if (options.fence) {
      installWriteFence(this.#db, options.fence.epoch, options.fence.onFenced, { insertsCheckedByTransaction: ['log_lines'] });
    }
    this.#indexedTo = this.#db.prepare('SELECT indexed_to FROM search.log_search_state WHERE id = 1').pluck();
    this.#lastId = Math.max(
      (this.#db.prepare('SELECT max(id) FROM log_lines').pluck().get() as number | null) ?? 0,
      this.#indexedTo.get() as number,
    );
    this.#maxAgeMs = options.maxAgeMs ?? 7 * 24 * 3600_000;
    this.#maxBytes = options.maxBytes ?? 1024 * 1024 * 1024;
    for (const r of this.#db.prepare('SELECT id, agent, epoch, acked_seq FROM log_streams').all() as Row[]) {
      this.#streams.set(`${r.agent as string}\0${r.epoch as string}`, { id: r.id as number, acked: r.acked_seq as number });
      this.#agents.set(r.id as number, r.agent as string);
    }
    const usage = this.#db.prepare('SELECT bytes, lines FROM log_usage WHERE id = 1').get() as Row | undefined;
    this.#usage = { bytes: (usage?.bytes as number | undefined) ?? 0, lines: (usage?.lines as number | undefined) ?? 0 };
    this.#addUsage = this.#db.prepare('UPDATE log_usage SET bytes = max(0, bytes + ?), lines = max(0, lines + ?) WHERE id = 1');
    const insertSql = 'INSERT INTO log_lines (id, stream_id, seq, ts, app, source, fd, line) VALUES ';
    this.#insert = this.#db.prepare(`${insertSql}(?, ?, ?, ?, ?, ?, ?, ?)`);
    this.#insertChunk = this.#db.prepare(`${insertSql}${Array(INSERT_CHUNK).fill('(?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`);
    const setAcked = this.#db.prepare('UPDATE log_streams SET acked_seq = ? WHERE id = ?');
    const upsertError = this.#db.prepare(`
      INSERT INTO log_errors (app, fingerprint, type, location, message, count, first_seen, last_seen, release, traceback)
      VALUES (@app, @fingerprint, @type, @location, @message, 1, @ts, @ts, @release, @traceback)
      ON CONFLICT (app, fingerprint) DO UPDATE SET
        count = count + 1,
        last_seen = max(last_seen, excluded.last_seen),
        first_seen = min(first_seen, excluded.first_seen),
        message = excluded.message,
        release = excluded.release,
        traceback = excluded.traceback`);
    this.#ingestBatch = (streamId: number, ackedBefore: number, lines: readonly IncomingLogLine[], out: StoredLogLine[]) => {
      let acked = ackedBefore;
      const agent = this.#agents.get(streamId) ?? '';
      const fresh: IncomingLogLine[] = [];
      for (const l of lines) {
        // Stored already (sent again after a reconnect or a restart): this is the dedupe.
        if (l.seq <= acked) continue;
        // Seqs skipped over were dropped by the agent's full spool; they will never come.
        acked = l.seq;
        fresh.push(l);
      }
      if (fresh.length === 0) return acked;
      // Ids one after the other, in this one writer, past any id ever given (a rolled back
      // transaction only leaves a gap): the grep index never sees an id reused for another line.
      let id = this.#lastId + 1;
      this.#lastId += fresh.length;
      const params: unknown[] = [];
      let i = 0;
      for (; i + INSERT_CHUNK <= fresh.length; i += INSERT_CHUNK) {
        params.length = 0;
        for (let k = i; k < i + INSERT_CHUNK; k++) {
          const l = fresh[k] as IncomingLogLine;
          params.push(id + k, streamId, l.seq, l.ts, l.app, l.source, l.stream === 'stderr' ? 'stderr' : 'stdout', l.line);
        }
        this.#insertChunk.run(params);
      }
      for (; i < fresh.length; i++) {
        const l = fresh[i] as IncomingLogLine;
        this.#insert.run(id + i, streamId, l.seq, l.ts, l.app, l.source, l.stream === 'stderr' ? 'stderr' : 'stdout', l.line);
      }
      for (const l of fresh) {
        const stream = l.stream === 'stderr' ? 'stderr' : 'stdout';
        out.push({ id: id++, ts: l.ts, app: l.app, source: l.source, stream, agent, line: l.line });
        const error = l.line.startsWith(ERROR_LINE_PREFIX) ? parseErrorLine(l.line) : null;
        if (error) upsertError.run(errorGroupRow(l, error));
      }
      if (acked !== ackedBefore) setAcked.run(acked, streamId);
      return acked;
    };
    this.#ingestManyTx = this.#db.transaction(
      (batches: readonly { lines: readonly IncomingLogLine[] }[], streams: readonly { id: number; acked: number }[]) => {
        // Acks move within the transaction; the in-memory ones only once it committed.
        const acked = new Map<number, number>();
        let bytes = 0;
        let lines = 0;
        const results = batches.map((b, i) => {
          const stream = streams[i] as { id: number; acked: number };
          const inserted: StoredLogLine[] = [];
          const result = this.#ingestBatch(stream.id, acked.get(stream.id) ?? stream.acked, b.lines, inserted);
          acked.set(stream.id, result);
          for (const l of inserted) bytes += lineBytes(l);
          lines += inserted.length;
          return { acked: result, inserted };
        });
        if (lines > 0) this.#addUsage.run(bytes, lines);
        return results;
      },
    );
  }

  /** Highest contiguous seq stored for an agent's epoch (0 when none). */
  acked(agent: string, epoch: string): number {
    return this.#streams.get(`${agent}\0${epoch}`)?.acked ?? 0;
  }

  /** Stores one batch in one transaction. */
  ingest(agent: string, epoch: string, lines: readonly IncomingLogLine[]): IngestResult {
    const [result] = this.ingestMany([{ agent, epoch, lines }]);
    return result ?? { acked: 0, inserted: [] };
  }

  /**
   * Stores several batches (of one or more agents, in arrival order) in one transaction: fewer
   * commits when batches queue up. Returns each batch's ack; all are stored or none.
   */
  ingestMany(batches: readonly { agent: string; epoch: string; lines: readonly IncomingLogLine[] }[]): IngestResult[] {
    const streams = batches.map((b) => this.#stream(b.agent, b.epoch));
    const results = this.#ingestManyTx(batches, streams);
    for (const r of results) {
      for (const l of r.inserted) this.#usage.bytes += lineBytes(l);
      this.#usage.lines += r.inserted.length;
    }
    streams.forEach((stream, i) => (stream.acked = Math.max(stream.acked, results[i]?.acked ?? 0)));
    return results;
  }

  /** The newest `n` lines matching the filters, oldest first. */
  query(q: LogQuery): StoredLogLine[] {
    return this.#select(q, 'newest', q.n);
  }

  /**
   * The newest `q.n` lines matching the filters, oldest first, `pageSize` at most per page: without
   * a cursor the first page (the oldest of those lines), with one the page after it. The window is
   * fixed by the first call (lines stored since are not in it), so paging neither skips nor repeats.
   */
  page(q: LogQuery, pageSize: number, cursor?: LogCursor): LogPage {
    return pageLines(
      q,
      pageSize,
      cursor,
      () => (this.#db.prepare('SELECT max(id) FROM log_lines').pluck().get() as number | null) ?? 0,
      (query, end, limit, range) => this.#select(query, end, limit, range),
    );
  }

  /**
   * Lines matching the filters within an id range, oldest first: the `limit` newest or oldest of
   * them (skipping `offset`). A `grep` of three characters or more is answered by the trigram index
   * for the lines it covers (in id order, so a limit stops early; each candidate then checked
   * exactly with LIKE on the row) and by a scan of the lines past it, which the background indexer
   * has not reached yet: the answer is complete whatever the index's lag. Both in one snapshot.
   */
  #select(q: LogQuery, end: 'newest' | 'oldest', limit: number, range: IdRange & { offset?: number } = {}): StoredLogLine[] {
    const fts = q.grep ? trigramQuery(q.grep) : null;
    if (!fts) return this.#part(q, null, end, limit, range.offset ?? 0, range);
    return this.#snapshot(() => {
      const indexedTo = this.#indexedTo.get() as number;
      const indexed: IdRange = { ...range, to: Math.min(range.to ?? Infinity, indexedTo) };
      const tail: IdRange = { ...range, after: Math.max(range.after ?? -1, indexedTo) };
      // In the order `end` reads them: the newest lines are in the tail.
      const parts: [string | null, IdRange][] = [
        [fts, indexed],
        [null, tail],
      ];
      if (end === 'newest') parts.reverse();
      const out: StoredLogLine[] = [];
      let offset = range.offset ?? 0;
      for (const [index, r] of parts) {
        const left = limit - out.length;
        if (left <= 0) break;
        if ((r.to ?? Infinity) <= (r.after ?? -1)) continue;
        const rows = this.#part(q, index, end, left, offset, r);
        // Skipped lines all came from this part when it gave any; else only as many as it holds.
        offset = rows.length > 0 || offset === 0 ? 0 : Math.max(0, offset - this.#count(q, index, r));
        if (end === 'newest') out.unshift(...rows);
        else out.push(...rows);
      }
      return out;
    });
  }

  /** One part of {@link #select}: through the index (`fts`, ids it covers) or a scan. */
  #part(q: LogQuery, fts: string | null, end: 'newest' | 'oldest', limit: number, offset: number, range: IdRange): StoredLogLine[] {
    const { from, where, params, id } = this.#where(q, fts, range);
    params.n = limit;
    params.offset = offset;
    const rows = this.#statement(
      `SELECT l.id, l.ts, l.app, l.source, l.fd, l.stream_id, l.line FROM ${from} WHERE ${where} ` +
        `ORDER BY ${id} ${end === 'newest' ? 'DESC' : 'ASC'} LIMIT @n OFFSET @offset`,
    ).all(params) as Row[];
    if (end === 'newest') rows.reverse();
    return rows.map((r) => storedLine(r, this.#agents));
  }

  /** Lines of one part of {@link #select}, all of them. */
  #count(q: LogQuery, fts: string | null, range: IdRange): number {
    const { from, where, params } = this.#where(q, fts, range);
    return this.#statement(`SELECT count(*) FROM ${from} WHERE ${where}`).pluck().get(params) as number;
  }

  #where(q: LogQuery, fts: string | null, range: IdRange): { from: string; where: string; params: Record<string, unknown>; id: string } {
    const id = fts ? 's.rowid' : 'l.id';
    const { where, params } = logFilters(q, range, id);
    if (q.grep) {
      where.push("l.line LIKE @grep ESCAPE '\\'");
      params.grep = `%${q.grep.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    }
    if (fts) {
      where.unshift('s.log_search MATCH @fts');
      params.fts = fts;
    }
    // CROSS JOIN: the index drives, in id order, and each candidate row is looked up by id.
    const from = fts ? 'search.log_search s CROSS JOIN log_lines l ON l.id = s.rowid' : 'log_lines l';
    return { from, where: where.join(' AND '), params, id };
  }

  #statement(sql: string): Database.Statement {
    let stmt = this.#queries.get(sql);
    if (!stmt) {
      stmt = this.#db.prepare(sql);
      this.#queries.set(sql, stmt);
    }
    return stmt;
  }

  /** Runs `fn` in one read transaction (one snapshot of both files). */
  #snapshot<T>(fn: () => T): T {
    return this.#db.transaction(fn)();
  }

  /** The app's error groups, most recently seen first. */
  errors(app: string): ErrorGroupView[] {
    return (this.#db.prepare(ERROR_GROUPS_SQL).all(app) as Row[]).map(errorGroupView);
  }

  /** Forgets an app's lines and errors (it was destroyed). */
  deleteApp(app: string): void {
    this.#deleteLines(this.#db.prepare(`DELETE FROM log_lines WHERE app = ? RETURNING id, ${LINE_BYTES_SQL} AS bytes`), [app], () =>
      this.#db.prepare('DELETE FROM log_errors WHERE app = ?').run(app),
    );
  }

  /**
   * Deletes lines older than the age limit and, while the stored lines are over the size limit,
   * the oldest lines; at most `maxRows` per call, in chunks of one transaction each, so ingestion
   * never waits long. Returns rows deleted.
   */
  prune(now: number, maxRows = 20_000): number {
    let deleted = 0;
    const chunk = 5000;
    const cutoff = now - this.#maxAgeMs;
    const returning = `RETURNING id, ${LINE_BYTES_SQL} AS bytes`;
    const deleteOld = this.#db.prepare(
      `DELETE FROM log_lines WHERE id IN (SELECT id FROM log_lines ORDER BY id LIMIT ?) AND ts < ? ${returning}`,
    );
    while (deleted < maxRows) {
      const n = this.#deleteLines(deleteOld, [chunk, cutoff]);
      deleted += n;
      if (n < chunk) break;
    }
    const deleteOldest = this.#db.prepare(`DELETE FROM log_lines WHERE id IN (SELECT id FROM log_lines ORDER BY id LIMIT ?) ${returning}`);
    while (deleted < maxRows && this.#usage.bytes > this.#maxBytes) {
      // About as many rows as the excess, at the average line size: the limit is not undershot by a chunk.
      const average = this.#usage.lines > 0 ? this.#usage.bytes / this.#usage.lines : ROW_OVERHEAD_BYTES;
      const rows = Math.min(chunk, maxRows - deleted, Math.max(1, Math.ceil((this.#usage.bytes - this.#maxBytes) / average)));
      const n = this.#deleteLines(deleteOldest, [rows]);
      deleted += n;
      if (n === 0) break;
    }
    return deleted;
  }

  /** Bytes of stored lines ({@link lineBytes} each), as size retention counts them. */
  storedBytes(): number {
    return this.#usage.bytes;
  }

  /** Lines stored (for tests and benchmarks). */
  count(app?: string): number {
    const row = (
      app === undefined
        ? this.#db.prepare('SELECT count(*) AS n FROM log_lines').get()
        : this.#db.prepare('SELECT count(*) AS n FROM log_lines WHERE app = ?').get(app)
    ) as Row;
    return row.n as number;
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }

  /**
   * Runs a `DELETE … RETURNING id, bytes` on log lines (and `also`) in one transaction that moves
   * the running total with it; the in-memory total follows once it committed. Returns rows deleted.
   */
  #deleteLines(stmt: Database.Statement, params: readonly unknown[], also?: () => void): number {
    const { lines, bytes } = this.#db.transaction(() => {
      const rows = stmt.all(...params) as Row[];
      let sum = 0;
      for (const r of rows) sum += r.bytes as number;
      if (rows.length > 0) this.#addUsage.run(-sum, -rows.length);
      also?.();
      return { lines: rows.length, bytes: sum };
    })();
    this.#usage.bytes = Math.max(0, this.#usage.bytes - bytes);
    this.#usage.lines = Math.max(0, this.#usage.lines - lines);
    return lines;
  }

  #stream(agent: string, epoch: string): { id: number; acked: number } {
    const key = `${agent}\0${epoch}`;
    let stream = this.#streams.get(key);
    if (!stream) {
      const info = this.#db.prepare('INSERT INTO log_streams (agent, epoch) VALUES (?, ?)').run(agent, epoch);
      stream = { id: Number(info.lastInsertRowid), acked: 0 };
      this.#streams.set(key, stream);
      this.#agents.set(stream.id, agent);
    }
    return stream;
  }
}

/** A stored line as the API shows it. */
export function logLineView(l: StoredLogLine): LogLineView {
  return { ts: new Date(l.ts).toISOString(), source: l.source, stream: l.stream, agent: l.agent, line: l.line };
}
