/**
 * Runs this agent's add-on servers (PostgreSQL, Redis, memcached) from desired state — one
 * {@link WorkloadRunner} with the {@link AddonServerDriver} — and the one-shot jobs on add-ons:
 * backups, restores (a Redis restore stops and starts its server: see `redis-restore.ts`), purges,
 * and the off-host part of backups: sending a backup to the coordinator, keeping a copy of another
 * agent's backup (DATA/backup-copies/ADDON/NAME.dump), and verification restores of a copy into a
 * scratch server; and the replication jobs of PostgreSQL standbys (set up the primary, report lag,
 * promote, demote). Every file is checked against the backup's SHA-256 before it is kept, sent or
 * restored.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chown, mkdir, rename, rm, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { HangarError, describeError, isHangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { AddonBackup, AddonJob__Output, AddonJobResult, AddonSpec__Output, AddonStatus } from '../../proto/loader.js';
import { WorkloadRunner } from '../workloads/workload-runner.js';
import { addonPaths, type AddonContext, type AddonPaths, type ServerControl } from './addon-kind.js';
import { AddonServerDriver, type AddonServerOptions } from './addon-server-driver.js';
import { verifyBackup } from './backup-verify.js';
import { scramVerifier } from './postgres.js';
import { demoteStopped, fence, prepareSource, promote, replicationStatus, setSynchronous, unfence } from './postgres-replication.js';
import { findPostgresBin } from './server-binaries.js';

/** Options of {@link AddonManager}. */
export interface AddonManagerOptions extends AddonServerOptions {
  /** A failed provisioning is tried again after this, ms. Default 15000. */
  retryMs?: number;
  /** Where copies of other agents' backups are kept. Default: DIR-copies beside {@link AddonServerOptions.dir}. */
  copiesDir?: string;
  /** Backup files to and from the coordinator (null before the agent joined). */
  transfers?: BackupTransfers;
}

/** How backup files travel between agents: through the coordinator, by transfer id. */
export interface BackupTransfers {
  upload(transfer: string, source: AsyncIterable<Buffer>): Promise<{ sha256: string; size: number }>;
  fetch(transfer: string): Readable;
}

const BACKUP_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/** How long a server stopped for a restore may take to be up again, ms (real time). */
const SERVER_UP_MS = 120_000;

/** Runs and keeps up the add-on servers desired state lists for this agent. */
export class AddonManager {
  readonly #o: AddonManagerOptions;
  readonly #logger: Logger;
  readonly #servers: AddonServerDriver;
  readonly #runner: WorkloadRunner<AddonSpec__Output, AddonContext, AddonStatus>;
  /** One job at a time per add-on (a backup and a restore never overlap). */
  readonly #jobChains = new Map<string, Promise<unknown>>();
  /** The add-ons of the last snapshot applied. */
  #specs: readonly AddonSpec__Output[] = [];

  constructor(options: AddonManagerOptions) {
    this.#o = options;
    const logger = options.logger.child({ component: 'addons' });
    this.#logger = logger;
    // A server replaced by another spec under its name (a new add-on, a primary that is to be a
    // standby) starts once the old one stopped.
    this.#servers = new AddonServerDriver({ ...options, onStopped: () => this.#runner.apply(this.#specs) }, logger);
    this.#runner = new WorkloadRunner(this.#servers, {
      retryMs: options.retryMs ?? 15_000,
      // Tried again on its own: desired state may not change for a long time.
      retryByTimer: true,
      startAfterStop: false,
      clock: options.clock,
      logger,
    });
  }

  /** Current status of every add-on on this agent. */
  statuses(): AddonStatus[] {
    return this.#runner.statuses();
  }

  /**
   * After an agent restart: re-attaches to the servers of `specs` that still run (nothing
   * restarts) and stops running leftovers that are no longer wanted. Wanted servers that are not
   * running are started by the next {@link apply}.
   */
  adopt(specs: readonly AddonSpec__Output[]): Promise<void> {
    return this.#runner.adopt(specs);
  }

  /** Applies the add-ons of a desired-state snapshot; provisioning happens in the background. */
  apply(specs: readonly AddonSpec__Output[]): void {
    this.#specs = specs;
    this.#runner.apply(specs);
  }

  /** True while the add-on's server is supervised here (running or starting). */
  isRunning(name: string): boolean {
    const phase = this.#runner.get(name)?.phase;
    return phase === 'running' || phase === 'preparing';
  }

  /** Runs a one-shot job on an add-on of this agent and says how it went. Never throws. */
  runJob(job: AddonJob__Output): Promise<AddonJobResult> {
    const previous = this.#jobChains.get(job.addon) ?? Promise.resolve();
    const run = previous
      .catch(() => undefined)
      .then(() => this.#job(job))
      .then(
        (result): AddonJobResult => ({ id: job.id, ok: true, error: '', errorCode: '', ...result }),
        (err: unknown): AddonJobResult => ({
          id: job.id,
          ok: false,
          error: describeError(err),
          errorCode: isHangarError(err) ? err.code : 'ADDON_FAILED',
          backups: [],
        }),
      );
    this.#jobChains.set(job.addon, run);
    void run.finally(() => {
      if (this.#jobChains.get(job.addon) === run) this.#jobChains.delete(job.addon);
    });
    return run;
  }

  /**
   * Stops supervising. With `stopInstances` every server is stopped; without, they keep running
   * for the next agent to adopt.
   */
  close(options: { stopInstances: boolean }): Promise<void> {
    return this.#runner.close(options);
  }

  /** Stops and starts the server of `addon` for a restore; a start waits (bounded) for its health check. */
  #serverControl(addon: string): ServerControl {
    return {
      stop: () => this.#runner.pause(addon),
      start: async () => {
        this.#runner.resume(addon);
        const deadline = Date.now() + SERVER_UP_MS;
        for (;;) {
          const view = this.#runner.get(addon);
          if (view?.state === 'up') return;
          if (Date.now() > deadline) {
            throw new HangarError(
              'ADDON_FAILED',
              `${addon} did not come up within ${SERVER_UP_MS / 1000} s (${view?.vitals.message ?? 'gone'})`,
            );
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      },
    };
  }

  #transfers(): BackupTransfers {
    if (!this.#o.transfers) throw new HangarError('UNREACHABLE', `${this.#o.host} is not joined to a coordinator`);
    return this.#o.transfers;
  }

  /**
   * The size and SHA-256 of a backup file this agent holds.
   *
   * @throws HangarError `BACKUP_NOT_FOUND` when it is not there; `BACKUP_CORRUPT` when its bytes no longer match the job's SHA-256.
   */
  async #checkedFile(job: AddonJob__Output, file: string): Promise<{ size: number; sha256: string }> {
    let size: number;
    try {
      size = (await stat(file)).size;
    } catch {
      throw new HangarError('BACKUP_NOT_FOUND', `${this.#o.host} holds no copy of backup ${job.backup} of ${job.addon}`);
    }
    const sha256 = await sha256File(file);
    if (job.sha256 && sha256 !== job.sha256) {
      throw new HangarError(
        'BACKUP_CORRUPT',
        `the copy of ${job.backup} on ${this.#o.host} is corrupt: its SHA-256 is ${sha256.slice(0, 12)}…, the backup's is ${job.sha256.slice(0, 12)}…`,
      );
    }
    return { size, sha256 };
  }

  /** Fetches a transfer into `file` (through FILE.partial), keeping it only when its SHA-256 matches the job's. */
  async #fetchChecked(job: AddonJob__Output, file: string): Promise<{ size: number; sha256: string }> {
    const partial = `${file}.partial`;
    const hash = createHash('sha256');
    let size = 0;
    try {
      const source = this.#transfers().fetch(job.transfer);
      source.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        size += chunk.length;
      });
      await pipeline(source, createWriteStream(partial, { mode: 0o600 }));
      const sha256 = hash.digest('hex');
      if (sha256 !== job.sha256) {
        throw new HangarError(
          'BACKUP_CORRUPT',
          `backup ${job.backup} arrived on ${this.#o.host} with SHA-256 ${sha256.slice(0, 12)}…, not ${job.sha256.slice(0, 12)}…`,
        );
      }
      await rename(partial, file);
      return { size, sha256 };
    } finally {
      await rm(partial, { force: true });
    }
  }

  /** The running PostgreSQL server of `job`, or ADDON_NOT_FOUND. */
  #runningPostgres(job: AddonJob__Output): AddonContext {
    const server = this.#runner.get(job.addon);
    const ctx = server?.phase === 'running' ? server.data : null;
    if (!server || !ctx) {
      throw new HangarError('ADDON_NOT_FOUND', `${job.addon} is not running on ${this.#o.host}; wait until it is up and try again.`);
    }
    if (server.spec.kind !== 'postgres') {
      throw new HangarError('BAD_INPUT', `${job.addon} is a ${server.spec.kind} add-on; standbys and failover are for PostgreSQL add-ons.`);
    }
    return ctx;
  }

  /** Streaming replication jobs (see postgres-replication.ts); `report` is JSON. */
  async #replicationJob(job: AddonJob__Output): Promise<Omit<AddonJobResult, 'id' | 'ok' | 'error' | 'errorCode'>> {
    const ctx = this.#runningPostgres(job);
    const bin = await findPostgresBin(this.#o.host);
    switch (job.action) {
      case 'standby-source':
        await prepareSource(ctx, bin, job.standbyReplicationPassword, (p) => scramVerifier(p));
        this.#logger.info({ addon: job.addon }, 'ready to stream to a standby');
        return { backups: [] };
      case 'promote':
        await promote(ctx, bin);
        this.#logger.warn({ addon: job.addon }, 'standby promoted: this server is the primary now');
        return { backups: [] };
      case 'sync-on':
      case 'sync-off':
        await setSynchronous(ctx, bin, job.action === 'sync-on');
        this.#logger.warn(
          { addon: job.addon },
          job.action === 'sync-on' ? 'synchronous replication on' : 'synchronous replication off (async)',
        );
        return { backups: [] };
      case 'demote': {
        // A clean (fast) shutdown: the WAL sender sends everything, the shutdown checkpoint
        // included, to the connected standby before the server exits.
        // Fenced first: the server is not started again as a primary once it stopped.
        await fence(ctx);
        await this.#runner.stop(job.addon);
        let lsn: string;
        try {
          lsn = await demoteStopped(ctx, bin);
        } catch (err) {
          await unfence(ctx);
          this.#runner.apply(this.#specs);
          throw err;
        }
        this.#logger.warn({ addon: job.addon, lsn }, 'primary stopped and fenced for a planned failover');
        return { backups: [], report: JSON.stringify({ lsn }) };
      }
      default:
        return { backups: [], report: JSON.stringify(await replicationStatus(ctx, bin)) };
    }
  }

  /** A planned failover that did not happen: the demoted primary starts again as the primary. */
  async #undemote(job: AddonJob__Output): Promise<Omit<AddonJobResult, 'id' | 'ok' | 'error' | 'errorCode'>> {
    const spec = this.#specs.find((s) => s.name === job.addon);
    if (!spec) throw new HangarError('ADDON_NOT_FOUND', `${job.addon} is not in this agent's desired state`);
    const ctx = await this.#servers.contextFor(spec);
    await unfence(ctx);
    this.#runner.apply(this.#specs);
    this.#logger.warn({ addon: job.addon }, 'fence taken down: the planned failover did not happen, this server is the primary again');
    return { backups: [] };
  }

  async #job(job: AddonJob__Output): Promise<Omit<AddonJobResult, 'id' | 'ok' | 'error' | 'errorCode'>> {
    const paths = addonPaths(this.#o.dir, job.addon);
    if (!/^[a-z][a-z0-9-]{0,62}$/.test(job.addon)) throw new HangarError('BAD_INPUT', `"${job.addon}" is not a valid add-on name`);
    const copies = join(this.#o.copiesDir ?? `${this.#o.dir}-copies`, job.addon);
    const fileOf = (where = job.where): string => {
      if (!BACKUP_NAME.test(job.backup)) throw new HangarError('BAD_INPUT', `"${job.backup}" is not a backup name`);
      return join(where === 'copies' ? copies : paths.backups, `${job.backup}.dump`);
    };
    switch (job.action) {
      case 'upload': {
        const file = fileOf();
        const local = await this.#checkedFile(job, file);
        const sent = await this.#transfers().upload(job.transfer, createReadStream(file, { highWaterMark: 256 * 1024 }));
        if (sent.sha256 !== local.sha256) {
          throw new HangarError('ADDON_FAILED', `the coordinator received other bytes than ${job.backup} holds; try again`);
        }
        return { backups: [] };
      }
      case 'store-copy': {
        const file = fileOf('copies');
        await mkdir(copies, { recursive: true, mode: 0o700 });
        const got = await this.#fetchChecked(job, file);
        this.#logger.info({ addon: job.addon, backup: job.backup, size: got.size }, 'kept a copy of a backup');
        return { backups: [], backup: { name: job.backup, size: got.size, createdAt: Date.now(), sha256: got.sha256, kind: job.kind } };
      }
      case 'verify': {
        const file = fileOf();
        await this.#checkedFile(job, file);
        const report = await verifyBackup({
          kind: job.kind,
          file,
          database: job.database,
          runAs: await this.#servers.runAsFor(job.app),
          host: this.#o.host,
          logger: this.#logger,
        });
        this.#logger.info({ addon: job.addon, backup: job.backup }, 'backup verified by a restore');
        return { backups: [], report: JSON.stringify(report) };
      }
      case 'delete-backup':
        await rm(fileOf(), { force: true });
        return { backups: [] };
      case 'backups':
        return { backups: await listBackups(paths) };
      case 'purge': {
        await this.#runner.stop(job.addon);
        await rm(paths.root, { recursive: true, force: true });
        this.#logger.info({ addon: job.addon }, 'add-on data purged');
        return { backups: [] };
      }
      case 'standby-source':
      case 'replication':
      case 'promote':
      case 'demote':
      case 'sync-on':
      case 'sync-off':
        return this.#replicationJob(job);
      case 'undemote':
        return this.#undemote(job);
      case 'backup':
      case 'restore': {
        const server = this.#runner.get(job.addon);
        const ctx = server?.phase === 'running' ? server.data : null;
        if (!server || !ctx) {
          throw new HangarError('ADDON_NOT_FOUND', `${job.addon} is not running on ${this.#o.host}; wait until it is up and try again.`);
        }
        const driver = this.#servers.kind(server.spec.kind);
        if (job.action === 'backup') {
          if (!driver?.backup) {
            throw new HangarError(
              'BAD_INPUT',
              `${job.addon} is a ${server.spec.kind} add-on; backups are for PostgreSQL and Redis add-ons.`,
            );
          }
          const name = await freeBackupName(paths, new Date(this.#o.clock.now()));
          const file = join(paths.backups, `${name}.dump`);
          await driver.backup(ctx, file);
          const sha256 = await sha256File(file);
          const backups = await listBackups(paths);
          const made = backups.find((b) => b.name === name);
          return { backups, backup: made ? { ...made, sha256, kind: server.spec.kind } : null };
        }
        if (!driver?.restore) {
          throw new HangarError(
            'BAD_INPUT',
            `${job.addon} is a ${server.spec.kind} add-on; restores are for PostgreSQL and Redis add-ons.`,
          );
        }
        if (!BACKUP_NAME.test(job.backup)) throw new HangarError('BAD_INPUT', `"${job.backup}" is not a backup name`);
        const control = this.#serverControl(job.addon);
        const restored = (file: string) => driver.restore?.(ctx, file, control);
        if (job.transfer) {
          // A backup kept elsewhere: fetched beside the add-on's own, checked, restored, removed.
          const fetched = join(paths.backups, `.restore-${job.backup}.dump`);
          try {
            await this.#fetchChecked(job, fetched);
            if (ctx.runAs) await chown(fetched, ctx.runAs.uid, ctx.runAs.gid);
            return { backups: await listBackups(paths), ...reportOf(await restored(fetched)) };
          } finally {
            await rm(fetched, { force: true });
          }
        }
        const file = join(paths.backups, `${job.backup}.dump`);
        try {
          await stat(file);
        } catch {
          throw new HangarError(
            'BACKUP_NOT_FOUND',
            `${job.addon} has no backup ${job.backup}; list them with \`hangar addons:backups ${job.addon}\`.`,
          );
        }
        if (job.sha256) await this.#checkedFile(job, file);
        const report = reportOf(await restored(file));
        return { backups: await listBackups(paths), ...report };
      }
      default:
        throw new HangarError('BAD_INPUT', `unknown add-on job "${job.action}"`);
    }
  }
}

/** A restore's report as the job's `report` (JSON), when it made one. */
function reportOf(report: object | void): { report?: string } {
  return report ? { report: JSON.stringify(report) } : {};
}

/** SHA-256 of a file, hex. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return hash.digest('hex');
}

/** Backups of an add-on, newest first. */
async function listBackups(paths: AddonPaths): Promise<AddonBackup[]> {
  let names: string[] = [];
  try {
    names = await readdir(paths.backups);
  } catch {
    return [];
  }
  const backups: AddonBackup[] = [];
  for (const file of names) {
    if (!file.endsWith('.dump')) continue;
    const s = await stat(join(paths.backups, file));
    backups.push({ name: file.slice(0, -'.dump'.length), size: s.size, createdAt: Math.round(s.mtimeMs) });
  }
  return backups.sort((a, b) => Number(b.createdAt) - Number(a.createdAt) || String(b.name).localeCompare(String(a.name)));
}

/** `b20261122-024300` (UTC), with `-2`, `-3`… when taken. */
async function freeBackupName(paths: AddonPaths, at: Date): Promise<string> {
  const stamp = at.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const taken = new Set((await listBackups(paths)).map((b) => b.name));
  let name = `b${stamp}`;
  for (let n = 2; taken.has(name); n++) name = `b${stamp}-${n}`;
  return name;
}
