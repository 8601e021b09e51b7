import Database from 'better-sqlite3';
import { z } from 'zod';
import type { ErrorGroupView, LogLineView } from '../../common/api-types.js';

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

/** Result of storing one batch. */
export interface IngestResult {
  /** Highest contiguous seq stored for the agent's epoch: what to ack. */
  acked: number;
  /** Lines newly stored (duplicates left out), in order, for live subscribers. */
  inserted: StoredLogLine[];
}

type Row = Record<string, unknown>;

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
export class LogStore {
  readonly #db: Database.Database;
  readonly #maxAgeMs: number;
  readonly #maxBytes: number;
  readonly #streams = new Map<string, { id: number; acked: number }>();
  readonly #agents = new Map<number, string>();
  /** The committed `log_usage` row. */
  readonly #usage: { bytes: number; lines: number };
  readonly #addUsage: Database.Statement;
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
    this.#maxAgeMs = options.maxAgeMs ?? 7 * 24 * 3600_000;
    this.#maxBytes = options.maxBytes ?? 1024 * 1024 * 1024;
    for (const r of this.#db.prepare('SELECT id, agent, epoch, acked_seq FROM log_streams').all() as Row[]) {
      this.#streams.set(`${r.agent as string}\0${r.epoch as string}`, { id: r.id as number, acked: r.acked_seq as number });
      this.#agents.set(r.id as number, r.agent as string);
    }
    const usage = this.#db.prepare('SELECT bytes, lines FROM log_usage WHERE id = 1').get() as Row | undefined;
    this.#usage = { bytes: (usage?.bytes as number | undefined) ?? 0, lines: (usage?.lines as number | undefined) ?? 0 };
    this.#addUsage = this.#db.prepare('UPDATE log_usage SET bytes = max(0, bytes + ?), lines = max(0, lines + ?) WHERE id = 1');
    const insertSql = 'INSERT INTO log_lines (stream_id, seq, ts, app, source, fd, line) VALUES ';
    this.#insert = this.#db.prepare(`${insertSql}(?, ?, ?, ?, ?, ?, ?)`);
    this.#insertChunk = this.#db.prepare(`${insertSql}${Array(INSERT_CHUNK).fill('(?, ?, ?, ?, ?, ?, ?)').join(', ')}`);
    const lastId = this.#db.prepare('SELECT max(id) AS id FROM log_lines').pluck();
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
      // Row ids are assigned in insertion order, one after the other, in this one writer.
      let id = ((lastId.get() as number | null) ?? 0) + 1;
      const params: unknown[] = [];
      let i = 0;
      for (; i + INSERT_CHUNK <= fresh.length; i += INSERT_CHUNK) {
        params.length = 0;
        for (let k = i; k < i + INSERT_CHUNK; k++) {
          const l = fresh[k] as IncomingLogLine;
          params.push(streamId, l.seq, l.ts, l.app, l.source, l.stream === 'stderr' ? 'stderr' : 'stdout', l.line);
        }
        this.#insertChunk.run(params);
      }
      for (; i < fresh.length; i++) {
        const l = fresh[i] as IncomingLogLine;
        this.#insert.run(streamId, l.seq, l.ts, l.app, l.source, l.stream === 'stderr' ? 'stderr' : 'stdout', l.line);
      }
      for (const l of fresh) {
        const stream = l.stream === 'stderr' ? 'stderr' : 'stdout';
        out.push({ id: id++, ts: l.ts, app: l.app, source: l.source, stream, agent, line: l.line });
        const error = l.line.startsWith(ERROR_LINE_PREFIX) ? parseErrorLine(l.line) : null;
        if (error) {
          const location = `${error.file}:${error.line}:${error.function}`;
          upsertError.run({
            app: l.app,
            fingerprint: `${error.type}|${location}`,
            type: error.type,
            location,
            message: error.message,
            ts: l.ts,
            release: error.release,
            traceback: error.traceback,
          });
        }
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
    const where = ['app = @app'];
    const params: Record<string, unknown> = { app: q.app, n: q.n };
    if (q.source) {
      if (q.source.includes('.') || !isProcessType(q.source)) {
        where.push('source = @source');
        params.source = q.source;
      } else {
        // A process type means all its instances (web → web.1, web.2…), or a plain source (router).
        where.push('(source = @source OR (source >= @lo AND source < @hi))');
        params.source = q.source;
        params.lo = `${q.source}.`;
        params.hi = `${q.source}/`;
      }
    }
    if (q.since !== undefined) {
      where.push('ts >= @since');
      params.since = q.since;
    }
    if (q.grep) {
      where.push("line LIKE @grep ESCAPE '\\'");
      params.grep = `%${q.grep.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    }
    const sql = `SELECT id, ts, app, source, fd, stream_id, line FROM log_lines WHERE ${where.join(' AND ')} ORDER BY id DESC LIMIT @n`;
    let stmt = this.#queries.get(sql);
    if (!stmt) {
      stmt = this.#db.prepare(sql);
      this.#queries.set(sql, stmt);
    }
    const rows = stmt.all(params) as Row[];
    return rows.reverse().map((r) => ({
      id: r.id as number,
      ts: r.ts as number,
      app: r.app as string,
      source: r.source as string,
      stream: r.fd === 'stderr' ? 'stderr' : 'stdout',
      agent: this.#agents.get(r.stream_id as number) ?? '',
      line: r.line as string,
    }));
  }

  /** The app's error groups, most recently seen first. */
  errors(app: string): ErrorGroupView[] {
    const rows = this.#db
      .prepare(
        'SELECT type, location, message, count, first_seen, last_seen, release, traceback FROM log_errors WHERE app = ? ORDER BY last_seen DESC LIMIT 200',
      )
      .all(app) as Row[];
    return rows.map((r) => ({
      type: r.type as string,
      location: r.location as string,
      message: r.message as string,
      count: r.count as number,
      firstSeen: new Date(r.first_seen as number).toISOString(),
      lastSeen: new Date(r.last_seen as number).toISOString(),
      release: r.release as string,
      traceback: r.traceback as string,
    }));
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

function isProcessType(source: string): boolean {
  return /^[A-Za-z0-9_-]+$/.test(source);
}

/** A stored line as the API shows it. */
export function logLineView(l: StoredLogLine): LogLineView {
  return { ts: new Date(l.ts).toISOString(), source: l.source, stream: l.stream, agent: l.agent, line: l.line };
}
