/**
 * HTTP routes of add-ons, under `/v1/apps/:app/addons` (see `common/api-types.ts`): list, create,
 * show, destroy, and PostgreSQL backups. Every input is validated with zod; bad input is a 4xx
 * `{code, message}` through the API's error handler.
 */
import type { FastifyInstance, FastifyRequest, RawReplyDefaultExpression, RawRequestDefaultExpression, RawServerDefault } from 'fastify';
import { z } from 'zod';
import { HangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { appNameSchema } from '../../common/names.js';
import { ADDON_KINDS } from '../../common/vocabulary.js';
import { needs, scopeAllows } from './auth.js';
import type { Addons } from '../addons/addons.js';
import type { AddonStandbys } from '../addons/addon-standbys.js';
import { backupView, scheduleView, type AddonBackups } from '../addons/addon-backups.js';
import type { Rollouts } from '../releases/rollout.js';
import { parseInput } from './validation.js';

/** What the add-on routes need. */
export interface AddonRoutesOptions {
  addons: Addons;
  backups: AddonBackups;
  standbys: AddonStandbys;
  rollouts: Rollouts;
  logger: Logger;
}

/** Add-on names: lowercase letters, digits and dashes, starting with a letter. */
export const addonNameSchema = z
  .string()
  .regex(/^[a-z][a-z0-9-]{1,40}$/, 'must be 2–41 lowercase letters, digits or dashes, starting with a letter');

const flag = z
  .enum(['true', 'false', '1', '0'])
  .optional()
  .transform((v) => v === 'true' || v === '1');

const appParams = z.object({ app: appNameSchema }).strict();
const addonParams = z.object({ app: appNameSchema, name: addonNameSchema }).strict();
const backupParams = z
  .object({
    app: appNameSchema,
    name: addonNameSchema,
    backup: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/, 'must be a backup name from `hangar addons:backups`'),
  })
  .strict();
const dirSchema = z.string().min(1).max(4096).regex(/^\//, "must be an absolute path (a directory on the coordinator's host)");
const backupBody = z.object({ dir: dirSchema.optional() }).strict();
const restoreBody = z.object({ toNew: z.boolean().default(false), confirm: z.string().optional() }).strict();
const scheduleBody = z
  .object({
    at: z
      .string()
      .regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'must be HH:MM (UTC), e.g. 03:00')
      .default('03:00'),
    keep: z.number().int().min(1).max(1000).default(7),
    dir: dirSchema.nullable().optional(),
    enabled: z.boolean().default(true),
  })
  .strict();
const revealQuery = z.object({ reveal: flag }).strict();
const destroyQuery = z.object({ confirm: z.string().optional(), purge: flag }).strict();
const createBody = z
  .object({
    kind: z.enum(ADDON_KINDS),
    agent: z
      .string()
      .regex(/^[a-z0-9][a-z0-9.-]{0,62}$/i, 'must be an agent name from `hangar agents`')
      .optional(),
    name: addonNameSchema.optional(),
    /** PostgreSQL: also a streaming standby on another agent. */
    standby: z.boolean().optional(),
    /** With `standby`: synchronous replication (`--standby=sync`). */
    sync: z.boolean().optional(),
  })
  .strict();
const standbyBody = z
  .object({
    agent: z
      .string()
      .regex(/^[a-z0-9][a-z0-9.-]{0,62}$/i, 'must be an agent name from `hangar agents`')
      .optional(),
    /** Synchronous replication (`--sync`). */
    sync: z.boolean().optional(),
  })
  .strict();

/** The API's Fastify instance (its logger is the coordinator's pino logger). */
type Server = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, Logger>;

/**
 * `?reveal=true`, allowed only to tokens that may read secrets (`deploy`, as for config values).
 *
 * @throws HangarError `FORBIDDEN` for a weaker token.
 */
function parseReveal(request: FastifyRequest): boolean {
  const { reveal } = parseInput(revealQuery, request.query, 'query');
  if (reveal && !(request.caller && scopeAllows(request.caller.scope, 'deploy'))) {
    throw new HangarError(
      'FORBIDDEN',
      `Add-on passwords need a token of scope deploy; this one has scope ${request.caller?.scope ?? 'none'}. Leave out --reveal, or ask an admin for a deploy token.`,
    );
  }
  return reveal;
}

/** Registers the add-on routes on the API. */
export function registerAddonRoutes(server: Server, o: AddonRoutesOptions): void {
  const { addons } = o;
  const info = (app: string, name: string) => {
    const row = addons.require(app, name);
    return o.backups.info(addons.view(row, false), o.standbys.servers(row), o.standbys.replication(row));
  };

  server.get('/v1/apps/:app/addons', needs('read'), async (request) => {
    const { app } = parseInput(appParams, request.params, 'app name');
    const reveal = parseReveal(request);
    return { addons: addons.list(app).map((row) => addons.view(row, reveal)) };
  });

  server.post('/v1/apps/:app/addons', needs('deploy'), async (request, reply) => {
    const { app } = parseInput(appParams, request.params, 'app name');
    const { standby, sync, ...input } = parseInput(createBody, request.body ?? {}, 'add-on');
    if (sync && !standby) throw new HangarError('BAD_INPUT', 'sync is for an add-on with a standby; send standby: true with it.');
    if (standby) {
      if (input.kind !== 'postgres') {
        throw new HangarError('BAD_INPUT', `Standbys are for PostgreSQL add-ons, not ${input.kind}; leave out --standby.`);
      }
      // Before anything is made: a standby needs a second agent.
      o.standbys.assertRoom(input.agent);
    }
    const row = await addons.create(app, input);
    if (standby) await o.standbys.add(row, undefined, sync ? 'sync' : 'async');
    return reply.status(202).send({ addon: addons.view(row, false) });
  });

  server.get('/v1/apps/:app/addons/:name', needs('read'), async (request) => {
    const { app, name } = parseInput(addonParams, request.params, 'add-on');
    const reveal = parseReveal(request);
    return { addon: addons.view(addons.require(app, name), reveal) };
  });

  server.delete('/v1/apps/:app/addons/:name', needs('deploy'), async (request) => {
    const { app, name } = parseInput(addonParams, request.params, 'add-on');
    const { confirm, purge } = parseInput(destroyQuery, request.query, 'query');
    const row = await addons.destroy(app, name, { confirm, purge });
    const deploy = row.deployId ? o.rollouts.view(row.deployId, app, 0) : null;
    return { addon: addons.view(row, false), deploy: deploy && deploy.finishedAt === null ? deploy : null };
  });

  server.get('/v1/apps/:app/addons/:name/info', needs('read'), async (request) => {
    const { app, name } = parseInput(addonParams, request.params, 'add-on');
    return { addon: info(app, name) };
  });

  server.post('/v1/apps/:app/addons/:name/standby', needs('deploy'), async (request, reply) => {
    const { app, name } = parseInput(addonParams, request.params, 'add-on');
    const { agent, sync } = parseInput(standbyBody, request.body ?? {}, 'standby');
    const row = addons.require(app, name);
    await o.standbys.add(row, agent, sync ? 'sync' : 'async');
    return reply.status(202).send({ addon: info(app, name) });
  });

  server.post('/v1/apps/:app/addons/:name/failover', needs('deploy'), async (request) => {
    const { app, name } = parseInput(addonParams, request.params, 'add-on');
    const steps: string[] = [];
    await o.standbys.failover(addons.require(app, name), (step) => steps.push(step));
    return { addon: info(app, name), steps };
  });

  server.get('/v1/apps/:app/addons/:name/backups', needs('read'), async (request) => {
    const { app, name } = parseInput(addonParams, request.params, 'add-on');
    return { backups: o.backups.list(app, name) };
  });

  server.post('/v1/apps/:app/addons/:name/backups', needs('deploy'), async (request, reply) => {
    const { app, name } = parseInput(addonParams, request.params, 'add-on');
    const { dir } = parseInput(backupBody, request.body ?? {}, 'backup');
    const backup = await o.backups.backup(app, name, { origin: 'manual', dir: dir ?? null });
    return reply.status(201).send({ backup: backupView(backup), backups: o.backups.list(app, name) });
  });

  server.post('/v1/apps/:app/addons/:name/backups/:backup/verify', needs('deploy'), async (request) => {
    const { app, name, backup } = parseInput(backupParams, request.params, 'backup');
    return { backup: backupView(await o.backups.verify(app, name, backup)) };
  });

  server.post('/v1/apps/:app/addons/:name/backups/:backup/restore', needs('deploy'), async (request) => {
    const { app, name, backup } = parseInput(backupParams, request.params, 'backup');
    const { toNew, confirm } = parseInput(restoreBody, request.body ?? {}, 'restore');
    const done = await o.backups.restore(app, name, backup, { toNew, confirm });
    return {
      ok: true,
      addon: addons.view(done.addon, false),
      backup: backupView(done.backup),
      safety: done.safety ? backupView(done.safety) : null,
      backups: o.backups.list(app, name),
    };
  });

  server.put('/v1/apps/:app/addons/:name/backup-schedule', needs('deploy'), async (request) => {
    const { app, name } = parseInput(addonParams, request.params, 'add-on');
    const input = parseInput(scheduleBody, request.body ?? {}, 'schedule');
    return { schedule: scheduleView(o.backups.setSchedule(app, name, input)) };
  });
}
