/**
 * Add-on backups and their schedules in SQLite (shares the {@link Store}'s one connection): where
 * each backup was made and where its copies are, its SHA-256, and how its verification restore went.
 */
import type { SqlDatabase } from '../store/sql.js';
import type { Store } from '../store/store.js';

/** Why a backup was made. */
export type BackupOrigin = 'manual' | 'scheduled' | 'safety';

/** `unverified` until a verification restore ran; `failed` when it did not restore (or a copy is corrupt). */
export type VerifyState = 'unverified' | 'verified' | 'failed';

/** One place a copy of a backup is kept, off the host that made it. */
export type BackupCopy = { agent: string } | { path: string };

/** A backup's row. */
export interface BackupRow {
  id: string;
  addon: string;
  app: string;
  kind: string;
  /** `b20260102-030405`, unique per add-on. */
  name: string;
  /** The agent that made it and keeps the original. */
  agent: string;
  size: number;
  sha256: string;
  copies: BackupCopy[];
  /** Why it is not (fully) off the host, '' when it is. */
  copyError: string;
  origin: BackupOrigin;
  verifyState: VerifyState;
  verifyMessage: string;
  verifiedAt: number | null;
  createdAt: number;
}

/** An add-on's backup schedule: daily at `at` (UTC). */
export interface ScheduleRow {
  addon: string;
  app: string;
  /** `HH:MM`, UTC. */
  at: string;
  keep: number;
  /** A directory on the coordinator's host that also gets a copy, or null. */
  dir: string | null;
  enabled: boolean;
  /** Next firing, Unix ms. */
  nextAt: number;
  lastAt: number | null;
  lastError: string;
}

type Row = Record<string, unknown>;

function backupFrom(r: Row): BackupRow {
  return {
    id: r.id as string,
    addon: r.addon as string,
    app: r.app as string,
    kind: r.kind as string,
    name: r.name as string,
    agent: r.agent as string,
    size: r.size as number,
    sha256: r.sha256 as string,
    copies: JSON.parse(r.copies as string) as BackupCopy[],
    copyError: r.copy_error as string,
    origin: r.origin as BackupOrigin,
    verifyState: r.verify_state as VerifyState,
    verifyMessage: r.verify_message as string,
    verifiedAt: (r.verified_at as number | null) ?? null,
    createdAt: r.created_at as number,
  };
}

function scheduleFrom(r: Row): ScheduleRow {
  return {
    addon: r.addon as string,
    app: r.app as string,
    at: r.at as string,
    keep: r.keep as number,
    dir: (r.dir as string | null) ?? null,
    enabled: r.enabled === 1,
    nextAt: r.next_at as number,
    lastAt: (r.last_at as number | null) ?? null,
    lastError: r.last_error as string,
  };
}

/** See the file comment. */
export class BackupStore {
  readonly #db: SqlDatabase;

  constructor(store: Store) {
    this.#db = store.database;
  }

  insert(b: BackupRow): void {
    this.#db
      .prepare(
        `INSERT INTO addon_backups (id, addon, app, kind, name, agent, size, sha256, copies, copy_error, origin, verify_state,
           verify_message, verified_at, created_at)
         VALUES (@id, @addon, @app, @kind, @name, @agent, @size, @sha256, @copies, @copyError, @origin, @verifyState,
           @verifyMessage, @verifiedAt, @createdAt)`,
      )
      .run({ ...b, copies: JSON.stringify(b.copies) });
  }

  update(id: string, patch: Partial<Pick<BackupRow, 'copies' | 'copyError' | 'verifyState' | 'verifyMessage' | 'verifiedAt'>>): void {
    const columns = {
      copies: 'copies',
      copyError: 'copy_error',
      verifyState: 'verify_state',
      verifyMessage: 'verify_message',
      verifiedAt: 'verified_at',
    };
    const keys = Object.keys(patch) as (keyof typeof patch)[];
    if (keys.length === 0) return;
    const values: Row = { id };
    for (const k of keys) values[k] = k === 'copies' ? JSON.stringify(patch.copies) : patch[k];
    this.#db.prepare(`UPDATE addon_backups SET ${keys.map((k) => `${columns[k]} = @${k}`).join(', ')} WHERE id = @id`).run(values);
  }

  get(id: string): BackupRow | null {
    const r = this.#db.prepare('SELECT * FROM addon_backups WHERE id = ?').get(id) as Row | undefined;
    return r ? backupFrom(r) : null;
  }

  /** The backups of an add-on, newest first. */
  ofAddon(addon: string): BackupRow[] {
    return (this.#db.prepare('SELECT * FROM addon_backups WHERE addon = ? ORDER BY created_at DESC, name DESC').all(addon) as Row[]).map(
      backupFrom,
    );
  }

  /** The backups of an app's add-ons named `name` (a name is unique per add-on only). */
  named(app: string, name: string): BackupRow[] {
    return (this.#db.prepare('SELECT * FROM addon_backups WHERE app = ? AND name = ?').all(app, name) as Row[]).map(backupFrom);
  }

  delete(id: string): void {
    this.#db.prepare('DELETE FROM addon_backups WHERE id = ?').run(id);
  }

  schedule(addon: string): ScheduleRow | null {
    const r = this.#db.prepare('SELECT * FROM addon_backup_schedules WHERE addon = ?').get(addon) as Row | undefined;
    return r ? scheduleFrom(r) : null;
  }

  schedules(): ScheduleRow[] {
    return (this.#db.prepare('SELECT * FROM addon_backup_schedules ORDER BY addon').all() as Row[]).map(scheduleFrom);
  }

  putSchedule(s: ScheduleRow): void {
    this.#db
      .prepare(
        `INSERT INTO addon_backup_schedules (addon, app, at, keep, dir, enabled, next_at, last_at, last_error)
         VALUES (@addon, @app, @at, @keep, @dir, @enabled, @nextAt, @lastAt, @lastError)
         ON CONFLICT (addon) DO UPDATE SET app = @app, at = @at, keep = @keep, dir = @dir, enabled = @enabled, next_at = @nextAt,
           last_at = @lastAt, last_error = @lastError`,
      )
      .run({ ...s, enabled: s.enabled ? 1 : 0 });
  }

  deleteSchedule(addon: string): void {
    this.#db.prepare('DELETE FROM addon_backup_schedules WHERE addon = ?').run(addon);
  }
}
