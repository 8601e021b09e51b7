/**
 * The write fence of a leading coordinator: TEMP triggers on one database connection that abort
 * every INSERT, UPDATE and DELETE once the lease row (coordinator/ha/leader-lease.ts) carries an
 * epoch other than the one this coordinator was elected with. A stale leader (paused past its
 * lease, then resumed) can never write, whichever of its timers fires first: the check runs inside
 * SQLite, in the writer's own transaction, which holds the one write lock a new leader's election
 * needs too.
 */
import type Database from 'better-sqlite3';

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
export function installWriteFence(db: Database.Database, epoch: number, onFenced: () => void, options: WriteFenceOptions = {}): void {
  const transactionChecked = new Set(options.insertsCheckedByTransaction ?? []);
  if (!Number.isSafeInteger(epoch) || epoch < 1) throw new Error(`bad leader epoch ${epoch}`);
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
