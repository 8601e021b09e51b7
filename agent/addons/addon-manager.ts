/**
 * Runs this agent's add-on servers (PostgreSQL, Redis, memcached) from desired state — one
 * {@link WorkloadRunner} with the {@link AddonServerDriver} — and the one-shot jobs on add-ons:
 * backups, restores, purges.
 */
import { rm, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError, describeError, isHangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { AddonBackup, AddonJob__Output, AddonJobResult, AddonSpec__Output, AddonStatus } from '../../proto/loader.js';
import { WorkloadRunner } from '../workloads/workload-runner.js';
import { addonPaths, type AddonContext, type AddonPaths } from './addon-kind.js';
import { AddonServerDriver, type AddonServerOptions } from './addon-server-driver.js';

/** Options of {@link AddonManager}. */
export interface AddonManagerOptions extends AddonServerOptions {
  /** A failed provisioning is tried again after this, ms. Default 15000. */
  retryMs?: number;
}

const BACKUP_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/** Runs and keeps up the add-on servers desired state lists for this agent. */
export class AddonManager {
  readonly #o: AddonManagerOptions;
  readonly #logger: Logger;
  readonly #servers: AddonServerDriver;
  readonly #runner: WorkloadRunner<AddonSpec__Output, AddonContext, AddonStatus>;
  /** One job at a time per add-on (a backup and a restore never overlap). */
  readonly #jobChains = new Map<string, Promise<unknown>>();

  constructor(options: AddonManagerOptions) {
    this.#o = options;
    const logger = options.logger.child({ component: 'addons' });
    this.#logger = logger;
    this.#servers = new AddonServerDriver(options, logger);
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
    this.#runner.apply(specs);
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

  async #job(job: AddonJob__Output): Promise<Omit<AddonJobResult, 'id' | 'ok' | 'error' | 'errorCode'>> {
    const paths = addonPaths(this.#o.dir, job.addon);
    if (!/^[a-z][a-z0-9-]{0,62}$/.test(job.addon)) throw new HangarError('BAD_INPUT', `"${job.addon}" is not a valid add-on name`);
    switch (job.action) {
      case 'backups':
        return { backups: await listBackups(paths) };
      case 'purge': {
        await this.#runner.stop(job.addon);
        await rm(paths.root, { recursive: true, force: true });
        this.#logger.info({ addon: job.addon }, 'add-on data purged');
        return { backups: [] };
      }
      case 'backup':
      case 'restore': {
        const server = this.#runner.get(job.addon);
        const ctx = server?.phase === 'running' ? server.data : null;
        if (!server || !ctx) {
          throw new HangarError('ADDON_NOT_FOUND', `${job.addon} is not running on ${this.#o.host}; wait until it is up and try again.`);
        }
        const driver = this.#servers.kind(server.spec.kind);
        if (!driver?.backup || !driver.restore) {
          throw new HangarError('BAD_INPUT', `${job.addon} is a ${server.spec.kind} add-on; backups are for PostgreSQL add-ons.`);
        }
        if (job.action === 'backup') {
          const name = await freeBackupName(paths, new Date(this.#o.clock.now()));
          await driver.backup(ctx, join(paths.backups, `${name}.dump`));
          const backups = await listBackups(paths);
          return { backups, backup: backups.find((b) => b.name === name) ?? null };
        }
        if (!BACKUP_NAME.test(job.backup)) throw new HangarError('BAD_INPUT', `"${job.backup}" is not a backup name`);
        const file = join(paths.backups, `${job.backup}.dump`);
        try {
          await stat(file);
        } catch {
          throw new HangarError(
            'BACKUP_NOT_FOUND',
            `${job.addon} has no backup ${job.backup}; list them with \`hangar addons:backups ${job.addon}\`.`,
          );
        }
        await driver.restore(ctx, file);
        return { backups: await listBackups(paths) };
      }
      default:
        throw new HangarError('BAD_INPUT', `unknown add-on job "${job.action}"`);
    }
  }
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
