/** `hangar cron -a APP [--json]` and `hangar cron:run NAME -a APP`: the jobs of app.json `cron`. */
import type { Command } from 'commander';
import type { CronJobView } from '../../common/api-types.js';
import { formatDuration, formatJson, formatTable, timeAgo } from '../output.js';
import { atEdge, badInput, resolveApp, withAppOption, type CliContext } from './context.js';

/** `hangar cron`: one line a job with its next firing and how its last run went. */
export function formatCron(jobs: readonly CronJobView[], now: number): string {
  return formatTable(
    jobs.map((j) => {
      const last = j.lastRun;
      const outcome = !last
        ? 'never ran'
        : last.status === 'exited'
          ? `exit ${last.exitCode ?? '?'} in ${formatDuration(last.durationMs ?? 0)}, ${timeAgo(last.createdAt, now)} (${last.name})`
          : `${last.status} (${last.name}${last.message ? `: ${last.message}` : ''})`;
      const next = j.nextRunAt === null ? 'never' : `${j.nextRunAt.replace(/:00\.000Z$/, 'Z')}`;
      return [j.name, `${j.schedule}${j.timezone === 'UTC' ? '' : ` (${j.timezone})`}`, next, outcome, j.command];
    }),
    ['JOB', 'SCHEDULE', 'NEXT', 'LAST RUN', 'COMMAND'],
  );
}

/** Registers `cron` and `cron:run` on `program`. */
export function registerCronCommands(program: Command, ctx: CliContext): void {
  withAppOption(program.command('cron'))
    .description('list the app\'s scheduled jobs (app.json "cron"): next firing, last run, exit code, duration')
    .option('--json', 'print the API rows as a JSON array')
    .action(async (options: { json?: boolean }, command: Command) => {
      const app = resolveApp(command, ctx);
      const jobs = await (await ctx.client()).listCron(app);
      if (options.json) return ctx.out(formatJson(jobs));
      if (jobs.length === 0) {
        return ctx.out(
          `${app} has no cron jobs; add them to app.json, e.g. "cron": [{"name": "nightly", "command": "python manage.py clearsessions", "schedule": "0 3 * * *"}], and deploy.\n`,
        );
      }
      ctx.out(formatCron(jobs, ctx.clock.now()));
    });

  withAppOption(program.command('cron:run'))
    .description('run a cron job now (a detached one-off run)')
    .argument('<name>', 'the job, as `hangar cron` lists it')
    .action(async (name: string, _options: unknown, command: Command) => {
      const app = resolveApp(command, ctx);
      atEdge(command, () => {
        if (!/^[a-z0-9][a-z0-9_-]{0,62}$/i.test(name)) throw badInput(`"${name}" is not a job name (\`hangar cron -a ${app}\` lists them)`);
      });
      ctx.err(`Running cron job ${name} on ${app}... `);
      const run = await (await ctx.client()).runCronJob(app, name);
      ctx.err(`up, ${run.name}\nIts output: \`hangar logs --source ${run.name} -a ${app}\`.\n`);
    });
}
