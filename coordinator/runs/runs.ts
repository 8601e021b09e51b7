/**
 * One-off runs: `hangar run` (attached, with a terminal or pipes, or detached), `hangar console`
 * and cron firings. A run is recorded first; it is placed by the scheduler (or on the agent the
 * caller names), counts against that agent's capacity, and is sent to it in desired state once
 * its CLI is attached (detached runs at once). The agent streams its output back over the gRPC
 * link; this bridges it to the attached client and carries the client's input, window sizes and
 * signals the other way. A client that goes away ends its run (the agent sends SIGHUP to its
 * group); a detached run keeps going until it exits, times out or `run:stop`.
 */
import { randomUUID } from 'node:crypto';
import type { RunRequest, RunStreamControl, RunStreamMessage, RunView } from '../../common/api-types.js';
import type { Clock } from '../../common/clock.js';
import { HangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { RunInput, RunOutput__Output, RunSpec, RunStatus__Output } from '../../proto/loader.js';
import type { AgentHub } from '../fleet/agent-hub.js';
import { processEnv } from '../fleet/desired-state.js';
import type { DesiredStateSync } from '../fleet/desired-state-sync.js';
import { placeInstances } from '../fleet/scheduler.js';
import type { ReleaseRow, Store } from '../store/store.js';
import { RunStore, type RunRow } from './run-store.js';

/** What `hangar console` runs without app.json's `hangar.console`. */
export const DEFAULT_CONSOLE = 'python manage.py shell';
/** Default timeout of a detached run, s (24 h). */
export const DETACHED_TIMEOUT_SECONDS = 24 * 3600;
/** An attached run whose client does not connect within this is failed, ms. */
const ATTACH_WITHIN_MS = 60_000;
/** Most input held back until a run has started, bytes. */
const MAX_EARLY_INPUT = 8 * 1024 * 1024;
/** Largest chunk of input passed on at once, bytes. */
const MAX_INPUT_CHUNK = 64 * 1024;

/** Where an attached client gets a run's output and end. */
export interface RunSink {
  output(stream: 'stdout' | 'stderr', data: Buffer): void;
  message(message: RunStreamMessage): void;
  /** The run is over: the client's connection is closed after what was sent. */
  end(): void;
}

/** What the client side can do once attached. */
export interface RunAttachment {
  input(data: Buffer): void;
  control(message: RunStreamControl): void;
  /** The client went away. */
  detach(): void;
}

/** Options of {@link Runs}. */
export interface RunsOptions {
  store: Store;
  hub: Pick<AgentHub, 'isConnected' | 'sendRunInput'>;
  sync: Pick<DesiredStateSync, 'requestSync'>;
  clock: Clock;
  logger: Logger;
  /** Writes a `hangar` line into the app's logs. */
  recordEvent: (app: string, line: string, stream?: 'stdout' | 'stderr') => void;
}

/** See the module comment. */
export class Runs {
  readonly #o: RunsOptions;
  readonly #logger: Logger;
  readonly store: RunStore;
  readonly #sinks = new Map<string, RunSink>();
  /** Sends the input held back until the run started, by run id. */
  readonly #flushers = new Map<string, () => void>();

  constructor(options: RunsOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'runs' });
    this.store = new RunStore(options.store);
  }

  /**
   * Records a new run and places it.
   *
   * @throws HangarError `APP_NOT_FOUND`, `NO_RELEASE`, `RELEASE_NOT_FOUND`, `AGENT_NOT_FOUND`,
   *   `AGENT_DOWN`, `NO_AGENTS`, `NO_CAPACITY`.
   */
  create(app: string, request: RunRequest, createdBy: string, cronJob: string | null = null): RunRow {
    const store = this.#o.store;
    const appRow = store.requireApp(app);
    const version = request.release ?? appRow.currentRelease;
    if (version === null || version === undefined) {
      throw new HangarError(
        'NO_RELEASE',
        `${app} has no release yet, so there is nothing to run in; deploy it first with \`hangar deploy -a ${app}\`.`,
      );
    }
    const release = store.getRelease(app, version);
    if (!release || release.status === 'failed' || release.status === 'pending') {
      throw new HangarError(
        'RELEASE_NOT_FOUND',
        `${app} has no release v${version} that built${release ? ` (v${version} ${release.status})` : ''}; \`hangar releases -a ${app}\` lists them.`,
      );
    }
    const command = request.console ? (release.appJson?.hangar?.console ?? DEFAULT_CONSOLE) : (request.command ?? '');
    if (command.trim() === '')
      throw new HangarError('BAD_INPUT', 'Give a command to run, e.g. `hangar run -a APP -- python manage.py migrate`.');
    const agent = this.#place(request.agent);
    const detached = request.detached ?? false;
    const now = this.#o.clock.now();
    const run = this.store.insert({
      id: randomUUID(),
      app,
      command,
      release: version,
      agent,
      tty: !detached && (request.tty ?? false),
      attached: !detached,
      cols: request.cols ?? 80,
      rows: request.rows ?? 24,
      term: request.term ?? 'xterm-256color',
      timeoutSeconds: request.timeoutSeconds ?? (detached ? DETACHED_TIMEOUT_SECONDS : 0),
      createdBy,
      cronJob,
      status: detached ? 'starting' : 'pending',
      desired: 'run',
      pid: null,
      exitCode: null,
      signal: null,
      message: '',
      createdAt: now,
      startedAt: null,
      endedAt: null,
    });
    this.#o.recordEvent(
      app,
      `Starting run.${run.number} (${run.command}) by ${createdBy} on ${agent}, v${version}${detached ? ', detached' : ''}`,
    );
    if (detached) this.#o.sync.requestSync(agent);
    return run;
  }

  /** The run `run.N` of `app`. @throws HangarError `RUN_NOT_FOUND`. */
  require(app: string, number: number): RunRow {
    const run = this.store.byNumber(app, number);
    if (!run) throw new HangarError('RUN_NOT_FOUND', `${app} has no run.${number}; \`hangar runs -a ${app}\` lists them.`);
    return run;
  }

  /**
   * Attaches a client to a pending run: it is sent to its agent now.
   *
   * @throws HangarError `CONFLICT` when the run is not waiting for a client.
   */
  attach(run: RunRow, sink: RunSink): RunAttachment {
    if (run.status !== 'pending' || this.#sinks.has(run.id)) {
      throw new HangarError(
        'CONFLICT',
        `run.${run.number} is ${run.status === 'pending' ? 'attached already' : run.status}; a run is attached once, by the \`hangar run\` that made it.`,
      );
    }
    this.#sinks.set(run.id, sink);
    this.store.move(run.id, 'starting');
    this.#o.sync.requestSync(run.agent);
    // Input that comes before the process runs waits here (the agent may not have the run yet).
    const early: RunInput[] = [];
    let earlyBytes = 0;
    this.#flushers.set(run.id, () => {
      for (const input of early.splice(0)) this.#o.hub.sendRunInput(run.agent, input);
    });
    const send = (input: Omit<RunInput, 'runId'>) => {
      const message = { runId: run.id, ...input };
      if (this.#flushers.has(run.id)) {
        earlyBytes += input.data?.length ?? 0;
        if (earlyBytes > MAX_EARLY_INPUT) {
          sink.message({
            error: {
              code: 'PAYLOAD_TOO_LARGE',
              message: `More than ${MAX_EARLY_INPUT / 1048576} MiB of input came before run.${run.number} started.`,
            },
          });
          sink.end();
          return;
        }
        early.push(message);
      } else {
        this.#o.hub.sendRunInput(run.agent, message);
      }
    };
    return {
      input: (data) => {
        for (let i = 0; i < data.length; i += MAX_INPUT_CHUNK) send({ data: data.subarray(i, i + MAX_INPUT_CHUNK) });
      },
      control: (m) => {
        if ('resize' in m) send({ cols: m.resize.cols, rows: m.resize.rows });
        else if ('eof' in m) send({ eof: true });
        else send({ signal: m.signal });
      },
      detach: () => {
        if (this.#sinks.get(run.id) !== sink) return;
        this.#sinks.delete(run.id);
        this.#flushers.delete(run.id);
        const now = this.store.get(run.id);
        if (now && (now.status === 'starting' || now.status === 'running') && now.desired === 'run') {
          this.#logger.info({ app: run.app, run: run.number }, 'the client of a run went away; stopping it');
          this.#o.recordEvent(run.app, `run.${run.number}: its terminal went away; sending SIGHUP`);
          this.store.requestStop(run.id);
          this.#o.sync.requestSync(run.agent);
        }
      },
    };
  }

  /** `hangar run:stop`: the agent stops it (SIGHUP, SIGTERM, then SIGKILL). */
  stop(app: string, number: number): RunRow {
    const run = this.require(app, number);
    if (run.status === 'exited' || run.status === 'failed') {
      throw new HangarError('CONFLICT', `run.${number} is over already (${run.status}); \`hangar runs -a ${app}\` lists what runs.`);
    }
    this.store.requestStop(run.id);
    this.#o.recordEvent(app, `Stopping run.${number} on request`);
    if (run.status === 'pending') {
      this.#end(this.store.move(run.id, 'failed', { message: 'stopped before it started', endedAt: this.#o.clock.now() }));
    }
    this.#o.sync.requestSync(run.agent);
    return this.store.get(run.id) ?? run;
  }

  /** Output from an agent. */
  onOutput(agent: string, output: RunOutput__Output): void {
    const run = this.store.get(output.runId);
    if (!run || run.agent !== agent) return;
    this.#sinks.get(run.id)?.output(output.stream === 'stderr' ? 'stderr' : 'stdout', output.data);
  }

  /** A run's state from its agent. */
  onStatus(agent: string, status: RunStatus__Output): void {
    const run = this.store.get(status.runId);
    if (!run || run.agent !== agent || run.status === 'exited' || run.status === 'failed') return;
    const at = Number(status.at) || this.#o.clock.now();
    if (status.state === 'running') {
      if (run.status !== 'starting') return;
      this.store.move(run.id, 'running', { pid: status.pid, startedAt: at });
      const flush = this.#flushers.get(run.id);
      this.#flushers.delete(run.id);
      flush?.();
      this.#sinks.get(run.id)?.message({ status: 'running', pid: status.pid });
      return;
    }
    const stopped = run.desired === 'stop' && !status.message;
    const message = status.message || (stopped ? 'stopped' : '');
    const ended =
      status.state === 'failed'
        ? this.store.move(run.id, 'failed', { message, endedAt: at })
        : this.store.move(run.id, 'exited', {
            exitCode: status.exitCode,
            signal: status.signal || null,
            message,
            startedAt: run.startedAt ?? at,
            endedAt: at,
          });
    this.#end(ended);
    this.#o.sync.requestSync(agent);
  }

  /** An agent said hello: the runs it was stopping are over (it stopped them with its last self). */
  onHello(agent: string): void {
    for (const run of this.store.active()) {
      if (run.agent === agent && run.desired === 'stop' && run.status !== 'pending') {
        this.#end(
          this.store.move(run.id, 'exited', {
            message: 'stopped',
            endedAt: this.#o.clock.now(),
            exitCode: run.exitCode ?? 129,
            signal: 'SIGHUP',
          }),
        );
      }
    }
  }

  /** Runs on an agent that is gone for good cannot be followed any more. */
  onAgentGone(agent: string): void {
    for (const run of this.store.active()) {
      if (run.agent !== agent) continue;
      this.#end(this.store.move(run.id, 'failed', { message: `its agent ${agent} went away`, endedAt: this.#o.clock.now() }));
    }
  }

  /**
   * Fails attached runs whose client never connected, and stops attached runs that lost theirs
   * without a goodbye (the coordinator restarted under them).
   */
  tick(): void {
    const now = this.#o.clock.now();
    for (const run of this.store.active()) {
      if (!run.attached || this.#sinks.has(run.id)) continue;
      if (run.status === 'pending' && now - run.createdAt > ATTACH_WITHIN_MS) {
        this.#end(this.store.move(run.id, 'failed', { message: 'no terminal attached to it in time', endedAt: now }));
      } else if (run.status !== 'pending' && run.desired === 'run') {
        this.#o.recordEvent(run.app, `run.${run.number}: its terminal is gone (the coordinator restarted); sending SIGHUP`);
        this.store.requestStop(run.id);
        this.#o.sync.requestSync(run.agent);
      }
    }
  }

  /** Runs not over on `agent` (they count against its capacity). */
  activeOn(agent: string): number {
    return this.store.activeOn(agent);
  }

  /** Ends every attached client (coordinator shutdown). */
  close(): void {
    for (const sink of this.#sinks.values()) sink.end();
    this.#sinks.clear();
  }

  #end(run: RunRow): void {
    this.#flushers.delete(run.id);
    const sink = this.#sinks.get(run.id);
    this.#sinks.delete(run.id);
    const how =
      run.status === 'failed'
        ? `failed: ${run.message}`
        : `exited with code ${run.exitCode ?? '?'}${run.signal ? ` (${run.signal})` : ''}${run.message ? `, ${run.message}` : ''}`;
    const failed = run.status === 'failed' || (run.exitCode ?? 0) !== 0;
    // A failing cron job is an error line of the app's logs.
    const who = run.cronJob === null ? `run.${run.number}` : `Cron job ${run.cronJob}${failed ? ' failed' : ''}: run.${run.number}`;
    this.#o.recordEvent(run.app, `${who} ${how}`, failed ? 'stderr' : 'stdout');
    if (!sink) return;
    sink.message(
      run.status === 'failed'
        ? { error: { code: 'RUN_FAILED', message: `run.${run.number} could not run: ${run.message}` } }
        : { exit: { code: run.exitCode ?? 1, signal: run.signal, message: run.message } },
    );
    sink.end();
  }

  #place(named: string | undefined): string {
    const store = this.#o.store;
    const agents = store.listAgents();
    if (named !== undefined) {
      const agent = agents.find((a) => a.name === named);
      if (!agent) throw new HangarError('AGENT_NOT_FOUND', `No agent ${named}; \`hangar agents\` lists them.`);
      if (!this.#o.hub.isConnected(named)) {
        throw new HangarError(
          'AGENT_DOWN',
          `The agent ${named} is not connected, so nothing can run on it; pick another (\`hangar agents\`) or leave out --agent.`,
        );
      }
      return named;
    }
    const instances = store.listInstances();
    const [agent] = placeInstances(
      agents.map((a) => ({
        name: a.name,
        up: this.#o.hub.isConnected(a.name),
        maxInstances: a.maxInstances,
        load: instances.filter((i) => i.agent === a.name).length + this.store.activeOn(a.name),
      })),
      [],
      [{ app: '', type: 'run' }],
    );
    return agent as string;
  }
}

/** The API view of a run. */
export function runView(run: RunRow): RunView {
  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
  return {
    name: `run.${run.number}`,
    id: run.id,
    command: run.command,
    release: `v${run.release}`,
    agent: run.agent,
    status: run.status,
    attached: run.attached,
    tty: run.tty,
    createdBy: run.createdBy,
    cronJob: run.cronJob,
    pid: run.pid,
    exitCode: run.exitCode,
    signal: run.signal,
    message: run.message,
    createdAt: new Date(run.createdAt).toISOString(),
    startedAt: iso(run.startedAt),
    endedAt: iso(run.endedAt),
    durationMs: run.startedAt !== null && run.endedAt !== null ? run.endedAt - run.startedAt : null,
    timeoutSeconds: run.timeoutSeconds,
  };
}

/** The runs `agent` must run now, for its desired state (runs waiting for a client or being stopped are left out). */
export function runSpecsFor(
  store: Pick<RunStore, 'active'>,
  agent: string,
  releaseOf: (app: string, version: number) => ReleaseRow | null,
  domainsOf: (app: string) => readonly string[],
): RunSpec[] {
  return store.active().flatMap((run) => {
    if (run.agent !== agent || run.status === 'pending' || run.desired === 'stop') return [];
    const release = releaseOf(run.app, run.release);
    if (!release) return [];
    const name = `run.${run.number}`;
    return [
      {
        id: run.id,
        app: run.app,
        name,
        release: run.release,
        artifactSha256: release.artifactSha256,
        command: run.command,
        env: { ...processEnv(release, name, domainsOf(run.app)), DYNO: name, ...(run.tty ? { TERM: run.term } : {}) },
        tty: run.tty,
        cols: run.cols,
        rows: run.rows,
        timeoutSeconds: run.timeoutSeconds,
        attached: run.attached,
      },
    ];
  });
}
