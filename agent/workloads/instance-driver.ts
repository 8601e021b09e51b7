/**
 * The app-instance kind of workload: builds the release (fetch, virtualenv, collectstatic once
 * per release config), picks a port, keeps beside the instance what a restarted agent needs to
 * adopt it, runs it under a supervisor (web instances are up once their health check passes in
 * a row) and drains a web instance from the router before it stops.
 */
import { existsSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sleep, type Clock } from '../../common/clock.js';
import { describeError } from '../../common/errors.js';
import { DEFAULT_DRAIN_SECONDS, STOP_SIGNALS, instanceName, parseInstanceKey } from '../../common/vocabulary.js';
import type { Logger } from '../../common/logger.js';
import { MEMORY_SOFT_SHARE } from '../../common/resource-limits.js';
import type { CgroupHierarchy } from '../limits/cgroup.js';
import type { InstanceSpec__Output, InstanceStatus } from '../../proto/loader.js';
import { buildSlug, type SlugBuildDeps } from '../build/slug-build.js';
import { markStaticDone, runDjangoBuild, staticDone, staticMarker } from '../build/django-build.js';
import { instanceLogTail } from '../logs/log-tail.js';
import type { RouterControl } from '../router/router-client.js';
import type { BackoffOptions } from './backoff.js';
import { bindCommand, dialAddress } from './bind-address.js';
import { freePort } from './free-port.js';
import { httpHealthProbe } from './health-check.js';
import { HealthFailureLog } from './health-failure-log.js';
import { NO_HOME, ownedDir, type RunAs } from './run-as.js';
import { workloadDirNames } from './workload-dirs.js';
import { WorkloadRunner } from './workload-runner.js';
import type { Relaunch } from './supervisor.js';
import type { Recovered, Started, StartContext, Supervision, WorkloadChange, WorkloadDriver, WorkloadView } from './workload-driver.js';

/** The runner of this agent's app instances. */
export type InstanceRunner = WorkloadRunner<InstanceSpec__Output, InstanceData, InstanceStatus>;

/** Options of {@link InstanceDriver}. */
export interface InstanceDriverOptions extends SlugBuildDeps {
  /** Per-instance directories (pidfile, output files, metadata) go under it. */
  instancesDir: string;
  router: RouterControl;
  /** Restart delays of crashed instances. Default: the supervisor's. */
  backoff?: BackoffOptions;
  /** Non-web instances count as up after running this long, ms. Default 1000. */
  settleMs?: number;
  /** A failed build is tried again after this, ms. Default 15000. */
  buildRetryMs?: number;
  /** Where instances get their own cgroup with their limits; null or absent: limits are not enforced. */
  cgroups?: CgroupHierarchy | null;
  /** Limits of instances whose process type sets none in app.json. Default: none. */
  defaultLimits?: InstanceLimits;
  /**
   * The address web instances listen on (a Procfile's `0.0.0.0:$PORT` is swapped for it) and are
   * health-checked at: the agent's advertise address. `0.0.0.0` leaves binds as they are.
   * Default 0.0.0.0.
   */
  instanceAddress?: string;
  /**
   * The coordinator's CA certificate file: instances get it as `PGSSLROOTCERT` (unless their
   * config sets one), so `sslmode=verify-full` checks their PostgreSQL add-on. Default: none.
   */
  caFile?: string;
  clock: Clock;
  logger: Logger;
  /** Called on every state change of an instance (kind: started, healthy, exited, …). */
  onStatus: (status: InstanceStatus, kind: string, exit?: { code: number | null; signal: string | null }) => void;
}

/** Memory and CPU limits of an instance; null: none. */
export interface InstanceLimits {
  memoryBytes: number | null;
  cpu: number | null;
}

/** What the driver knows of a running instance. */
export interface InstanceData {
  /** DATA/instances/<instanceDirName(key)>. */
  dir: string;
  /** Its CPU limit in cores, or null. */
  cpu: number | null;
  /** What it was started with (its port, slug, user, limits), as in its meta.json. */
  meta: InstanceMeta;
}

/** Time between health checks of a starting web instance, ms. */
const HEALTH_INTERVAL_MS = 250;
/** Pause between the passing checks in a row, ms. */
const HEALTH_RECHECK_MS = 100;

/** What is kept beside a running instance so a restarted agent can adopt it. */
interface InstanceMeta {
  port: number;
  appDir: string;
  buildEnv: Record<string, string>;
  /** Who it runs as (null: the agent's user); absent in what older agents wrote. */
  user?: RunAs | null;
  /** Its stop grace, ms, for an agent that adopts it when desired state no longer lists it. */
  graceMs?: number;
  /** Its limits and the app its cgroup is under (absent: started without a cgroup). */
  limits?: InstanceLimits & { app: string };
  /** Its stop signal (app.json `stop_signal`), for the same agent; absent: SIGTERM. */
  stopSignal?: string;
}

/** A stop signal from desired state or meta.json; anything else (a bad or missing one) is SIGTERM. */
function stopSignalOf(name: string | undefined): NodeJS.Signals {
  return (STOP_SIGNALS as readonly string[]).includes(name ?? '') ? (name as NodeJS.Signals) : 'SIGTERM';
}

/** Directory name of an instance key (`shop:web.1:v3` → `shop_web.1_v3`). */
export function instanceDirName(key: string): string {
  return key.replace(/[^A-Za-z0-9._-]/g, '_');
}

/**
 * Runs the app instances of desired state: builds releases, starts, restarts and stops instances
 * (draining web ones from the router first). A failed build is tried again when desired state
 * is applied after `buildRetryMs`.
 */
export function createInstanceRunner(options: InstanceDriverOptions): InstanceRunner {
  const logger = options.logger.child({ component: 'reconciler' });
  return new WorkloadRunner(new InstanceDriver(options, logger), {
    retryMs: options.buildRetryMs ?? 15_000,
    retryByTimer: false,
    startAfterStop: true,
    clock: options.clock,
    logger,
  });
}

/** The app instances of desired state, as a kind of workload. */
export class InstanceDriver implements WorkloadDriver<InstanceSpec__Output, InstanceData, InstanceStatus> {
  readonly names = { field: 'instance', noun: 'instance', preparing: 'building' };
  readonly #o: InstanceDriverOptions;
  readonly #logger: Logger;
  /** collectstatic runs in progress, by marker path (instances of one release share one). */
  readonly #staticRuns = new Map<string, Promise<void>>();

  /** @param logger the logger of the runner it serves (component `reconciler`) */
  constructor(options: InstanceDriverOptions, logger: Logger) {
    this.#o = options;
    this.#logger = logger;
  }

  key(spec: InstanceSpec__Output): string {
    return spec.key;
  }

  replaces(): boolean {
    return false;
  }

  restartToken(spec: InstanceSpec__Output): number {
    return spec.restartNonce;
  }

  relaunch(spec: InstanceSpec__Output, data: InstanceData): Relaunch {
    const { command, env, graceMs, stopSignal } = this.#supervision(spec, instanceDirName(spec.key), data.dir, data.meta);
    return { command, env, graceMs, stopSignal };
  }

  async start(spec: InstanceSpec__Output, ctx: StartContext): Promise<Started<InstanceData> | null> {
    const { build, user } = await buildSlug(this.#o, spec.app, spec.artifactSha256, this.#logger);
    if (!ctx.wanted()) return null;
    await this.#collectStatic(build.appDir, { ...spec.env, ...build.env }, spec.env, user);
    if (!ctx.wanted()) return null;
    let port = 0;
    for (let tries = 0; tries < 20 && (port === 0 || ctx.takenPorts().has(port)); tries++) port = await freePort();
    ctx.claimPort(port);
    const dir = join(this.#o.instancesDir, instanceDirName(spec.key));
    const meta: InstanceMeta = {
      port,
      appDir: build.appDir,
      buildEnv: build.env,
      user,
      graceMs: spec.graceSeconds * 1000,
      stopSignal: spec.stopSignal || 'SIGTERM',
    };
    // A cgroup of its own only where it has a limit to enforce.
    const limits = this.#limitsOf(spec);
    if (this.#o.cgroups && (limits.memoryBytes !== null || limits.cpu !== null)) meta.limits = { app: spec.app, ...limits };
    // The agent opens the output files and hands the instance their descriptors: the app may
    // read its own (root's, with the app's group) but never write or swap them; other apps
    // cannot enter.
    await ownedDir(this.#o.instancesDir, 0o711, null, 'group');
    await ownedDir(dir, user ? 0o750 : 0o700, user, 'group');
    await writeFile(join(dir, 'meta.json'), JSON.stringify(meta), { mode: 0o600 });
    if (!ctx.wanted()) return null;
    return {
      supervision: this.#supervision(spec, instanceDirName(spec.key), dir, meta),
      data: { dir, cpu: meta.limits?.cpu ?? null, meta },
    };
  }

  async *recover(specs: readonly InstanceSpec__Output[]): AsyncIterable<Recovered<InstanceSpec__Output, InstanceData>> {
    const wanted = new Map(specs.map((s) => [instanceDirName(s.key), s]));
    for (const name of await workloadDirNames(this.#o.instancesDir)) {
      const dir = join(this.#o.instancesDir, name);
      let meta: InstanceMeta;
      try {
        meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as InstanceMeta;
      } catch {
        continue;
      }
      const spec = wanted.get(name) ?? null;
      // Adopted with the limits it was started with, but under this agent's defaults.
      if (meta.limits && spec) meta.limits = { app: spec.app, ...this.#limitsOf(spec) };
      if (meta.user === undefined) {
        // Written by an agent from before apps had users of their own: it ran as the owner of its
        // slug, and so do its restarts (its next release gets the app's own user).
        try {
          const owner = await stat(meta.appDir);
          meta.user =
            owner.uid === 0 || process.getuid?.() !== 0
              ? null
              : { name: `uid ${owner.uid}`, uid: owner.uid, gid: owner.gid, home: NO_HOME };
        } catch (err) {
          this.#logger.warn({ err, instance: name }, 'could not tell the user of an adopted instance');
        }
      }
      yield {
        key: spec?.key ?? name,
        spec,
        supervision: this.#supervision(spec, name, dir, meta),
        port: meta.port,
        data: { dir, cpu: meta.limits?.cpu ?? null, meta },
      };
    }
  }

  async beforeStop(view: WorkloadView<InstanceSpec__Output, InstanceData>): Promise<void> {
    // Routes without it were applied already; let requests this router has in flight finish.
    if (view.spec.type === 'web') {
      // app.json's drain_seconds bounds both its open requests and its websockets/SSE streams.
      const drainMs = (view.spec.drainSeconds > 0 ? view.spec.drainSeconds : DEFAULT_DRAIN_SECONDS) * 1000;
      await this.#o.router.drain(view.key, drainMs, drainMs);
    }
  }

  describeFailure(error: unknown): string {
    return `could not start: ${describeError(error)}`;
  }

  inspect(view: WorkloadView<InstanceSpec__Output, InstanceData>): InstanceStatus {
    const state = view.state === 'preparing' ? 'starting' : view.state === 'failed' ? 'crashed' : view.state;
    return {
      key: view.key,
      state,
      ...view.vitals,
      memoryBytes: view.limits?.memoryBytes ?? 0,
      memoryLimitBytes: view.limits?.memoryLimitBytes ?? 0,
      reason: view.limits?.reason ?? '',
      cpuLimit: view.data?.cpu ?? 0,
      // Why it is not up yet, for a rollout that fails on it (a small read from the file ends).
      logTail:
        view.phase === 'running' && view.data && state !== 'up' && state !== 'stopping'
          ? instanceLogTail(join(view.data.dir, 'stdout.log'), join(view.data.dir, 'stderr.log'))
          : '',
    };
  }

  report(status: InstanceStatus, change: WorkloadChange, view: WorkloadView<InstanceSpec__Output, InstanceData>): void {
    switch (change.kind) {
      case 'preparing':
        this.#o.onStatus(status, 'building');
        return;
      case 'failed':
        this.#logger.warn({ err: change.error, instance: view.key }, 'instance could not start; will try again');
        this.#o.onStatus(status, 'failed');
        return;
      case 'stopping':
      case 'stopped':
        this.#o.onStatus(status, change.kind);
        return;
      case 'event': {
        const event = change.event;
        if (event.type === 'exited') {
          this.#logger.warn({ instance: view.key, code: event.code, signal: event.signal, oom: event.oom }, 'instance exited');
          this.#o.onStatus(status, 'exited', { code: event.code, signal: event.signal });
        } else {
          this.#o.onStatus(status, event.type);
        }
        return;
      }
    }
  }

  /** The limits of an instance: its process type's (app.json), else the agent's defaults. */
  #limitsOf(spec: InstanceSpec__Output): InstanceLimits {
    return {
      memoryBytes: spec.memoryLimitBytes || this.#o.defaultLimits?.memoryBytes || null,
      cpu: spec.cpuLimit || this.#o.defaultLimits?.cpu || null,
    };
  }

  /**
   * collectstatic once per release config on this agent (the build task did it on its own agent);
   * a Django app without STATIC_ROOT only pays for loading its settings once.
   */
  async #collectStatic(appDir: string, env: Record<string, string>, config: Record<string, string>, user: RunAs | null): Promise<void> {
    if (await staticDone(appDir, config)) return;
    const marker = staticMarker(appDir, config);
    let run = this.#staticRuns.get(marker);
    if (!run) {
      run = (async () => {
        const result = await runDjangoBuild({
          appDir,
          env,
          mode: 'static',
          user,
          emit: (line) => this.#logger.info({ appDir, line }, 'collectstatic'),
        });
        if (result.django && !result.staticFailed) await markStaticDone(appDir, config);
      })().finally(() => this.#staticRuns.delete(marker));
      this.#staticRuns.set(marker, run);
    }
    await run;
  }

  #supervision(spec: InstanceSpec__Output | null, name: string, dir: string, meta: InstanceMeta): Supervision {
    const isWeb = spec?.type === 'web';
    const env: Record<string, string> = { ...(spec?.env ?? {}), ...meta.buildEnv };
    if (isWeb) env.PORT = String(meta.port);
    if (this.#o.caFile && env.PGSSLROOTCERT === undefined && existsSync(this.#o.caFile)) env.PGSSLROOTCERT = this.#o.caFile;
    // Heroku's name of the process (`web.1`): many apps turn DEBUG off when it is present.
    const id = spec ? parseInstanceKey(spec.key) : null;
    if (id) env.DYNO = instanceName(id);
    const options: Supervision = {
      key: spec?.key ?? name,
      command: isWeb && spec ? bindCommand(spec.command, this.#o.instanceAddress ?? '0.0.0.0') : (spec?.command ?? 'true'),
      cwd: meta.appDir,
      env,
      stdoutPath: join(dir, 'stdout.log'),
      stderrPath: join(dir, 'stderr.log'),
      pidfilePath: join(dir, 'pid.json'),
      graceMs: spec ? spec.graceSeconds * 1000 : (meta.graceMs ?? 30_000),
      stopSignal: stopSignalOf(spec?.stopSignal || meta.stopSignal),
      settleMs: this.#o.settleMs ?? 1000,
      healthIntervalMs: HEALTH_INTERVAL_MS,
      clock: this.#o.clock,
      logger: this.#logger,
    };
    if (this.#o.backoff) options.backoff = this.#o.backoff;
    if (meta.user) {
      options.uid = meta.user.uid;
      options.gid = meta.user.gid;
    }
    if (meta.limits && this.#o.cgroups) {
      const { memoryBytes, cpu } = meta.limits;
      options.cgroup = {
        cgroup: this.#o.cgroups.instance(meta.limits.app, name),
        limits: { memoryBytes, softMemoryBytes: memoryBytes === null ? null : Math.floor(memoryBytes * MEMORY_SOFT_SHARE), cpu },
      };
    }
    if (isWeb && spec) {
      const check = {
        port: meta.port,
        address: dialAddress(this.#o.instanceAddress ?? '0.0.0.0'),
        path: spec.healthPath || '/',
        host: spec.domain,
        timeoutMs: spec.healthTimeoutMs || 2000,
      };
      const inARow = Math.max(1, spec.healthChecksInARow);
      // Healthy = the check passes `inARow` times in a row (a process that answers once and then
      // dies during its boot never gets traffic).
      // Why checks fail goes to the app's logs (and the deploy), repeated failures summarised.
      const failures = new HealthFailureLog();
      const say = (line: string | null): void => {
        if (line !== null) this.#o.onStatus({ key: spec.key, state: 'starting', message: line }, 'health_failed');
      };
      options.healthCheck = async () => {
        for (let n = 0; n < inARow; n++) {
          if (n > 0) await sleep(HEALTH_RECHECK_MS, this.#o.clock);
          const probe = await httpHealthProbe(check);
          if (!probe.ok) {
            say(failures.failed(probe.reason, this.#o.clock.now()));
            return false;
          }
        }
        say(failures.passed());
        return true;
      };
    }
    return options;
  }
}
