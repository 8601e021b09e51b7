import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import Fastify, { LogController, type FastifyError, type FastifyInstance, type RawServerDefault } from 'fastify';
import { z } from 'zod';
import type { AppView, ErrorBody, ReleaseView } from '../../common/api-types.js';
import type { Clock } from '../../common/clock.js';
import { HangarError, httpStatusFor, isHangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { MAX_QUANTITY, appNameSchema, configKeySchema, processTypeSchema } from '../../common/names.js';
import { registerAddonRoutes } from './addon-routes.js';
import type { Addons } from '../addons/addons.js';
import { runnableTypes, type Fleet } from '../fleet/fleet.js';
import type { LogHub } from '../logs/log-hub.js';
import { registerLogRoutes } from './log-routes.js';
import type { LogStore } from '../logs/log-store.js';
import { needs, registerAuth, type Authenticator, type RouteScope } from './auth.js';
import { registerSecurityRoutes, type SecurityRoutesOptions } from './security-routes.js';
import type { Rollouts } from '../releases/rollout.js';
import { inspectSource } from '../releases/source-inspector.js';
import type { AppRow, ReleaseRow, Store } from '../store/store.js';
import { parseInput } from './validation.js';

/** The Fastify server {@link buildApi} makes (route groups in other files register on it). */
export type ApiServer = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, Logger>;

/** Options of {@link buildApi}. */
export interface ApiOptions {
  store: Store;
  fleet: Fleet;
  rollouts: Rollouts;
  /** Add-on routes (`/v1/apps/:app/addons…`) are served when given. */
  addons?: Addons;
  clock: Clock;
  logger: Logger;
  /** Checks API tokens; {@link registerAuth} hooks it onto every route. */
  auth: Authenticator;
  /** Revokes an agent and drops its placements (`DELETE /v1/agents/:name`). */
  removeAgent: SecurityRoutesOptions['removeAgent'];
  /** Where uploaded artifacts are kept (`<dir>/<sha256>.tar.gz`). */
  artifactDir: string;
  /** Largest accepted upload, bytes. Default 512 MiB. */
  maxUploadBytes: number;
  version: string;
  /** Port users reach the routers on, for app URLs. */
  webPort: number;
  /** More route groups (metrics, autoscale), registered after the core routes. */
  routes?: readonly ((app: ApiServer) => void)[];
  /** Stored log lines and errors. */
  logs: LogStore;
  /** Live log fan-out. */
  logHub: LogHub;
  /** Serve HTTPS with this certificate and key (PEM). Default: plain HTTP. */
  https?: { cert: Buffer; key: Buffer };
}

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

function errorBody(code: string, message: string, details?: unknown): ErrorBody {
  return details === undefined ? { code, message } : { code, message, details };
}

/** What {@link buildApi} makes: the server, and every route with the scope it needs. */
export interface Api {
  server: ApiServer;
  routes: readonly RouteScope[];
}

/**
 * The coordinator's HTTP API (`/v1/...`): JSON in and out, bearer token, every input validated
 * with a 4xx `{code, message}` for bad input.
 */
export function buildApi(o: ApiOptions): Api {
  const logger = o.logger.child({ component: 'api' });
  const app = Fastify({
    loggerInstance: logger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1024 * 1024,
    return503OnClosing: true,
    ...(o.https ? { https: o.https } : {}),
  });

  app.addContentTypeParser(
    ['application/gzip', 'application/x-gzip', 'application/octet-stream', 'application/x-tar'],
    (_request, payload, done) => done(null, payload),
  );

  const routes = registerAuth(app, o.auth);
  registerSecurityRoutes(app, { store: o.store, auth: o.auth, logger, removeAgent: o.removeAgent });

  app.setErrorHandler((err: FastifyError | HangarError | Error, request, reply) => {
    // A refused upload leaves its body unread: the connection cannot carry another request.
    if (!request.raw.complete) void reply.header('connection', 'close');
    if (isHangarError(err)) {
      const status = httpStatusFor(err.code);
      if (status >= 500) logger.error({ err, url: request.url }, err.message);
      return reply.status(status).send(errorBody(err.code, err.message, err.details ?? undefined));
    }
    const status = (err as FastifyError).statusCode ?? 500;
    if (status >= 400 && status < 500) {
      const code =
        status === 413 ? 'PAYLOAD_TOO_LARGE' : status === 415 ? 'UNSUPPORTED_MEDIA_TYPE' : status === 404 ? 'NOT_FOUND' : 'BAD_INPUT';
      return reply.status(status).send(errorBody(code, `${err.message.replace(/\.$/, '')}.`));
    }
    logger.error({ err, url: request.url }, 'request failed');
    return reply.status(500).send(errorBody('INTERNAL', 'Internal error in the coordinator; its log has the details.'));
  });

  app.setNotFoundHandler((request, reply) => {
    void reply
      .status(404)
      .send(errorBody('NOT_FOUND', `No route ${request.method} ${request.url.split('?')[0] ?? ''}; see the API list in the README.`));
  });

  const appView = (row: AppRow): AppView => ({
    name: row.name,
    domain: o.fleet.domainOf(row.name),
    url: `http://${o.fleet.domainOf(row.name)}${o.webPort === 80 ? '' : `:${o.webPort}`}`,
    createdAt: new Date(row.createdAt).toISOString(),
    release: row.currentRelease === null ? null : `v${row.currentRelease}`,
    formation: o.store.getFormation(row.name),
  });

  const releaseView = (r: ReleaseRow, current: number | null): ReleaseView => ({
    version: r.version,
    name: `v${r.version}`,
    status: r.status,
    description: r.description,
    createdAt: new Date(r.createdAt).toISOString(),
    createdBy: r.createdBy,
    artifactSha256: r.artifactSha256,
    processTypes: runnableTypes(r),
    current: r.version === current,
  });

  const currentRelease = (name: string): ReleaseRow => {
    const row = o.store.requireApp(name);
    const release = row.currentRelease === null ? null : o.store.getRelease(name, row.currentRelease);
    if (!release) {
      throw new HangarError('NO_RELEASE', `${name} has no release yet; deploy it first with \`hangar deploy -a ${name}\`.`);
    }
    return release;
  };

  app.get('/v1/health', needs('none'), async () => ({ ok: true, version: o.version }));

  app.get('/v1/agents', needs('read'), async () => ({ agents: o.fleet.agentViews() }));

  app.get('/v1/apps', needs('read'), async () => ({ apps: o.store.listApps().map(appView) }));

  app.post('/v1/apps', needs('admin'), async (request, reply) => {
    const { name } = parseInput(createAppBody, request.body ?? {}, 'app');
    const row = o.store.transaction(() => {
      const created = o.store.createApp(name, o.clock.now());
      // Like Heroku's Django buildpack users expect: a strong SECRET_KEY from the start.
      o.store.patchConfig(name, { SECRET_KEY: randomBytes(36).toString('base64url') });
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
    o.fleet.requestSync();
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
    return o.store.transaction(() => {
      const row = o.store.requireApp(name);
      const active = o.rollouts.activeDeploy(name);
      if (active && row.currentRelease !== null) {
        throw new HangarError(
          'ROLLOUT_IN_PROGRESS',
          `A deploy of ${name} is in progress; change config once it finished (hangar releases -a ${name}).`,
        );
      }
      o.store.patchConfig(name, patch);
      const config = o.store.getConfig(name);
      if (row.currentRelease === null) return { config, release: null, deploy: null };
      const current = currentRelease(name);
      const set = Object.keys(patch).filter((k) => patch[k] !== null);
      const unset = Object.keys(patch).filter((k) => patch[k] === null);
      const description = [set.length ? `Set ${set.join(', ')}` : '', unset.length ? `Unset ${unset.join(', ')}` : '']
        .filter(Boolean)
        .join('; ');
      const { release, deploy } = o.rollouts.start({
        app: name,
        artifactSha256: current.artifactSha256,
        procfile: current.procfile,
        appJson: current.appJson,
        config,
        description,
        createdBy: request.caller?.name ?? 'admin',
      });
      return { config, release: releaseView(release, row.currentRelease), deploy: o.rollouts.view(deploy.id, name, 0) };
    });
  });

  app.post('/v1/apps/:app/builds', needs('deploy'), async (request, reply) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    o.store.requireApp(name);
    const active = o.rollouts.activeDeploy(name);
    if (active) {
      throw new HangarError(
        'ROLLOUT_IN_PROGRESS',
        `A deploy of ${name} is in progress; wait for it to finish (hangar releases -a ${name}) and try again.`,
      );
    }
    const body = request.body as Readable | undefined;
    if (!body || typeof body.pipe !== 'function') {
      throw new HangarError(
        'UNSUPPORTED_MEDIA_TYPE',
        'Send the gzipped tar of your source with Content-Type: application/gzip (hangar deploy does).',
      );
    }
    const { sha256, path, size } = await receiveUpload(body, o.artifactDir, o.maxUploadBytes);
    try {
      if (size === 0) throw new HangarError('BAD_INPUT', 'The upload is empty; send the gzipped tar of your source.');
      const info = await inspectSource(path, { maxBytes: o.maxUploadBytes * 8 });
      const finalPath = join(o.artifactDir, `${sha256}.tar.gz`);
      await rename(path, finalPath);
      o.store.putArtifact(sha256, size, o.clock.now());
      const { deploy } = o.rollouts.start({
        app: name,
        artifactSha256: sha256,
        procfile: info.procfile,
        appJson: info.appJson,
        description: `Deploy ${sha256.slice(0, 7)}`,
        createdBy: request.caller?.name ?? 'admin',
      });
      return reply.status(202).send({ deploy: o.rollouts.view(deploy.id, name, 0) });
    } finally {
      await rm(path, { force: true });
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
    const result = o.store.transaction(() => {
      const current = currentRelease(name);
      const candidates = o.store
        .listReleases(name)
        // Releases that served; one that was rolled back automatically never did (name it to go back to it).
        .filter((r) => r.version < current.version && (r.status === 'succeeded' || r.status === 'running'));
      const target = rollback === undefined ? candidates[0] : o.store.getRelease(name, rollback);
      if (!target) {
        throw rollback === undefined
          ? new HangarError('RELEASE_NOT_FOUND', `${name} has no earlier release to roll back to; see \`hangar releases -a ${name}\`.`)
          : new HangarError('RELEASE_NOT_FOUND', `${name} has no release v${rollback}; see \`hangar releases -a ${name}\`.`);
      }
      if (target.version === current.version) {
        throw new HangarError('BAD_INPUT', `v${target.version} is already the current release of ${name}.`);
      }
      const currentConfig = o.store.getConfig(name);
      const patch: Record<string, string | null> = { ...target.config };
      for (const key of Object.keys(currentConfig)) if (!(key in target.config)) patch[key] = null;
      o.store.patchConfig(name, patch);
      const started = o.rollouts.start({
        app: name,
        artifactSha256: target.artifactSha256,
        procfile: target.procfile,
        appJson: target.appJson,
        config: target.config,
        description: `Rollback to v${target.version}`,
        createdBy: request.caller?.name ?? 'admin',
        runReleasePhase: false,
      });
      return { release: releaseView(started.release, current.version), deploy: o.rollouts.view(started.deploy.id, name, 0) };
    });
    return reply.status(202).send(result);
  });

  app.get('/v1/apps/:app/ps', needs('read'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    o.store.requireApp(name);
    return { ps: o.fleet.psRows(name) };
  });

  app.post('/v1/apps/:app/ps/restart', needs('deploy'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    const { target } = parseInput(restartBody, request.body ?? {}, 'restart');
    o.store.requireApp(name);
    const instances = o.store
      .listInstances({ app: name })
      .filter((i) => i.desired === 'run')
      .filter((i) => target === undefined || target === i.type || target === `${i.type}.${i.idx}`);
    if (target !== undefined && instances.length === 0) {
      throw new HangarError('INSTANCE_NOT_FOUND', `${name} runs nothing called ${target}; see \`hangar ps -a ${name}\`.`);
    }
    o.store.transaction(() => {
      for (const i of instances) o.store.bumpRestart(i.key);
    });
    o.fleet.requestSync();
    return { restarted: instances.map((i) => `${i.type}.${i.idx}`) };
  });

  app.get('/v1/apps/:app/formation', needs('read'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    o.store.requireApp(name);
    return { formation: o.store.getFormation(name) };
  });

  app.patch('/v1/apps/:app/formation', needs('deploy'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    const { formation } = parseInput(formationBody, request.body ?? {}, 'formation');
    const release = currentRelease(name);
    const types = runnableTypes(release);
    const unknown = Object.keys(formation).filter((t) => !types.includes(t));
    if (unknown.length > 0) {
      throw new HangarError(
        'UNKNOWN_PROCESS_TYPE',
        `No process type ${unknown.join(', ')} in ${name}'s Procfile (v${release.version} has ${types.join(', ') || 'none'}).`,
      );
    }
    o.store.transaction(() => {
      o.store.setFormation(name, formation);
      o.fleet.reconcileFormation(name);
    });
    logger.info({ app: name, formation }, 'formation changed');
    return { formation: o.store.getFormation(name) };
  });

  if (o.addons) registerAddonRoutes(app, { addons: o.addons, rollouts: o.rollouts, logger });
  for (const register of o.routes ?? []) register(app);
  registerLogRoutes(app, { store: o.store, logs: o.logs, hub: o.logHub, auth: o.auth, clock: o.clock, logger });

  return { server: app, routes };
}

/** Streams an upload to a temporary file while hashing it; enforces the size limit. */
async function receiveUpload(body: Readable, dir: string, maxBytes: number): Promise<{ sha256: string; path: string; size: number }> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, `.upload-${randomUUID()}`);
  const hash = createHash('sha256');
  let size = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      size += chunk.length;
      if (size > maxBytes) {
        callback(
          new HangarError(
            'PAYLOAD_TOO_LARGE',
            `The upload is larger than ${Math.round(maxBytes / 1048576)} MiB; leave build output and data out of it (.hangarignore).`,
          ),
        );
        return;
      }
      hash.update(chunk);
      callback(null, chunk);
    },
  });
  try {
    await pipeline(body, meter, createWriteStream(path, { mode: 0o600 }));
  } catch (err) {
    await rm(path, { force: true });
    if (isHangarError(err)) throw err;
    throw new HangarError('BAD_INPUT', 'The upload was cut off before it finished; try again.', { cause: err });
  }
  await stat(path);
  return { sha256: hash.digest('hex'), path, size };
}
