/**
 * What the {@link WorkloadRunner} needs from one kind of workload — an app instance, an add-on
 * server, later a one-off run or a cron job — the way Nomad's client asks its task drivers: how
 * to start one, how to recover the ones a previous agent left running, what to do before one is
 * stopped, and how its state reads to the coordinator. The runner does the rest (phases, the
 * workload map, retries, restarts on request, stopping, adoption).
 */
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/logger.js';
import type { Relaunch, SupervisorEvent, SupervisorOptions } from './supervisor.js';
import type { WorkloadPhase } from './workload-phase.js';

/** How to supervise a workload; the runner adds `onEvent`. */
export type Supervision = Omit<SupervisorOptions, 'onEvent'>;

/** What {@link WorkloadDriver.start} hands back once a workload is ready to run. */
export interface Started<Data> {
  supervision: Supervision;
  /** The driver's own facts about the running workload (its directory, its context…). */
  data: Data;
}

/** A workload a previous agent left running, as {@link WorkloadDriver.recover} finds it. */
export interface Recovered<Spec, Data> {
  key: string;
  /** What desired state wants under `key`; null: a leftover, stopped once re-attached. */
  spec: Spec | null;
  supervision: Supervision;
  port: number;
  data: Data | null;
}

/** The runner's help to a driver that is starting a workload. */
export interface StartContext {
  /** False once the workload is no longer wanted (stopped, or the runner closed): give up early. */
  wanted(): boolean;
  /** Ports held by this runner's workloads (none is handed out twice). */
  takenPorts(): Set<number>;
  /** Records the port the workload listens on, so that it is taken from now on. */
  claimPort(port: number): void;
}

/**
 * A changing workload's state folded from its phase and its supervisor, for
 * {@link WorkloadDriver.inspect}.
 */
export interface WorkloadView<Spec, Data> {
  key: string;
  spec: Spec;
  phase: WorkloadPhase;
  /** `preparing`, `failed`, or the supervisor's state (`stopping` once stopping or stopped). */
  state: 'preparing' | 'starting' | 'up' | 'crashed' | 'stopping' | 'failed';
  /** The figures every kind reports alike. */
  vitals: WorkloadVitals;
  /** Its memory against its limit and why its last run ended, when it runs in a cgroup; else null. */
  limits: WorkloadLimits | null;
  data: Data | null;
}

/** What every kind of workload reports alike about its process. */
export interface WorkloadVitals {
  /** 0 when not running. */
  pid: number;
  port: number;
  /** Automatic restarts after exits. */
  restarts: number;
  /** Clock time of the last state change, Unix ms. */
  since: number;
  /** One human-readable sentence about the state. */
  message: string;
}

/** What a workload in a cgroup reports of its limits. */
export interface WorkloadLimits {
  /** Memory charged to its cgroup at the last read, bytes. */
  memoryBytes: number;
  /** Its memory limit, bytes; null: none. */
  memoryLimitBytes: number | null;
  /** `oom` when its last run was ended by the OOM killer, else null. */
  reason: 'oom' | null;
}

/** Why a workload's state is reported. */
export type WorkloadChange =
  | { kind: 'preparing' }
  | { kind: 'failed'; error: unknown }
  | { kind: 'stopping' }
  | { kind: 'stopped' }
  | { kind: 'event'; event: SupervisorEvent };

/** How logs and messages name a kind of workload. */
export interface WorkloadNames {
  /** Names a workload of this kind in log fields (`instance`, `addon`). */
  field: string;
  /** Names this kind in log messages (`instance`, `add-on server`). */
  noun: string;
  /** The message of a workload while it is prepared (`building`, `provisioning`). */
  preparing: string;
}

/** One kind of workload. */
export interface WorkloadDriver<Spec, Data, Status> {
  /** How logs and messages name this kind. */
  readonly names: WorkloadNames;
  /** The key a workload is known by (an instance key, an add-on name). */
  key(spec: Spec): string;
  /** True when `next` is another workload than `current` under the same key: `current` is stopped. */
  replaces(current: Spec, next: Spec): boolean;
  /** A change of this number between two snapshots asks for a restart of a running workload. */
  restartToken(spec: Spec): number;
  /**
   * What a restart on request runs, from the current `spec` (its environment may have changed
   * without a new release, e.g. the app's domains). Without it, the restart runs what it ran.
   */
  relaunch?(spec: Spec, data: Data): Relaunch;
  /** Builds or provisions the workload and says how to run it; null when it gave up (not wanted). */
  start(spec: Spec, ctx: StartContext): Promise<Started<Data> | null>;
  /** What a previous agent left running, wanted (`specs`) or not. Each item's failures are the driver's. */
  recover(specs: readonly Spec[]): AsyncIterable<Recovered<Spec, Data>>;
  /** Called before the supervisor stops a running workload (e.g. drain it from the router). */
  beforeStop(view: WorkloadView<Spec, Data>): Promise<void>;
  /** The message of a workload whose start failed with `error`. */
  describeFailure(error: unknown): string;
  /** The workload's status as the coordinator reads it. */
  inspect(view: WorkloadView<Spec, Data>): Status;
  /** Tells whoever listens (and the log) about a change. Exceptions are logged and dropped. */
  report(status: Status, change: WorkloadChange, view: WorkloadView<Spec, Data>): void;
}

/** Options of a {@link WorkloadRunner}. */
export interface WorkloadRunnerOptions {
  /** A failed start is tried again after this, ms. */
  retryMs: number;
  /**
   * Try a failed start again on a timer, not only when desired state is applied again (add-on
   * servers: desired state may not change for a long time).
   */
  retryByTimer: boolean;
  /**
   * A workload wanted again while its key is still stopping starts once the stop is done (a
   * rollback re-uses `web.2`); otherwise it waits for the next snapshot.
   */
  startAfterStop: boolean;
  clock: Clock;
  logger: Logger;
}
