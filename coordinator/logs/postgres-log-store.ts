/**
 * The log store on PostgreSQL (a coordinator started with `--database-url`): the tables of
 * postgres-migrations.ts step 2 on the coordinator's own connection, which is fenced to its
 * leader epoch. Lines are partitioned by UTC day (store/postgres-partitions.ts): the partitions
 * of today and tomorrow are made ahead (at start and on every retention pass), one for a line of
 * another day before the batch holding it; age retention drops whole days. `--grep` is an ILIKE
 * answered by the pg_trgm index, with the meaning of SQLite's LIKE (ASCII case folded only).
 */
import type { ErrorGroupView } from '../../common/api-types.js';
import {
  asLeader,
  DAY_MS,
  DayPartitionSet,
  dayStart,
  dropDayPartitionsBefore,
  existingDayPartitions,
  type PartitionFence,
} from '../store/postgres-partitions.js';
import { arrayLiteral } from '../store/postgres.js';
import type { SqlDatabase, SqlStatement } from '../store/sql.js';
import {
  ERROR_GROUPS_SQL,
  ERROR_LINE_PREFIX,
  errorGroupRow,
  errorGroupView,
  lineBytes,
  logFilters,
  pageLines,
  parseErrorLine,
  storedLine,
  type IdRange,
  type IncomingLogLine,
  type IngestResult,
  type LogCursor,
  type LogPage,
  type LogQuery,
  type LogStorage,
  type StoredLogLine,
} from './log-store.js';

/** Options of {@link PostgresLogStore}. */
export interface PostgresLogStoreOptions {
  /** The coordinator's PostgreSQL connection (migrated; the Store's, fenced when it is). */
  database: SqlDatabase;
  /** Lines older than this go, a whole day at a time (so up to a day later), ms. Default 7 days. */
  maxAgeMs?: number;
  /** Beyond this many bytes of stored lines ({@link lineBytes} each), the oldest lines are deleted. Default 1 GiB. */
  maxBytes?: number;
  /**
   * The leader epoch partitions are dropped under (checked against the lease first, as a `DROP`
   * is not fenced); `onFenced` is called when another coordinator leads. Default: none, a
   * coordinator alone on its database.
   */
  fence?: PartitionFence;
  /** For the day partitions made ahead at start. Default `Date.now`. */
  now?: () => number;
}

/** {@link lineBytes} of a `log_lines` row, in PostgreSQL's SQL. */
const LINE_BYTES_SQL = 'octet_length(line) + octet_length(app) + octet_length(source) + 48';

const ASCII_UPPER = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
const ASCII_LOWER = 'abcdefghijklmnopqrstuvwxyz';

/** PostgreSQL text holds no NUL character; a line with one keeps a replacement character instead. */
function pgText(s: string): string {
  return s.includes('\0') ? s.replaceAll('\0', '\uFFFD') : s;
}

type Row = Record<string, unknown>;

/** See the file comment; the same contract as the SQLite {@link LogStorage}. */
export class PostgresLogStore implements LogStorage {
  readonly #db: SqlDatabase;
  readonly #maxAgeMs: number;
  readonly #maxBytes: number;
  readonly #fence: PostgresLogStoreOptions['fence'];
  readonly #partitions: DayPartitionSet;
  readonly #streams = new Map<string, { id: number; acked: number }>();
  readonly #agents = new Map<number, string>();
  readonly #usage: { bytes: number; lines: number };
  /** Highest id given to a line: one writer (the leader) gives them out in order. */
  #lastId: number;
  #closed = false;

  constructor(options: PostgresLogStoreOptions) {
    this.#db = options.database;
    if (this.#db.engine !== 'postgres') throw new Error('PostgresLogStore needs a PostgreSQL database');
    this.#maxAgeMs = options.maxAgeMs ?? 7 * 24 * 3600_000;
    this.#maxBytes = options.maxBytes ?? 1024 * 1024 * 1024;
    this.#fence = options.fence;
    this.#partitions = new DayPartitionSet(this.#db, 'log_lines');
    this.#partitions.ensureAhead((options.now ?? Date.now)());
    this.#lastId = (this.#db.prepare('SELECT max(id) FROM log_lines').pluck().get() as number | null) ?? 0;
    for (const r of this.#db.prepare('SELECT id, agent, epoch, acked_seq FROM log_streams').all() as Row[]) {
      this.#streams.set(`${r.agent as string}\0${r.epoch as string}`, { id: r.id as number, acked: r.acked_seq as number });
      this.#agents.set(r.id as number, r.agent as string);
    }
    const usage = this.#db.prepare('SELECT bytes, lines FROM log_usage WHERE id = 1').get() as Row | undefined;
    this.#usage = { bytes: (usage?.bytes as number | undefined) ?? 0, lines: (usage?.lines as number | undefined) ?? 0 };
  }

  acked(agent: string, epoch: string): number {
    return this.#streams.get(`${agent}\0${epoch}`)?.acked ?? 0;
  }

  ingest(agent: string, epoch: string, lines: readonly IncomingLogLine[]): IngestResult {
    const [result] = this.ingestMany([{ agent, epoch, lines }]);
    return result ?? { acked: 0, inserted: [] };
  }

  /**
   * Stores several batches in one transaction with one INSERT of all their new lines (arrays
   * unnested), after making the day partitions they need. Dedupe and acks as on SQLite.
   */
  ingestMany(batches: readonly { agent: string; epoch: string; lines: readonly IncomingLogLine[] }[]): IngestResult[] {
    if (this.#closed) throw new Error('the log store is closed');
    const streams = batches.map((b) => this.#stream(b.agent, b.epoch));
    this.#partitions.ensure(
      (function* () {
        for (const b of batches) for (const l of b.lines) yield l.ts;
      })(),
    );
    let bytes = 0;
    const results = this.#db.transaction(() => {
      const acked = new Map<number, number>();
      const cols = { id: [] as number[], stream: [] as number[], seq: [] as number[], ts: [] as number[] };
      const texts = { app: [] as string[], source: [] as string[], fd: [] as string[], line: [] as string[] };
      const errors: StoredLogLine[] = [];
      const out = batches.map((b, i) => {
        const stream = streams[i] as { id: number; acked: number };
        const agent = this.#agents.get(stream.id) ?? '';
        let seq = acked.get(stream.id) ?? stream.acked;
        const inserted: StoredLogLine[] = [];
        for (const l of b.lines) {
          // Stored already (sent again after a reconnect or a restart): this is the dedupe.
          if (l.seq <= seq) continue;
          // Seqs skipped over were dropped by the agent's full spool; they will never come.
          seq = l.seq;
          const stored: StoredLogLine = {
            id: ++this.#lastId,
            ts: l.ts,
            app: l.app,
            source: l.source,
            stream: l.stream === 'stderr' ? 'stderr' : 'stdout',
            agent,
            line: pgText(l.line),
          };
          cols.id.push(stored.id);
          cols.stream.push(stream.id);
          cols.seq.push(l.seq);
          cols.ts.push(l.ts);
          texts.app.push(stored.app);
          texts.source.push(stored.source);
          texts.fd.push(stored.stream);
          texts.line.push(stored.line);
          bytes += lineBytes(stored);
          inserted.push(stored);
          if (stored.line.startsWith(ERROR_LINE_PREFIX)) errors.push(stored);
        }
        acked.set(stream.id, seq);
        return { acked: seq, inserted };
      });
      if (cols.id.length > 0) {
        this.#statement(
          `INSERT INTO log_lines (id, stream_id, seq, ts, app, source, fd, line)
           SELECT * FROM unnest(?::bigint[], ?::bigint[], ?::bigint[], ?::bigint[], ?::text[], ?::text[], ?::text[], ?::text[])`,
        ).run(
          arrayLiteral(cols.id),
          arrayLiteral(cols.stream),
          arrayLiteral(cols.seq),
          arrayLiteral(cols.ts),
          arrayLiteral(texts.app),
          arrayLiteral(texts.source),
          arrayLiteral(texts.fd),
          arrayLiteral(texts.line),
        );
        this.#statement('UPDATE log_usage SET bytes = GREATEST(0, bytes + ?), lines = GREATEST(0, lines + ?) WHERE id = 1').run(
          bytes,
          cols.id.length,
        );
      }
      for (const l of errors) this.#upsertError(l);
      const setAcked = this.#statement('UPDATE log_streams SET acked_seq = ? WHERE id = ? AND acked_seq < ?');
      for (const [id, seq] of acked) setAcked.run(seq, id, seq);
      return out;
    })();
    // In memory only once committed.
    for (const r of results) this.#usage.lines += r.inserted.length;
    this.#usage.bytes += bytes;
    streams.forEach((stream, i) => (stream.acked = Math.max(stream.acked, results[i]?.acked ?? 0)));
    return results;
  }

  #upsertError(l: StoredLogLine): void {
    const error = parseErrorLine(l.line);
    if (!error) return;
    const row = errorGroupRow(l, error);
    this.#statement(
      `INSERT INTO log_errors (app, fingerprint, type, location, message, count, first_seen, last_seen, release, traceback)
       VALUES (@app, @fingerprint, @type, @location, @message, 1, @ts, @ts, @release, @traceback)
       ON CONFLICT (app, fingerprint) DO UPDATE SET
         count = log_errors.count + 1,
         last_seen = GREATEST(log_errors.last_seen, excluded.last_seen),
         first_seen = LEAST(log_errors.first_seen, excluded.first_seen),
         message = excluded.message,
         release = excluded.release,
         traceback = excluded.traceback`,
    ).run({ ...row, message: pgText(error.message), release: pgText(error.release), traceback: pgText(error.traceback) });
  }

  query(q: LogQuery): StoredLogLine[] {
    return this.#select(q, 'newest', q.n);
  }

  /** As SQLite's {@link LogStorage.page}: the window is fixed by the first call. */
  page(q: LogQuery, pageSize: number, cursor?: LogCursor): LogPage {
    return pageLines(
      q,
      pageSize,
      cursor,
      () => (this.#statement('SELECT max(id) FROM log_lines').pluck().get() as number | null) ?? 0,
      (query, end, limit, range) => this.#select(query, end, limit, range),
    );
  }

  #select(q: LogQuery, end: 'newest' | 'oldest', limit: number, range: IdRange & { offset?: number } = {}): StoredLogLine[] {
    const { where, params } = this.#where(q, range);
    params.n = limit;
    params.offset = range.offset ?? 0;
    const rows = this.#statement(
      `SELECT l.id, l.ts, l.app, l.source, l.fd, l.stream_id, l.line FROM log_lines l WHERE ${where} ` +
        `ORDER BY l.id ${end === 'newest' ? 'DESC' : 'ASC'} LIMIT @n OFFSET @offset`,
    ).all(params) as Row[];
    if (end === 'newest') rows.reverse();
    return rows.map((r) => storedLine(r, this.#agents));
  }

  #where(q: LogQuery, range: IdRange): { where: string; params: Record<string, unknown> } {
    const { where, params } = logFilters(q, range);
    if (q.grep) {
      const pattern = `%${pgText(q.grep).replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
      // ILIKE finds the candidates through the trigram index; the LIKE on ASCII-lowered text then
      // keeps SQLite's meaning (its LIKE folds ASCII letters only, ILIKE every letter).
      where.push("l.line ILIKE @grep ESCAPE '\\'");
      where.push(`translate(l.line, '${ASCII_UPPER}', '${ASCII_LOWER}') LIKE @grepLower ESCAPE '\\'`);
      params.grep = pattern;
      params.grepLower = pattern.replace(/[A-Z]/g, (c) => c.toLowerCase());
    }
    return { where: where.join(' AND '), params };
  }

  errors(app: string): ErrorGroupView[] {
    return (this.#statement(ERROR_GROUPS_SQL).all(app) as Row[]).map(errorGroupView);
  }

  deleteApp(app: string): void {
    const { lines, bytes } = this.#db.transaction(() => {
      const r = this.#statement(
        `WITH gone AS (DELETE FROM log_lines WHERE app = ? RETURNING ${LINE_BYTES_SQL} AS bytes)
         SELECT count(*) AS lines, COALESCE(sum(bytes), 0) AS bytes FROM gone`,
      ).get(app) as { lines: number; bytes: number };
      if (r.lines > 0) this.#addUsage(-r.bytes, -r.lines);
      this.#statement('DELETE FROM log_errors WHERE app = ?').run(app);
      return r;
    })();
    this.#forget(lines, bytes);
  }

  /**
   * Age retention drops the day partitions that ended before the age limit (after checking this
   * coordinator still leads: a `DROP` is not fenced), whatever their size; size retention then
   * deletes the oldest lines through the parent table, `maxRows` at most, in chunks of one
   * transaction each. Makes today's and tomorrow's partitions first. Returns rows deleted.
   */
  prune(now: number, maxRows = 20_000): number {
    this.#partitions.ensureAhead(now);
    let deleted = 0;
    const cutoff = dayStart(now - this.#maxAgeMs);
    const oldest = existingDayPartitions(this.#db, 'log_lines')[0];
    if (oldest && oldest.start + DAY_MS <= cutoff) deleted += this.#dropBefore(cutoff);
    const chunk = 5000;
    let sizeDeleted = 0;
    while (sizeDeleted < maxRows && this.#usage.bytes > this.#maxBytes) {
      const average = this.#usage.lines > 0 ? this.#usage.bytes / this.#usage.lines : 48;
      const rows = Math.min(chunk, maxRows - sizeDeleted, Math.max(1, Math.ceil((this.#usage.bytes - this.#maxBytes) / average)));
      const r = this.#deleteOldest(rows);
      sizeDeleted += r;
      if (r === 0) break;
    }
    return deleted + sizeDeleted;
  }

  /** Drops the day partitions before `cutoff` as leader, moving the running total; returns lines dropped. */
  #dropBefore(cutoff: number): number {
    const old = this.#statement(`SELECT count(*) AS lines, COALESCE(sum(${LINE_BYTES_SQL}), 0) AS bytes FROM log_lines WHERE ts < ?`);
    const dropped = asLeader(this.#db, this.#fence, () => {
      const r = old.get(cutoff) as { lines: number; bytes: number };
      const names = dropDayPartitionsBefore(this.#db, 'log_lines', cutoff);
      if (names.length > 0 && r.lines > 0) this.#addUsage(-r.bytes, -r.lines);
      return { ...r, names };
    });
    this.#partitions.reset();
    this.#forget(dropped.lines, dropped.bytes);
    return dropped.lines;
  }

  /**
   * Deletes the `rows` lines of lowest id, through the parent (fenced). Those are exactly the lines
   * with an id at or below the highest of them; their ts range lets PostgreSQL visit only the
   * partitions holding them.
   */
  #deleteOldest(rows: number): number {
    const { lines, bytes } = this.#db.transaction(() => {
      const edge = this.#statement(
        'SELECT max(id) AS id, min(ts) AS lo, max(ts) AS hi FROM (SELECT id, ts FROM log_lines ORDER BY id LIMIT ?) c',
      ).get(rows) as { id: number | null; lo: number | null; hi: number | null };
      if (edge.id === null || edge.lo === null || edge.hi === null) return { lines: 0, bytes: 0 };
      const r = this.#statement(
        `WITH gone AS (DELETE FROM log_lines WHERE id <= ? AND ts >= ? AND ts <= ? RETURNING ${LINE_BYTES_SQL} AS bytes)
         SELECT count(*) AS lines, COALESCE(sum(bytes), 0) AS bytes FROM gone`,
      ).get(edge.id, edge.lo, edge.hi) as { lines: number; bytes: number };
      if (r.lines > 0) this.#addUsage(-r.bytes, -r.lines);
      return r;
    })();
    this.#forget(lines, bytes);
    return lines;
  }

  #addUsage(bytes: number, lines: number): void {
    this.#statement('UPDATE log_usage SET bytes = GREATEST(0, bytes + ?), lines = GREATEST(0, lines + ?) WHERE id = 1').run(bytes, lines);
  }

  /** The in-memory total, once a delete committed. */
  #forget(lines: number, bytes: number): void {
    this.#usage.bytes = Math.max(0, this.#usage.bytes - bytes);
    this.#usage.lines = Math.max(0, this.#usage.lines - lines);
  }

  storedBytes(): number {
    return this.#usage.bytes;
  }

  count(app?: string): number {
    return (
      app === undefined
        ? this.#statement('SELECT count(*) FROM log_lines').pluck().get()
        : this.#statement('SELECT count(*) FROM log_lines WHERE app = ?').pluck().get(app)
    ) as number;
  }

  /** Stops storing; the connection is the Store's, closed with it. */
  close(): void {
    this.#closed = true;
  }

  /** PostgresDatabase keeps each SQL text's prepared statement: preparing again costs a map lookup. */
  #statement(sql: string): SqlStatement {
    return this.#db.prepare(sql);
  }

  #stream(agent: string, epoch: string): { id: number; acked: number } {
    const key = `${agent}\0${epoch}`;
    let stream = this.#streams.get(key);
    if (!stream) {
      const r = this.#statement(
        'INSERT INTO log_streams (agent, epoch) VALUES (?, ?) ON CONFLICT (agent, epoch) DO UPDATE SET agent = excluded.agent RETURNING id, acked_seq',
      ).get(agent, epoch) as { id: number; acked_seq: number };
      stream = { id: r.id, acked: r.acked_seq };
      this.#streams.set(key, stream);
      this.#agents.set(stream.id, agent);
    }
    return stream;
  }
}
