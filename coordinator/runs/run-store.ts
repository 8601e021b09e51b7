/**
 * One-off runs in SQLite (shares the {@link Store}'s one connection): who ran what, in which
 * release, on which agent, and how it ended. Statuses move by {@link RUN_TRANSITIONS}.
 */
import type { SqlDatabase } from '../store/sql.js';
import { HangarError } from '../../common/errors.js';
import type { Store } from '../store/store.js';
import { assertTransition } from '../store/transition-table.js';

/**
 * `pending`: an attached run waiting for its CLI to connect; `starting`: sent to its agent;
 * `running`: its process runs; `exited`: it ended with an exit code; `failed`: it never ran.
 */
export type RunStatus = 'pending' | 'starting' | 'running' | 'exited' | 'failed';

/** Where each status may go. */
export const RUN_TRANSITIONS: Record<RunStatus, readonly RunStatus[]> = {
  pending: ['starting', 'failed'],
  starting: ['running', 'exited', 'failed'],
  running: ['exited', 'failed'],
  exited: [],
  failed: [],
};

/** Statuses of a run that is not over. */
export const ACTIVE_RUN_STATUSES: readonly RunStatus[] = ['pending', 'starting', 'running'];

/** A run's row. */
export interface RunRow {
  id: string;
  app: string;
  /** `run.N` names it (and its log source). */
  number: number;
  command: string;
  release: number;
  agent: string;
  tty: boolean;
  /** A CLI streams its input and output (`hangar run` without `--detached`). */
  attached: boolean;
  cols: number;
  rows: number;
  term: string;
  /** 0: no limit. */
  timeoutSeconds: number;
  /** The name of the token that started it (`cron` for cron firings). */
  createdBy: string;
  /** The cron job that fired it, or null. */
  cronJob: string | null;
  status: RunStatus;
  /** `stop`: `hangar run:stop` or its CLI went away; the agent stops it. */
  desired: 'run' | 'stop';
  pid: number | null;
  exitCode: number | null;
  signal: string | null;
  message: string;
  createdAt: number;
  startedAt: number | null;
  endedAt: number | null;
}

type Row = Record<string, unknown>;

function runFrom(r: Row): RunRow {
  return {
    id: r.id as string,
    app: r.app as string,
    number: r.number as number,
    command: r.command as string,
    release: r.release as number,
    agent: r.agent as string,
    tty: r.tty === 1,
    attached: r.attached === 1,
    cols: r.cols as number,
    rows: r.rows as number,
    term: r.term as string,
    timeoutSeconds: r.timeout_seconds as number,
    createdBy: r.created_by as string,
    cronJob: (r.cron_job as string | null) ?? null,
    status: r.status as RunStatus,
    desired: r.desired as 'run' | 'stop',
    pid: (r.pid as number | null) ?? null,
    exitCode: (r.exit_code as number | null) ?? null,
    signal: (r.signal as string | null) ?? null,
    message: r.message as string,
    createdAt: r.created_at as number,
    startedAt: (r.started_at as number | null) ?? null,
    endedAt: (r.ended_at as number | null) ?? null,
  };
}

/** See the file comment. */
export class RunStore {
  readonly #db: SqlDatabase;

  constructor(store: Store) {
    this.#db = store.database;
  }

  /** Inserts a run under the app's next number and returns it. */
  insert(run: Omit<RunRow, 'number'>): RunRow {
    return this.#db.transaction(() => {
      const { n } = this.#db.prepare('SELECT COALESCE(MAX(number), 0) + 1 AS n FROM runs WHERE app = ?').get(run.app) as { n: number };
      const row: RunRow = { ...run, number: n };
      this.#db
        .prepare(
          `INSERT INTO runs (id, app, number, command, release, agent, tty, attached, cols, rows, term, timeout_seconds, created_by,
             cron_job, status, desired, pid, exit_code, signal, message, created_at, started_at, ended_at)
           VALUES (@id, @app, @number, @command, @release, @agent, @tty, @attached, @cols, @rows, @term, @timeoutSeconds, @createdBy,
             @cronJob, @status, @desired, @pid, @exitCode, @signal, @message, @createdAt, @startedAt, @endedAt)`,
        )
        .run({ ...row, tty: row.tty ? 1 : 0, attached: row.attached ? 1 : 0 });
      return row;
    })();
  }

  get(id: string): RunRow | null {
    const r = this.#db.prepare('SELECT * FROM runs WHERE id = ?').get(id) as Row | undefined;
    return r ? runFrom(r) : null;
  }

  byNumber(app: string, number: number): RunRow | null {
    const r = this.#db.prepare('SELECT * FROM runs WHERE app = ? AND number = ?').get(app, number) as Row | undefined;
    return r ? runFrom(r) : null;
  }

  /** The app's runs, newest first (at most `limit`). */
  list(app: string, limit = 100): RunRow[] {
    return (this.#db.prepare('SELECT * FROM runs WHERE app = ? ORDER BY number DESC LIMIT ?').all(app, limit) as Row[]).map(runFrom);
  }

  /** The newest run a cron job of `app` fired, or null. */
  lastOfJob(app: string, job: string): RunRow | null {
    const r = this.#db.prepare('SELECT * FROM runs WHERE app = ? AND cron_job = ? ORDER BY number DESC LIMIT 1').get(app, job) as
      Row | undefined;
    return r ? runFrom(r) : null;
  }

  /** Runs not over yet, every app. */
  active(): RunRow[] {
    return (
      this.#db.prepare("SELECT * FROM runs WHERE status IN ('pending', 'starting', 'running') ORDER BY created_at").all() as Row[]
    ).map(runFrom);
  }

  /** Moves a run to `status` with the given facts; throws on a move the table forbids. */
  move(
    id: string,
    status: RunStatus,
    facts: Partial<Pick<RunRow, 'pid' | 'exitCode' | 'signal' | 'message' | 'startedAt' | 'endedAt'>> = {},
  ): RunRow {
    const run = this.get(id);
    if (!run) throw new HangarError('RUN_NOT_FOUND', `No run ${id}.`);
    assertTransition(RUN_TRANSITIONS, run.status, status, 'run');
    const next = { ...run, ...facts, status };
    this.#db
      .prepare(
        'UPDATE runs SET status = @status, pid = @pid, exit_code = @exitCode, signal = @signal, message = @message, started_at = @startedAt, ended_at = @endedAt WHERE id = @id',
      )
      .run({
        id,
        status,
        pid: next.pid,
        exitCode: next.exitCode,
        signal: next.signal,
        message: next.message,
        startedAt: next.startedAt,
        endedAt: next.endedAt,
      });
    return next;
  }

  /** Asks for a run to be stopped. */
  requestStop(id: string): void {
    this.#db.prepare("UPDATE runs SET desired = 'stop' WHERE id = ?").run(id);
  }

  /** Number of runs not over on `agent` (they count against its capacity). */
  activeOn(agent: string): number {
    const r = this.#db
      .prepare("SELECT count(*) AS n FROM runs WHERE agent = ? AND status IN ('pending', 'starting', 'running')")
      .get(agent) as {
      n: number;
    };
    return r.n;
  }
}
