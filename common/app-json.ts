/**
 * The subset of Heroku's (and Dokku's) `app.json` manifest that Hangar honours: health check of
 * web instances, initial formation, scripts and declared config vars. Unknown top-level keys are
 * kept (users' existing manifests carry many: `buildpacks`, `addons`, `stack`…); the fields below
 * are validated.
 */

import { z } from 'zod';
import { isTimeZone, parseCronSchedule } from './cron-schedule.js';
import { HangarError, isHangarError } from './errors.js';

const processTypeName = z
  .string()
  .regex(/^[A-Za-z0-9_-]+$/, 'process type names may only contain letters, digits, "_" and "-"')
  .max(63);

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'config var names must look like SHELL variables (A-Z, 0-9, _)');

/**
 * New instances started per batch of a rolling rollout, per process type: a count (`2`) or a share
 * of the wanted count rounded up (`"50%"`).
 */
export const surgeSchema = z.union([z.number().int().min(1).max(1000), z.string().regex(/^([1-9][0-9]?|100)%$/, 'write a share as "25%"')]);

/** One web health check as Hangar runs it. */
const webHealthcheck = z.object({
  /** Path requested with GET; must start with "/". */
  path: z.string().startsWith('/', 'the health check path must start with "/"'),
  /** Seconds one check may take. Default 2. */
  timeout: z.number().positive().max(600).optional(),
  /** Passing checks in a row before a new instance is healthy and gets traffic. Default 2. */
  attempts: z.number().int().min(1).max(1000).optional(),
});

/**
 * Dokku writes `healthchecks.web` as a list of checks (`type`, `path`, `attempts`, `timeout`…);
 * Hangar runs the first one that has a path, so those manifests keep working.
 */
const dokkuWebHealthchecks = z
  .array(
    z.object({
      path: z.string().startsWith('/', 'the health check path must start with "/"').optional(),
      timeout: z.number().positive().max(600).optional(),
      attempts: z.number().int().min(1).max(1000).optional(),
    }),
  )
  .transform((checks): WebHealthcheck | undefined => {
    const check = checks.find((c) => c.path !== undefined);
    if (check?.path === undefined) return undefined;
    return {
      path: check.path,
      ...(check.timeout !== undefined ? { timeout: check.timeout } : {}),
      ...(check.attempts !== undefined ? { attempts: check.attempts } : {}),
    };
  });

/** A job name: what `hangar cron:run NAME` takes. */
const cronJobName = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/i, 'job names are letters, digits, "_" and "-", e.g. nightly-report');

/** One scheduled job (Dokku's format, plus Hangar's `name`, `timezone`, `timeout`, `concurrency`). */
const cronJob = z
  .object({
    /** The command, run like `hangar run --detached`. */
    command: z.string().min(1, 'give the command to run').max(4096),
    /** Five cron fields (or @daily…), e.g. "0 3 * * *". */
    schedule: z.string().superRefine((text, ctx) => {
      try {
        parseCronSchedule(text);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: isHangarError(err) ? err.message : String(err) });
      }
    }),
    /** What `hangar cron` and `cron:run` call it. Default `job-N` (its place in the list). */
    name: cronJobName.optional(),
    /** IANA time zone of the schedule. Default UTC. */
    timezone: z
      .string()
      .refine(isTimeZone, 'is not a time zone: write an IANA name such as Europe/Paris, or leave it out for UTC')
      .optional(),
    /** Seconds a firing may run before it is stopped. Default 24 h. */
    timeout: z
      .number()
      .int()
      .positive()
      .max(30 * 86_400)
      .optional(),
    /** `forbid` (default): a firing is skipped while the previous one runs; `allow`: they may overlap. */
    concurrency: z.enum(['forbid', 'allow']).optional(),
  })
  .strict();

/** Schema of the app.json subset Hangar honours; see {@link AppJson}. */
export const appJsonSchema = z.looseObject({
  name: z.string().optional(),
  description: z.string().optional(),
  scripts: z
    .object({
      /** Dokku's deploy hooks. */
      dokku: z.object({ predeploy: z.string().optional(), postdeploy: z.string().optional() }).optional(),
      /** Command run once after the first deploy of an app. */
      postdeploy: z.string().optional(),
    })
    .optional(),
  /** Initial number of instances per process type. */
  formation: z.record(processTypeName, z.object({ quantity: z.number().int().min(0).max(1000) })).optional(),
  /** Hangar's own settings. */
  hangar: z
    .object({
      /**
       * New instances started per batch of a rolling rollout, per process type: a count (`2`) or
       * a share of the wanted count rounded up (`"50%"`). Default `"25%"`, at least 1.
       */
      surge: surgeSchema.optional(),
      /** What `hangar console` runs. Default `python manage.py shell`. */
      console: z.string().min(1).max(4096).optional(),
    })
    .optional(),
  /** Scheduled jobs, each firing a one-off run. */
  cron: z
    .array(cronJob)
    .max(100)
    .superRefine((jobs, ctx) => {
      const seen = new Set<string>();
      jobs.forEach((job, i) => {
        const name = job.name ?? `job-${i + 1}`;
        if (seen.has(name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `the name ${name} is used twice` });
        seen.add(name);
      });
    })
    .optional(),
  healthchecks: z
    .object({
      web: z
        .union([webHealthcheck, dokkuWebHealthchecks], {
          error: 'expected an object such as {"path": "/health"} (or Dokku\'s list of checks)',
        })
        .optional(),
    })
    .optional(),
  /** Config vars the app expects: a default value, or a description with `required`/`generator`. */
  env: z
    .record(
      envName,
      z.union(
        [
          z.string(),
          z.object({
            value: z.string().optional(),
            description: z.string().optional(),
            required: z.boolean().optional(),
            generator: z.literal('secret').optional(),
          }),
        ],
        { error: 'expected a string (the default value) or an object with value, description, required, generator' },
      ),
    )
    .optional(),
});

/** A cron job of app.json. */
export type CronJobSpec = z.infer<typeof cronJob>;

/** The cron jobs of an app.json with their names (`job-N` when unnamed). */
export function cronJobsOf(appJson: AppJson | null): (CronJobSpec & { name: string })[] {
  return (appJson?.cron ?? []).map((job, i) => ({ ...job, name: job.name ?? `job-${i + 1}` }));
}

/** A web health check as Hangar runs it (Dokku's list form is reduced to its first path check). */
export type WebHealthcheck = z.infer<typeof webHealthcheck>;

/** A validated app.json: the typed fields Hangar honours, plus any other top-level keys as-is. */
export type AppJson = z.output<typeof appJsonSchema>;

/** One invalid field of an app.json: a dotted path (`healthchecks.web.path`) and what is wrong. */
export interface AppJsonProblem {
  path: string;
  message: string;
}

/**
 * Parses and validates app.json text.
 *
 * @throws HangarError `BAD_INPUT` when the text is not JSON, not an object, or any honoured field
 *   is invalid; the message names every bad field and `details` holds the {@link AppJsonProblem} list.
 */
export function parseAppJson(text: string): AppJson {
  let data: unknown;
  try {
    data = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (err) {
    throw new HangarError('BAD_INPUT', `app.json is not valid JSON (${(err as Error).message}); fix its syntax or remove the file.`, {
      cause: err,
      details: [{ path: '', message: 'not valid JSON' }],
    });
  }
  const result = appJsonSchema.safeParse(data);
  if (result.success) return result.data;

  const problems = describeIssues(result.error.issues, []);
  const list = problems.map((p) => `${p.path === '' ? '(top level)' : p.path}: ${p.message}`).join('; ');
  throw new HangarError('BAD_INPUT', `Invalid app.json: ${list}.`, { cause: result.error, details: problems });
}

/**
 * Flattens zod issues into one problem per bad field. A union that failed is reported through the
 * one branch that matched the value's shape (so `env.X.generator` is named, not just `env.X`), and
 * a bad record key is reported with its own reason.
 */
function describeIssues(issues: readonly z.core.$ZodIssue[], prefix: PropertyKey[]): AppJsonProblem[] {
  return issues.flatMap((issue): AppJsonProblem[] => {
    const path = [...prefix, ...issue.path];
    if (issue.code === 'invalid_union' && issue.errors.length > 0) {
      const relevant = issue.errors.filter((branch) => !branch.every((i) => i.code === 'invalid_type' && i.path.length === 0));
      const [only] = relevant;
      if (relevant.length === 1 && only !== undefined) return describeIssues(only, path);
    }
    if (issue.code === 'invalid_key' && issue.issues[0] !== undefined) {
      return [{ path: path.map(String).join('.'), message: `invalid name: ${issue.issues[0].message}` }];
    }
    return [{ path: path.map(String).join('.'), message: issue.message }];
  });
}
