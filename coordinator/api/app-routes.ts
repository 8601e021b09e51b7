/**
 * HTTP routes of apps (see `common/api-types.ts`): create, show, destroy, config, builds
 * (deploys), releases and rollbacks, ps and restarts, formation. Handlers parse and format; the
 * releases module makes releases, the fleet places instances.
 */
import { processSettingsOf } from '../../common/app-json.js';
import { rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { z } from 'zod';
import type { AppView, ReleaseView } from '../../common/api-types.js';
import { HangarError } from '../../common/errors.js';
import { MAX_QUANTITY, appNameSchema, configKeySchema, processTypeSchema } from '../../common/names.js';
import { instanceName } from '../../common/vocabulary.js';
import { runnableTypes } from '../fleet/fleet.js';
import { defaultDomain } from '../fleet/route-table.js';
import type { AppRow, ReleaseRow } from '../store/store.js';
import { needs } from './auth.js';
import type { ApiOptions, ApiServer } from './server.js';
import { receiveUpload } from './source-upload.js';
import { parseInput } from './validation.js';
import { generateSecretKey } from '../releases/secret-key.js';

/** What the app routes need of the API's options. */
export type AppRoutesOptions = Pick<
  ApiOptions,
  | 'store'
  | 'fleet'
  | 'views'
  | 'sync'
  | 'domain'
  | 'rollouts'
  | 'releases'
  | 'clock'
  | 'logger'
  | 'artifactDir'
  | 'maxUploadBytes'
  | 'webPort'
  | 'logs'
>;

const appParams = z.object({ app: appNameSchema }).strict();
const deployParams = z.object({ app: appNameSchema, id: z.string().uuid() }).strict();
const createAppBody = z.object({ name: appNameSchema }).strict();
const configPatchBody = z
  .record(configKeySchema, z.union([z.string().max(32 * 1024), z.null()]))
  .refine((r) => Object.keys(r).length > 0, 'give at least one config var');
const formationBody = z
  .object({
    formation: z
      .record(processTypeSchema, z.number().int().min(0).max(MAX_QUANTITY))
      .refine((r) => Object.keys(r).length > 0, 'give at least one process type'),
  })
  .strict();
const rollbackBody = z.object({ rollback: z.number().int().positive().optional() }).strict();
const restartBody = z
  .object({
    target: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,63}(\.[0-9]{1,4})?$/, 'must be a process type (web) or an instance (web.1)')
      .optional(),
  })
  .strict();
const destroyQuery = z.object({ confirm: z.string().optional() }).strict();
const afterQuery = z.object({ after: z.coerce.number().int().min(0).default(0) }).strict();

/** A release as the API shows it; `current` is the app's current release. */
export function releaseView(r: ReleaseRow, current: number | null): ReleaseView {
  return {
    version: r.version,
    name: `v${r.version}`,
    status: r.status,
    description: r.description,
    createdAt: new Date(r.createdAt).toISOString(),
    createdBy: r.createdBy,
    artifactSha256: r.artifactSha256,
    processTypes: runnableTypes(r),
    current: r.version === current,
  };
}

/** Registers the app routes on the API. */
export function registerAppRoutes(app: ApiServer, o: AppRoutesOptions): void {
  const logger = o.logger;

  const appView = (row: AppRow): AppView => ({
    name: row.name,
    domain: defaultDomain(row.name, o.domain),
    url: `http://${defaultDomain(row.name, o.domain)}${o.webPort === 80 ? '' : `:${o.webPort}`}`,
    createdAt: new Date(row.createdAt).toISOString(),
    release: row.currentRelease === null ? null : `v${row.currentRelease}`,
    formation: o.store.getFormation(row.name),
    maintenance: o.store.getMaintenance(row.name) !== null,
  });

  app.get('/v1/apps', needs('read'), async () => ({ apps: o.store.listApps().map(appView) }));

  app.post('/v1/apps', needs('admin'), async (request, reply) => {
    const { name } = parseInput(createAppBody, request.body ?? {}, 'app');
    const row = o.store.transaction(() => {
      const created = o.store.createApp(name, o.clock.now());
      // Like Heroku's Django buildpack users expect: a strong SECRET_KEY from the start.
      o.store.patchConfig(name, { SECRET_KEY: generateSecretKey() });
      return created;
    });
    logger.info({ app: name }, 'app created');
    return reply.status(201).send({ app: appView(row) });
  });

  app.get('/v1/apps/:app', needs('read'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    return { app: appView(o.store.requireApp(name)) };
  });

  app.delete('/v1/apps/:app', needs('admin'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    const { confirm } = parseInput(destroyQuery, request.query, 'query');
    o.store.requireApp(name);
    if (confirm !== name) {
      throw new HangarError('BAD_INPUT', `This destroys ${name} and stops all its processes; confirm with --confirm ${name}.`);
    }
    o.store.deleteApp(name);
    o.logs.deleteApp(name);
    o.sync.requestSync();
    logger.info({ app: name }, 'app destroyed');
    return { ok: true };
  });

  // Config values are secrets: reading them takes a deploy token.
  app.get('/v1/apps/:app/config', needs('deploy'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    o.store.requireApp(name);
    return { config: o.store.getConfig(name) };
  });

  app.patch('/v1/apps/:app/config', needs('deploy'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    const patch = parseInput(configPatchBody, request.body ?? {}, 'config');
    const { config, started } = o.releases.changeConfig(name, patch, request.caller?.name ?? 'admin');
    if (started === null) return { config, release: null, deploy: null };
    return { config, release: releaseView(started.release, started.previous), deploy: o.rollouts.view(started.deploy.id, name, 0) };
  });

  app.post('/v1/apps/:app/builds', needs('deploy'), async (request, reply) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    o.releases.assertCanDeploy(name);
    const body = request.body as Readable | undefined;
    if (!body || typeof body.pipe !== 'function') {
      throw new HangarError(
        'UNSUPPORTED_MEDIA_TYPE',
        'Send the gzipped tar of your source with Content-Type: application/gzip (hangar deploy does).',
      );
    }
    const upload = await receiveUpload(body, o.artifactDir, o.maxUploadBytes);
    try {
      const { deploy } = await o.releases.deploy(name, upload, request.caller?.name ?? 'admin');
      return reply.status(202).send({ deploy: o.rollouts.view(deploy.id, name, 0) });
    } finally {
      await rm(upload.path, { force: true });
    }
  });

  app.get('/v1/apps/:app/deploys/:id', needs('read'), async (request) => {
    const { app: name, id } = parseInput(deployParams, request.params, 'deploy');
    const { after } = parseInput(afterQuery, request.query, 'query');
    o.store.requireApp(name);
    return { deploy: o.rollouts.view(id, name, after) };
  });

  app.get('/v1/apps/:app/releases', needs('read'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    const row = o.store.requireApp(name);
    return { releases: o.store.listReleases(name).map((r) => releaseView(r, row.currentRelease)) };
  });

  app.post('/v1/apps/:app/releases', needs('deploy'), async (request, reply) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    const { rollback } = parseInput(rollbackBody, request.body ?? {}, 'rollback');
    const started = o.releases.rollback(name, rollback, request.caller?.name ?? 'admin');
    return reply
      .status(202)
      .send({ release: releaseView(started.release, started.previous), deploy: o.rollouts.view(started.deploy.id, name, 0) });
  });

  app.get('/v1/apps/:app/ps', needs('read'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    o.store.requireApp(name);
    return { ps: o.views.psRows(name) };
  });

  app.post('/v1/apps/:app/ps/restart', needs('deploy'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    const { target } = parseInput(restartBody, request.body ?? {}, 'restart');
    o.store.requireApp(name);
    const instances = o.rollouts.restarts.running(name, target);
    if (target !== undefined && instances.length === 0) {
      throw new HangarError('INSTANCE_NOT_FOUND', `${name} runs nothing called ${target}; see \`hangar ps -a ${name}\`.`);
    }
    o.rollouts.assertIdle(name);
    const id = o.rollouts.restarts.start(name, instances);
    return { restarted: instances.map((i) => instanceName(i)), restart: o.rollouts.restarts.view(id, name, 0) };
  });

  app.get('/v1/apps/:app/restarts/:id', needs('read'), async (request) => {
    const { app: name, id } = parseInput(deployParams, request.params, 'restart');
    const { after } = parseInput(afterQuery, request.query, 'query');
    o.store.requireApp(name);
    return { restart: o.rollouts.restarts.view(id, name, after) };
  });

  app.get('/v1/apps/:app/formation', needs('read'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    o.store.requireApp(name);
    return { formation: o.store.getFormation(name) };
  });

  app.patch('/v1/apps/:app/formation', needs('deploy'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    const { formation } = parseInput(formationBody, request.body ?? {}, 'formation');
    const release = o.releases.current(name);
    const types = runnableTypes(release);
    const unknown = Object.keys(formation).filter((t) => !types.includes(t));
    if (unknown.length > 0) {
      throw new HangarError(
        'UNKNOWN_PROCESS_TYPE',
        `No process type ${unknown.join(', ')} in ${name}'s Procfile (v${release.version} has ${types.join(', ') || 'none'}).`,
      );
    }
    const crowded = Object.entries(formation).filter(([t, n]) => n > 1 && processSettingsOf(release.appJson, t).singleton);
    if (crowded.length > 0) {
      const [type] = crowded[0] as [string, number];
      throw new HangarError(
        'BAD_INPUT',
        `${type} is a singleton (never two copies at once), so it runs 0 or 1 instances; scale it to 1, or set "singleton": false for it under formation in app.json and deploy.`,
      );
    }
    o.store.transaction(() => {
      o.store.setFormation(name, formation);
      o.fleet.reconcileFormation(name);
    });
    logger.info({ app: name, formation }, 'formation changed');
    return { formation: o.store.getFormation(name) };
  });
}
