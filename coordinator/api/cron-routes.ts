/** `GET /v1/apps/:app/cron` and `POST /v1/apps/:app/cron/:name/run`. */
import { z } from 'zod';
import type { CronJobView } from '../../common/api-types.js';
import { appNameSchema } from '../../common/names.js';
import type { CronScheduler, CronJobState } from '../cron/cron-scheduler.js';
import { runView } from '../runs/runs.js';
import type { Store } from '../store/store.js';
import { needs } from './auth.js';
import type { ApiServer } from './server.js';
import { parseInput } from './validation.js';

/** What the cron routes need. */
export interface CronRoutesOptions {
  store: Store;
  cron: CronScheduler;
}

const appParams = z.object({ app: appNameSchema }).strict();
const jobParams = z
  .object({ app: appNameSchema, name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/i, 'must be a job name (`hangar cron` lists them)') })
  .strict();

/** The API view of a job. */
export function cronJobView(s: CronJobState): CronJobView {
  return {
    name: s.job.name,
    command: s.job.command,
    schedule: s.job.schedule,
    timezone: s.job.timezone ?? 'UTC',
    concurrency: s.job.concurrency ?? 'forbid',
    timeoutSeconds: s.job.timeout ?? 24 * 3600,
    nextRunAt: s.nextAt === null ? null : new Date(s.nextAt).toISOString(),
    lastRun: s.lastRun ? runView(s.lastRun) : null,
  };
}

/** Registers the routes. */
export function registerCronRoutes(app: ApiServer, o: CronRoutesOptions): void {
  app.get('/v1/apps/:app/cron', needs('read'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    o.store.requireApp(name);
    return { jobs: o.cron.jobs(name).map(cronJobView) };
  });

  app.post('/v1/apps/:app/cron/:name/run', needs('deploy'), async (request, reply) => {
    const { app: name, name: job } = parseInput(jobParams, request.params, 'cron job');
    o.store.requireApp(name);
    const run = o.cron.runNow(name, job, request.caller?.name ?? 'admin');
    return reply.status(201).send({ run: runView(run) });
  });
}
