import type { IncomingMessage, ServerResponse } from 'node:http';
import Fastify, { LogController, type FastifyError, type FastifyInstance, type RawServerDefault } from 'fastify';
import type { CoordinatorsView, ErrorBody, HealthView } from '../../common/api-types.js';
import type { Clock } from '../../common/clock.js';
import { HangarError, httpStatusFor, isHangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { isFencedError } from '../ha/write-fence.js';
import type { Addons } from '../addons/addons.js';
import type { AddonBackups } from '../addons/addon-backups.js';
import type { AddonStandbys } from '../addons/addon-standbys.js';
import type { DesiredStateSync } from '../fleet/desired-state-sync.js';
import type { Fleet } from '../fleet/fleet.js';
import type { FleetViews } from '../fleet/fleet-views.js';
import type { LogHub } from '../logs/log-hub.js';
import type { LogStorage } from '../logs/log-store.js';
import type { Releases } from '../releases/releases.js';
import type { Rollouts } from '../releases/rollout.js';
import type { Store } from '../store/store.js';
import { registerAddonRoutes } from './addon-routes.js';
import { registerAppRoutes } from './app-routes.js';
import { needs, registerAuth, type Authenticator, type RouteScope } from './auth.js';
import { registerLogRoutes } from './log-routes.js';
import { registerRunRoutes, type UpgradeHandler } from './run-routes.js';
import type { Runs } from '../runs/runs.js';
import { registerMaintenanceRoutes } from './maintenance-routes.js';
import type { CronScheduler } from '../cron/cron-scheduler.js';
import { registerCronRoutes } from './cron-routes.js';
import { registerSecurityRoutes, type SecurityRoutesOptions } from './security-routes.js';

/** The Fastify server {@link buildApi} makes (route groups in other files register on it). */
export type ApiServer = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, Logger>;

/** Options of {@link buildApi}. */
export interface ApiOptions {
  store: Store;
  fleet: Pick<Fleet, 'reconcileFormation'>;
  views: FleetViews;
  sync: Pick<DesiredStateSync, 'requestSync'>;
  /** Apps are served at APP.<domain>. */
  domain: string;
  rollouts: Rollouts;
  /** Makes the releases of deploys, config changes and rollbacks. */
  releases: Releases;
  /** Add-on routes (`/v1/apps/:app/addons…`) are served when given. */
  addons?: Addons;
  /** Add-on backups, restores and schedules; served with {@link addons}. */
  addonBackups?: AddonBackups;
  addonStandbys?: AddonStandbys;
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
  logs: LogStorage;
  /** Live log fan-out. */
  logHub: LogHub;
  /** One-off run routes (`/v1/apps/:app/runs…` and their websocket) are served when given. */
  runs?: Runs;
  /** Cron routes (`/v1/apps/:app/cron…`) are served when given. */
  cron?: CronScheduler;
  /** Serve HTTPS with this certificate and key (PEM). Default: plain HTTP. */
  https?: { cert: Buffer; key: Buffer };
  /** The leader and its followers (`GET /v1/coordinators`, and what `GET /v1/health` says of them). */
  coordinators: () => CoordinatorsView;
}

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
    if (isFencedError(err)) {
      // The lease moved to another coordinator under this request; the CLI asks around again.
      const leader = o.coordinators().leader;
      const body = errorBody(
        'NOT_LEADER',
        'This coordinator just lost the lead to another one; try again (HANGAR_URL may list several coordinators).',
        { leader: leader.url },
      );
      // Like the follower shell's: the leader in `details`, and at the top for scripts.
      return reply.status(503).send({ ...body, leader: leader.url });
    }
    if (isDiskFull(err)) {
      logger.error({ err, url: request.url }, "request failed: the coordinator's disk is full");
      return reply
        .status(507)
        .send(
          errorBody('DISK_FULL', "The coordinator's disk is full, so nothing could be stored; free space in its data dir, then try again."),
        );
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

  app.get('/v1/health', needs('none'), async (): Promise<HealthView> => {
    const { leader, followers } = o.coordinators();
    return {
      ok: true,
      version: o.version,
      role: 'leader',
      name: leader.name,
      epoch: leader.epoch,
      leaseExpiresAt: leader.leaseExpiresAt,
      leader,
      followers,
    };
  });

  app.get('/v1/coordinators', needs('read'), async (): Promise<CoordinatorsView> => o.coordinators());

  app.get('/v1/agents', needs('read'), async () => ({ agents: o.views.agentViews() }));

  registerAppRoutes(app, { ...o, logger });
  registerMaintenanceRoutes(app, { ...o, logger });
  if (o.addons && o.addonBackups && o.addonStandbys) {
    registerAddonRoutes(app, { addons: o.addons, backups: o.addonBackups, standbys: o.addonStandbys, rollouts: o.rollouts, logger });
  }
  for (const register of o.routes ?? []) register(app);
  if (o.cron) registerCronRoutes(app, { store: o.store, cron: o.cron });
  const upgrades: UpgradeHandler[] = [];
  if (o.runs) upgrades.push(registerRunRoutes(app, { store: o.store, runs: o.runs, auth: o.auth, logger }));
  for (const handler of upgrades) {
    app.server.on('upgrade', (request, socket, head: Buffer) => {
      if (handler.handles(request)) handler.handleUpgrade(request, socket, head);
    });
    app.addHook('preClose', async () => handler.close());
  }
  registerLogRoutes(app, { store: o.store, logs: o.logs, hub: o.logHub, auth: o.auth, clock: o.clock, logger, otherUpgrades: upgrades });

  return { server: app, routes };
}

/** SQLite's SQLITE_FULL (better-sqlite3 puts it in `code`) or the file system's ENOSPC, here or as a cause. */
function isDiskFull(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (code === 'SQLITE_FULL' || code === 'ENOSPC') return true;
  }
  return false;
}
