/**
 * Runs every workload of one kind on this agent from desired state, idempotently: starts what is
 * wanted (through its driver: build, provision), supervises it, restarts it on request, stops
 * what is no longer wanted, tries failed starts again, and re-attaches after an agent restart to
 * what still runs. Re-applying the same snapshot does nothing. The kind's differences live in its
 * {@link WorkloadDriver}.
 */
import type { ClockTimer } from '../../common/clock.js';
import { HangarError } from '../../common/errors.js';
import type { StateMachine } from '../../common/state-machine.js';
import { Supervisor, type SupervisorEvent } from './supervisor.js';
import type { Supervision, WorkloadChange, WorkloadDriver, WorkloadRunnerOptions, WorkloadView } from './workload-driver.js';
import { workloadPhase, type WorkloadPhase } from './workload-phase.js';

/** How long {@link WorkloadRunner.adopt} waits for adopted workloads' first health checks, ms (real time). */
const ADOPT_READY_MS = 5_000;

/** One workload in the runner's hands. */
interface Workload<Spec, Data> {
  readonly key: string;
  spec: Spec;
  readonly phase: StateMachine<WorkloadPhase>;
  port: number;
  supervisor: Supervisor | null;
  data: Data | null;
  message: string;
  since: number;
  failedAt: number;
  restartToken: number;
  retryTimer: ClockTimer | null;
  stopping: Promise<void> | null;
}

/** Runs the workloads of one kind; see the module comment. */
export class WorkloadRunner<Spec, Data, Status> {
  readonly #driver: WorkloadDriver<Spec, Data, Status>;
  readonly #o: WorkloadRunnerOptions;
  readonly #workloads = new Map<string, Workload<Spec, Data>>();
  /** Specs wanted while a workload of the same key was still stopping (see `startAfterStop`). */
  readonly #waiting = new Map<string, Spec>();
  /**
   * Adopted processes being stopped: leftovers no longer wanted, and those a previous agent was
   * stopping when it shut down. Their keys start again only once they are gone.
   */
  readonly #finishing = new Map<string, { supervisor: Supervisor; done: Promise<void> }>();
  #closed = false;
  /** Closing without stopping: what runs is left for the next agent, stops under way too. */
  #leaving = false;

  constructor(driver: WorkloadDriver<Spec, Data, Status>, options: WorkloadRunnerOptions) {
    this.#driver = driver;
    this.#o = options;
  }

  /** Current status of every workload. */
  statuses(): Status[] {
    return [...this.#workloads.values()].map((w) => this.#driver.inspect(this.#view(w)));
  }

  /** The workload under `key`, or null. */
  get(key: string): WorkloadView<Spec, Data> | null {
    const w = this.#workloads.get(key);
    return w ? this.#view(w) : null;
  }

  /**
   * After an agent restart: re-attaches to the workloads of `specs` that still run (they keep
   * running; nothing restarts) and stops leftovers that are no longer wanted. Wanted workloads
   * that do not run are started by the next {@link apply}.
   */
  async adopt(specs: readonly Spec[]): Promise<void> {
    const { field, noun } = this.#driver.names;
    const adopted: Supervisor[] = [];
    for await (const found of this.#driver.recover(specs)) {
      try {
        const spec = found.spec;
        const supervisor = Supervisor.adopt(spec === null ? found.supervision : this.#supervised(found.key, found.supervision));
        if (!supervisor) continue;
        if (spec === null || supervisor.adoptedStopping) {
          this.#o.logger.info(
            { [field]: found.key },
            spec === null
              ? `stopping a leftover ${noun} that is no longer wanted`
              : `finishing the stop of ${article(noun)} ${noun} the previous agent left stopping`,
          );
          this.#finish(found.key, supervisor);
          continue;
        }
        this.#workloads.set(found.key, {
          key: found.key,
          spec,
          phase: workloadPhase(found.key, 'running'),
          port: found.port,
          supervisor,
          data: found.data,
          message: 'adopted after an agent restart',
          since: this.#o.clock.now(),
          failedAt: 0,
          restartToken: this.#driver.restartToken(spec),
          retryTimer: null,
          stopping: null,
        });
        this.#o.logger.info({ [field]: found.key, pid: supervisor.status().pid }, `adopted a running ${noun}`);
        adopted.push(supervisor);
      } catch (err) {
        this.#o.logger.warn({ err, [field]: found.key }, `could not adopt ${article(noun)} ${noun}; it will be started again`);
      }
    }
    // Their first health check runs at once: waited for (bounded), so the agent's first report to
    // the coordinator says they are up and its routes keep sending them traffic (the router
    // outlived the agent and serves on through the restart).
    const deadline = Date.now() + ADOPT_READY_MS;
    while (adopted.some((s) => s.status().state === 'starting') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Applies the workloads of a desired-state snapshot; starting happens in the background. */
  apply(specs: readonly Spec[]): void {
    if (this.#closed) return;
    const wanted = new Map(specs.map((s) => [this.#driver.key(s), s]));
    for (const key of this.#waiting.keys()) if (!wanted.has(key)) this.#waiting.delete(key);
    for (const [key, w] of this.#workloads) {
      const spec = wanted.get(key);
      if ((!spec || this.#driver.replaces(w.spec, spec)) && w.phase.state !== 'stopping') void this.#stop(w);
    }
    const now = this.#o.clock.now();
    for (const [key, spec] of wanted) {
      const w = this.#workloads.get(key);
      if (!w) {
        if (this.#finishing.has(key)) this.#waiting.set(key, spec);
        else this.#launch(key, spec);
        continue;
      }
      if (w.phase.state === 'stopping') {
        if (this.#o.startAfterStop) this.#waiting.set(key, spec);
        continue;
      }
      w.spec = spec;
      const token = this.#driver.restartToken(spec);
      if (w.phase.state === 'failed' && now - w.failedAt >= this.#o.retryMs) {
        if (w.retryTimer) this.#o.clock.clearTimeout(w.retryTimer);
        this.#workloads.delete(key);
        this.#launch(key, spec);
      } else if (w.phase.state === 'running' && w.supervisor && token !== w.restartToken) {
        w.restartToken = token;
        this.#o.logger.info({ [this.#driver.names.field]: key }, 'restarting on request');
        const next = w.data !== null ? this.#driver.relaunch?.(spec, w.data) : undefined;
        w.supervisor
          .restart(next)
          .catch((err: unknown) => this.#o.logger.error({ err, [this.#driver.names.field]: key }, 'restart failed'));
      }
    }
  }

  /** Stops the workload under `key` (when there is one) and resolves once it is gone. */
  async stop(key: string): Promise<void> {
    const w = this.#workloads.get(key);
    if (w) await this.#stop(w);
  }

  /**
   * Stops the process of the running workload under `key` but keeps the workload: it stays
   * wanted, and nothing starts it again until {@link resume} (an add-on restore that swaps the
   * server's files between the two).
   *
   * @throws HangarError `CONFLICT` when it is not running.
   */
  async pause(key: string): Promise<void> {
    await this.#running(key, 'pause').stop();
  }

  /**
   * Starts the process of a workload {@link pause}d (or of a running one: nothing happens then).
   *
   * @throws HangarError `CONFLICT` when it is not running.
   */
  resume(key: string): void {
    this.#running(key, 'resume').start();
  }

  #running(key: string, what: string): Supervisor {
    const w = this.#workloads.get(key);
    if (!w || w.phase.state !== 'running' || !w.supervisor) {
      throw new HangarError('CONFLICT', `cannot ${what} ${key}: it is ${w ? w.phase.state : 'not here'}`);
    }
    return w.supervisor;
  }

  /**
   * Stops supervising. With `stopInstances` every workload is stopped; without, they keep running
   * for the next agent to adopt (stops already under way finish first).
   */
  async close(options: { stopInstances: boolean }): Promise<void> {
    this.#closed = true;
    const workloads = [...this.#workloads.values()];
    for (const w of workloads) if (w.retryTimer) this.#o.clock.clearTimeout(w.retryTimer);
    if (options.stopInstances) {
      await Promise.all([...workloads.map((w) => this.#stop(w)), ...[...this.#finishing.values()].map((f) => f.done)]);
    } else {
      // Stops under way are abandoned too (no drain or grace is waited for): their processes
      // and pidfiles stay, marked stopping, and the next agent finishes them.
      this.#leaving = true;
      for (const w of workloads) w.supervisor?.detach();
      for (const f of this.#finishing.values()) f.supervisor.detach();
    }
    this.#workloads.clear();
  }

  /** Stops an adopted process in the background; a spec wanted under its key meanwhile starts after. */
  #finish(key: string, supervisor: Supervisor): void {
    const done = supervisor
      .stop()
      .catch((err: unknown) => this.#o.logger.error({ err, [this.#driver.names.field]: key }, `failed to stop ${this.#driver.names.noun}`))
      .finally(() => {
        if (this.#finishing.get(key)?.supervisor !== supervisor) return;
        this.#finishing.delete(key);
        const again = this.#waiting.get(key);
        this.#waiting.delete(key);
        if (again !== undefined && !this.#closed && !this.#workloads.has(key)) this.#launch(key, again);
      });
    this.#finishing.set(key, { supervisor, done });
  }

  #launch(key: string, spec: Spec): void {
    const w: Workload<Spec, Data> = {
      key,
      spec,
      phase: workloadPhase(key, 'preparing'),
      port: 0,
      supervisor: null,
      data: null,
      message: this.#driver.names.preparing,
      since: this.#o.clock.now(),
      failedAt: 0,
      restartToken: this.#driver.restartToken(spec),
      retryTimer: null,
      stopping: null,
    };
    this.#workloads.set(key, w);
    this.#report(w, { kind: 'preparing' });
    const wanted = () => w.phase.state === 'preparing' && !this.#closed;
    this.#driver
      .start(spec, {
        wanted,
        takenPorts: () => new Set([...this.#workloads.values()].flatMap((o) => (o.port ? [o.port] : []))),
        claimPort: (port) => {
          w.port = port;
        },
      })
      .then((started) => {
        if (!started || !wanted()) return;
        w.data = started.data;
        w.supervisor = new Supervisor(this.#supervised(key, started.supervision));
        w.phase.to('running');
        w.supervisor.start();
      })
      .catch((err: unknown) => {
        if (w.phase.state !== 'preparing') return;
        w.phase.to('failed');
        w.failedAt = this.#o.clock.now();
        w.since = w.failedAt;
        w.message = this.#driver.describeFailure(err);
        this.#report(w, { kind: 'failed', error: err });
        if (!this.#o.retryByTimer) return;
        w.retryTimer = this.#o.clock.setTimeout(() => {
          w.retryTimer = null;
          if (this.#closed || this.#workloads.get(key) !== w || w.phase.state !== 'failed') return;
          this.#workloads.delete(key);
          this.#launch(key, w.spec);
        }, this.#o.retryMs);
      });
  }

  #supervised(key: string, supervision: Supervision) {
    return { ...supervision, onEvent: (event: SupervisorEvent) => this.#onEvent(key, event) };
  }

  #onEvent(key: string, event: SupervisorEvent): void {
    const w = this.#workloads.get(key);
    if (!w || w.phase.state === 'stopping') return;
    this.#report(w, { kind: 'event', event });
  }

  #stop(w: Workload<Spec, Data>): Promise<void> {
    if (w.stopping) return w.stopping;
    if (w.retryTimer) this.#o.clock.clearTimeout(w.retryTimer);
    w.phase.to('stopping');
    w.since = this.#o.clock.now();
    w.message = 'stopping';
    this.#report(w, { kind: 'stopping' });
    w.stopping = (async () => {
      try {
        await this.#driver.beforeStop(this.#view(w));
        // The agent left meanwhile (this drain ended as its router closed): the process stays for
        // the next agent, which finishes the stop.
        if (this.#leaving) return;
        await w.supervisor?.stop();
        if (this.#leaving) return;
      } catch (err) {
        if (this.#leaving) return;
        this.#o.logger.error(
          { err, [this.#driver.names.field]: w.key },
          `failed to stop ${article(this.#driver.names.noun)} ${this.#driver.names.noun}`,
        );
      }
      if (this.#workloads.get(w.key) === w) this.#workloads.delete(w.key);
      w.phase.to('stopped');
      this.#report(w, { kind: 'stopped' });
      // The same key was placed again while this one stopped.
      const again = this.#waiting.get(w.key);
      this.#waiting.delete(w.key);
      if (again !== undefined && !this.#closed && !this.#workloads.has(w.key)) this.#launch(w.key, again);
    })();
    return w.stopping;
  }

  #view(w: Workload<Spec, Data>): WorkloadView<Spec, Data> {
    const phase = w.phase.state;
    const s = phase === 'running' ? w.supervisor?.status() : undefined;
    let state: WorkloadView<Spec, Data>['state'];
    switch (phase) {
      case 'preparing':
        state = 'preparing';
        break;
      case 'failed':
        state = 'failed';
        break;
      case 'stopping':
      case 'stopped':
        state = 'stopping';
        break;
      case 'running':
        state = !s ? 'starting' : s.state === 'stopped' ? 'stopping' : s.state;
        break;
    }
    const live = w.supervisor?.status();
    return {
      key: w.key,
      spec: w.spec,
      phase,
      state,
      vitals: {
        pid: live?.pid ?? 0,
        port: w.port,
        restarts: live?.restarts ?? 0,
        since: s ? s.since : w.since,
        message: s ? s.message : w.message,
      },
      limits: live?.memory ? { memoryBytes: live.memory.usageBytes, memoryLimitBytes: live.memory.limitBytes, reason: live.reason } : null,
      data: w.data,
    };
  }

  #report(w: Workload<Spec, Data>, change: WorkloadChange): void {
    try {
      const view = this.#view(w);
      this.#driver.report(this.#driver.inspect(view), change, view);
    } catch (err) {
      this.#o.logger.error({ err, [this.#driver.names.field]: w.key }, `${this.#driver.names.noun} status report failed`);
    }
  }
}

function article(noun: string): string {
  return /^[aeiou]/i.test(noun) ? 'an' : 'a';
}
