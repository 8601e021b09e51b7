/**
 * The subset of Heroku's (and Dokku's) `app.json` manifest that Hangar honours: health check of
 * web instances, initial formation, scripts and declared config vars. Unknown top-level keys are
 * kept (users' existing manifests carry many: `buildpacks`, `addons`, `stack`…); the fields below
 * are validated.
 */

import { z } from 'zod';
import { isTimeZone, parseCronSchedule } from './cron-schedule.js';
import { HangarError, isHangarError } from './errors.js';
import { cpuLimitSchema, memoryLimitSchema } from './resource-limit-schemas.js';
import { parseMemorySize } from './resource-limits.js';
import { DEFAULT_DRAIN_SECONDS, STOP_SIGNALS, type StopSignal } from './vocabulary.js';

// Declared in vocabulary.ts, which the agent imports without zod; re-exported for app.json's readers.
export { DEFAULT_DRAIN_SECONDS, STOP_SIGNALS, type StopSignal } from './vocabulary.js';

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

/** Largest `max_body`: 10 GiB. */
export const MAX_BODY_LIMIT = 10 * 1024 ** 3;

/**
 * `"10M"`, `"512k"`, `"1G"` or a number of bytes as bytes (binary units, as nginx's
 * `client_max_body_size`, read like memory limits); null when malformed or out of range (1 byte to 10 GiB).
 */
export function parseByteSize(value: string | number): number | null {
  const bytes = typeof value === 'number' ? value : parseMemorySize(value);
  return bytes !== null && Number.isSafeInteger(bytes) && bytes >= 1 && bytes <= MAX_BODY_LIMIT ? bytes : null;
}

const byteSize = z
  .union([z.number(), z.string()])
  .refine((v) => parseByteSize(v) !== null, 'write a size from 1 byte to 10G, such as "10M", "512K" or a number of bytes');

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

/** Process types that are singletons unless app.json says `"singleton": false`: schedulers. */
export const DEFAULT_SINGLETON_TYPES: readonly string[] = ['clock', 'beat'];

/** Longest `stop_timeout`, seconds (an hour: a batch job finishing its work). */
export const MAX_STOP_TIMEOUT_S = 3600;

/** One process type's entry of `formation`. */
// Heroku manifests carry `size` (Dokku's `autoscaling`…) beside `quantity`: ignored, not refused.
const formationEntry = z
  .object({
    /** Instances of the first deploy. Default: web 1, others 0. */
    quantity: z.number().int().min(0).max(1000).optional(),
    /**
     * Signal sent to the main process to stop it (e.g. `SIGQUIT` for a Celery worker's cold
     * shutdown, `SIGINT`). Default `SIGTERM`.
     */
    stop_signal: z.enum(STOP_SIGNALS, { error: `expected one of ${STOP_SIGNALS.join(', ')}` }).optional(),
    /** Seconds between the stop signal and SIGKILL of the whole process group. Default 30. */
    stop_timeout: z.number().int().min(0).max(MAX_STOP_TIMEOUT_S).optional(),
    /**
     * Never two copies at once, fleet-wide: rolled out stop-then-start, and moved off a lost agent
     * only once its lease ran out. Default true for `clock` and `beat`, false otherwise.
     */
    singleton: z.boolean().optional(),
    /** Memory limit of each instance (`"512M"`). Default: the agent's `--default-memory`. */
    memory: memoryLimitSchema.optional(),
    /** CPU limit of each instance, in cores (`0.5`). Default: the agent's `--default-cpu`. */
    cpu: cpuLimitSchema.optional(),
  })
  .refine((entry) => !(entry.singleton === true && (entry.quantity ?? 0) > 1), {
    error: 'a singleton runs at most 1 instance (quantity 0 or 1)',
    path: ['quantity'],
  });

/** How a process type stops and whether it is a singleton, with the defaults filled in. */
export interface ProcessSettings {
  stopSignal: StopSignal;
  /** Seconds between the stop signal and SIGKILL; null: the coordinator's default (30). */
  stopTimeoutS: number | null;
  singleton: boolean;
}

/** The stop settings of `type` from a validated app.json (or its defaults). */
export function processSettingsOf(appJson: AppJson | null, type: string): ProcessSettings {
  const entry = appJson?.formation?.[type];
  return {
    stopSignal: entry?.stop_signal ?? 'SIGTERM',
    stopTimeoutS: entry?.stop_timeout ?? null,
    singleton: entry?.singleton ?? DEFAULT_SINGLETON_TYPES.includes(type),
  };
}

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
  /**
   * Per process type: the first deploy's count (Heroku's `quantity`) and how its processes stop
   * (`stop_signal`, `stop_timeout`), whether only one may run at a time (`singleton`), and the
   * limits of each instance (memory like `"512M"`, enforced by the kernel, and CPU in cores like
   * `0.5`; limits not given are the agent's `--default-memory/--default-cpu`).
   */
  formation: z.record(processTypeName, formationEntry).optional(),
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
      /** Largest request body the routers pass to the app (`"10M"`, or bytes); larger ones get 413. Default: no limit. */
      max_body: byteSize.optional(),
      /** Seconds the app has to send response headers before the routers answer 504. Default 30. */
      upstream_timeout: z.number().positive('must be more than 0 seconds').max(3600, 'must be at most 3600 seconds').optional(),
      /**
       * Seconds a deploy lets an old web instance's open requests and long-lived connections
       * (websockets, server-sent events) run on before closing them. Default 30.
       */
      drain_seconds: z.number().int('must be a whole number of seconds').min(0).max(3600, 'must be at most 3600 seconds').optional(),
    })
    .strict()
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

/** What the routers and the drain take from app.json's `hangar` section, defaults applied (0 = the router's own). */
export interface RouterLimits {
  /** Largest request body, bytes; 0: no limit. */
  maxBodyBytes: number;
  /** Time to response headers, ms; 0: the router's default (30 s). */
  upstreamTimeoutMs: number;
  drainSeconds: number;
}

/** The router limits of a release's app.json (null: none). */
export function routerLimitsOf(appJson: AppJson | null): RouterLimits {
  const h = appJson?.hangar;
  return {
    maxBodyBytes: h?.max_body === undefined ? 0 : (parseByteSize(h.max_body) ?? 0),
    upstreamTimeoutMs: h?.upstream_timeout === undefined ? 0 : Math.round(h.upstream_timeout * 1000),
    drainSeconds: h?.drain_seconds ?? DEFAULT_DRAIN_SECONDS,
  };
}

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
