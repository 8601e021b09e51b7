/**
 * The fleet's one cron scheduler: the jobs of each app's current release (app.json `cron`) fire
 * one-off runs (detached, created by `cron`). Each job's last handled firing is kept in SQLite, so
 * a restarted coordinator knows what it missed: a firing missed while it was down runs once when
 * it is back if it is at most `catchUpMs` late, and is skipped (and said so) otherwise. With
 * `concurrency: "forbid"` (the default) a firing is skipped while the job's previous run is still
 * going; every skip and miss is a `hangar` line in the app's logs.
 */
import type { SqlDatabase } from '../store/sql.js';
import { cronJobsOf, type CronJobSpec } from '../../common/app-json.js';
import type { Clock } from '../../common/clock.js';
import { nextFiring, parseCronSchedule } from '../../common/cron-schedule.js';
import { describeError, HangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { TimerLoop } from '../../common/timer-loop.js';
import type { Runs } from '../runs/runs.js';
import type { RunRow } from '../runs/run-store.js';
import type { Store } from '../store/store.js';

/** Options of {@link CronScheduler}. */
export interface CronSchedulerOptions {
  store: Store;
  runs: Runs;
  /** What time it is for schedules (tests pass a controllable one) and the loop's timer. */
  clock: Clock;
  logger: Logger;
  /** Writes a `hangar` line into the app's logs. */
  recordEvent: (app: string, line: string, stream?: 'stdout' | 'stderr') => void;
  /** How often schedules are looked at, ms. Default 10 s. */
  intervalMs?: number;
  /** A firing missed (the coordinator was down) is still run when at most this late, ms. Default 15 min. */
  catchUpMs?: number;
}

/** A job as `hangar cron` shows it. */
export interface CronJobState {
  job: CronJobSpec & { name: string };
  /** Next firing, Unix ms; null when the schedule never fires again. */
  nextAt: number | null;
  lastRun: RunRow | null;
}

/** Default {@link CronSchedulerOptions.catchUpMs}. */
export const CATCH_UP_MS = 15 * 60_000;
/** Default timeout of a firing, s (24 h, as detached runs). */
const JOB_TIMEOUT_SECONDS = 24 * 3600;
/** Most firings counted at once for one job (a coordinator down for a long time). */
const MAX_DUE = 10_000;

/** See the module comment. */
export class CronScheduler {
  readonly #o: CronSchedulerOptions;
  readonly #logger: Logger;
  readonly #db: SqlDatabase;
  readonly #loop: TimerLoop;

  constructor(options: CronSchedulerOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'cron' });
    this.#db = options.store.database;
    this.#loop = new TimerLoop({
      clock: options.clock,
      intervalMs: options.intervalMs ?? 10_000,
      run: () => this.tick(),
      onError: (err) => this.#logger.error({ err }, 'the cron scheduler failed a turn'),
    });
  }

  start(): void {
    this.#loop.start();
  }

  close(): void {
    this.#loop.close();
  }

  /** The jobs of the app's current release, their next firing and last run. */
  jobs(app: string): CronJobState[] {
    const now = this.#o.clock.now();
    return this.#jobsOf(app).map((job) => ({
      job,
      nextAt: nextFiring(parseCronSchedule(job.schedule), Math.max(now, this.#lastDue(app, job.name) ?? now), job.timezone),
      lastRun: this.#o.runs.store.lastOfJob(app, job.name),
    }));
  }

  /**
   * `hangar cron:run NAME`: fires the job now, whatever its schedule and concurrency.
   *
   * @throws HangarError `NOT_FOUND` when the current release has no such job.
   */
  runNow(app: string, name: string, createdBy: string): RunRow {
    const job = this.#jobsOf(app).find((j) => j.name === name);
    if (!job) {
      throw new HangarError('NOT_FOUND', `${app} has no cron job ${name} in its current release; \`hangar cron -a ${app}\` lists them.`);
    }
    this.#o.recordEvent(app, `Cron job ${name}: run now by ${createdBy}`);
    return this.#o.runs.create(
      app,
      { command: job.command, detached: true, timeoutSeconds: job.timeout ?? JOB_TIMEOUT_SECONDS },
      createdBy,
      name,
    );
  }

  /** Looks at every job once: fires what is due, logs what was skipped or missed. */
  tick(): void {
    const now = this.#o.clock.now();
    for (const app of this.#o.store.listApps()) {
      for (const job of this.#jobsOf(app.name)) {
        try {
          this.#tickJob(app.name, job, now);
        } catch (err) {
          this.#logger.error({ err, app: app.name, job: job.name }, 'a cron job could not be looked at');
        }
      }
    }
  }

  #tickJob(app: string, job: CronJobSpec & { name: string }, now: number): void {
    const last = this.#lastDue(app, job.name);
    if (last === null) {
      // A new job counts from now: nothing before it was due.
      this.#setLastDue(app, job.name, now);
      return;
    }
    const schedule = parseCronSchedule(job.schedule);
    const due: number[] = [];
    for (
      let t = nextFiring(schedule, last, job.timezone);
      t !== null && t <= now && due.length < MAX_DUE;
      t = nextFiring(schedule, t, job.timezone)
    ) {
      due.push(t);
    }
    const latest = due[due.length - 1];
    if (latest === undefined) return;
    // Recorded first: a coordinator that stops right after never fires it twice.
    this.#setLastDue(app, job.name, latest);
    const say = (line: string, stream: 'stdout' | 'stderr' = 'stdout') => this.#o.recordEvent(app, `Cron job ${job.name}: ${line}`, stream);
    if (due.length > 1) {
      say(
        `${due.length - 1} firing(s) from ${iso(due[0] as number)} were missed while the coordinator was down and are not made up`,
        'stderr',
      );
    }
    const late = now - latest;
    if (late >= 60_000) {
      const window = this.#o.catchUpMs ?? CATCH_UP_MS;
      if (late > window) {
        say(
          `missed its firing at ${iso(latest)} (the coordinator was down); more than ${Math.round(window / 60_000)} min late, so it was skipped`,
          'stderr',
        );
        return;
      }
      say(`missed its firing at ${iso(latest)} (the coordinator was down); running it now`);
    }
    this.#fire(app, job, latest);
  }

  #fire(app: string, job: CronJobSpec & { name: string }, at: number): void {
    if ((job.concurrency ?? 'forbid') === 'forbid') {
      const previous = this.#o.runs.store.lastOfJob(app, job.name);
      if (previous && (previous.status === 'pending' || previous.status === 'starting' || previous.status === 'running')) {
        this.#o.recordEvent(
          app,
          `Cron job ${job.name}: skipped the firing at ${iso(at)}: run.${previous.number} is still running (concurrency forbid)`,
        );
        return;
      }
    }
    try {
      this.#o.runs.create(
        app,
        { command: job.command, detached: true, timeoutSeconds: job.timeout ?? JOB_TIMEOUT_SECONDS },
        'cron',
        job.name,
      );
    } catch (err) {
      this.#o.recordEvent(app, `Cron job ${job.name} failed: the firing at ${iso(at)} could not start: ${describeError(err)}`, 'stderr');
    }
  }

  #jobsOf(app: string): (CronJobSpec & { name: string })[] {
    const row = this.#o.store.getApp(app);
    if (row?.currentRelease === null || row?.currentRelease === undefined) return [];
    return cronJobsOf(this.#o.store.getRelease(app, row.currentRelease)?.appJson ?? null);
  }

  #lastDue(app: string, job: string): number | null {
    const r = this.#db.prepare('SELECT last_due FROM cron_state WHERE app = ? AND job = ?').get(app, job) as
      { last_due: number } | undefined;
    return r?.last_due ?? null;
  }

  #setLastDue(app: string, job: string, at: number): void {
    this.#db
      .prepare(
        'INSERT INTO cron_state (app, job, last_due) VALUES (?, ?, ?) ON CONFLICT(app, job) DO UPDATE SET last_due = excluded.last_due',
      )
      .run(app, job, at);
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/:00\.000Z$/, 'Z');
}
