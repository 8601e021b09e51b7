/**
 * Build artifacts in the database, 1 MiB chunks per `(sha256, idx)`, so that any of several
 * coordinators on one PostgreSQL database serves any agent: the one the source was uploaded to
 * writes the chunks before the artifact's row; another restores the file into its own data dir's
 * `artifacts/` (a local cache) chunk by chunk the first time an agent asks for it.
 */
import { closeSync, existsSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import type { SqlDatabase } from '../store/sql.js';

/** Bytes of one chunk. */
export const ARTIFACT_CHUNK_BYTES = 1024 * 1024;

/** The `artifact_chunks` table. */
export class ArtifactChunks {
  readonly #db: SqlDatabase;

  /** @param db A connection of its own: the chunks are written outside any transaction. */
  constructor(db: SqlDatabase) {
    this.#db = db;
  }

  /** Stores the file at `path` as the chunks of `sha256` (again: harmless, the same bytes). */
  async put(sha256: string, path: string): Promise<void> {
    const insert = this.#db.prepare(
      'INSERT INTO artifact_chunks (sha256, idx, data) VALUES (?, ?, ?) ON CONFLICT (sha256, idx) DO NOTHING',
    );
    const file = await openFile(path, 'r');
    // One buffer for every chunk: each is bound (copied into the statement) before the next read.
    const buffer = Buffer.alloc(ARTIFACT_CHUNK_BYTES);
    try {
      for (let idx = 0, offset = 0; ; idx++) {
        const { bytesRead } = await file.read(buffer, 0, ARTIFACT_CHUNK_BYTES, offset);
        if (bytesRead === 0 && idx > 0) break;
        insert.run(sha256, idx, buffer.subarray(0, bytesRead));
        offset += bytesRead;
        if (bytesRead < ARTIFACT_CHUNK_BYTES) break;
      }
    } finally {
      await file.close();
    }
  }

  /**
   * Makes sure `path` holds the artifact: when missing, writes it from the chunks (through a
   * temporary file renamed into place). False when the database has no chunks of it.
   */
  restore(sha256: string, path: string): boolean {
    if (existsSync(path)) return true;
    const count = Number(this.#db.prepare('SELECT COUNT(*) AS n FROM artifact_chunks WHERE sha256 = ?').pluck().get(sha256) ?? 0);
    if (count === 0) return false;
    const chunk = this.#db.prepare('SELECT data FROM artifact_chunks WHERE sha256 = ? AND idx = ?').pluck();
    const tmp = `${path}.restore-${process.pid}`;
    const fd = openSync(tmp, 'w', 0o600);
    let open = true;
    try {
      // One chunk in memory at a time, however large the artifact.
      for (let idx = 0; idx < count; idx++) {
        const data = chunk.get(sha256, idx);
        if (!Buffer.isBuffer(data)) throw new Error(`chunk ${idx} of artifact ${sha256} is missing`);
        writeSync(fd, data);
      }
      closeSync(fd);
      open = false;
      renameSync(tmp, path);
    } catch (err) {
      if (open) closeSync(fd);
      rmSync(tmp, { force: true });
      throw err;
    }
    return true;
  }

  close(): void {
    this.#db.close();
  }
}
