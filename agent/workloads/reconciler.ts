import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sleep, type Clock } from '../../common/clock.js';
import { describeError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { DesiredState__Output, InstanceSpec__Output, InstanceStatus } from '../../proto/loader.js';
import type { ArtifactStore } from '../build/artifact-store.js';
import type { BackoffOptions } from './backoff.js';
import type { BuildOptions, BuildResult } from '../build/builder.js';
import { freePort } from './free-port.js';
import { httpHealthCheck } from './health-check.js';
import { markStaticDone, runDjangoBuild, staticDone, staticMarker } from '../build/django-build.js';
import { instanceLogTail } from '../logs/log-tail.js';
import type { Router } from '../router/router.js';
import { Supervisor, type SupervisorEvent, type SupervisorOptions } from './supervisor.js';

/** Options of {@link Reconciler}. */
export interface ReconcilerOptions {
  /** Per-instance directories (pidfile, output files, metadata) go under it. */
  instancesDir: string;
  router: Router;
  artifacts: ArtifactStore;
  build: (options: BuildOptions) => Promise<BuildResult>;
  buildDataDir: string;
  python?: string;
  /** Restart delays of crashed instances. Default: the supervisor's. */
  backoff?: BackoffOptions;
  /** Non-web instances count as up after running this long, ms. Default 1000. */
  settleMs?: number;
  /** A failed build is tried again after this, ms. Default 15000. */
  buildRetryMs?: number;
  /** Run instances as this user/group (set when the agent runs as root). */
  uid?: number;
  gid?: number;
  clock: Clock;
  logger: Logger;
  /** Called on every state change of an instance (kind: started, healthy, exited, …). */
  onStatus: (status: InstanceStatus, kind: string, exit?: { code: number | null; signal: string | null }) => void;
}

type Phase = 'building' | 'running' | 'failed' | 'stopping';

interface Entry {
  spec: InstanceSpec__Output;
  dir: string;
  port: number;
  phase: Phase;
  supervisor: Supervisor | null;
  message: string;
  since: number;
  restartNonce: number;
  failedAt: number;
  stopping: Promise<void> | null;
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
}

/** Directory name of an instance key (`shop:web.1:v3` → `shop_web.1_v3`). */
export function instanceDirName(key: string): string {
  return key.replace(/[^A-Za-z0-9._-]/g, '_');
}

/**
 * Makes what runs on this agent match desired state, idempotently: builds releases, starts,
 * restarts and stops instances (draining web ones from the router first), and keeps the router's
 * table. Re-applying the same state does nothing.
 */
export class Reconciler {
  readonly #o: ReconcilerOptions;
  readonly #logger: Logger;
  readonly #entries = new Map<string, Entry>();
  readonly #usedPorts = new Set<number>();
  /** Specs wanted while an instance of the same key was still stopping: started once it stopped. */
  readonly #waiting = new Map<string, InstanceSpec__Output>();
  /** collectstatic runs in progress, by marker path (instances of one release share one). */
  readonly #staticRuns = new Map<string, Promise<void>>();
  #closed = false;

  constructor(options: ReconcilerOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'reconciler' });
  }

  /** Current status of every instance on this agent. */
  statuses(): InstanceStatus[] {
    return [...this.#entries.values()].map((e) => this.#status(e));
  }

  /**
   * After an agent restart: re-attaches to the instances of the cached desired state that still
   * run (they keep running; nothing restarts), and stops leftovers that are no longer wanted.
   */
  async adopt(state: DesiredState__Output | null): Promise<void> {
    const wanted = new Map((state?.instances ?? []).map((s) => [instanceDirName(s.key), s]));
    let names: string[] = [];
    try {
      names = await readdir(this.#o.instancesDir);
    } catch {
      return;
    }
    for (const name of names) {
      const dir = join(this.#o.instancesDir, name);
      let meta: InstanceMeta;
      try {
        meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as InstanceMeta;
      } catch {
        continue;
      }
      const spec = wanted.get(name);
      const options = this.#supervisorOptions(spec ?? null, name, dir, meta);
      const supervisor = Supervisor.adopt(options);
      if (!supervisor) continue;
      if (!spec) {
        this.#logger.info({ instance: name }, 'stopping a leftover instance that is no longer wanted');
        await supervisor.stop();
        continue;
      }
      this.#usedPorts.add(meta.port);
      this.#entries.set(spec.key, {
        spec,
        dir,
        port: meta.port,
        phase: 'running',
        supervisor,
        message: 'adopted after an agent restart',
        since: this.#o.clock.now(),
        restartNonce: spec.restartNonce,
        failedAt: 0,
        stopping: null,
      });
      this.#logger.info({ instance: spec.key, pid: supervisor.status().pid }, 'adopted a running instance');
    }
  }

  /** Applies a desired-state snapshot: routes at once, instances in the background. */
  apply(state: DesiredState__Output): void {
    if (this.#closed) return;
    this.#o.router.setRoutes(
      state.routes.map((r) => ({
        app: r.app,
        domains: r.domains,
        backends: r.backends.map((b) => ({ instanceKey: b.instanceKey, host: b.host, port: b.port })),
      })),
    );
    const wanted = new Map(state.instances.map((s) => [s.key, s]));
    for (const key of this.#waiting.keys()) if (!wanted.has(key)) this.#waiting.delete(key);
    for (const [key, entry] of this.#entries) {
      if (!wanted.has(key) && entry.phase !== 'stopping') void this.#stop(entry);
    }
    const now = this.#o.clock.now();
    for (const spec of state.instances) {
      const entry = this.#entries.get(spec.key);
      if (!entry) {
        this.#launch(spec);
        continue;
      }
      if (entry.phase === 'stopping') {
        this.#waiting.set(spec.key, spec);
        continue;
      }
      entry.spec = spec;
      if (entry.phase === 'failed' && now - entry.failedAt >= (this.#o.buildRetryMs ?? 15_000)) {
        this.#entries.delete(spec.key);
        this.#launch(spec);
      } else if (entry.phase === 'running' && entry.supervisor && spec.restartNonce !== entry.restartNonce) {
        entry.restartNonce = spec.restartNonce;
        this.#logger.info({ instance: spec.key }, 'restarting on request');
        entry.supervisor.restart().catch((err: unknown) => this.#logger.error({ err, instance: spec.key }, 'restart failed'));
      }
    }
  }

  /**
   * Stops supervising. With `stopInstances` every instance is stopped (SIGTERM, grace, SIGKILL of
   * its group); without, they keep running for the next agent to adopt.
   */
  async close(options: { stopInstances: boolean }): Promise<void> {
    this.#closed = true;
    const entries = [...this.#entries.values()];
    if (options.stopInstances) {
      await Promise.all(entries.map((e) => this.#stop(e)));
    } else {
      for (const e of entries) e.supervisor?.detach();
    }
    this.#entries.clear();
  }

  #status(e: Entry): InstanceStatus {
    const s = e.supervisor?.status();
    let state: string;
    switch (e.phase) {
      case 'building':
        state = 'starting';
        break;
      case 'failed':
        state = 'crashed';
        break;
      case 'stopping':
        state = 'stopping';
        break;
      case 'running':
        state = s ? (s.state === 'stopped' ? 'stopping' : s.state) : 'starting';
        break;
    }
    return {
      key: e.spec.key,
      state,
      pid: s?.pid ?? 0,
      port: e.port,
      restarts: s?.restarts ?? 0,
      since: e.phase === 'running' && s ? s.since : e.since,
      message: e.phase === 'running' && s ? s.message : e.message,
      // Why it is not up yet, for a rollout that fails on it (a small read from the file ends).
      logTail:
        e.phase === 'running' && state !== 'up' && state !== 'stopping'
          ? instanceLogTail(join(e.dir, 'stdout.log'), join(e.dir, 'stderr.log'))
          : '',
    };
  }

  #report(e: Entry, kind: string, exit?: { code: number | null; signal: string | null }): void {
    try {
      this.#o.onStatus(this.#status(e), kind, exit);
    } catch (err) {
      this.#logger.error({ err }, 'status report failed');
    }
  }

  #launch(spec: InstanceSpec__Output): void {
    const entry: Entry = {
      spec,
      dir: join(this.#o.instancesDir, instanceDirName(spec.key)),
      port: 0,
      phase: 'building',
      supervisor: null,
      message: 'building',
      since: this.#o.clock.now(),
      restartNonce: spec.restartNonce,
      failedAt: 0,
      stopping: null,
    };
    this.#entries.set(spec.key, entry);
    this.#report(entry, 'building');
    this.#prepareAndStart(entry).catch((err: unknown) => {
      if (entry.phase !== 'building') return;
      entry.phase = 'failed';
      entry.failedAt = this.#o.clock.now();
      entry.since = entry.failedAt;
      entry.message = `could not start: ${describeError(err)}`;
      this.#logger.warn({ err, instance: spec.key }, 'instance could not start; will try again');
      this.#report(entry, 'failed');
    });
  }

  async #prepareAndStart(entry: Entry): Promise<void> {
    const spec = entry.spec;
    const artifactPath = await this.#o.artifacts.get(spec.artifactSha256);
    const build = await this.#o.build({
      dataDir: this.#o.buildDataDir,
      artifactPath,
      sha256: spec.artifactSha256,
      ...(this.#o.python ? { python: this.#o.python } : {}),
      logger: this.#logger,
    });
    if (entry.phase !== 'building' || this.#closed) return;
    await this.#collectStatic(build.appDir, { ...spec.env, ...build.env }, spec.env);
    if (entry.phase !== 'building' || this.#closed) return;
    let port = 0;
    for (let tries = 0; tries < 20 && (port === 0 || this.#usedPorts.has(port)); tries++) port = await freePort();
    this.#usedPorts.add(port);
    entry.port = port;
    const meta: InstanceMeta = { port, appDir: build.appDir, buildEnv: build.env };
    await mkdir(entry.dir, { recursive: true, mode: 0o700 });
    await writeFile(join(entry.dir, 'meta.json'), JSON.stringify(meta), { mode: 0o600 });
    if (entry.phase !== 'building' || this.#closed) {
      this.#usedPorts.delete(port);
      return;
    }
    const supervisor = new Supervisor(this.#supervisorOptions(spec, instanceDirName(spec.key), entry.dir, meta));
    entry.supervisor = supervisor;
    entry.phase = 'running';
    supervisor.start();
  }

  /**
   * collectstatic once per release config on this agent (the build task did it on its own agent);
   * a Django app without STATIC_ROOT only pays for loading its settings once.
   */
  async #collectStatic(appDir: string, env: Record<string, string>, config: Record<string, string>): Promise<void> {
    if (await staticDone(appDir, config)) return;
    const marker = staticMarker(appDir, config);
    let run = this.#staticRuns.get(marker);
    if (!run) {
      run = (async () => {
        const result = await runDjangoBuild({
          appDir,
          env,
          mode: 'static',
          emit: (line) => this.#logger.info({ appDir, line }, 'collectstatic'),
        });
        if (result.django && !result.staticFailed) await markStaticDone(appDir, config);
      })().finally(() => this.#staticRuns.delete(marker));
      this.#staticRuns.set(marker, run);
    }
    await run;
  }

  #supervisorOptions(spec: InstanceSpec__Output | null, name: string, dir: string, meta: InstanceMeta): SupervisorOptions {
    const isWeb = spec?.type === 'web';
    const env: Record<string, string> = { ...(spec?.env ?? {}), ...meta.buildEnv };
    if (isWeb) env.PORT = String(meta.port);
    const options: SupervisorOptions = {
      key: spec?.key ?? name,
      command: spec?.command ?? 'true',
      cwd: meta.appDir,
      env,
      stdoutPath: join(dir, 'stdout.log'),
      stderrPath: join(dir, 'stderr.log'),
      pidfilePath: join(dir, 'pid.json'),
      graceMs: (spec?.graceSeconds ?? 30) * 1000,
      settleMs: this.#o.settleMs ?? 1000,
      healthIntervalMs: HEALTH_INTERVAL_MS,
      clock: this.#o.clock,
      logger: this.#logger,
      onEvent: (event) => this.#onSupervisorEvent(spec?.key ?? name, event),
    };
    if (this.#o.backoff) options.backoff = this.#o.backoff;
    if (this.#o.uid !== undefined) options.uid = this.#o.uid;
    if (this.#o.gid !== undefined) options.gid = this.#o.gid;
    if (isWeb && spec) {
      const check = { port: meta.port, path: spec.healthPath || '/', host: spec.domain, timeoutMs: spec.healthTimeoutMs || 2000 };
      const inARow = Math.max(1, spec.healthChecksInARow);
      // Healthy = the check passes `inARow` times in a row (a process that answers once and then
      // dies during its boot never gets traffic).
      options.healthCheck = async () => {
        for (let n = 0; n < inARow; n++) {
          if (n > 0) await sleep(HEALTH_RECHECK_MS, this.#o.clock);
          if (!(await httpHealthCheck(check))) return false;
        }
        return true;
      };
    }
    return options;
  }

  #onSupervisorEvent(key: string, event: SupervisorEvent): void {
    const entry = this.#entries.get(key);
    if (!entry || entry.phase === 'stopping') return;
    if (event.type === 'exited') {
      this.#logger.warn({ instance: key, code: event.code, signal: event.signal }, 'instance exited');
      this.#report(entry, 'exited', { code: event.code, signal: event.signal });
    } else {
      this.#report(entry, event.type);
    }
  }

  #stop(entry: Entry): Promise<void> {
    if (entry.stopping) return entry.stopping;
    entry.phase = 'stopping';
    entry.since = this.#o.clock.now();
    entry.message = 'stopping';
    this.#report(entry, 'stopping');
    entry.stopping = (async () => {
      try {
        if (entry.spec.type === 'web') {
          // Routes without it were applied already; let requests this router has in flight finish.
          await this.#o.router.drain(entry.spec.key, Math.min(entry.spec.graceSeconds * 1000, 30_000));
        }
        await entry.supervisor?.stop();
      } catch (err) {
        this.#logger.error({ err, instance: entry.spec.key }, 'failed to stop an instance');
      } finally {
        this.#usedPorts.delete(entry.port);
        if (this.#entries.get(entry.spec.key) === entry) this.#entries.delete(entry.spec.key);
        this.#o.onStatus({ ...this.#status(entry), state: 'stopping' }, 'stopped');
        // The same key was placed again while this one stopped (e.g. a rollback re-uses web.2).
        const again = this.#waiting.get(entry.spec.key);
        this.#waiting.delete(entry.spec.key);
        if (again && !this.#closed && !this.#entries.has(again.key)) this.#launch(again);
      }
    })();
    return entry.stopping;
  }
}
