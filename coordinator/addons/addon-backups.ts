/**
 * Add-on backups off the host: a backup (pg_dump -Fc, or a Redis RDB) is made by the add-on's
 * agent, sent to the coordinator, and copied to another agent (and to a directory the user named,
 * on the coordinator's host), each copy checked against the backup's SHA-256. A daily schedule per
 * add-on (default 03:00 UTC, 7 kept) runs them, and after each scheduled backup a verification
 * restore into a scratch server on the agent holding the copy; its result is recorded on the
 * backup. Restores go into a new add-on (`toNew`) or into the add-on itself after a safety backup
 * (pg_restore runs in one transaction; a Redis RDB is loaded beside the data and swapped in by the
 * agent: either way a failed restore leaves the previous data).
 *
 * Files move through the coordinator by transfer ids named in the agents' jobs (see
 * {@link BackupTransfers}); a transfer's file lives in DATA/backup-transit only while it moves.
 */
import { createHash, randomUUID } from 'node:crypto';
import { copyFile, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { AddonBackupView, AddonInfoView, AddonScheduleView, AddonView } from '../../common/api-types.js';
import type { Clock } from '../../common/clock.js';
import { describeError, HangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { TimerLoop } from '../../common/timer-loop.js';
import type { AgentHub } from '../fleet/agent-hub.js';
import type { AddonJobResult__Output } from '../../proto/loader.js';
import type { BackupTransfers } from './backup-transfers.js';
import type { AddonRow, Store } from '../store/store.js';
import { databaseNameOf } from './addon-connection.js';
import type { Addons } from './addons.js';
import { BackupStore, type BackupCopy, type BackupOrigin, type BackupRow, type ScheduleRow } from './backup-store.js';

/** Options of {@link AddonBackups}. */
export interface AddonBackupsOptions {
  store: Store;
  addons: Addons;
  hub: Pick<AgentHub, 'connected' | 'isConnected'>;
  /** DATA/backup-transit: files in transfer. */
  transitDir: string;
  /** The transfers the hub lets agents upload to and fetch from. */
  transfers: BackupTransfers;
  /** What time it is for schedules (tests pass one they move) and the loop's timer. */
  clock: Clock;
  logger: Logger;
  /** Writes a `hangar` line into the app's logs. */
  recordEvent: (app: string, line: string, stream?: 'stdout' | 'stderr') => void;
  /** How often schedules are looked at, ms. Default 30 s. */
  intervalMs?: number;
  /** Longest wait for a new add-on of `restore --to-new` to come up, ms. Default 5 minutes. */
  upTimeoutMs?: number;
}

/** The schedule an add-on has until it is given one: daily at 03:00 UTC, 7 kept. */
export const DEFAULT_SCHEDULE = { at: '03:00', keep: 7 } as const;

/** Kinds of add-on with backups. */
const BACKUP_KINDS = ['postgres', 'redis'];

/** The next time `at` (HH:MM, UTC) comes after `after`, Unix ms. */
export function nextDaily(at: string, after: number): number {
  const [h, m] = at.split(':').map(Number);
  const d = new Date(after);
  let next = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate(), h ?? 0, m ?? 0);
  if (next <= after) next += 24 * 3600_000;
  return next;
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return hash.digest('hex');
}

/** See the module comment. */
export class AddonBackups {
  readonly #o: AddonBackupsOptions;
  readonly #logger: Logger;
  readonly #db: BackupStore;
  readonly #loop: TimerLoop;
  /** Add-ons whose scheduled backup is running. */
  readonly #running = new Set<string>();

  constructor(options: AddonBackupsOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'addon-backups' });
    this.#db = new BackupStore(options.store);
    this.#loop = new TimerLoop({
      clock: options.clock,
      intervalMs: options.intervalMs ?? 30_000,
      run: () => this.tick(),
      onError: (err) => this.#logger.error({ err }, 'the backup scheduler failed a turn'),
    });
  }

  /** Starts the schedule loop; files a previous coordinator left in transit are removed first. */
  async start(): Promise<void> {
    await rm(this.#o.transitDir, { recursive: true, force: true });
    this.#loop.start();
  }

  close(): void {
    this.#loop.close();
  }

  // ---------------------------------------------------------------- backups

  /** The add-on's backups, newest first. */
  list(app: string, name: string): AddonBackupView[] {
    this.#requireBackupable(app, name, false);
    return this.#db.ofAddon(name).map(backupView);
  }

  /**
   * Backs the add-on up now and copies the backup off its host: to another connected agent, and
   * to `dir` (on the coordinator's host) when given. A copy that could not be made is said in
   * the backup's `copyError` (and a `hangar` line), not an error: the backup itself exists.
   */
  async backup(app: string, name: string, options: { origin?: BackupOrigin; dir?: string | null } = {}): Promise<BackupRow> {
    const row = this.#requireBackupable(app, name, true);
    if (options.dir && !options.dir.startsWith('/'))
      throw new HangarError('BAD_INPUT', `--dir must be an absolute path; "${options.dir}" is not.`);
    const result = await this.#o.addons.runJob(row.agent, { addon: name, action: 'backup' });
    const made = result.backup;
    if (!made?.sha256) throw new HangarError('ADDON_FAILED', `${row.agent} did not say which backup it made.`);
    const backup: BackupRow = {
      id: randomUUID(),
      addon: name,
      app,
      kind: row.kind,
      name: made.name,
      agent: row.agent,
      size: Number(made.size),
      sha256: made.sha256,
      copies: [],
      copyError: '',
      origin: options.origin ?? 'manual',
      verifyState: 'unverified',
      verifyMessage: '',
      verifiedAt: null,
      createdAt: Number(made.createdAt) || this.#o.clock.now(),
    };
    this.#db.insert(backup);
    this.#logger.info({ app, addon: name, backup: backup.name, size: backup.size }, 'add-on backed up');
    await this.#copyOff(backup, options.dir ?? null);
    return this.#db.get(backup.id) ?? backup;
  }

  /** Copies a new backup to another agent (and `dir`); records where it is and what failed. */
  async #copyOff(backup: BackupRow, dir: string | null): Promise<void> {
    const copies: BackupCopy[] = [];
    const errors: string[] = [];
    await mkdir(this.#o.transitDir, { recursive: true, mode: 0o700 });
    const transit = join(this.#o.transitDir, `${backup.id}.dump`);
    try {
      await this.#transferJob(backup.agent, 'upload', transit, {
        addon: backup.addon,
        action: 'upload',
        backup: backup.name,
        sha256: backup.sha256,
        where: 'backups',
      });
      if ((await sha256File(transit)) !== backup.sha256) throw new HangarError('BACKUP_CORRUPT', 'the upload does not match its SHA-256');
      const target = this.#otherAgent(backup.agent);
      if (target === null) {
        errors.push(`no other agent is connected to keep a copy (it is only on ${backup.agent})`);
      } else {
        try {
          await this.#transferJob(target, 'fetch', transit, {
            addon: backup.addon,
            action: 'store-copy',
            backup: backup.name,
            sha256: backup.sha256,
            kind: backup.kind,
          });
          copies.push({ agent: target });
        } catch (err) {
          errors.push(`the copy to ${target} failed: ${describeError(err)}`);
        }
      }
      if (dir) {
        try {
          copies.push({ path: await this.#copyToDir(backup, transit, dir) });
        } catch (err) {
          errors.push(`the copy to ${dir} failed: ${describeError(err)}`);
        }
      }
    } catch (err) {
      errors.push(`it could not be sent off ${backup.agent}: ${describeError(err)}`);
    } finally {
      await rm(transit, { force: true });
      await rm(`${transit}.partial`, { force: true });
    }
    const copyError = errors.length > 0 ? `Backup ${backup.name} of ${backup.addon}: ${errors.join('; ')}` : '';
    this.#db.update(backup.id, { copies, copyError });
    if (copyError) {
      this.#logger.warn({ app: backup.app, addon: backup.addon, backup: backup.name }, copyError);
      this.#o.recordEvent(backup.app, copyError, 'stderr');
    }
  }

  /** DIR/APP/ADDON/NAME.dump (and NAME.dump.sha256), checked after the copy. */
  async #copyToDir(backup: BackupRow, from: string, dir: string): Promise<string> {
    const folder = join(dir, backup.app, backup.addon);
    await mkdir(folder, { recursive: true, mode: 0o700 });
    const file = join(folder, `${backup.name}.dump`);
    await copyFile(from, `${file}.partial`);
    if ((await sha256File(`${file}.partial`)) !== backup.sha256) {
      await rm(`${file}.partial`, { force: true });
      throw new HangarError('BACKUP_CORRUPT', 'the copy does not match its SHA-256');
    }
    await rename(`${file}.partial`, file);
    await writeFile(`${file}.sha256`, `${backup.sha256}  ${backup.name}.dump\n`, { mode: 0o600 });
    return file;
  }

  /** A connected agent other than `agent` (the one with the fewest add-ons, then by name), or null. */
  #otherAgent(agent: string): string | null {
    const others = this.#o.hub
      .connected()
      .filter((a) => a !== agent)
      .sort((a, b) => this.#o.addons.countOn(a) - this.#o.addons.countOn(b) || a.localeCompare(b));
    return others[0] ?? null;
  }

  /**
   * A verification restore of the backup: its copy on another agent (checked against the SHA-256
   * first) is restored into a scratch server there and compared with the dump; the result is
   * recorded on the backup. A corrupt copy or a failed restore marks it `failed`.
   */
  async verify(app: string, name: string, backupName: string): Promise<BackupRow> {
    this.#requireBackupable(app, name, false);
    const backup = this.#db.ofAddon(name).find((b) => b.name === backupName);
    if (!backup)
      throw new HangarError('BACKUP_NOT_FOUND', `${name} has no backup ${backupName}; see \`hangar addons:backups ${name} -a ${app}\`.`);
    return this.#verify(backup);
  }

  async #verify(backup: BackupRow): Promise<BackupRow> {
    const holder = backup.copies.flatMap((c) => ('agent' in c ? [c.agent] : [])).find((a) => this.#o.hub.isConnected(a));
    const now = () => this.#o.clock.now();
    if (!holder) {
      const anyAgent = backup.copies.some((c) => 'agent' in c);
      const message = anyAgent
        ? 'the agent holding its copy is not connected; verify it later with `hangar addons:backups:verify`'
        : `it has no copy on another agent to restore it on`;
      this.#db.update(backup.id, { verifyMessage: message });
      return this.#db.get(backup.id) ?? backup;
    }
    try {
      const result = await this.#o.addons.runJob(holder, {
        addon: backup.addon,
        action: 'verify',
        backup: backup.name,
        sha256: backup.sha256,
        where: 'copies',
        kind: backup.kind,
        app: backup.app,
        database: databaseNameOf(backup.app),
      });
      const report = JSON.parse(result.report || '{}') as { tables?: Record<string, number>; keys?: number };
      const message =
        report.tables !== undefined
          ? `restored on ${holder}: ${Object.keys(report.tables).length} tables, ${Object.values(report.tables).reduce((a, b) => a + b, 0)} rows, as in the dump`
          : `restored on ${holder}: ${report.keys ?? 0} keys, as in the RDB`;
      this.#db.update(backup.id, { verifyState: 'verified', verifyMessage: message, verifiedAt: now() });
      this.#logger.info({ app: backup.app, addon: backup.addon, backup: backup.name, holder }, 'backup verified');
    } catch (err) {
      const message = `verification on ${holder} failed: ${describeError(err)}`;
      this.#db.update(backup.id, { verifyState: 'failed', verifyMessage: message, verifiedAt: now() });
      this.#o.recordEvent(backup.app, `Backup ${backup.name} of ${backup.addon} did NOT verify: ${message}`, 'stderr');
      this.#logger.error({ app: backup.app, addon: backup.addon, backup: backup.name }, message);
    }
    return this.#db.get(backup.id) ?? backup;
  }

  // ---------------------------------------------------------------- restores

  /**
   * Restores a backup of the app into a new add-on of its kind (`toNew`), or into the add-on
   * `name` itself once `confirm` names it, after a safety backup.
   */
  async restore(
    app: string,
    name: string,
    backupName: string,
    options: { toNew: boolean; confirm?: string | undefined },
  ): Promise<{ addon: AddonRow; backup: BackupRow; safety: BackupRow | null }> {
    const addon = this.#o.addons.require(app, name);
    const own = this.#db.ofAddon(name).filter((b) => b.name === backupName);
    const found = own.length > 0 ? own : this.#db.named(app, backupName);
    if (found.length === 0) {
      throw new HangarError(
        'BACKUP_NOT_FOUND',
        `${app} has no backup ${backupName}; list them with \`hangar addons:backups ${name} -a ${app}\`.`,
      );
    }
    if (found.length > 1) {
      throw new HangarError(
        'BAD_INPUT',
        `Several add-ons of ${app} have a backup ${backupName} (${found.map((b) => b.addon).join(', ')}); restore it from its own add-on.`,
      );
    }
    const backup = found[0] as BackupRow;
    const kind = backup.kind;
    if (kind !== 'postgres' && kind !== 'redis') {
      throw new HangarError('BAD_INPUT', `Backup ${backupName} is a ${kind} backup; restores are for PostgreSQL and Redis backups.`);
    }
    if (!options.toNew) {
      if (backup.kind !== addon.kind) {
        throw new HangarError(
          'BAD_INPUT',
          `Backup ${backupName} is a ${backup.kind} backup (of ${backup.addon}); ${name} is a ${addon.kind} add-on. Restore it into a ${backup.kind} add-on, or with --to-new.`,
        );
      }
      if (addon.desired !== 'run') throw new HangarError('BAD_INPUT', `${name} is destroyed; restore with --to-new instead.`);
      if (options.confirm !== name) {
        throw new HangarError(
          'BAD_INPUT',
          `This replaces the data of ${name} with backup ${backupName} (a safety backup is taken first); confirm with --confirm ${name}, or restore into a new add-on with --to-new.`,
        );
      }
      const safety = await this.backup(app, name, { origin: 'safety' });
      const keys = restoredKeys(await this.#restoreInto(addon, backup));
      this.#o.recordEvent(app, `Restored backup ${backupName} into ${name}${keys} (safety backup ${safety.name} taken first)`);
      return { addon, backup, safety };
    }
    const created = await this.#o.addons.create(app, { kind });
    const target = await this.#o.addons.waitUp(created.name, this.#o.upTimeoutMs ?? 5 * 60_000);
    const keys = restoredKeys(await this.#restoreInto(target, backup));
    this.#o.recordEvent(
      app,
      `Restored backup ${backupName} of ${backup.addon} into the new add-on ${target.name}${keys} (${target.configVar})`,
    );
    return { addon: this.#o.store.getAddon(target.name) ?? target, backup, safety: null };
  }

  /** Restores into `target` from the original (same add-on, same agent) or through the coordinator from a copy. */
  async #restoreInto(target: AddonRow, backup: BackupRow): Promise<AddonJobResult__Output> {
    if (backup.addon === target.name && backup.agent === target.agent) {
      try {
        return await this.#o.addons.runJob(target.agent, {
          addon: target.name,
          action: 'restore',
          backup: backup.name,
          sha256: backup.sha256,
        });
      } catch (err) {
        // The original is gone or corrupt: a copy elsewhere may still be good.
        if (!(err instanceof HangarError) || (err.code !== 'BACKUP_NOT_FOUND' && err.code !== 'BACKUP_CORRUPT')) throw err;
        this.#logger.warn({ addon: target.name, backup: backup.name, err }, 'the original backup is unusable; restoring from a copy');
      }
    }
    await mkdir(this.#o.transitDir, { recursive: true, mode: 0o700 });
    const transit = join(this.#o.transitDir, `${randomUUID()}.dump`);
    let source: string | null = null;
    const tried: string[] = [];
    const holders: { agent: string; where: string }[] = [
      { agent: backup.agent, where: 'backups' },
      ...backup.copies.flatMap((c) => ('agent' in c ? [{ agent: c.agent, where: 'copies' }] : [])),
    ];
    try {
      for (const h of holders) {
        if (!this.#o.hub.isConnected(h.agent)) continue;
        try {
          await this.#transferJob(h.agent, 'upload', transit, {
            addon: backup.addon,
            action: 'upload',
            backup: backup.name,
            sha256: backup.sha256,
            where: h.where,
          });
          source = transit;
          break;
        } catch (err) {
          tried.push(`${h.agent}: ${describeError(err)}`);
        }
      }
      if (source === null) {
        for (const c of backup.copies) {
          if (!('path' in c)) continue;
          try {
            if ((await sha256File(c.path)) === backup.sha256) {
              source = c.path;
              break;
            }
            tried.push(`${c.path}: corrupt (SHA-256 does not match)`);
          } catch (err) {
            tried.push(`${c.path}: ${describeError(err)}`);
          }
        }
      }
      if (source === null) {
        throw new HangarError(
          'BACKUP_NOT_FOUND',
          `No good copy of backup ${backup.name} is reachable${tried.length ? ` (${tried.join('; ')})` : ''}.`,
        );
      }
      return await this.#transferJob(target.agent, 'fetch', source, {
        addon: target.name,
        action: 'restore',
        backup: backup.name,
        sha256: backup.sha256,
      });
    } finally {
      await rm(transit, { force: true });
      await rm(`${transit}.partial`, { force: true });
    }
  }

  /**
   * Runs a job that moves a file through the coordinator: a transfer of `path` for `agent` (it
   * uploads to it or fetches from it), named in the job and open only while the job runs.
   */
  async #transferJob(
    agent: string,
    mode: 'upload' | 'fetch',
    path: string,
    job: Omit<Parameters<Addons['runJob']>[1], 'transfer'>,
  ): Promise<AddonJobResult__Output> {
    const transfer = this.#o.transfers.open(agent, mode, path);
    try {
      return await this.#o.addons.runJob(agent, { ...job, transfer });
    } finally {
      this.#o.transfers.close(transfer);
    }
  }

  // ---------------------------------------------------------------- schedules

  /** Sets the add-on's daily schedule. */
  setSchedule(
    app: string,
    name: string,
    input: { at: string; keep: number; dir?: string | null | undefined; enabled?: boolean | undefined },
  ): ScheduleRow {
    this.#requireBackupable(app, name, true);
    if (input.dir && !input.dir.startsWith('/'))
      throw new HangarError('BAD_INPUT', `--dir must be an absolute path; "${input.dir}" is not.`);
    const current = this.#db.schedule(name);
    const row: ScheduleRow = {
      addon: name,
      app,
      at: input.at,
      keep: input.keep,
      dir: input.dir ?? null,
      enabled: input.enabled ?? true,
      nextAt: nextDaily(input.at, this.#o.clock.now()),
      lastAt: current?.lastAt ?? null,
      lastError: current?.lastError ?? '',
    };
    this.#db.putSchedule(row);
    return row;
  }

  /** The add-on's schedule (the default one until it was given one). */
  schedule(name: string): ScheduleRow | null {
    return this.#db.schedule(name);
  }

  /** Looks at every schedule once: starts the backups that are due; gives new add-ons the default schedule. */
  tick(): void {
    const now = this.#o.clock.now();
    const known = new Set(this.#db.schedules().map((s) => s.addon));
    for (const row of this.#o.store.listAddons()) {
      if (row.desired !== 'run' || !BACKUP_KINDS.includes(row.kind) || known.has(row.name)) continue;
      this.#db.putSchedule({
        addon: row.name,
        app: row.app,
        ...DEFAULT_SCHEDULE,
        dir: null,
        enabled: true,
        nextAt: nextDaily(DEFAULT_SCHEDULE.at, now),
        lastAt: null,
        lastError: '',
      });
    }
    for (const s of this.#db.schedules()) {
      if (!s.enabled || s.nextAt > now || this.#running.has(s.addon)) continue;
      const addon = this.#o.store.getAddon(s.addon);
      if (!addon || addon.desired !== 'run') {
        this.#db.deleteSchedule(s.addon);
        continue;
      }
      // The next firing is set first: a backup never runs twice for one due time.
      this.#db.putSchedule({ ...s, nextAt: nextDaily(s.at, now) });
      this.#running.add(s.addon);
      void this.#runScheduled(s, now).finally(() => this.#running.delete(s.addon));
    }
  }

  async #runScheduled(s: ScheduleRow, now: number): Promise<void> {
    let lastError = '';
    try {
      const backup = await this.backup(s.app, s.addon, { origin: 'scheduled', dir: s.dir });
      this.#o.recordEvent(s.app, `Scheduled backup ${backup.name} of ${s.addon} done (${backup.size} bytes)`);
      const checked = await this.#verify(backup);
      if (checked.verifyState === 'verified')
        this.#o.recordEvent(s.app, `Backup ${backup.name} of ${s.addon} verified: ${checked.verifyMessage}`);
      if (checked.copyError) lastError = checked.copyError;
      else if (checked.verifyState !== 'verified') lastError = `Backup ${backup.name} is not verified: ${checked.verifyMessage}`;
      await this.#prune(s);
    } catch (err) {
      lastError = `The scheduled backup of ${s.addon} failed: ${describeError(err)}`;
      this.#o.recordEvent(s.app, lastError, 'stderr');
      this.#logger.error({ err, addon: s.addon }, 'a scheduled backup failed');
    }
    const current = this.#db.schedule(s.addon);
    if (current) this.#db.putSchedule({ ...current, lastAt: now, lastError });
  }

  /** Deletes scheduled backups beyond the newest `keep` (manual and safety backups stay); a file that could not be deleted keeps its row for next time. */
  async #prune(s: ScheduleRow): Promise<void> {
    const old = this.#db
      .ofAddon(s.addon)
      .filter((b) => b.origin === 'scheduled')
      .slice(s.keep);
    for (const b of old) {
      try {
        await this.#o.addons.runJob(b.agent, { addon: b.addon, action: 'delete-backup', backup: b.name, where: 'backups' });
        for (const c of b.copies) {
          if ('agent' in c)
            await this.#o.addons.runJob(c.agent, { addon: b.addon, action: 'delete-backup', backup: b.name, where: 'copies' });
          else await rm(c.path, { force: true }).then(() => rm(`${c.path}.sha256`, { force: true }));
        }
        this.#db.delete(b.id);
      } catch (err) {
        this.#logger.warn({ err, addon: b.addon, backup: b.name }, 'an old backup could not be deleted yet');
      }
    }
  }

  // ---------------------------------------------------------------- views

  /** `addons:info`: the add-on with its servers (primary first), schedule and backups. */
  info(view: AddonView, servers: AddonInfoView['servers'], replication: AddonInfoView['replication'] = null): AddonInfoView {
    const name = view.name;
    const backups = this.#db.ofAddon(name).map(backupView);
    const verified = this.#db.ofAddon(name).find((b) => b.verifiedAt !== null);
    const schedule = this.#db.schedule(name);
    return {
      ...view,
      servers,
      replication,
      schedule: schedule ? scheduleView(schedule) : null,
      lastBackup: backups[0] ?? null,
      lastVerifiedRestore: verified
        ? {
            backup: verified.name,
            at: new Date(verified.verifiedAt ?? 0).toISOString(),
            ok: verified.verifyState === 'verified',
            message: verified.verifyMessage,
          }
        : null,
      backups,
    };
  }

  #requireBackupable(app: string, name: string, running: boolean): AddonRow {
    const row = this.#o.addons.require(app, name);
    if (!BACKUP_KINDS.includes(row.kind)) {
      throw new HangarError('BAD_INPUT', `${name} is a ${row.kind} add-on; backups are for PostgreSQL and Redis add-ons.`);
    }
    if (running && row.desired !== 'run') throw new HangarError('BAD_INPUT', `${name} is destroyed; create a new add-on to back up.`);
    return row;
  }
}

/** ` (N keys)` from a Redis restore's report, '' otherwise. */
function restoredKeys(result: AddonJobResult__Output): string {
  try {
    const keys = (JSON.parse(result.report || '{}') as { keys?: unknown }).keys;
    return typeof keys === 'number' ? ` (${keys} keys)` : '';
  } catch {
    return '';
  }
}

/** The API view of a schedule. */
export function scheduleView(s: ScheduleRow): AddonScheduleView {
  return {
    at: s.at,
    keep: s.keep,
    dir: s.dir,
    enabled: s.enabled,
    nextAt: s.enabled ? new Date(s.nextAt).toISOString() : null,
    lastAt: s.lastAt === null ? null : new Date(s.lastAt).toISOString(),
    lastError: s.lastError || null,
  };
}

/** The API view of a backup. */
export function backupView(b: BackupRow): AddonBackupView {
  return {
    name: b.name,
    size: b.size,
    createdAt: new Date(b.createdAt).toISOString(),
    addon: b.addon,
    kind: b.kind === 'redis' ? 'redis' : 'postgres',
    sha256: b.sha256,
    origin: b.origin,
    stored: [{ agent: b.agent, original: true }, ...b.copies.map((c) => ({ ...c, original: false }))],
    offHost: b.copies.length > 0,
    copyError: b.copyError || null,
    verified: b.verifyState,
    verifyMessage: b.verifyMessage,
    verifiedAt: b.verifiedAt === null ? null : new Date(b.verifiedAt).toISOString(),
  };
}
