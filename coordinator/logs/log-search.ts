import Database from 'better-sqlite3';

/**
 * The schema of the grep index, a database file of its own beside the coordinator's: a
 * contentless trigram index of `log_lines.line` (the text stays in `log_lines` only; detail=none:
 * which lines hold a trigram, not where) and how far it reaches. It is derived data: a deleted
 * file is made again empty and filled from `log_lines` in the background. `schema`: the name the
 * file is attached as.
 */
export function logSearchSchema(schema = 'main'): string {
  return `
  CREATE VIRTUAL TABLE IF NOT EXISTS ${schema}.log_search USING fts5(line, content='', contentless_delete=1, detail=none, tokenize='trigram');
  CREATE TABLE IF NOT EXISTS ${schema}.log_search_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_to INTEGER NOT NULL,
    unindexed_to INTEGER NOT NULL
  );
  INSERT OR IGNORE INTO ${schema}.log_search_state (id, indexed_to, unindexed_to) VALUES (1, -1, -1);
`;
}

/** What one {@link LogSearchIndex.step} did. */
export interface LogSearchStep {
  /** Lines added to the index. */
  indexed: number;
  /** Rowids of deleted lines taken out of it. */
  unindexed: number;
  /** Highest `log_lines.id` indexed (every line up to it is in the index). */
  indexedTo: number;
}

/** Options of {@link LogSearchIndex}. */
export interface LogSearchIndexOptions {
  /** The coordinator's SQLite file (its `log_lines` are read). */
  sourcePath: string;
  /** The index's own file. */
  path: string;
}

/** Most rowids of deleted lines taken out of the index per step. */
const UNINDEX_CHUNK = 5000;

/**
 * Fills the grep index from `log_lines`, off the ingestion path: the coordinator stores lines in
 * its database first, and this reads them back in batches (in a worker thread, see
 * log-search-worker.ts) and writes them into the index's own file, so it never holds the write
 * lock of the coordinator's database. Each step is one transaction that moves `indexed_to` with
 * the rows, so a reader of the index knows exactly which lines it covers (LogStore scans the
 * lines past it). Lines deleted by retention leave the index once they are below the oldest line.
 */
export class LogSearchIndex {
  /** The index's file. */
  readonly path: string;
  readonly #db: Database.Database;
  readonly #step: Database.Transaction<(maxRows: number) => LogSearchStep>;

  constructor(options: LogSearchIndexOptions) {
    this.path = options.path;
    this.#db = openLogSearch(options.path);
    this.#db.prepare('ATTACH DATABASE ? AS src').run(options.sourcePath);
    const state = this.#db.prepare('SELECT indexed_to AS indexedTo, unindexed_to AS unindexedTo FROM log_search_state WHERE id = 1');
    const setState = this.#db.prepare('UPDATE log_search_state SET indexed_to = ?, unindexed_to = ? WHERE id = 1');
    const oldest = this.#db.prepare('SELECT min(id) FROM src.log_lines').pluck();
    const batchEnd = this.#db.prepare('SELECT max(id) FROM (SELECT id FROM src.log_lines WHERE id > ? ORDER BY id LIMIT ?)').pluck();
    const index = this.#db.prepare('INSERT INTO log_search (rowid, line) SELECT id, line FROM src.log_lines WHERE id > ? AND id <= ?');
    const unindex = this.#db.prepare('DELETE FROM log_search WHERE rowid = ?');
    this.#step = this.#db.transaction((maxRows: number): LogSearchStep => {
      let { indexedTo, unindexedTo } = state.get() as { indexedTo: number; unindexedTo: number };
      const low = oldest.get() as number | null;
      if (indexedTo < 0) {
        // A new index starts at the oldest line stored (nothing below it was ever indexed).
        indexedTo = unindexedTo = low === null ? 0 : low - 1;
      }
      // Rowids below the oldest line belong to deleted lines (ids are never given out again).
      const gone = Math.min(low === null ? indexedTo : low - 1, indexedTo, unindexedTo + UNINDEX_CHUNK);
      let unindexed = 0;
      for (let id = unindexedTo + 1; id <= gone; id++) unindexed += unindex.run(id).changes > 0 ? 1 : 0;
      unindexedTo = Math.max(unindexedTo, gone);
      let indexed = 0;
      const to = batchEnd.get(indexedTo, maxRows) as number | null;
      if (to !== null) {
        indexed = index.run(indexedTo, to).changes;
        indexedTo = to;
      }
      setState.run(indexedTo, unindexedTo);
      return { indexed, unindexed, indexedTo };
    });
  }

  /** Indexes up to `maxRows` more lines (and unindexes deleted ones) in one transaction. */
  step(maxRows = 2000): LogSearchStep {
    // Deferred, not IMMEDIATE: BEGIN IMMEDIATE would take the write lock of every attached file,
    // the coordinator's too, and stall ingestion; this writes (so locks) the index's file only.
    return this.#step.deferred(maxRows);
  }

  /** Steps until every stored line is indexed (tests, benchmarks). Returns lines indexed. */
  catchUp(maxRows = 2000): number {
    let total = 0;
    for (;;) {
      const s = this.step(maxRows);
      total += s.indexed;
      if (s.indexed === 0 && s.unindexed === 0) return total;
    }
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }
}

/** Opens (and makes, when missing) the grep index's file. */
export function openLogSearch(path: string): Database.Database {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  db.exec(logSearchSchema());
  return db;
}
