/**
 * The write fence of a leading coordinator: every INSERT, UPDATE and DELETE of its connection
 * aborts once the lease row (coordinator/ha/leader-lease.ts) carries an epoch other than the one
 * this coordinator was elected with. A stale leader (paused past its lease, then resumed) can never
 * write, whichever of its timers fires first: the check runs inside the database, in the writer's
 * own transaction.
 *
 * - SQLite: TEMP triggers of this connection; the writer's transaction holds the one write lock a
 *   new leader's election needs too.
 * - PostgreSQL: statement triggers on every table that compare the session's `hangar.epoch` with
 *   the lease row read `FOR SHARE`, so an election (which updates that row) waits for a writer's
 *   open transaction and every later statement of the old leader sees the new epoch. Sessions
 *   that set no epoch (a lone coordinator, `coordinator migrate`) are not fenced.
 */
import type Database from 'better-sqlite3';
import type { PostgresDatabase } from '../store/postgres.js';
import { SqliteDatabase, type SqlDatabase } from '../store/sql.js';

/** The message of the error a fenced write fails with. */
export const FENCED_MESSAGE = 'hangar: fenced, not the leader';

/** Tables the fence leaves writable: the election's own (followers write them too). */
const UNFENCED = new Set(['coordinator_lease', 'coordinators']);

/** True when `err` (or a cause) is a write the fence refused. */
export function isFencedError(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e.message.includes(FENCED_MESSAGE)) return true;
  }
  return false;
}

/** Options of {@link installWriteFence}. */
export interface WriteFenceOptions {
  /**
   * Tables whose INSERTs are not checked row by row (the log ingest hot path: a check per line
   * costs about a sixth of its throughput, bench/write-fence.ts). The caller guarantees that every
   * transaction inserting into them also writes a checked table (LogStore: `log_usage`), so that a
   * fenced one rolls back whole. Default none.
   */
  insertsCheckedByTransaction?: readonly string[];
}

/**
 * Fences every table of `db`'s main database (but the lease's) to `epoch`. `onFenced` is called
 * (inside the refused statement: it must not touch the database) each time a write is refused.
 * The triggers are TEMP: they live and die with this connection. Call after migrations.
 */
export function installWriteFence(
  db: SqlDatabase | Database.Database,
  epoch: number,
  onFenced: () => void,
  options: WriteFenceOptions = {},
): void {
  if (!Number.isSafeInteger(epoch) || epoch < 1) throw new Error(`bad leader epoch ${epoch}`);
  if (db instanceof SqliteDatabase) installSqliteFence(db.raw, epoch, onFenced, options);
  else if ('engine' in db && db.engine === 'postgres') installPostgresFence(db as PostgresDatabase, epoch, onFenced);
  else installSqliteFence(db as Database.Database, epoch, onFenced, options);
}

function installSqliteFence(db: Database.Database, epoch: number, onFenced: () => void, options: WriteFenceOptions): void {
  const transactionChecked = new Set(options.insertsCheckedByTransaction ?? []);
  db.function('hangar_fenced', { deterministic: false, varargs: false }, () => {
    onFenced();
    return 1;
  });
  const tables = db
    .prepare(`SELECT name FROM main.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND sql NOT LIKE 'CREATE VIRTUAL%'`)
    .pluck()
    .all() as string[];
  db.transaction(() => {
    for (const table of tables) {
      if (UNFENCED.has(table)) continue;
      for (const op of ['INSERT', 'UPDATE', 'DELETE']) {
        if (op === 'INSERT' && transactionChecked.has(table)) continue;
        const name = `hangar_fence_${table}_${op.toLowerCase()}`.replace(/[^a-z0-9_]/gi, '_');
        db.exec(`DROP TRIGGER IF EXISTS temp."${name}"`);
        db.exec(
          `CREATE TEMP TRIGGER "${name}" BEFORE ${op} ON main."${table.replace(/"/g, '""')}"
           WHEN (SELECT epoch FROM main.coordinator_lease WHERE id = 1) IS NOT ${epoch}
           BEGIN SELECT hangar_fenced(); SELECT RAISE(ABORT, '${FENCED_MESSAGE}'); END`,
        );
      }
    }
  })();
}

/** The trigger function of the PostgreSQL fence (created or replaced with each install). */
const POSTGRES_FENCE_FUNCTION = `
CREATE OR REPLACE FUNCTION hangar_fence() RETURNS trigger LANGUAGE plpgsql AS $fence$
DECLARE
  mine text := current_setting('hangar.epoch', true);
  current bigint;
BEGIN
  IF mine IS NULL OR mine = '' THEN RETURN NULL; END IF;
  SELECT epoch INTO current FROM coordinator_lease WHERE id = 1 FOR SHARE;
  IF current IS DISTINCT FROM mine::bigint THEN
    RAISE EXCEPTION '${FENCED_MESSAGE}' USING ERRCODE = 'HF001';
  END IF;
  RETURN NULL;
END
$fence$`;

function installPostgresFence(db: PostgresDatabase, epoch: number, onFenced: () => void): void {
  db.transaction(() => {
    // Coordinators installing at once would race on CREATE OR REPLACE: one at a time.
    db.prepare('SELECT pg_advisory_xact_lock(?)').get(7_081_002);
    db.exec(POSTGRES_FENCE_FUNCTION);
    const tables = db
      .prepare(
        `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname <> 'hangar_schema'`,
      )
      .pluck()
      .all() as string[];
    for (const table of tables) {
      if (UNFENCED.has(table)) continue;
      const quoted = `"${table.replace(/"/g, '""')}"`;
      db.exec(
        `CREATE OR REPLACE TRIGGER hangar_fence BEFORE INSERT OR UPDATE OR DELETE ON ${quoted} FOR EACH STATEMENT EXECUTE FUNCTION hangar_fence()`,
      );
    }
  })();
  db.onError((err) => {
    if (isFencedError(err)) onFenced();
  });
  db.addSessionSetting(`SET hangar.epoch = '${epoch}'`);
}
