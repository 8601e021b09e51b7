/**
 * Applies a desired-state snapshot on this agent, level-triggered and idempotent: it ignores
 * generations older than the last one applied, points log shipping at the workloads' output
 * files, gives the router its routes, and hands instances, add-on servers and tasks to their
 * runners; a snapshot from the coordinator is also cached on disk.
 */
import { join } from 'node:path';
import type { Logger } from '../../common/logger.js';
import { instanceName, parseInstanceKey } from '../../common/vocabulary.js';
import type { DesiredState__Output } from '../../proto/loader.js';
import type { AddonManager } from '../addons/addon-manager.js';
import type { LogShipper } from '../logs/log-shipper.js';
import type { RouterControl } from '../router/router-client.js';
import { withHookOnPath } from '../workloads/error-hook.js';
import { instanceDirName, type InstanceRunner } from '../workloads/instance-driver.js';
import type { TaskRunner } from '../workloads/task-runner.js';
import type { OneOffRunner } from '../workloads/one-off-runner.js';
import type { DesiredStateCache } from './desired-state-cache.js';

/** Options of {@link DesiredStateApplier}. */
export interface DesiredStateApplierOptions {
  /** DATA/instances: the instances' output files are under it. */
  instancesDir: string;
  /** DATA/addons: the add-on servers' output files are under it. */
  addonsDir: string;
  /** The Python hook's directory (errors, Django settings autopilot), put first on every app process's PYTHONPATH. */
  hookDir: string;
  router: RouterControl;
  instances: InstanceRunner;
  addons: AddonManager;
  tasks: TaskRunner;
  /** One-off runs: started only from a live snapshot (never from the cache). */
  runs: OneOffRunner;
  logs: LogShipper;
  cache: DesiredStateCache;
  logger: Logger;
  /** Called after every applied snapshot (the agent then sends a heartbeat). */
  onApplied: () => void;
}

/** Applies desired state; see the module comment. */
export class DesiredStateApplier {
  readonly #o: DesiredStateApplierOptions;
  #generation = 0;
  /** The highest leader epoch seen (cached with the snapshot): older epochs are a stale leader's. */
  #leaderEpoch = 0;
  /** The stale epoch last logged, to say it once. */
  #staleLogged = -1;
  /** Each app's domain, for the router's access lines. */
  readonly #domains = new Map<string, string>();
  /** The app of each task, for its output lines. */
  readonly #taskApps = new Map<string, string>();
  /** Singleton instances are held stopped: the coordinator may have started them elsewhere. */
  #fenced = false;
  /** The last snapshot applied, to apply again when the fence goes up or down. */
  #last: DesiredState__Output | null = null;

  constructor(options: DesiredStateApplierOptions) {
    this.#o = options;
  }

  /** The generation of the last snapshot applied; 0 before the first. */
  get generation(): number {
    return this.#generation;
  }

  /** The highest leader epoch seen in a snapshot or a Welcome; 0 before any. */
  get leaderEpoch(): number {
    return this.#leaderEpoch;
  }

  /** A coordinator welcomed this agent under `epoch`: nothing older is listened to from now on. */
  noteLeaderEpoch(epoch: number): void {
    this.#leaderEpoch = Math.max(this.#leaderEpoch, epoch);
  }

  /** The domain of `app` as desired state last named it. */
  domainOf(app: string): string | undefined {
    return this.#domains.get(app);
  }

  /** The app task `taskId` belongs to. */
  appOfTask(taskId: string): string | undefined {
    return this.#taskApps.get(taskId);
  }

  /**
   * After an agent restart: adopts what the cached snapshot says should run (an agent restart
   * keeps apps running), then applies it.
   */
  async resume(cached: DesiredState__Output | null): Promise<void> {
    await this.#o.instances.adopt(cached ? this.#withErrorHook(cached).instances : []);
    await this.#o.addons.adopt(cached?.addons ?? []);
    if (cached) this.apply(cached, { fromCache: true });
  }

  /**
   * Applies a snapshot. One `fromCache` (read back after a restart) starts no tasks and is not
   * cached again.
   */
  apply(state: DesiredState__Output, options: { fromCache: boolean }): void {
    const epoch = Number(state.leaderEpoch ?? 0);
    if (epoch < this.#leaderEpoch) {
      if (this.#staleLogged !== epoch) {
        this.#staleLogged = epoch;
        this.#o.logger.warn({ epoch, highest: this.#leaderEpoch }, 'ignoring desired state from a stale leader (an older leader epoch)');
      }
      return;
    }
    // A newer leader's snapshot wins whatever its generation.
    if (epoch === this.#leaderEpoch && state.generation < this.#generation) {
      this.#o.logger.debug({ generation: state.generation, applied: this.#generation }, 'ignoring an old desired state');
      return;
    }
    this.#leaderEpoch = epoch;
    this.#follow(state);
    this.#o.router.setRoutes(
      state.routes.map((r) => ({
        app: r.app,
        domains: r.domains,
        backends: r.backends.map((b) => ({ instanceKey: b.instanceKey, host: b.host, port: b.port })),
        maintenance: r.maintenance ?? null,
        maxBodyBytes: r.maxBodyBytes ?? 0,
        upstreamTimeoutMs: r.upstreamTimeoutMs ?? 0,
        httpsRedirect: r.httpsRedirect,
        hsts: r.hsts,
      })),
    );
    this.#o.router.setTls({
      certificates: (state.certificates ?? []).map((c) => ({ id: c.id, domains: c.domains, certPem: c.certPem, keyPem: c.keyPem })),
      challenges: new Map((state.acmeChallenges ?? []).map((ch) => [ch.token, ch.keyAuthorization])),
    });
    // A snapshot from the coordinator says where singletons run now: the fence is down.
    if (!options.fromCache && this.#fenced) {
      this.#fenced = false;
      this.#o.logger.info('the coordinator is back: singleton instances run as it says');
    }
    this.#last = state;
    this.#applyInstances(state);
    // Add-ons start from the cached state too: they stay up while the coordinator is away. All
    // but a PostgreSQL primary with a standby that is not running: the coordinator may have
    // promoted its standby meanwhile, so it starts only on the coordinator's word.
    const addons = state.addons ?? [];
    this.#o.addons.apply(
      options.fromCache ? addons.filter((a) => a.standbyRole !== 'primary' || this.#o.addons.isRunning(a.name)) : addons,
    );
    if (!options.fromCache) {
      for (const t of state.tasks) this.#taskApps.set(t.id, t.app);
      this.#o.tasks.apply(this.#withErrorHook(state).tasks);
      this.#o.runs.apply(state.runs ?? []);
      this.#o.cache.write(state);
    }
    this.#generation = state.generation;
    this.#o.onApplied();
  }

  /** True while singleton instances are held stopped (see {@link fenceSingletons}). */
  get fenced(): boolean {
    return this.#fenced;
  }

  /**
   * The coordinator has not acked a heartbeat for the singleton lease: it may start this agent's
   * singletons elsewhere, so they stop here (with their stop signal and timeout) until a snapshot
   * from the coordinator (or {@link unfence}) says otherwise. Idempotent.
   */
  fenceSingletons(): void {
    if (this.#fenced) return;
    this.#fenced = true;
    const held = (this.#last?.instances ?? []).filter((s) => s.singleton).map((s) => s.key);
    this.#o.logger.warn({ instances: held }, 'no word from the coordinator for the singleton lease: stopping singleton instances');
    if (this.#last) this.#applyInstances(this.#last);
  }

  /** The coordinator acked a heartbeat on the same stream again: what it last said stands. */
  unfence(): void {
    if (!this.#fenced) return;
    this.#fenced = false;
    this.#o.logger.info('the coordinator hears this agent again: singleton instances start again');
    if (this.#last) this.#applyInstances(this.#last);
  }

  #applyInstances(state: DesiredState__Output): void {
    const specs = this.#withErrorHook(state).instances;
    this.#o.instances.apply(this.#fenced ? specs.filter((s) => !s.singleton) : specs);
  }

  /** App processes (instances, and the build's Django step and release phase of tasks) get the hook first on PYTHONPATH. */
  #withErrorHook(state: DesiredState__Output): DesiredState__Output {
    return {
      ...state,
      instances: state.instances.map((s) => ({ ...s, env: withHookOnPath(s.env, this.#o.hookDir) })),
      tasks: state.tasks.map((t) => ({ ...t, env: withHookOnPath(t.env, this.#o.hookDir) })),
    };
  }

  /** Log shipping follows the output files of the snapshot's instances and add-on servers. */
  #follow(state: DesiredState__Output): void {
    this.#o.logs.setTails(
      'instances',
      state.instances.flatMap((s) => {
        const dir = join(this.#o.instancesDir, instanceDirName(s.key));
        const id = parseInstanceKey(s.key);
        const source = id ? instanceName(id) : '';
        return [
          { path: join(dir, 'stdout.log'), app: s.app, source, stream: 'stdout' as const },
          { path: join(dir, 'stderr.log'), app: s.app, source, stream: 'stderr' as const },
        ];
      }),
    );
    this.#o.logs.setTails(
      'addons',
      (state.addons ?? []).flatMap((a) => {
        const dir = join(this.#o.addonsDir, a.name);
        const source = `addon[${a.name}]`;
        return [
          { path: join(dir, 'stdout.log'), app: a.app, source, stream: 'stdout' as const },
          { path: join(dir, 'stderr.log'), app: a.app, source, stream: 'stderr' as const },
        ];
      }),
    );
    for (const s of state.instances) if (s.domain) this.#domains.set(s.app, s.domain);
    for (const r of state.routes) if (r.domains[0]) this.#domains.set(r.app, r.domains[0]);
  }
}
