/**
 * Runs this agent's add-on servers (PostgreSQL, Redis, memcached) from desired state: provisions
 * each once (data under DATA/addons/NAME), supervises it (own process group, backoff restarts,
 * graceful stop, adoption by pidfile after an agent restart), health-checks it with its own
 * protocol and reports its state. Also runs one-shot jobs on add-ons: backups, restores, purges.
 */
import { chmod, mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Clock, ClockTimer } from '../../common/clock.js';
import { HangarError, describeError, isHangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { AddonBackup, AddonJob__Output, AddonJobResult, AddonSpec__Output, AddonStatus } from '../../proto/loader.js';
import type { BackoffOptions } from '../workloads/backoff.js';
import { Supervisor, type SupervisorEvent, type SupervisorOptions } from '../workloads/supervisor.js';
import {
  addonPaths,
  isAddonKind,
  type AddonContext,
  type AddonDriver,
  type AddonKind,
  type AddonPaths,
  type PreparedServer,
} from './addon-kind.js';
import { memcachedDriver } from './memcached.js';
import { postgresDriver } from './postgres.js';
import { redisDriver } from './redis.js';
import { isPortFree } from '../workloads/free-port.js';
import { DEFAULT_RUN_AS_USER, chownTree, resolveRunAs, type RunAs } from '../workloads/run-as.js';

/** State of an add-on as reported to the coordinator. */
export type AddonState = 'provisioning' | 'starting' | 'up' | 'crashed' | 'stopping' | 'failed';

/** Options of {@link AddonManager}. */
export interface AddonManagerOptions {
  /** DATA/addons: one directory per add-on. */
  dir: string;
  /** The agent's name, for messages. */
  host: string;
  /** The agent's advertise address: servers listen on it (and on loopback) so app instances reach them. */
  advertise: string;
  /** Restart delays of crashed servers. Default: the supervisor's (1 s doubling to 60 s). */
  backoff?: BackoffOptions;
  /** A failed provisioning is tried again after this, ms. Default 15000. */
  retryMs?: number;
  /** SIGTERM/SIGINT → SIGKILL grace of a stopping server, ms. Default 30000. */
  graceMs?: number;
  /** The servers' drivers. Default: PostgreSQL, Redis and memcached. */
  drivers?: Partial<Record<AddonKind, AddonDriver>>;
  /** Who servers run as. Default: {@link resolveRunAs} (the `hangar` user when the agent is root). */
  runAs?: () => Promise<RunAs | null>;
  clock: Clock;
  logger: Logger;
  /** Called on every state change of an add-on. */
  onStatus: (status: AddonStatus) => void;
}

type Phase = 'provisioning' | 'running' | 'failed' | 'stopping';

interface Entry {
  spec: AddonSpec__Output;
  paths: AddonPaths;
  phase: Phase;
  port: number;
  supervisor: Supervisor | null;
  ctx: AddonContext | null;
  message: string;
  since: number;
  failedAt: number;
  /** Retry of a failed provisioning. */
  retryTimer: ClockTimer | null;
  stopping: Promise<void> | null;
}

/** What addon.json holds. */
interface AddonMeta {
  id: string;
  name: string;
  app: string;
  kind: string;
  port: number;
}

const BACKUP_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/** Runs and keeps up the add-on servers desired state lists for this agent. */
export class AddonManager {
  readonly #o: AddonManagerOptions;
  readonly #logger: Logger;
  readonly #drivers: Record<AddonKind, AddonDriver>;
  readonly #entries = new Map<string, Entry>();
  /** One job at a time per add-on (a backup and a restore never overlap). */
  readonly #jobChains = new Map<string, Promise<unknown>>();
  #runAs: Promise<RunAs | null> | null = null;
  #closed = false;

  constructor(options: AddonManagerOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'addons' });
    this.#drivers = { postgres: postgresDriver(), redis: redisDriver(), memcached: memcachedDriver(), ...options.drivers };
  }

  /** Current status of every add-on on this agent. */
  statuses(): AddonStatus[] {
    return [...this.#entries.values()].map((e) => this.#status(e));
  }

  /**
   * After an agent restart: re-attaches to the servers of `specs` that still run (nothing
   * restarts) and stops running leftovers that are no longer wanted. Wanted servers that are not
   * running are started by the next {@link apply}.
   */
  async adopt(specs: readonly AddonSpec__Output[]): Promise<void> {
    const wanted = new Map(specs.map((s) => [s.name, s]));
    let names: string[] = [];
    try {
      names = await readdir(this.#o.dir);
    } catch {
      return;
    }
    for (const name of names) {
      const paths = addonPaths(this.#o.dir, name);
      const meta = await readMeta(paths);
      if (!meta || !isAddonKind(meta.kind)) continue;
      const spec = wanted.get(name);
      try {
        if (!spec || spec.id !== meta.id) {
          await this.#stopLeftover(name, paths);
          continue;
        }
        const ctx = await this.#context(spec, paths, meta.port);
        const server = await this.#drivers[meta.kind].prepare(ctx);
        const supervisor = Supervisor.adopt(this.#supervisorOptions(ctx, server));
        if (!supervisor) continue;
        this.#entries.set(name, {
          spec,
          paths,
          phase: 'running',
          port: meta.port,
          supervisor,
          ctx,
          message: 'adopted after an agent restart',
          since: this.#o.clock.now(),
          failedAt: 0,
          retryTimer: null,
          stopping: null,
        });
        this.#logger.info({ addon: name, pid: supervisor.status().pid }, 'adopted a running add-on server');
      } catch (err) {
        this.#logger.warn({ err, addon: name }, 'could not adopt an add-on server; it will be started again');
      }
    }
  }

  /** Stops a server a previous agent left running that desired state no longer lists (its data stays). */
  async #stopLeftover(name: string, paths: AddonPaths): Promise<void> {
    const supervisor = Supervisor.adopt({
      key: `addon:${name}`,
      command: 'true',
      cwd: paths.root,
      env: {},
      stdoutPath: paths.stdout,
      stderrPath: paths.stderr,
      pidfilePath: paths.pidfile,
      graceMs: this.#o.graceMs ?? 30_000,
      // PostgreSQL's fast shutdown; Redis and memcached stop on SIGINT as on SIGTERM.
      stopSignal: 'SIGINT',
      clock: this.#o.clock,
      logger: this.#logger,
    });
    if (!supervisor) return;
    this.#logger.info({ addon: name }, 'stopping a leftover add-on server that is no longer wanted');
    await supervisor.stop();
  }

  /** Applies the add-ons of a desired-state snapshot; provisioning happens in the background. */
  apply(specs: readonly AddonSpec__Output[]): void {
    if (this.#closed) return;
    const wanted = new Map(specs.map((s) => [s.name, s]));
    for (const [name, entry] of this.#entries) {
      const spec = wanted.get(name);
      if ((!spec || spec.id !== entry.spec.id) && entry.phase !== 'stopping') void this.#stop(entry);
    }
    const now = this.#o.clock.now();
    for (const spec of specs) {
      const entry = this.#entries.get(spec.name);
      if (!entry) {
        this.#launch(spec);
        continue;
      }
      if (entry.phase === 'stopping') continue;
      if (entry.phase === 'failed' && now - entry.failedAt >= (this.#o.retryMs ?? 15_000)) {
        if (entry.retryTimer) this.#o.clock.clearTimeout(entry.retryTimer);
        this.#entries.delete(spec.name);
        this.#launch(spec);
      }
    }
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
  async close(options: { stopInstances: boolean }): Promise<void> {
    this.#closed = true;
    const entries = [...this.#entries.values()];
    for (const e of entries) if (e.retryTimer) this.#o.clock.clearTimeout(e.retryTimer);
    if (options.stopInstances) {
      await Promise.all(entries.map((e) => this.#stop(e)));
    } else {
      for (const e of entries) {
        if (e.phase !== 'stopping') e.supervisor?.detach();
      }
      await Promise.all(entries.flatMap((e) => (e.stopping ? [e.stopping] : [])));
    }
    this.#entries.clear();
  }

  // ---------------------------------------------------------------- provisioning

  #launch(spec: AddonSpec__Output): void {
    const entry: Entry = {
      spec,
      paths: addonPaths(this.#o.dir, spec.name),
      phase: 'provisioning',
      port: 0,
      supervisor: null,
      ctx: null,
      message: 'provisioning',
      since: this.#o.clock.now(),
      failedAt: 0,
      retryTimer: null,
      stopping: null,
    };
    this.#entries.set(spec.name, entry);
    this.#report(entry);
    this.#provision(entry).catch((err: unknown) => {
      if (entry.phase !== 'provisioning') return;
      entry.phase = 'failed';
      entry.failedAt = this.#o.clock.now();
      entry.since = entry.failedAt;
      entry.message = describeError(err);
      this.#logger.error({ err, addon: spec.name }, 'add-on could not be provisioned; will try again');
      this.#report(entry);
      // Tried again on its own: desired state may not change for a long time.
      entry.retryTimer = this.#o.clock.setTimeout(() => {
        entry.retryTimer = null;
        if (this.#closed || this.#entries.get(spec.name) !== entry || entry.phase !== 'failed') return;
        this.#entries.delete(spec.name);
        this.#launch(entry.spec);
      }, this.#o.retryMs ?? 15_000);
    });
  }

  async #provision(entry: Entry): Promise<void> {
    const { spec, paths } = entry;
    if (!/^[a-z][a-z0-9-]{0,62}$/.test(spec.name)) throw new HangarError('BAD_INPUT', `"${spec.name}" is not a valid add-on name`);
    if (!isAddonKind(spec.kind)) throw new HangarError('BAD_INPUT', `"${spec.kind}" is not a kind of add-on this agent knows`);
    const driver = this.#drivers[spec.kind];
    const runAs = await this.#resolveRunAs();
    await this.#ensureAddonsDir(runAs);
    let meta = await readMeta(paths);
    if (meta && meta.id !== spec.id) {
      // A leftover of an earlier add-on of the same name (destroyed without --purge): keep it aside.
      const aside = `${paths.root}.${meta.id.slice(0, 8) || 'old'}.kept`;
      this.#logger.warn({ addon: spec.name, aside }, 'moving the data of an earlier add-on of the same name aside');
      await rename(paths.root, aside);
      meta = null;
    }
    await mkdir(paths.root, { recursive: true, mode: 0o700 });
    await mkdir(paths.backups, { recursive: true, mode: 0o700 });
    const port = meta?.port || (await this.#pickPort(spec.port || driver.preferredPort));
    entry.port = port;
    if (!meta) {
      const fresh: AddonMeta = { id: spec.id, name: spec.name, app: spec.app, kind: spec.kind, port };
      await writeFile(paths.meta, JSON.stringify(fresh), { mode: 0o600 });
    }
    await chownTree(paths.root, runAs);
    const ctx = await this.#context(spec, paths, port);
    const server = await driver.prepare(ctx);
    if (entry.phase !== 'provisioning' || this.#closed) return;
    const supervisor = new Supervisor(this.#supervisorOptions(ctx, server));
    entry.ctx = ctx;
    entry.supervisor = supervisor;
    entry.phase = 'running';
    supervisor.start();
  }

  #resolveRunAs(): Promise<RunAs | null> {
    this.#runAs ??= (this.#o.runAs ?? (() => resolveRunAs(DEFAULT_RUN_AS_USER, null, this.#logger)))();
    // A failure (e.g. useradd missing) is tried again next time.
    this.#runAs.catch(() => {
      this.#runAs = null;
    });
    return this.#runAs;
  }

  /** DATA and DATA/addons must be traversable by the servers' user (not listable: 0711). */
  async #ensureAddonsDir(runAs: RunAs | null): Promise<void> {
    await mkdir(this.#o.dir, { recursive: true, mode: 0o711 });
    if (!runAs) return;
    await chmod(this.#o.dir, 0o711);
    const parent = join(this.#o.dir, '..');
    const mode = (await stat(parent)).mode;
    if ((mode & 0o001) === 0) await chmod(parent, (mode & 0o777) | 0o111);
  }

  async #pickPort(preferred: number): Promise<number> {
    const used = new Set([...this.#entries.values()].map((e) => e.port));
    for (let port = preferred; port < preferred + 200 && port < 65536; port++) {
      if (!used.has(port) && (await isPortFree(port))) return port;
    }
    throw new HangarError('ADDON_FAILED', `No free port in ${preferred}-${preferred + 199} on ${this.#o.host}`);
  }

  async #context(spec: AddonSpec__Output, paths: AddonPaths, port: number): Promise<AddonContext> {
    return {
      spec,
      paths,
      port,
      listen: [...new Set([this.#o.advertise, '127.0.0.1'])],
      advertise: this.#o.advertise,
      runAs: await this.#resolveRunAs(),
      host: this.#o.host,
      logger: this.#logger,
    };
  }

  #supervisorOptions(ctx: AddonContext, server: PreparedServer): SupervisorOptions {
    const name = ctx.spec.name;
    const options: SupervisorOptions = {
      key: `addon:${name}`,
      command: server.command,
      cwd: server.cwd,
      env: server.env,
      stdoutPath: ctx.paths.stdout,
      stderrPath: ctx.paths.stderr,
      pidfilePath: ctx.paths.pidfile,
      graceMs: this.#o.graceMs ?? 30_000,
      healthCheck: server.healthCheck,
      healthIntervalMs: 250,
      clock: this.#o.clock,
      logger: this.#logger,
      onEvent: (event) => this.#onSupervisorEvent(name, event),
    };
    if (server.stopSignal) options.stopSignal = server.stopSignal;
    if (this.#o.backoff) options.backoff = this.#o.backoff;
    if (ctx.runAs) {
      options.uid = ctx.runAs.uid;
      options.gid = ctx.runAs.gid;
    }
    return options;
  }

  #onSupervisorEvent(name: string, event: SupervisorEvent): void {
    const entry = this.#entries.get(name);
    if (!entry || entry.phase === 'stopping') return;
    if (event.type === 'exited') {
      this.#logger.warn({ addon: name, code: event.code, signal: event.signal }, 'add-on server exited; it will be restarted');
    } else if (event.type === 'healthy') {
      this.#logger.info({ addon: name, port: entry.port }, 'add-on server is up');
    }
    this.#report(entry);
  }

  #stop(entry: Entry): Promise<void> {
    if (entry.stopping) return entry.stopping;
    if (entry.retryTimer) this.#o.clock.clearTimeout(entry.retryTimer);
    entry.phase = 'stopping';
    entry.since = this.#o.clock.now();
    entry.message = 'stopping';
    this.#report(entry);
    entry.stopping = (async () => {
      try {
        await entry.supervisor?.stop();
      } catch (err) {
        this.#logger.error({ err, addon: entry.spec.name }, 'failed to stop an add-on server');
      } finally {
        if (this.#entries.get(entry.spec.name) === entry) this.#entries.delete(entry.spec.name);
        this.#logger.info({ addon: entry.spec.name }, 'add-on server stopped; its data is kept');
      }
    })();
    return entry.stopping;
  }

  #status(e: Entry): AddonStatus {
    const s = e.supervisor?.status();
    let state: AddonState;
    switch (e.phase) {
      case 'provisioning':
        state = 'provisioning';
        break;
      case 'failed':
        state = 'failed';
        break;
      case 'stopping':
        state = 'stopping';
        break;
      case 'running':
        state = !s ? 'starting' : s.state === 'stopped' ? 'stopping' : s.state;
        break;
    }
    return {
      id: e.spec.id,
      name: e.spec.name,
      app: e.spec.app,
      kind: e.spec.kind,
      state,
      pid: s?.pid ?? 0,
      port: e.port,
      restarts: s?.restarts ?? 0,
      since: e.phase === 'running' && s ? s.since : e.since,
      message: e.phase === 'running' && s ? s.message : e.message,
    };
  }

  #report(e: Entry): void {
    try {
      this.#o.onStatus(this.#status(e));
    } catch (err) {
      this.#logger.error({ err }, 'add-on status report failed');
    }
  }

  // ---------------------------------------------------------------- jobs

  async #job(job: AddonJob__Output): Promise<Omit<AddonJobResult, 'id' | 'ok' | 'error' | 'errorCode'>> {
    const paths = addonPaths(this.#o.dir, job.addon);
    if (!/^[a-z][a-z0-9-]{0,62}$/.test(job.addon)) throw new HangarError('BAD_INPUT', `"${job.addon}" is not a valid add-on name`);
    switch (job.action) {
      case 'backups':
        return { backups: await listBackups(paths) };
      case 'purge': {
        const entry = this.#entries.get(job.addon);
        if (entry) await this.#stop(entry);
        await rm(paths.root, { recursive: true, force: true });
        this.#logger.info({ addon: job.addon }, 'add-on data purged');
        return { backups: [] };
      }
      case 'backup':
      case 'restore': {
        const entry = this.#entries.get(job.addon);
        if (!entry?.ctx || entry.phase !== 'running') {
          throw new HangarError('ADDON_NOT_FOUND', `${job.addon} is not running on ${this.#o.host}; wait until it is up and try again.`);
        }
        const driver = isAddonKind(entry.spec.kind) ? this.#drivers[entry.spec.kind] : null;
        if (!driver?.backup || !driver.restore) {
          throw new HangarError('BAD_INPUT', `${job.addon} is a ${entry.spec.kind} add-on; backups are for PostgreSQL add-ons.`);
        }
        if (job.action === 'backup') {
          const name = await freeBackupName(paths, new Date(this.#o.clock.now()));
          await driver.backup(entry.ctx, join(paths.backups, `${name}.dump`));
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
        await driver.restore(entry.ctx, file);
        return { backups: await listBackups(paths) };
      }
      default:
        throw new HangarError('BAD_INPUT', `unknown add-on job "${job.action}"`);
    }
  }
}

async function readMeta(paths: AddonPaths): Promise<AddonMeta | null> {
  try {
    const value = JSON.parse(await readFile(paths.meta, 'utf8')) as Partial<AddonMeta>;
    if (typeof value.id !== 'string' || typeof value.kind !== 'string' || typeof value.port !== 'number') return null;
    return { id: value.id, name: value.name ?? '', app: value.app ?? '', kind: value.kind, port: value.port };
  } catch {
    return null;
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
