/**
 * Supervises one instance process (e.g. `shop:web.1:v3`): starts it in its own session and
 * process group with stdout/stderr going straight to files, decides when it is up (settle time
 * or health check), restarts it with backoff when it exits, stops the whole group on request,
 * and re-attaches to a process a previous agent left running (via its pidfile).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Writable } from 'node:stream';
import { systemClock, sleep, type Clock, type ClockTimer } from '../../common/clock.js';
import { HangarError, describeError } from '../../common/errors.js';
import { StateMachine } from '../../common/state-machine.js';
import type { InstanceState } from '../../common/vocabulary.js';
import type { Logger } from '../../common/logger.js';
import { formatMemorySize } from '../../common/resource-limits.js';
import type { CgroupLimits, InstanceCgroup } from '../limits/cgroup.js';
import { Backoff, type BackoffOptions } from './backoff.js';
import { isProcessRunning, listProcessGroup, readProcStat } from './proc-stat.js';

/**
 * Lifecycle of a supervised process: the instance states of common/vocabulary.ts plus `stopped`.
 * `crashed` means exited and waiting to be restarted.
 */
export type SupervisorState = InstanceState | 'stopped';

/** Options of a {@link Supervisor}. */
export interface SupervisorOptions {
  /** Identifies the instance in logs and events, e.g. `shop:web.1:v3`. */
  key: string;
  /** Shell command line, run as `/bin/sh -c 'exec COMMAND'` so the shell is replaced by it. */
  command: string;
  /** Working directory of the process. */
  cwd: string;
  /** The complete environment of the process (the caller merges PATH, PORT, config vars). */
  env: Record<string, string>;
  /** File the process's stdout is appended to; the process writes it directly (no pipe). */
  stdoutPath: string;
  /** File the process's stderr is appended to; the process writes it directly (no pipe). */
  stderrPath: string;
  /** JSON `{pid, startTime}` written at each start, read by {@link Supervisor.adopt}. */
  pidfilePath: string;
  /** Time between the stop signal and SIGKILL of the process group on stop, in ms. Default 30000. */
  graceMs?: number;
  /**
   * Signal that asks the main process to stop, before SIGKILL of its whole group after `graceMs`
   * (systemd's `KillMode=mixed`): the main process alone gets it, so a Celery worker or a
   * gunicorn master can shut its children down warm. Default SIGTERM (PostgreSQL wants SIGINT:
   * its SIGTERM waits for every client to disconnect).
   */
  stopSignal?: NodeJS.Signals;
  /** Without `healthCheck`: running this long makes the instance `up`, in ms. Default 1000. */
  settleMs?: number;
  /** When given, the instance is `up` only once this resolves true. It should never throw. */
  healthCheck?: () => Promise<boolean>;
  /** Interval between health checks while `starting`, in ms. Default 500. */
  healthIntervalMs?: number;
  /** Interval between liveness checks of an adopted (non-child) process, in ms. Default 1000. */
  adoptPollMs?: number;
  /** Restart delays and crash-loop detection. Defaults: see {@link BackoffOptions}. */
  backoff?: BackoffOptions;
  /** User id the process runs as. Default: the agent's. */
  uid?: number;
  /** Group id the process runs as. Default: the agent's. */
  gid?: number;
  /**
   * The cgroup the process runs in, with its limits: made before each start, the process moved
   * into it before it execs the command (so none of the app's code runs outside it), removed
   * after a stop. Its memory is watched while it runs (R14 and R15 events). Default: none.
   */
  cgroup?: { cgroup: InstanceCgroup; limits: CgroupLimits };
  /** Interval between reads of the cgroup's memory while running, ms. Default 1000. */
  memoryPollMs?: number;
  /** Time source for every timer. Default {@link systemClock}. */
  clock?: Clock;
  /** Parent logger; the supervisor logs through a child `{component: 'supervisor', instance}`. */
  logger: Logger;
  /** Called synchronously for each lifecycle event. Exceptions it throws are logged and dropped. */
  onEvent?: (event: SupervisorEvent) => void;
}

/** What a {@link Supervisor.restart} may change: what runs, with which environment, how it stops. */
export type Relaunch = Pick<SupervisorOptions, 'command' | 'env' | 'graceMs' | 'stopSignal'>;

interface EventBase {
  /** The instance key. */
  key: string;
  /** Clock time of the event, Unix ms. */
  at: number;
}

/** Lifecycle events reported through {@link SupervisorOptions.onEvent}. */
export type SupervisorEvent = EventBase &
  (
    | { type: 'started'; pid: number }
    | { type: 'adopted'; pid: number }
    | { type: 'healthy'; pid: number }
    /** `oom`: the kernel's OOM killer ended it for going over its memory limit. */
    | { type: 'exited'; pid: number | null; code: number | null; signal: string | null; runMs: number; oom: boolean }
    /** R14: its memory passed the soft line of its limit (once per crossing). */
    | { type: 'memory_quota'; memoryBytes: number; limitBytes: number | null }
    /** R15: the OOM killer ended `kills` processes of its group (the leader or a worker). */
    | { type: 'oom_killed'; kills: number; limitBytes: number | null }
    | { type: 'restarting'; delayMs: number; attempt: number }
    /** Sent once when consecutive short runs reach the threshold; restarts go on at max delay. */
    | { type: 'crash_loop'; exits: number; code: number | null; signal: string | null }
    | { type: 'stopped' }
  );

/** A snapshot returned by {@link Supervisor.status}. */
export interface SupervisorStatus {
  state: SupervisorState;
  /** Pid of the running process (also its process group id), or null. */
  pid: number | null;
  /** Automatic restarts after exits; kept across `stop()`/`restart()`. */
  restarts: number;
  /** Clock time of the last state change, Unix ms. */
  since: number;
  /** One human-readable sentence about the state. */
  message: string;
  /** Exit code of the last exit; null when killed by a signal, unknown, or none yet. */
  exitCode: number | null;
  /** Signal that ended the last run, or null. */
  signal: string | null;
  /** Why the last run ended when it was not a plain exit: `oom` (OOM-killed), else null. */
  reason: 'oom' | null;
  /** Memory of its cgroup at the last read and its limit, bytes; null without a cgroup. */
  memory: { usageBytes: number; limitBytes: number | null } | null;
}

/** Contents of the pidfile. */
interface PidRecord {
  pid: number;
  /** Field 22 of /proc/PID/stat; null when it could not be read at spawn time. */
  startTime: number | null;
  /** Set when the agent left while stopping it: whoever adopts it finishes the stop. */
  stopping?: boolean;
}

/** One run of the process, spawned by us (`child`) or adopted (`child === null`). */
interface Run {
  readonly pid: number;
  readonly startTime: number | null;
  readonly startedAt: number;
  readonly child: ChildProcess | null;
  exit: { code: number | null; signal: string | null } | null;
  settleTimer: ClockTimer | null;
  healthTimer: ClockTimer | null;
  pollTimer: ClockTimer | null;
  memoryTimer: ClockTimer | null;
  /** OOM kills its cgroup had counted when last read (the count outlives runs). */
  oomKills: number;
  /** The OOM killer ended a process of this run. */
  oomKilled: boolean;
  /** Past the soft line at the last read. */
  overSoft: boolean;
}

/** The supervisor's transition table; any other move throws. */
export const SUPERVISOR_TRANSITIONS: Record<SupervisorState, readonly SupervisorState[]> = {
  stopped: ['starting'],
  starting: ['up', 'crashed', 'stopping'],
  up: ['crashed', 'stopping'],
  crashed: ['starting', 'stopping'],
  stopping: ['stopped'],
};

/** Poll interval while waiting for processes to go away during a stop. */
const STOP_POLL_MS = 50;
/** How long to wait for processes to disappear after SIGKILL before giving up with an error. */
const KILL_WAIT_MS = 5000;

/**
 * Supervises one instance process. Create it, call {@link start}; the workload runner reads
 * {@link status} and listens to events. After an agent restart, {@link Supervisor.adopt}
 * re-attaches to a process that still runs instead of restarting it.
 */
export class Supervisor {
  readonly key: string;
  #options: SupervisorOptions;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #backoff: Backoff;
  #graceMs: number;
  readonly #settleMs: number;
  readonly #healthIntervalMs: number;
  readonly #adoptPollMs: number;
  readonly #memoryPollMs: number;

  readonly #phase: StateMachine<SupervisorState>;
  #since: number;
  #message = 'not started';
  #restarts = 0;
  #lastExit: { code: number | null; signal: string | null } | null = null;
  #reason: 'oom' | null = null;
  #memoryBytes = 0;
  #run: Run | null = null;
  #restartTimer: ClockTimer | null = null;
  #stopping: Promise<void> | null = null;
  #detached = false;
  #adoptedStopping = false;
  /** Bumped at every launch and stop, so late callbacks of an older launch are ignored. */
  #generation = 0;

  constructor(options: SupervisorOptions) {
    this.key = options.key;
    this.#phase = new StateMachine<SupervisorState>('stopped', SUPERVISOR_TRANSITIONS, `instance ${options.key}`);
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#logger = options.logger.child({ component: 'supervisor', instance: options.key });
    this.#backoff = new Backoff(options.backoff);
    this.#graceMs = options.graceMs ?? 30_000;
    this.#settleMs = options.settleMs ?? 1000;
    this.#healthIntervalMs = options.healthIntervalMs ?? 500;
    this.#adoptPollMs = options.adoptPollMs ?? 1000;
    this.#memoryPollMs = options.memoryPollMs ?? 1000;
    this.#since = this.#clock.now();
  }

  /**
   * Re-attaches to the process named by `options.pidfilePath` when it still runs and its /proc
   * start time matches the pidfile (so a reused pid is never adopted). The process is not
   * restarted; it is watched by polling /proc every `adoptPollMs`, and when it dies that counts
   * as an exit with an unknown code. Returns null when there is nothing to adopt, after
   * removing a stale pidfile.
   */
  static adopt(options: SupervisorOptions): Supervisor | null {
    const logger = options.logger.child({ component: 'supervisor', instance: options.key });
    let text: string;
    try {
      text = readFileSync(options.pidfilePath, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        logger.warn({ err, pidfile: options.pidfilePath }, 'cannot read pidfile; not adopting');
      }
      return null;
    }
    const record = parsePidRecord(text);
    if (record === null || record.startTime === null || !isProcessRunning(record.pid, record.startTime)) {
      logger.info({ pidfile: options.pidfilePath, record }, 'stale pidfile removed; nothing to adopt');
      removeFile(options.pidfilePath, logger);
      return null;
    }
    const supervisor = new Supervisor(options);
    supervisor.#adoptedStopping = record.stopping === true;
    supervisor.#attach(record.pid, record.startTime);
    return supervisor;
  }

  /**
   * True when this supervisor adopted a process that a previous agent was stopping when it shut
   * down: its owner should {@link stop} it (and start a fresh one if it is still wanted).
   */
  get adoptedStopping(): boolean {
    return this.#adoptedStopping;
  }

  /**
   * Starts the process: own session and process group, stdin ignored, stdout/stderr appended to
   * their files, pidfile written. Idempotent while starting, up or crashed.
   * @throws HangarError `CONFLICT` while a stop is in progress or after {@link detach}.
   */
  start(): void {
    this.#assertAttached('start');
    switch (this.#phase.state) {
      case 'starting':
      case 'up':
      case 'crashed':
        return;
      case 'stopping':
        throw new HangarError('CONFLICT', `instance ${this.key} is stopping; wait for stop() to finish, then start it`);
      case 'stopped':
        this.#backoff.reset();
        this.#launch();
        return;
    }
  }

  /**
   * Stops the process: SIGTERM to its whole group, SIGKILL to the group after `graceMs`, then
   * SIGKILL to any member left once the leader is gone. Cancels a pending restart, removes the
   * pidfile and resolves when no live process is left in the group. Idempotent; nothing restarts
   * afterwards.
   * @throws HangarError `CONFLICT` after {@link detach}.
   */
  async stop(): Promise<void> {
    this.#assertAttached('stop');
    if (this.#stopping !== null) return this.#stopping;
    if (this.#phase.state === 'stopped') return;
    const stopping = this.#stop().finally(() => {
      this.#stopping = null;
    });
    this.#stopping = stopping;
    return stopping;
  }

  /**
   * Stops, then starts afresh: the backoff is reset, the restart counter kept. With `next`, the
   * new process runs what it says (the current release's environment — e.g. the app's domains
   * added since — rather than the one this supervisor was made with).
   */
  async restart(next?: Relaunch): Promise<void> {
    await this.stop();
    if (next) {
      this.#options = { ...this.#options, ...next };
      this.#graceMs = next.graceMs ?? this.#graceMs;
    }
    this.start();
  }

  /** The current state, pid, restart count and last exit. */
  status(): SupervisorStatus {
    return {
      state: this.#phase.state,
      pid: this.#run?.pid ?? null,
      restarts: this.#restarts,
      since: this.#since,
      message: this.#message,
      exitCode: this.#lastExit?.code ?? null,
      signal: this.#lastExit?.signal ?? null,
      reason: this.#reason,
      memory: this.#options.cgroup ? { usageBytes: this.#memoryBytes, limitBytes: this.#options.cgroup.limits.memoryBytes } : null,
    };
  }

  /**
   * Stops supervising and leaves the process running with its pidfile in place, so a later
   * {@link Supervisor.adopt} can take it over (what an agent does when it shuts down for an
   * upgrade). A pending restart is cancelled. A stop under way is abandoned at once (no SIGKILL
   * follows) and the pidfile says so, so that whoever adopts the process finishes the stop. The
   * supervisor is inert afterwards; `status()` keeps the last known state. Idempotent.
   */
  detach(): void {
    if (this.#detached) return;
    const stopping = this.#phase.state === 'stopping';
    this.#detached = true;
    this.#generation += 1;
    this.#cancelRestart();
    const run = this.#run;
    if (run !== null) {
      this.#clearRunTimers(run);
      if (run.child !== null) {
        run.child.removeAllListeners('exit');
        run.child.unref();
      }
    }
    if (stopping && run !== null && run.exit === null) {
      this.#writePidfile({ pid: run.pid, startTime: run.startTime, stopping: true });
      this.#message = `detached while stopping; pid ${run.pid} left for the next agent to stop`;
      this.#logger.info({ pid: run.pid }, 'detached from a stopping instance; the next agent finishes the stop');
      return;
    }
    this.#message = run === null ? 'detached; no process was running' : `detached; pid ${run.pid} left running`;
    this.#logger.info({ pid: run?.pid ?? null }, 'detached from instance');
  }

  #launch(): void {
    this.#generation += 1;
    const generation = this.#generation;
    this.#setState('starting', 'starting');
    const options = this.#options;
    const limited = options.cgroup;
    if (limited) {
      try {
        limited.cgroup.apply(limited.limits);
      } catch (err) {
        this.#onSpawnFailure(
          generation,
          new HangarError('INTERNAL', `could not set up the cgroup ${limited.cgroup.path} of its memory and CPU limits`, { cause: err }),
        );
        return;
      }
    }
    // In a cgroup, the shell waits on descriptor 3 until the agent has moved it in; it gives up
    // (exit 125) when the agent closes the pipe without a word.
    const script = limited ? `read -r _ <&3 || exit 125; exec 3<&-; exec ${options.command}` : `exec ${options.command}`;
    let child: ChildProcess;
    try {
      for (const path of [options.stdoutPath, options.stderrPath, options.pidfilePath]) {
        mkdirSync(dirname(path), { recursive: true });
      }
      const outFd = openSync(options.stdoutPath, 'a');
      let errFd: number | null = null;
      try {
        errFd = openSync(options.stderrPath, 'a');
        child = spawn('/bin/sh', ['-c', script], {
          cwd: options.cwd,
          env: options.env,
          // Own session and process group: signals reach the whole tree, and the process
          // survives the agent.
          detached: true,
          stdio: limited ? ['ignore', outFd, errFd, 'pipe'] : ['ignore', outFd, errFd],
          ...(options.uid === undefined ? {} : { uid: options.uid }),
          ...(options.gid === undefined ? {} : { gid: options.gid }),
        });
      } finally {
        // The child holds its own copies of the descriptors.
        closeSync(outFd);
        if (errFd !== null) closeSync(errFd);
      }
    } catch (err) {
      this.#onSpawnFailure(generation, err);
      return;
    }
    const pid = child.pid;
    if (pid === undefined) {
      // The failure (e.g. a missing cwd) arrives as an 'error' event.
      child.once('error', (err) => this.#onSpawnFailure(generation, err));
      return;
    }
    child.on('error', (err) => this.#logger.warn({ err, pid }, 'child process error'));
    const run: Run = {
      pid,
      startTime: readProcStat(pid)?.startTime ?? null,
      startedAt: this.#clock.now(),
      child,
      exit: null,
      settleTimer: null,
      healthTimer: null,
      pollTimer: null,
      memoryTimer: null,
      oomKills: limited?.cgroup.usage()?.oomKills ?? 0,
      oomKilled: false,
      overSoft: false,
    };
    if (limited) this.#enterCgroup(run, limited.cgroup, child.stdio[3] as Writable | null);
    this.#run = run;
    child.once('exit', (code, signal) => this.#guard(() => this.#onLeaderExit(run, code, signal)));
    this.#writePidfile({ pid, startTime: run.startTime });
    this.#message = `starting (pid ${pid})`;
    this.#logger.info({ pid }, 'instance started');
    this.#emit({ type: 'started', pid });
    this.#awaitReadiness(run);
    this.#watchMemory(run);
  }

  /** Moves the new process into its cgroup, then lets it exec its command; or stops it. */
  #enterCgroup(run: Run, cgroup: InstanceCgroup, gate: Writable | null): void {
    gate?.on('error', (err) => this.#logger.debug({ err }, 'start gate closed early'));
    try {
      cgroup.enter(run.pid);
      gate?.end('go\n');
    } catch (err) {
      this.#logger.error(
        { err, pid: run.pid, cgroup: cgroup.path },
        'could not move the instance into its cgroup; it does not run without its limits',
      );
      gate?.destroy();
    }
  }

  /** Reads the cgroup's memory every `memoryPollMs` while the run lasts. */
  #watchMemory(run: Run): void {
    if (!this.#options.cgroup) return;
    run.memoryTimer = this.#clock.setTimeout(
      () =>
        this.#guard(() => {
          run.memoryTimer = null;
          if (run.exit !== null || !this.#isCurrent(run)) return;
          this.#checkMemory(run);
          this.#watchMemory(run);
        }),
      this.#memoryPollMs,
    );
  }

  /** Emits R14 when the run crossed its soft line and R15 for each new OOM kill in its group. */
  #checkMemory(run: Run): void {
    const limited = this.#options.cgroup;
    const usage = limited?.cgroup.usage();
    if (!limited || !usage) return;
    this.#memoryBytes = usage.memoryBytes;
    const limitBytes = limited.limits.memoryBytes;
    if (usage.oomKills > run.oomKills) {
      const kills = usage.oomKills - run.oomKills;
      run.oomKills = usage.oomKills;
      run.oomKilled = true;
      this.#logger.warn({ kills, limitBytes }, 'the OOM killer ended a process of the instance');
      this.#emit({ type: 'oom_killed', kills, limitBytes });
    }
    if (usage.overSoft && !run.overSoft) {
      this.#logger.warn({ memoryBytes: usage.memoryBytes, limitBytes }, 'instance is over its memory quota');
      this.#emit({ type: 'memory_quota', memoryBytes: usage.memoryBytes, limitBytes });
    }
    run.overSoft = usage.overSoft;
  }

  #attach(pid: number, startTime: number): void {
    this.#generation += 1;
    this.#setState('starting', `adopted (pid ${pid})`);
    const limited = this.#options.cgroup;
    if (limited) {
      // It is in its cgroup already (moved there by the agent that started it); a new release
      // of the agent may have other defaults.
      try {
        limited.cgroup.apply(limited.limits);
      } catch (err) {
        this.#logger.warn({ err, cgroup: limited.cgroup.path }, 'could not update the limits of an adopted instance');
      }
    }
    const run: Run = {
      pid,
      startTime,
      startedAt: this.#clock.now(),
      child: null,
      exit: null,
      settleTimer: null,
      healthTimer: null,
      pollTimer: null,
      memoryTimer: null,
      oomKills: limited?.cgroup.usage()?.oomKills ?? 0,
      oomKilled: false,
      overSoft: false,
    };
    this.#run = run;
    this.#logger.info({ pid }, 'adopted running instance');
    this.#emit({ type: 'adopted', pid });
    this.#pollAdopted(run);
    this.#watchMemory(run);
    if (this.#options.healthCheck === undefined) {
      // It has been running since before this agent started: no settle time to wait for.
      this.#becomeUp(run);
    } else {
      // Checked at once: it served before this agent started, and the agent's first report should say so.
      this.#scheduleHealthCheck(run, 0);
    }
  }

  #awaitReadiness(run: Run): void {
    if (this.#options.healthCheck === undefined) {
      run.settleTimer = this.#clock.setTimeout(
        () =>
          this.#guard(() => {
            run.settleTimer = null;
            if (this.#isCurrent(run) && this.#phase.state === 'starting') this.#becomeUp(run);
          }),
        this.#settleMs,
      );
    } else {
      this.#scheduleHealthCheck(run);
    }
  }

  #scheduleHealthCheck(run: Run, delayMs = this.#healthIntervalMs): void {
    const healthCheck = this.#options.healthCheck;
    if (healthCheck === undefined) return;
    run.healthTimer = this.#clock.setTimeout(() => {
      run.healthTimer = null;
      if (!this.#isCurrent(run) || this.#phase.state !== 'starting') return;
      const checked = (async (): Promise<boolean> => {
        try {
          return await healthCheck();
        } catch (err) {
          this.#logger.debug({ err }, 'health check threw; counted as failed');
          return false;
        }
      })();
      checked
        .then((healthy) => {
          if (!this.#isCurrent(run) || this.#phase.state !== 'starting') return;
          if (healthy) this.#becomeUp(run);
          else this.#scheduleHealthCheck(run);
        })
        .catch((err: unknown) => this.#logger.error({ err }, 'health check handling failed'));
    }, delayMs);
  }

  #becomeUp(run: Run): void {
    this.#setState('up', `up (pid ${run.pid})`);
    this.#logger.info({ pid: run.pid }, 'instance up');
    this.#emit({ type: 'healthy', pid: run.pid });
  }

  #pollAdopted(run: Run): void {
    run.pollTimer = this.#clock.setTimeout(
      () =>
        this.#guard(() => {
          run.pollTimer = null;
          if (run.exit !== null || !this.#isCurrent(run)) return;
          if (isProcessRunning(run.pid, run.startTime ?? undefined)) this.#pollAdopted(run);
          else this.#onLeaderExit(run, null, null);
        }),
      this.#adoptPollMs,
    );
  }

  #onLeaderExit(run: Run, code: number | null, signal: string | null): void {
    if (run.exit !== null) return;
    run.exit = { code, signal };
    this.#clearRunTimers(run);
    // During a stop, stop() itself is waiting for this exit.
    if (!this.#isCurrent(run) || this.#phase.state === 'stopping') return;
    this.#run = null;
    this.#lastExit = run.exit;
    const runMs = this.#clock.now() - run.startedAt;
    this.#checkMemory(run);
    // Killed (by SIGKILL, or unknown for an adopted process) after the OOM killer struck its group.
    const oom = run.oomKilled && code === null && (signal === 'SIGKILL' || (signal === null && run.child === null));
    this.#reason = oom ? 'oom' : null;
    this.#killLeftovers(run.pid);
    removeFile(this.#options.pidfilePath, this.#logger);
    this.#emit({ type: 'exited', pid: run.pid, code, signal, runMs, oom });
    const limit = this.#options.cgroup?.limits.memoryBytes ?? null;
    const what = oom
      ? `Error R15 (Memory quota vastly exceeded): killed by the OOM killer at its ${limit === null ? '' : `${formatMemorySize(limit)} `}memory limit`
      : describeExit(code, signal, run.child === null);
    this.#scheduleRestart(what, runMs);
  }

  #onSpawnFailure(generation: number, err: unknown): void {
    if (generation !== this.#generation || this.#phase.state !== 'starting') return;
    this.#run = null;
    this.#lastExit = { code: null, signal: null };
    this.#logger.error({ err }, 'could not start instance');
    this.#emit({ type: 'exited', pid: null, code: null, signal: null, runMs: 0, oom: false });
    this.#scheduleRestart(`could not start: ${describeError(err)}`, 0);
  }

  #scheduleRestart(what: string, runMs: number): void {
    const decision = this.#backoff.recordExit(runMs);
    const delay = formatSeconds(decision.delayMs);
    const last = this.#lastExit ?? { code: null, signal: null };
    const message = decision.crashLoop
      ? `crash loop: exited ${decision.shortRuns} times in a row, last ${describeCode(last.code, last.signal)}; retrying in ${delay}`
      : `${what}; restarting in ${delay} (attempt ${decision.attempt})`;
    this.#setState('crashed', message);
    if (decision.crashLoopStarted) {
      this.#logger.error({ exits: decision.shortRuns, ...last }, 'instance is in a crash loop; fix the app and deploy again');
      this.#emit({ type: 'crash_loop', exits: decision.shortRuns, code: last.code, signal: last.signal });
    } else {
      this.#logger.warn({ runMs, delayMs: decision.delayMs, ...last }, 'instance exited; restarting');
    }
    this.#emit({ type: 'restarting', delayMs: decision.delayMs, attempt: decision.attempt });
    this.#restartTimer = this.#clock.setTimeout(
      () =>
        this.#guard(() => {
          this.#restartTimer = null;
          if (this.#phase.state !== 'crashed' || this.#detached) return;
          this.#restarts += 1;
          this.#launch();
        }),
      decision.delayMs,
    );
  }

  async #stop(): Promise<void> {
    this.#setState('stopping', 'stopping');
    this.#generation += 1;
    this.#cancelRestart();
    const run = this.#run;
    if (run !== null) {
      this.#clearRunTimers(run);
      await this.#terminate(run);
      // Detached meanwhile: the process and its pidfile are left for the next agent.
      if (this.#detached) return;
      if (run.exit !== null) this.#lastExit = run.exit;
    }
    this.#run = null;
    removeFile(this.#options.pidfilePath, this.#logger);
    const cgroup = this.#options.cgroup?.cgroup;
    if (cgroup && !cgroup.remove()) this.#logger.warn({ cgroup: cgroup.path }, 'could not remove the cgroup of a stopped instance');
    this.#setState('stopped', 'stopped');
    this.#logger.info('instance stopped');
    this.#emit({ type: 'stopped' });
  }

  async #terminate(run: Run): Promise<void> {
    if (run.exit === null) {
      const stopSignal = this.#options.stopSignal ?? 'SIGTERM';
      // The main process only: it stops its own children (Celery's warm shutdown would turn cold
      // if every pool process got the signal too); whatever is left gets SIGKILL below.
      this.#signalLeader(run, stopSignal);
      if (!(await this.#waitForExit(run, this.#graceMs))) {
        if (this.#detached) return;
        this.#logger.warn({ pid: run.pid, graceMs: this.#graceMs }, `did not exit after ${stopSignal}; sending SIGKILL`);
        this.#signalGroup(run.pid, 'SIGKILL');
        if (!(await this.#waitForExit(run, KILL_WAIT_MS)) && !this.#detached) {
          this.#logger.error({ pid: run.pid }, 'still running after SIGKILL; check the process by hand');
        }
      }
    }
    // The leader is gone; anything left in its group would be orphaned.
    const deadline = this.#clock.now() + KILL_WAIT_MS;
    while (!this.#detached && !isGroupEmpty(run.pid)) {
      this.#signalGroup(run.pid, 'SIGKILL');
      if (this.#clock.now() >= deadline) {
        this.#logger.error({ pgid: run.pid, members: listProcessGroup(run.pid) }, 'process group survives SIGKILL; check it by hand');
        return;
      }
      await sleep(STOP_POLL_MS, this.#clock);
    }
  }

  /** Resolves true once the run's leader has exited, false after `timeoutMs`. */
  async #waitForExit(run: Run, timeoutMs: number): Promise<boolean> {
    const deadline = this.#clock.now() + timeoutMs;
    for (;;) {
      if (run.exit !== null) return true;
      if (this.#detached) return false;
      // An adopted process is not our child: no 'exit' event, so look at /proc.
      if (run.child === null && !isProcessRunning(run.pid, run.startTime ?? undefined)) {
        this.#onLeaderExit(run, null, null);
        return true;
      }
      const left = deadline - this.#clock.now();
      if (left <= 0) return false;
      await sleep(Math.min(STOP_POLL_MS, left), this.#clock);
    }
  }

  #killLeftovers(pgid: number): void {
    const members = listProcessGroup(pgid);
    if (members.length === 0) return;
    this.#logger.warn({ pgid, members }, 'leader exited; killing the rest of its process group');
    this.#signalGroup(pgid, 'SIGKILL');
  }

  #signalLeader(run: Run, signal: NodeJS.Signals): void {
    if (!Number.isInteger(run.pid) || run.pid <= 1) throw new HangarError('INTERNAL', `refusing to signal process ${run.pid}`);
    // An adopted pid may have been reused since: only a process with its start time is it.
    if (run.child === null && !isProcessRunning(run.pid, run.startTime ?? undefined)) return;
    try {
      process.kill(run.pid, signal);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ESRCH') this.#logger.warn({ err, pid: run.pid, signal }, 'could not signal process');
    }
  }

  #signalGroup(pgid: number, signal: NodeJS.Signals): void {
    // -1 and 0 would signal every process we may signal, or our own group.
    if (!Number.isInteger(pgid) || pgid <= 1) throw new HangarError('INTERNAL', `refusing to signal process group ${pgid}`);
    try {
      process.kill(-pgid, signal);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ESRCH') this.#logger.warn({ err, pgid, signal }, 'could not signal process group');
    }
  }

  #writePidfile(record: PidRecord): void {
    const path = this.#options.pidfilePath;
    const tmp = `${path}.${process.pid}.tmp`;
    try {
      writeFileSync(tmp, `${JSON.stringify(record)}\n`);
      renameSync(tmp, path);
    } catch (err) {
      this.#logger.warn({ err, pidfile: path }, 'could not write pidfile; the instance cannot be adopted after an agent restart');
    }
  }

  #setState(next: SupervisorState, message: string): void {
    this.#phase.to(next);
    this.#since = this.#clock.now();
    this.#message = message;
  }

  #isCurrent(run: Run): boolean {
    return this.#run === run && !this.#detached;
  }

  #assertAttached(what: string): void {
    if (this.#detached) {
      throw new HangarError('CONFLICT', `cannot ${what} instance ${this.key}: its supervisor was detached; adopt the process instead`);
    }
  }

  #cancelRestart(): void {
    if (this.#restartTimer !== null) {
      this.#clock.clearTimeout(this.#restartTimer);
      this.#restartTimer = null;
    }
  }

  #clearRunTimers(run: Run): void {
    for (const timer of [run.settleTimer, run.healthTimer, run.pollTimer, run.memoryTimer]) {
      if (timer !== null) this.#clock.clearTimeout(timer);
    }
    run.settleTimer = null;
    run.healthTimer = null;
    run.pollTimer = null;
    run.memoryTimer = null;
  }

  #emit(event: DistributiveOmit<SupervisorEvent, 'key' | 'at'>): void {
    const onEvent = this.#options.onEvent;
    if (onEvent === undefined) return;
    try {
      onEvent({ ...event, key: this.key, at: this.#clock.now() });
    } catch (err) {
      this.#logger.error({ err, event: event.type }, 'onEvent handler threw');
    }
  }

  /** Runs a timer or event callback; an exception there is a bug, logged rather than thrown away. */
  #guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#logger.error({ err }, 'supervisor callback failed');
    }
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function parsePidRecord(text: string): PidRecord | null {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value !== 'object' || value === null) return null;
    const { pid, startTime } = value as Record<string, unknown>;
    if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 1) return null;
    if (startTime !== null && (typeof startTime !== 'number' || !Number.isInteger(startTime))) return null;
    return { pid, startTime, ...((value as Record<string, unknown>).stopping === true ? { stopping: true } : {}) };
  } catch {
    return null;
  }
}

/** True when no live process is left in group `pgid`; zombies waiting to be reaped do not count. */
function isGroupEmpty(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return true;
  }
  return listProcessGroup(pgid).length === 0;
}

function removeFile(path: string, logger: Logger): void {
  try {
    rmSync(path, { force: true });
  } catch (err) {
    logger.warn({ err, path }, 'could not remove file');
  }
}

function describeCode(code: number | null, signal: string | null): string {
  if (code !== null) return `exit code ${code}`;
  if (signal !== null) return `signal ${signal}`;
  return 'exit code unknown';
}

function describeExit(code: number | null, signal: string | null, adopted: boolean): string {
  if (code !== null) return `exited with code ${code}`;
  if (signal !== null) return `killed by ${signal}`;
  return adopted ? 'exited (adopted process; exit code unknown)' : 'exited';
}

function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(2))}s`;
}
