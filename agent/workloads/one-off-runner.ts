/**
 * The one-off kind of workload (`hangar run`, `hangar console`, cron firings): a command run once
 * in a release's slug, virtualenv and config, as the app's user, in its own process group, with a
 * pseudo-terminal (node-pty) or pipes. Unlike instances and add-on servers it is never restarted,
 * so it does not go through the supervisor's restart loop: desired state lists the runs an agent
 * must run; each id runs once, its outcome is kept on disk and reported again while it is listed,
 * and a run that is no longer listed while it runs is stopped (SIGHUP to its group, then SIGKILL).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type * as Pty from 'node-pty';
import type { Clock, ClockTimer } from '../../common/clock.js';
import { describeError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { RunInput__Output, RunSpec__Output } from '../../proto/loader.js';
import { buildSlug, type SlugBuildDeps } from '../build/slug-build.js';

/** What a run reports: started (`running`), could not start (`failed`), or `exited`. */
export interface RunReport {
  runId: string;
  state: 'running' | 'exited' | 'failed';
  pid: number;
  /** `exited`: the exit code, 128 + N when killed by signal N. */
  exitCode: number;
  signal: string;
  message: string;
  at: number;
}

/** Options of {@link OneOffRunner}. */
export interface OneOffRunnerOptions extends SlugBuildDeps {
  /** Where each run's outcome is kept (DATA/runs), so a run happens once even across restarts. */
  dir: string;
  /** Between SIGHUP/SIGTERM and SIGKILL of a run's group when it is stopped, ms. Default 10000. */
  graceMs?: number;
  /** Output as it comes, in order, at most {@link MAX_CHUNK} bytes a call. */
  onOutput: (runId: string, stream: 'stdout' | 'stderr', data: Buffer) => void;
  /** Output as log lines of the app (source `run.N`). */
  onLine: (spec: RunSpec__Output, stream: 'stdout' | 'stderr', line: string) => void;
  onReport: (report: RunReport) => void;
  clock: Clock;
  logger: Logger;
}

/** Largest output or input chunk of one message, bytes. */
export const MAX_CHUNK = 64 * 1024;
/** Longest log line made of a run's output, characters (a terminal may never send a newline). */
const MAX_LINE = 8 * 1024;
/** Signals a caller may send to a run. */
const SIGNALS = new Set(['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT']);

/** One run in the runner's hands. */
interface Active {
  spec: RunSpec__Output;
  pid: number;
  /** Set once the process runs. */
  term: Pty.IPty | null;
  child: ChildProcessWithoutNullStreams | null;
  timeout: ClockTimer | null;
  killTimer: ClockTimer | null;
  /** Why it was ended by the agent (stopped, timed out), for its report. */
  endedBy: string;
  /** Partial log line per stream. */
  partial: { stdout: string; stderr: string };
  /** Input that came before the process was started. */
  pending: RunInput__Output[];
  /** Resolves once it is over (its process gone, or it never started). */
  done: Promise<void>;
  finish: () => void;
}

/** Runs the one-off runs of desired state; see the module comment. */
export class OneOffRunner {
  readonly #o: OneOffRunnerOptions;
  readonly #logger: Logger;
  readonly #active = new Map<string, Active>();
  /** Outcomes already known this process lifetime (also on disk). */
  readonly #finished = new Map<string, RunReport>();
  #closed = false;

  constructor(options: OneOffRunnerOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'one-off-runner' });
  }

  /** Ids of the runs running now (they count against this agent's capacity). */
  running(): string[] {
    return [...this.#active.keys()];
  }

  /** Starts the listed runs not yet run, re-reports finished ones, stops running ones no longer listed. */
  apply(specs: readonly RunSpec__Output[]): void {
    if (this.#closed) return;
    const wanted = new Set(specs.map((s) => s.id));
    for (const [id, run] of this.#active) if (!wanted.has(id)) this.#end(run, 'stopped', 'SIGHUP');
    for (const spec of specs) {
      if (this.#active.has(spec.id)) continue;
      const known = this.#finished.get(spec.id);
      if (known) {
        this.#o.onReport(known);
        continue;
      }
      this.#launch(spec);
    }
    this.forget(wanted).catch((err: unknown) => this.#logger.warn({ err }, 'could not forget old one-off runs'));
  }

  /** Input for a running run: bytes, end of input, a window size, a signal. */
  input(message: RunInput__Output): void {
    const run = this.#active.get(message.runId);
    if (!run) return;
    if (!run.term && !run.child) {
      if (run.pending.length < 256) run.pending.push(message);
      return;
    }
    this.#deliver(run, message);
  }

  /** Stops every run (SIGHUP, then SIGKILL after the grace) and waits until they are gone. */
  async close(): Promise<void> {
    this.#closed = true;
    const runs = [...this.#active.values()];
    for (const run of runs) this.#end(run, 'the agent stopped', 'SIGHUP');
    await Promise.all(runs.map((r) => r.done));
  }

  #launch(spec: RunSpec__Output): void {
    let finish: () => void = () => undefined;
    const done = new Promise<void>((resolve) => (finish = resolve));
    const run: Active = {
      spec,
      pid: 0,
      term: null,
      child: null,
      timeout: null,
      killTimer: null,
      endedBy: '',
      partial: { stdout: '', stderr: '' },
      pending: [],
      done,
      finish: () => {
        if (this.#active.get(spec.id) === run) this.#active.delete(spec.id);
        finish();
      },
    };
    this.#active.set(spec.id, run);
    this.#start(run)
      .catch((err: unknown) => {
        this.#logger.warn({ err, run: spec.name, app: spec.app }, 'a one-off run could not start');
        return this.#finish(run, { state: 'failed', exitCode: 0, signal: '', message: `It could not start: ${describeError(err)}` });
      })
      .catch((err: unknown) => this.#logger.error({ err, run: spec.name }, 'one-off run bookkeeping failed'))
      .finally(() => {
        // Without a process (not started, or reported from its record) it is over now.
        if (!run.term && !run.child) run.finish();
      });
  }

  async #start(run: Active): Promise<void> {
    const spec = run.spec;
    if (!/^[0-9a-f-]{36}$/.test(spec.id)) throw new Error('bad run id');
    const record = join(this.#o.dir, `${spec.id}.json`);
    const before = await readRecord(record);
    if (before) {
      // Started by a previous agent: either finished (report it again) or lost with that agent.
      const report: RunReport =
        before.state === 'running'
          ? { ...before, state: 'failed', message: 'The agent restarted while it ran, so it was stopped.', at: this.#o.clock.now() }
          : before;
      this.#finished.set(spec.id, report);
      if (before.state === 'running') await writeRecord(record, report);
      this.#o.onReport(report);
      return;
    }
    const { build, user } = await buildSlug(this.#o, spec.app, spec.artifactSha256, this.#logger);
    // Loaded for the first terminal run only: most agents never start one.
    const pty = spec.tty ? await import('node-pty') : null;
    if (this.#closed || this.#active.get(spec.id) !== run || run.endedBy) {
      throw new Error(run.endedBy || 'it was stopped before it started');
    }
    const env: Record<string, string> = { ...spec.env, ...build.env };
    if (user) env.HOME = user.home;
    const shell = ['/bin/sh', '-c', `exec ${spec.command}`];
    if (pty) {
      env.TERM = spec.env.TERM || 'xterm-256color';
      // node-pty sets the uid and gid but keeps the agent's supplementary groups: setpriv drops them.
      const [file, ...args] = user
        ? ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--inh-caps=-all', '--', ...shell]
        : shell;
      const term = pty.spawn(file as string, args, {
        name: env.TERM,
        cols: spec.cols || 80,
        rows: spec.rows || 24,
        cwd: build.appDir,
        env,
      });
      run.term = term;
      run.pid = term.pid;
      term.onData((text) => this.#output(run, 'stdout', Buffer.from(text, 'utf8')));
      term.onExit(({ exitCode, signal }) => void this.#exited(run, signal ? null : exitCode, signal ? signalName(signal) : null));
    } else {
      const child = spawn(shell[0] as string, shell.slice(1), {
        cwd: build.appDir,
        env,
        detached: true,
        ...(user ? { uid: user.uid, gid: user.gid } : {}),
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      run.child = child;
      run.pid = child.pid ?? 0;
      if (!spec.attached) child.stdin.end();
      child.stdin.on('error', () => undefined);
      child.stdout.on('data', (d: Buffer) => this.#output(run, 'stdout', d));
      child.stderr.on('data', (d: Buffer) => this.#output(run, 'stderr', d));
      child.on('error', (err) => this.#logger.warn({ err, run: spec.name }, 'one-off run process error'));
      child.on('close', (code, sig) => void this.#exited(run, code, sig));
    }
    // Armed before anything is awaited: a run that ends at once (`false`) is then sure to find it
    // when it exits and clear it, instead of leaving a 24-hour timer behind.
    if (spec.timeoutSeconds > 0) {
      run.timeout = this.#o.clock.setTimeout(
        () => this.#end(run, `timed out after ${spec.timeoutSeconds} s`, 'SIGTERM'),
        spec.timeoutSeconds * 1000,
      );
    }
    await writeRecord(record, {
      runId: spec.id,
      state: 'running',
      pid: run.pid,
      exitCode: 0,
      signal: '',
      message: '',
      at: this.#o.clock.now(),
    });
    this.#logger.info({ run: spec.name, app: spec.app, pid: run.pid, tty: spec.tty }, 'one-off run started');
    this.#o.onReport({ runId: spec.id, state: 'running', pid: run.pid, exitCode: 0, signal: '', message: '', at: this.#o.clock.now() });
    for (const message of run.pending.splice(0)) this.#deliver(run, message);
  }

  #deliver(run: Active, m: RunInput__Output): void {
    try {
      if (m.cols > 0 && m.rows > 0) run.term?.resize(Math.min(m.cols, 1000), Math.min(m.rows, 1000));
      if (m.data.length > 0) {
        if (run.term) run.term.write(m.data.toString('utf8'));
        else run.child?.stdin.write(m.data);
      }
      if (m.eof) {
        // A terminal's end of input is Ctrl-D at the start of a line.
        if (run.term) run.term.write('\x04');
        else run.child?.stdin.end();
      }
      if (m.signal && SIGNALS.has(m.signal)) signalGroup(run.pid, m.signal as NodeJS.Signals);
    } catch (err) {
      this.#logger.debug({ err, run: run.spec.name }, 'could not pass input to a one-off run');
    }
  }

  #output(run: Active, stream: 'stdout' | 'stderr', data: Buffer): void {
    for (let i = 0; i < data.length; i += MAX_CHUNK) this.#o.onOutput(run.spec.id, stream, data.subarray(i, i + MAX_CHUNK));
    // Log lines: a terminal's carriage returns and escape sequences are left out.
    const text = run.partial[stream] + stripTerminal(data.toString('utf8'));
    const lines = text.split('\n');
    run.partial[stream] = lines.pop() ?? '';
    if (run.partial[stream].length > MAX_LINE) {
      lines.push(run.partial[stream]);
      run.partial[stream] = '';
    }
    for (const line of lines) this.#o.onLine(run.spec, stream, line.slice(0, MAX_LINE));
  }

  /** Ends a run on the agent's behalf: `signal` to its group, SIGKILL after the grace. */
  #end(run: Active, why: string, signal: NodeJS.Signals): void {
    if (run.endedBy) return;
    run.endedBy = why;
    if (!run.pid) return;
    this.#logger.info({ run: run.spec.name, app: run.spec.app, why }, 'stopping a one-off run');
    signalGroup(run.pid, signal);
    if (signal !== 'SIGTERM') signalGroup(run.pid, 'SIGTERM');
    run.killTimer = this.#o.clock.setTimeout(() => signalGroup(run.pid, 'SIGKILL'), this.#o.graceMs ?? 10_000);
  }

  async #exited(run: Active, code: number | null, signal: string | null): Promise<void> {
    if (run.timeout) this.#o.clock.clearTimeout(run.timeout);
    if (run.killTimer) this.#o.clock.clearTimeout(run.killTimer);
    // Nothing the run started may outlive it.
    signalGroup(run.pid, 'SIGKILL');
    for (const stream of ['stdout', 'stderr'] as const) {
      if (run.partial[stream]) this.#o.onLine(run.spec, stream, run.partial[stream]);
      run.partial[stream] = '';
    }
    const exitCode = code ?? 128 + signalNumber(signal);
    try {
      await this.#finish(run, { state: 'exited', exitCode, signal: signal ?? '', message: run.endedBy });
    } catch (err) {
      this.#logger.error({ err, run: run.spec.name }, 'could not record the end of a one-off run');
    } finally {
      run.finish();
    }
  }

  async #finish(run: Active, outcome: Pick<RunReport, 'state' | 'exitCode' | 'signal' | 'message'>): Promise<void> {
    const report: RunReport = { runId: run.spec.id, pid: run.pid, at: this.#o.clock.now(), ...outcome };
    this.#finished.set(run.spec.id, report);
    this.#logger.info({ run: run.spec.name, app: run.spec.app, ...outcome }, 'one-off run ended');
    this.#o.onReport(report);
    await writeRecord(join(this.#o.dir, `${run.spec.id}.json`), report);
  }

  /** Forgets the outcomes of runs the coordinator no longer lists (keeps the disk small). */
  async forget(keep: ReadonlySet<string>): Promise<void> {
    for (const id of [...this.#finished.keys()]) {
      if (keep.has(id)) continue;
      this.#finished.delete(id);
      await rm(join(this.#o.dir, `${id}.json`), { force: true });
    }
  }
}

async function readRecord(path: string): Promise<RunReport | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as RunReport;
  } catch {
    return null;
  }
}

async function writeRecord(path: string, report: RunReport): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true, mode: 0o700 });
  await writeFile(path, JSON.stringify(report), { mode: 0o600 });
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

const SIGNAL_NUMBERS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };

function signalNumber(signal: string | null): number {
  return signal ? (SIGNAL_NUMBERS[signal] ?? 1) : 0;
}

function signalName(n: number): string {
  return Object.entries(SIGNAL_NUMBERS).find(([, v]) => v === n)?.[0] ?? `SIG${n}`;
}

/** Text without a terminal's escape sequences and carriage returns. */
function stripTerminal(text: string): string {
  return text.replace(/\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]|\r/g, '');
}
