/**
 * The add-on-server kind of workload (PostgreSQL, Redis, memcached): provisions each once (data
 * under DATA/addons/NAME, a port kept in addon.json), runs it under a supervisor that
 * health-checks it with the server's own protocol, and finds the servers a previous agent left
 * running. The kinds themselves are {@link AddonDriver}s.
 */
import { chmod, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Clock } from '../../common/clock.js';
import { HangarError, describeError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { isOneOf, ADDON_KINDS, type AddonKind, type AddonState } from '../../common/vocabulary.js';
import type { AddonSpec__Output, AddonStatus } from '../../proto/loader.js';
import type { BackoffOptions } from '../workloads/backoff.js';
import { isPortFree } from '../workloads/free-port.js';
import { workloadDirNames } from '../workloads/workload-dirs.js';
import { AppUsers } from '../workloads/app-users.js';
import { chownTree, type RunAs } from '../workloads/run-as.js';
import type {
  Recovered,
  Started,
  StartContext,
  Supervision,
  WorkloadChange,
  WorkloadDriver,
  WorkloadView,
} from '../workloads/workload-driver.js';
import { addonPaths, type AddonContext, type AddonDriver, type AddonPaths, type PreparedServer } from './addon-kind.js';
import { memcachedDriver } from './memcached.js';
import { postgresDriver } from './postgres.js';
import { redisDriver } from './redis.js';

/** Options of {@link AddonServerDriver}. */
export interface AddonServerOptions {
  /** DATA/addons: one directory per add-on. */
  dir: string;
  /** The agent's name, for messages. */
  host: string;
  /** The agent's advertise address: servers listen on it (and on loopback) so app instances reach them. */
  advertise: string;
  /** Restart delays of crashed servers. Default: the supervisor's (1 s doubling to 60 s). */
  backoff?: BackoffOptions;
  /** SIGTERM/SIGINT → SIGKILL grace of a stopping server, ms. Default 30000. */
  graceMs?: number;
  /** The servers' drivers. Default: PostgreSQL, Redis and memcached. */
  drivers?: Partial<Record<AddonKind, AddonDriver>>;
  /**
   * Who the servers of an app run as. Default: the app's own user (`hangar-APP`, see
   * {@link AppUsers}) when the agent is root, else the agent's user.
   */
  runAs?: (app: string) => Promise<RunAs | null>;
  clock: Clock;
  logger: Logger;
  /** Called on every state change of an add-on. */
  onStatus: (status: AddonStatus) => void;
  /** Called once a server stopped (its data kept). */
  onStopped?: (name: string) => void;
}

/** What addon.json holds. */
interface AddonMeta {
  id: string;
  name: string;
  app: string;
  kind: string;
  port: number;
}

/** The add-on servers of desired state, as a kind of workload. */
export class AddonServerDriver implements WorkloadDriver<AddonSpec__Output, AddonContext, AddonStatus> {
  readonly names = { field: 'addon', noun: 'add-on server', preparing: 'provisioning' };
  readonly #o: AddonServerOptions;
  readonly #logger: Logger;
  readonly #kinds: Record<AddonKind, AddonDriver>;
  readonly #users: AppUsers;

  /** @param logger the logger of the runner it serves (component `addons`) */
  constructor(options: AddonServerOptions, logger: Logger) {
    this.#o = options;
    this.#logger = logger;
    this.#kinds = { postgres: postgresDriver(), redis: redisDriver(), memcached: memcachedDriver(), ...options.drivers };
    this.#users = new AppUsers({ homesDir: null, logger });
  }

  /** The driver of add-on kind `kind`; null for a kind this agent does not know. */
  kind(kind: string): AddonDriver | null {
    return isOneOf(ADDON_KINDS, kind) ? this.#kinds[kind] : null;
  }

  /** Who the servers (and scratch servers) of `app` run as; null: the agent's own user. */
  runAsFor(app: string): Promise<RunAs | null> {
    return this.#resolveRunAs(app);
  }

  /** The context of an add-on of this agent that need not run (its port from addon.json). */
  async contextFor(spec: AddonSpec__Output): Promise<AddonContext> {
    const paths = addonPaths(this.#o.dir, spec.name);
    const meta = await readMeta(paths);
    return this.#context(spec, paths, meta?.port ?? spec.port);
  }

  key(spec: AddonSpec__Output): string {
    return spec.name;
  }

  /**
   * Another add-on of the same name (destroyed and created again) replaces the running one; so
   * does a standby of a server that ran as a primary (a fenced primary: it is rebuilt as the
   * standby of the server that replaced it). A standby that is promoted goes on running.
   */
  replaces(current: AddonSpec__Output, next: AddonSpec__Output): boolean {
    return current.id !== next.id || (next.standbyRole === 'standby' && current.standbyRole !== 'standby');
  }

  restartToken(): number {
    return 0;
  }

  async start(spec: AddonSpec__Output, start: StartContext): Promise<Started<AddonContext> | null> {
    const paths = addonPaths(this.#o.dir, spec.name);
    if (!/^[a-z][a-z0-9-]{0,62}$/.test(spec.name)) throw new HangarError('BAD_INPUT', `"${spec.name}" is not a valid add-on name`);
    const driver = this.kind(spec.kind);
    if (!driver) throw new HangarError('BAD_INPUT', `"${spec.kind}" is not a kind of add-on this agent knows`);
    const runAs = await this.#resolveRunAs(spec.app);
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
    const port = meta?.port || (await this.#pickPort(spec.port || driver.preferredPort, start.takenPorts()));
    start.claimPort(port);
    if (!meta) {
      const fresh: AddonMeta = { id: spec.id, name: spec.name, app: spec.app, kind: spec.kind, port };
      await writeFile(paths.meta, JSON.stringify(fresh), { mode: 0o600 });
    }
    await chownTree(paths.root, runAs);
    const ctx = await this.#context(spec, paths, port);
    const server = await driver.prepare(ctx);
    if (!start.wanted()) return null;
    return { supervision: this.#supervision(ctx, server), data: ctx };
  }

  async *recover(specs: readonly AddonSpec__Output[]): AsyncIterable<Recovered<AddonSpec__Output, AddonContext>> {
    const wanted = new Map(specs.map((s) => [s.name, s]));
    for (const name of await workloadDirNames(this.#o.dir)) {
      const paths = addonPaths(this.#o.dir, name);
      const meta = await readMeta(paths);
      if (!meta) continue;
      const kind = this.kind(meta.kind);
      if (!kind) continue;
      const spec = wanted.get(name);
      if (!spec || spec.id !== meta.id) {
        yield { key: name, spec: null, supervision: this.#leftover(name, paths), port: meta.port, data: null };
        continue;
      }
      let found: Recovered<AddonSpec__Output, AddonContext>;
      try {
        const ctx = await this.#context(spec, paths, meta.port, await this.#runningAs(spec.app, paths));
        const server = await kind.prepare(ctx);
        found = { key: name, spec, supervision: this.#supervision(ctx, server), port: meta.port, data: ctx };
      } catch (err) {
        this.#logger.warn({ err, addon: name }, 'could not adopt an add-on server; it will be started again');
        continue;
      }
      yield found;
    }
  }

  /** How to stop a server a previous agent left running that desired state no longer lists (its data stays). */
  #leftover(name: string, paths: AddonPaths): Supervision {
    return {
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
    };
  }

  async beforeStop(): Promise<void> {}

  describeFailure(error: unknown): string {
    return describeError(error);
  }

  inspect(view: WorkloadView<AddonSpec__Output, AddonContext>): AddonStatus {
    const state: AddonState = view.state === 'preparing' ? 'provisioning' : view.state;
    return {
      id: view.spec.id,
      name: view.spec.name,
      app: view.spec.app,
      kind: view.spec.kind,
      state,
      standbyRole: view.spec.standbyRole,
      ...view.vitals,
    };
  }

  report(status: AddonStatus, change: WorkloadChange, view: WorkloadView<AddonSpec__Output, AddonContext>): void {
    switch (change.kind) {
      case 'preparing':
      case 'stopping':
        break;
      case 'failed':
        this.#logger.error({ err: change.error, addon: view.key }, 'add-on could not be provisioned; will try again');
        break;
      case 'stopped':
        this.#logger.info({ addon: view.key }, 'add-on server stopped; its data is kept');
        this.#o.onStopped?.(view.key);
        return;
      case 'event':
        if (change.event.type === 'exited') {
          const { code, signal } = change.event;
          this.#logger.warn({ addon: view.key, code, signal }, 'add-on server exited; it will be restarted');
        } else if (change.event.type === 'healthy') {
          this.#logger.info({ addon: view.key, port: view.vitals.port }, 'add-on server is up');
        }
        break;
    }
    this.#o.onStatus(status);
  }

  /** A failure (e.g. useradd missing) is tried again next time. */
  #resolveRunAs(app: string): Promise<RunAs | null> {
    return this.#o.runAs ? this.#o.runAs(app) : this.#users.forApp(app);
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

  async #pickPort(preferred: number, used: Set<number>): Promise<number> {
    for (let port = preferred; port < preferred + 200 && port < 65536; port++) {
      if (!used.has(port) && (await isPortFree(port))) return port;
    }
    throw new HangarError('ADDON_FAILED', `No free port in ${preferred}-${preferred + 199} on ${this.#o.host}`);
  }

  /**
   * Who a server left running by a previous agent runs as: the owner of its data (an agent from
   * before apps had users of their own ran every server as `hangar`). It keeps that user, its
   * restarts too, so its files are not taken from it while it runs; its next fresh start gives
   * them to the app's user.
   */
  async #runningAs(app: string, paths: AddonPaths): Promise<RunAs | null> {
    const user = await this.#resolveRunAs(app);
    if (!user) return null;
    const owner = await stat(paths.root);
    if (owner.uid === user.uid || owner.uid === 0) return user;
    return { name: `uid ${owner.uid}`, uid: owner.uid, gid: owner.gid, home: user.home };
  }

  async #context(spec: AddonSpec__Output, paths: AddonPaths, port: number, runAs?: RunAs | null): Promise<AddonContext> {
    return {
      spec,
      paths,
      port,
      listen: [...new Set([this.#o.advertise, '127.0.0.1'])],
      advertise: this.#o.advertise,
      runAs: runAs === undefined ? await this.#resolveRunAs(spec.app) : runAs,
      host: this.#o.host,
      logger: this.#logger,
    };
  }

  #supervision(ctx: AddonContext, server: PreparedServer): Supervision {
    const name = ctx.spec.name;
    const options: Supervision = {
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
    };
    if (server.stopSignal) options.stopSignal = server.stopSignal;
    if (this.#o.backoff) options.backoff = this.#o.backoff;
    if (ctx.runAs) {
      options.uid = ctx.runAs.uid;
      options.gid = ctx.runAs.gid;
    }
    return options;
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
