import { mkdir, readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { systemClock, type Clock } from '../common/clock.js';
import { createLogger, type Logger } from '../common/logger.js';
import { parseJoinToken } from '../common/join-token.js';
import { SecretBox } from '../common/secret-box.js';
import { HANGAR_VERSION } from '../common/version.js';
import { Addons } from './addons/addons.js';
import { AddonBackups } from './addons/addon-backups.js';
import { AddonStandbys } from './addons/addon-standbys.js';
import { BackupTransfers } from './addons/backup-transfers.js';
import type { AgentMessage__Output } from '../proto/loader.js';
import type { CoordinatorsView } from '../common/api-types.js';
import { AgentHub, type AgentHubEvents } from './fleet/agent-hub.js';
import { AgentReports } from './fleet/agent-reports.js';
import { DesiredStateAssembler } from './fleet/desired-state.js';
import { DesiredStateSync } from './fleet/desired-state-sync.js';
import { Rebalancer } from './fleet/rebalancer.js';
import { SingletonFence } from './fleet/singleton-fence.js';
import { FleetViews } from './fleet/fleet-views.js';
import { buildApi } from './api/server.js';
import { AutoscaleStore, type AutoscaleDecision } from './autoscale/autoscale-store.js';
import { Autoscaler } from './autoscale/autoscaler.js';
import { type RouteScope } from './api/auth.js';
import { agentCredentials } from './security/agent-credentials.js';
import { issueServerCertificate } from './security/addon-certificates.js';
import { ensureCoordinatorTls } from './security/certificate-authority.js';
import { ensureJoinToken, ensureToken } from './security/token-files.js';
import { Fleet } from './fleet/fleet.js';
import { registerMetricsRoutes } from './api/metrics-routes.js';
import { MetricsStore } from './metrics/metrics-store.js';
import { PrometheusExporter } from './metrics/prometheus-exporter.js';
import { LogHub } from './logs/log-hub.js';
import { LogIngest } from './logs/log-ingest.js';
import { LogIndexer } from './logs/log-indexer.js';
import { LogStore, type LogStorage } from './logs/log-store.js';
import { PostgresLogStore } from './logs/postgres-log-store.js';
import { ArtifactChunks } from './releases/artifact-chunks.js';
import { Releases } from './releases/releases.js';
import { Rollouts } from './releases/rollout.js';
import { Store, openSqlDatabase } from './store/store.js';
import { Runs } from './runs/runs.js';
import { CronScheduler } from './cron/cron-scheduler.js';
import { RunStore } from './runs/run-store.js';
import { parseInput } from './api/validation.js';
import { DashboardSessions } from './dashboard/dashboard-sessions.js';
import { AcmeIssuer, LETS_ENCRYPT_DIRECTORY } from './certs/acme-issuer.js';
import { CertStore } from './certs/cert-store.js';
import { Domains } from './certs/domains.js';
import { TlsState } from './certs/tls-state.js';
import { registerDomainRoutes } from './api/domain-routes.js';
import { registerDashboardRoutes } from './dashboard/dashboard-routes.js';
import { SessionAuthenticator } from './dashboard/session-authenticator.js';

/** Settings of a coordinator; every field but `dataDir` has a default. */
export const coordinatorConfigSchema = z
  .object({
    /** Where the SQLite database, tokens and artifacts live. */
    dataDir: z.string().min(1),
    /**
     * The state on PostgreSQL instead of SQLite in the data dir (`postgres://…`): several
     * coordinators on one database, each with its own data dir holding a copy of `secret-key`
     * (the CA, tokens and artifacts are in the database).
     */
    databaseUrl: z
      .string()
      .regex(/^postgres(ql)?:\/\//i, 'a postgres:// URL')
      .optional(),
    /** HTTP API port. Default 7080; 0 picks a free one. */
    httpPort: z.number().int().min(0).max(65535).default(7080),
    /** Address the HTTP API listens on. Default 0.0.0.0. */
    httpHost: z.string().default('0.0.0.0'),
    /** gRPC port agents dial. Default 7081; 0 picks a free one. */
    grpcPort: z.number().int().min(0).max(65535).default(7081),
    /** Address the gRPC server listens on. Default 0.0.0.0. */
    grpcHost: z.string().default('0.0.0.0'),
    /** Apps are served at APP.<domain>. Default `localhost`. */
    domain: z
      .string()
      .regex(/^[a-z0-9.-]+$/i)
      .default('localhost'),
    /** How often agents send heartbeats, ms. Default 2000. */
    heartbeatIntervalMs: z.number().int().positive().default(2000),
    /** New instances must be healthy within this, or the release is rolled back, ms. Default 120 s. */
    healthTimeoutMs: z.number().int().positive().default(120_000),
    /** A new instance that crashed this many times fails its rollout at once. Default 3. */
    crashLimit: z.number().int().positive().default(3),
    /** SIGTERM → SIGKILL grace of stopping instances, s. Default 30 (gunicorn's). */
    graceSeconds: z.number().int().min(0).default(30),
    /** Longest wait for routers to drop a draining instance, ms. Default 10 s. */
    drainTimeoutMs: z.number().int().positive().default(10_000),
    /** An agent silent this long is `down` and its instances are placed elsewhere, ms. Default 6 s. */
    agentDownAfterMs: z.number().int().positive().default(6000),
    /** Port users reach the agents' routers on, shown in app URLs. Default 80. */
    webPort: z.number().int().min(1).max(65535).default(80),
    /** Largest source upload, bytes. Default 512 MiB. */
    maxUploadBytes: z
      .number()
      .int()
      .positive()
      .default(512 * 1024 * 1024),
    /** Period of the rollout/drain loop, ms. Default 250. */
    tickMs: z.number().int().positive().default(250),
    /** How often agents send metrics reports, ms. Default 10 s. */
    metricsIntervalMs: z.number().int().positive().default(10_000),
    /** Raw metric samples are kept this long, ms (1-minute rollups for 30 days). Default 1 h. */
    metricsRawRetentionMs: z.number().int().positive().default(3_600_000),
    /** Period of autoscaling evaluations, ms. Default 10 s. */
    autoscaleIntervalMs: z.number().int().positive().default(10_000),
    /** Autoscaling looks at this recent window, ms. Default 60 s. */
    autoscaleWindowMs: z.number().int().positive().default(60_000),
    /** Pressure or calm must last this long before autoscaling acts, ms. Default 30 s. */
    autoscaleSustainMs: z.number().int().min(0).default(30_000),
    /** No scale-up sooner than this after an autoscaling change, ms. Default 60 s. */
    autoscaleUpCooldownMs: z.number().int().min(0).default(60_000),
    /** No scale-down sooner than this after an autoscaling change, ms. Default 180 s. */
    autoscaleDownCooldownMs: z.number().int().min(0).default(180_000),
    /** Log lines older than this are deleted, days. Default 7. */
    logRetentionDays: z.number().positive().default(7),
    /** Beyond this many bytes of stored log lines (not the whole database) the oldest are deleted. Default 1 GiB. */
    logRetentionBytes: z
      .number()
      .int()
      .positive()
      .default(1024 * 1024 * 1024),
    /** How often cron schedules are looked at, ms. Default 10 s. */
    cronIntervalMs: z.number().int().positive().default(10_000),
    /** How often add-on backup schedules are looked at, ms. Default 30 s. */
    backupIntervalMs: z.number().int().positive().default(30_000),
    /**
     * A PostgreSQL add-on with a standby fails over (its standby is promoted) once its primary's
     * agent has been disconnected this long, ms. Default 30 s.
     */
    addonFailoverAfterMs: z.number().int().positive().default(30_000),
    /** How often the replication lag of standbys is measured, ms. Default 5 s. */
    addonLagIntervalMs: z.number().int().positive().default(5000),
    /** A cron firing missed while the coordinator was down still runs when at most this late, ms. Default 15 min. */
    cronCatchUpMs: z
      .number()
      .int()
      .min(0)
      .default(15 * 60_000),
    /** PEM certificate (chain) file: the HTTP API serves HTTPS with it and `tlsKey`. Default: plain HTTP. */
    tlsCert: z.string().min(1).optional(),
    /** PEM private key file of `tlsCert`. */
    tlsKey: z.string().min(1).optional(),
    /** ACME directory that issues apps' certificates (`certs:auto:enable`). Default: Let's Encrypt production. */
    acmeDirectory: z.string().url().default(LETS_ENCRYPT_DIRECTORY),
    /** PEM file of CA certificates to trust for the ACME directory's HTTPS (an internal ACME server). Default: the system's. */
    acmeCaFile: z.string().min(1).optional(),
    /** Contact e-mail of the ACME account. Default none. */
    acmeEmail: z.string().email().optional(),
    /** How often due certificates are looked for, ms. Default 60 s. */
    acmeIntervalMs: z.number().int().positive().default(60_000),
    /** First retry after a failed ACME order, ms (doubling each failure, up to 12 h). Default 5 min. */
    acmeRetryBaseMs: z.number().int().positive().default(300_000),
  })
  .strict()
  .refine((c) => (c.tlsCert === undefined) === (c.tlsKey === undefined), 'give both tlsCert and tlsKey, or neither');

export type CoordinatorConfig = z.input<typeof coordinatorConfigSchema>;

/** Dependencies a coordinator takes from its caller. */
export interface CoordinatorDeps {
  logger?: Logger;
  clock?: Clock;
  /** Told how long the coordinator took to handle each agent message, ms (benchmarks). */
  onAgentMessageHandled?: (message: AgentMessage__Output, ms: number) => void;
  /** What time it is for cron schedules (tests pass a controllable one). Default: `clock`. */
  cronClock?: Clock;
  /** What time it is for add-on backup schedules (tests move it by hand). Default: `clock`. */
  backupClock?: Clock;
  /** Told of every autoscaling decision once applied (e.g. to log it as a `hangar` event). */
  onAutoscaleDecision?: (decision: AutoscaleDecision) => void;
  /** Clock of certificate validity and renewal (tests move it forward). Default: `clock`. */
  certClock?: Clock;
  /**
   * Set when this coordinator was elected among several sharing its data dir
   * (coordinator/ha/coordinator-node.ts): every write of its database connections is fenced to
   * `epoch`. Default: none, a coordinator alone on its data dir (epoch 0, nothing fenced).
   */
  leadership?: Leadership;
}

/** What an elected coordinator is started with. */
export interface Leadership {
  /** The epoch of its election (the fencing token agents see too). */
  epoch: number;
  /** A write was refused: another coordinator was elected since. Called once; the caller stops this coordinator. */
  onFenced(): void;
  /** The leader and its followers, as the lease table says. */
  coordinators(): CoordinatorsView;
}

/** A running coordinator. */
export interface RunningCoordinator {
  /** `http://HOST:PORT` of the API (HOST is 127.0.0.1 when listening on every address). */
  url: string;
  httpPort: number;
  grpcPort: number;
  /** `HOST:PORT` agents dial. */
  grpcAddress: string;
  /** Lowercase hex SHA-256 of the CA certificate agents pin (also the join token's suffix). */
  caFingerprint: string;
  adminToken: string;
  joinToken: string;
  /** Every route of the HTTP API and the least token scope it needs. */
  routes: readonly RouteScope[];
  close(): Promise<void>;
}

/** Where a coordinator's state is: its PostgreSQL URL, or the SQLite file in its data dir. */
export function databaseLocation(c: { dataDir: string; databaseUrl?: string | undefined }): string {
  return c.databaseUrl ?? join(c.dataDir, 'hangar.db');
}

/**
 * Starts a coordinator: SQLite (or PostgreSQL) store, gRPC server for agents, HTTP API. The first start writes
 * `admin-token` and `join-token` (mode 0600) into the data dir.
 */
export async function startCoordinator(config: CoordinatorConfig, deps: CoordinatorDeps = {}): Promise<RunningCoordinator> {
  const c = parseInput(coordinatorConfigSchema, config, 'coordinator config');
  const logger = (deps.logger ?? createLogger()).child({ component: 'coordinator' });
  const clock = deps.clock ?? systemClock;
  await mkdir(c.dataDir, { recursive: true, mode: 0o700 });
  const artifactDir = join(c.dataDir, 'artifacts');
  await mkdir(artifactDir, { recursive: true, mode: 0o700 });
  const adminToken = await ensureToken(join(c.dataDir, 'admin-token'), 'hgr_admin');
  const tls = await ensureCoordinatorTls(c.dataDir);
  const joinToken = await ensureJoinToken(join(c.dataDir, 'join-token'), tls.caFingerprint);
  const secrets = await SecretBox.fromKeyFile(join(c.dataDir, 'secret-key'));
  const httpsOptions = c.tlsCert && c.tlsKey ? { cert: await readFile(c.tlsCert), key: await readFile(c.tlsKey) } : null;

  const localHost = (host: string) => (host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host);
  let fencedOnce = false;
  const writeFence = deps.leadership
    ? {
        epoch: deps.leadership.epoch,
        // Inside the refused statement: only note it, and step down from a clean stack.
        onFenced: () => {
          if (fencedOnce) return;
          fencedOnce = true;
          logger.error({ epoch: deps.leadership?.epoch }, 'a write was fenced: another coordinator leads now; stepping down');
          setImmediate(() => deps.leadership?.onFenced());
        },
      }
    : undefined;
  const store = new Store({ path: databaseLocation(c), secrets, ...(writeFence ? { fence: writeFence } : {}) });
  // On PostgreSQL the artifacts are in the database too, on a connection of their own (unfenced:
  // chunks are content-addressed), so that any coordinator serves any agent.
  const chunks = c.databaseUrl ? new ArtifactChunks(openSqlDatabase(c.databaseUrl)) : null;
  const sessions = new DashboardSessions({ findToken: (hash) => store.findTokenByHash(hash), clock });
  const auth = new SessionAuthenticator({ store, clock, sessions });
  auth.seed(adminToken, 'admin', 'admin', 'admin_token_seeded');
  const metrics = new MetricsStore({
    store,
    clock,
    logger,
    rawRetentionMs: c.metricsRawRetentionMs,
    ...(writeFence ? { fence: writeFence } : {}),
  });
  const logRetention = {
    maxAgeMs: c.logRetentionDays * 86_400_000,
    maxBytes: c.logRetentionBytes,
    ...(writeFence ? { fence: writeFence } : {}),
  };
  // On PostgreSQL the lines live in the coordinator's database (grep by its trigram index); else
  // in the data dir's SQLite file, with a grep index of their own.
  const logs: LogStorage = c.databaseUrl
    ? new PostgresLogStore({ database: store.database, now: () => clock.now(), ...logRetention })
    : new LogStore({ path: join(c.dataDir, 'hangar.db'), searchPath: join(c.dataDir, 'log-search.db'), ...logRetention });
  // Fills the grep index beside ingestion (a worker thread), never inside its transactions.
  const logIndexer = c.databaseUrl
    ? null
    : new LogIndexer({ sourcePath: join(c.dataDir, 'hangar.db'), path: join(c.dataDir, 'log-search.db'), logger });
  const logHub = new LogHub();
  // Events of the coordinator itself (autoscaling decisions) are `hangar` log lines of the app,
  // stored under a stream of their own like an agent's.
  let eventSeq = logs.acked('coordinator', 'events');
  const recordEvent = (app: string, line: string, stream: 'stdout' | 'stderr' = 'stdout') => {
    try {
      const { inserted } = logs.ingest('coordinator', 'events', [
        { seq: ++eventSeq, ts: clock.now(), app, source: 'hangar', stream, line },
      ]);
      logHub.publish(inserted);
    } catch (err) {
      logger.error({ err, app }, 'could not record an event in the logs');
    }
  };
  const ingest = new LogIngest({ store: logs, hub: logHub, logger, now: () => clock.now() });
  const goneTimers = new Map<string, NodeJS.Timeout>();
  const backupTransfers = new BackupTransfers();
  const hub = new AgentHub({
    host: c.grpcHost,
    port: c.grpcPort,
    joinSecret: parseJoinToken(joinToken).secret,
    tls: { certChainPem: tls.certChainPem, keyPem: tls.keyPem },
    credentials: agentCredentials(store, clock),
    heartbeatIntervalMs: c.heartbeatIntervalMs,
    metricsIntervalMs: c.metricsIntervalMs,
    ...(deps.onAgentMessageHandled ? { onHandled: deps.onAgentMessageHandled } : {}),
    logger,
    artifactPath: (sha) => {
      if (!store.hasArtifact(sha)) return null;
      const path = join(artifactDir, `${sha}.tar.gz`);
      return !chunks || chunks.restore(sha, path) ? path : null;
    },
    backupTransfers,
    leaderEpoch: deps.leadership?.epoch ?? 0,
  });
  const certClock = deps.certClock ?? clock;
  const certs = new CertStore(store, secrets);
  const challenges = new Map<string, string>();
  const tlsState = new TlsState({ certs, domain: c.domain, challenges, clock: certClock });
  const assembler = new DesiredStateAssembler({ store, domain: c.domain, graceSeconds: c.graceSeconds, tls: tlsState });
  const sync = new DesiredStateSync({ store, hub, assembler, logger });
  // One-off runs count against their agent's capacity.
  const runStore = new RunStore(store);
  const reports = new AgentReports({ store, sync, clock });
  const fence = new SingletonFence({
    agents: () => store.listAgents(),
    isConnected: (agent) => hub.isConnected(agent),
    graceSeconds: c.graceSeconds,
    clock,
  });
  const fleet = new Fleet({
    fence,
    store,
    hub,
    sync,
    clock,
    logger,
    drainTimeoutMs: c.drainTimeoutMs,
    agentDownAfterMs: c.agentDownAfterMs,
    runsOn: (agent) => runStore.activeOn(agent),
  });
  const views = new FleetViews({
    store,
    fleet,
    clock,
    agentDownAfterMs: c.agentDownAfterMs,
    usageOf: (agent) => {
      const host = metrics.latest().get(agent)?.host;
      if (host?.cpu_pct === undefined || host.mem_used_bytes === undefined) return null;
      return { cpuPct: host.cpu_pct, memoryUsedMb: Math.round(host.mem_used_bytes / 1048576) };
    },
    limitsOf: (key) => reports.limitsOf(key),
  });
  const rollouts = new Rollouts({
    store,
    fleet,
    views,
    sync,
    fence,
    clock,
    logger,
    healthTimeoutMs: c.healthTimeoutMs,
    crashLimit: c.crashLimit,
  });
  const rebalancer = new Rebalancer({
    store,
    fleet,
    busy: (app) => rollouts.activeDeploy(app) !== null || rollouts.restarts.active(app) !== null,
    clock,
    logger,
    healthTimeoutMs: c.healthTimeoutMs,
  });
  const releases = new Releases({
    store,
    rollouts,
    clock,
    artifactDir,
    maxUploadBytes: c.maxUploadBytes,
    ...(chunks ? { chunks } : {}),
  });
  // The two call each other (jobs and attachments one way, standby statuses the other).
  const standbys: AddonStandbys = new AddonStandbys({
    store,
    hub,
    views,
    sync,
    runJob: (agent, fields) => addons.runJob(agent, fields),
    attach: (name, description) => addons.reattach(name, description),
    countOn: (agent) => addons.countOn(agent),
    issueCertificate: (names) => issueServerCertificate(c.dataDir, names),
    recordEvent: (app, line, stream) => recordEvent(app, line, stream),
    failoverAfterMs: c.addonFailoverAfterMs,
    lagIntervalMs: c.addonLagIntervalMs,
    clock,
    logger,
  });
  const addons: Addons = new Addons({
    store,
    fleet,
    views,
    sync,
    rollouts,
    releases,
    hub,
    clock,
    logger,
    onStandbyStatus: (agent, status) => standbys.onStatus(agent, status),
    issueCertificate: (names) => issueServerCertificate(c.dataDir, names),
  });
  const addonBackups = new AddonBackups({
    store,
    addons,
    hub,
    transitDir: join(c.dataDir, 'backup-transit'),
    transfers: backupTransfers,
    clock: deps.backupClock ?? clock,
    logger,
    recordEvent,
    intervalMs: c.backupIntervalMs,
  });
  const runs = new Runs({ store, hub, sync, clock, logger, recordEvent });
  const cron = new CronScheduler({
    store,
    runs,
    clock: deps.cronClock ?? clock,
    logger,
    recordEvent,
    intervalMs: c.cronIntervalMs,
    catchUpMs: c.cronCatchUpMs,
  });
  // Agents' messages move rollouts on (a health change, an applied generation), but a tick reads
  // every active deploy: one per turn of the event loop, not one per message of a large fleet.
  let rolloutTickQueued = false;
  let stopped = false;
  const tickRolloutsSoon = () => {
    if (rolloutTickQueued) return;
    rolloutTickQueued = true;
    setImmediate(() => {
      rolloutTickQueued = false;
      if (stopped) return;
      try {
        rollouts.tick();
      } catch (err) {
        logger.error({ err }, 'rollout tick after an agent message failed');
      }
    });
  };
  const agentEvents: AgentHubEvents = {
    onHello: (agent, hello) => {
      clearTimeout(goneTimers.get(agent));
      goneTimers.delete(agent);
      fence.onReport(
        agent,
        hello.instances.map((i) => i.key),
      );
      reports.onHello(agent, hello);
      runs.onHello(agent);
      addons.onStatuses(agent, hello.addons);
      tickRolloutsSoon();
    },
    onHeartbeat: (agent, hb) => {
      fence.onReport(
        agent,
        hb.instances.map((i) => i.key),
      );
      reports.onHeartbeat(agent, hb.instances);
      addons.onStatuses(agent, hb.addons);
      tickRolloutsSoon();
    },
    onInstanceEvent: (agent, event) => {
      fence.onEvent(agent, event.status?.key ?? '', event.kind);
      // A failing health check's reason, not a full status: it goes to the deploy's output.
      if (event.kind === 'health_failed') rollouts.onHealthFailure(event.status?.key ?? '', event.status?.message ?? '');
      else if (event.status) reports.applyStatuses(agent, [event.status]);
      tickRolloutsSoon();
    },
    onTaskOutput: (agent, output) => rollouts.onTaskOutput(agent, output),
    onTaskResult: (agent, result) => rollouts.onTaskResult(agent, result),
    onAddonStatus: (agent, status) => addons.onStatuses(agent, [status]),
    onAddonJobResult: (agent, result) => addons.onJobResult(agent, result),
    onRunOutput: (agent, output) => runs.onOutput(agent, output),
    onRunStatus: (agent, status) => runs.onStatus(agent, status),
    onMetrics: (agent, report) => metrics.ingest(agent, report),
    onLogBatch: (agent, epoch, batch, reply) => ingest.submit(agent, epoch, batch.lines, reply),
    logAcked: (agent, epoch) => logs.acked(agent, epoch),
    onDisconnect: (agent) => {
      addons.onDisconnect(agent);
      const timer = setTimeout(() => {
        goneTimers.delete(agent);
        if (!hub.isConnected(agent)) {
          rollouts.onAgentGone(agent);
          runs.onAgentGone(agent);
        }
      }, 10_000);
      timer.unref();
      goneTimers.set(agent, timer);
    },
  };

  const acmeIssuer = new AcmeIssuer({
    certs,
    directoryUrl: c.acmeDirectory,
    ...(c.acmeCaFile ? { directoryCaPem: await readFile(c.acmeCaFile, 'utf8') } : {}),
    ...(c.acmeEmail ? { email: c.acmeEmail } : {}),
    challenges,
    publish: () => routersApplied(),
    recordEvent,
    clock: certClock,
    logger,
    intervalMs: c.acmeIntervalMs,
    retryBaseMs: c.acmeRetryBaseMs,
  });
  /** Sends desired state and resolves once every connected agent applied it (bounded: 15 s). */
  const routersApplied = async () => {
    const before = Number(store.getMeta('generation') ?? 0);
    sync.requestSync();
    const deadline = Date.now() + 15_000;
    while (!hub.connected().every((a) => (hub.appliedGeneration(a) ?? 0) > before) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const domains = new Domains({
    store,
    certs,
    domain: c.domain,
    sync,
    onChange: () => acmeIssuer.tick(),
    clock: certClock,
    logger,
  });

  const policies = new AutoscaleStore(store);
  const autoscaler = new Autoscaler({
    store,
    policies,
    metrics,
    fleet,
    clock,
    logger,
    intervalMs: c.autoscaleIntervalMs,
    tuning: {
      windowMs: c.autoscaleWindowMs,
      sustainMs: c.autoscaleSustainMs,
      upCooldownMs: c.autoscaleUpCooldownMs,
      downCooldownMs: c.autoscaleDownCooldownMs,
    },
    onDecision: (d) => {
      recordEvent(d.app, `Autoscaling ${d.type} from ${d.from} to ${d.to}: ${d.reason}`);
      deps.onAutoscaleDecision?.(d);
    },
  });
  const exporter = new PrometheusExporter({
    metrics,
    agents: () => views.agentViews(),
    instances: () => store.listInstances(),
    standbyLags: () => standbys.lags(),
    now: () => clock.now(),
  });

  const { server: api, routes } = buildApi({
    store,
    fleet,
    views,
    sync,
    domain: c.domain,
    rollouts,
    releases,
    addons,
    addonBackups,
    addonStandbys: standbys,
    runs,
    cron,
    clock,
    logger,
    auth,
    removeAgent: (name) => {
      const known = store.getAgent(name) !== null || store.getAgentCredentialHash(name) !== null;
      if (!known) return { removed: false, apps: [] };
      const apps = store.transaction(() => store.removeAgent(name));
      hub.disconnect(name);
      fence.forget(name);
      for (const app of apps) fleet.reconcileFormation(app);
      sync.requestSync();
      return { removed: true, apps };
    },
    ...(httpsOptions ? { https: httpsOptions } : {}),
    artifactDir,
    maxUploadBytes: c.maxUploadBytes,
    version: HANGAR_VERSION,
    webPort: c.webPort,
    routes: [
      (server) => registerMetricsRoutes(server, { store, views, metrics, exporter, policies, autoscaler, clock, logger }),
      (server) => registerDashboardRoutes(server, { sessions, logger }),
      (server) => registerDomainRoutes(server, { domains, releases, rollouts, logger }),
    ],
    logs,
    logHub,
    coordinators: () => coordinatorsView(),
  });
  // Alone on its data dir: it leads, without a lease.
  const coordinatorsView = (): CoordinatorsView =>
    deps.leadership?.coordinators() ?? {
      leader: {
        name: hostname(),
        address: `${localHost(c.grpcHost)}:${grpcPort}`,
        url: `${httpsOptions ? 'https' : 'http'}://${localHost(c.httpHost)}:${httpPortOf()}`,
        epoch: 0,
        leaseExpiresAt: null,
      },
      followers: [],
    };
  const httpPortOf = () => {
    const address = api.server.address();
    return typeof address === 'object' && address ? address.port : c.httpPort;
  };

  let grpcPort = c.grpcPort;
  try {
    grpcPort = await hub.start(agentEvents);
    await api.listen({ port: c.httpPort, host: c.httpHost });
  } catch (err) {
    await hub.close();
    await api.close();
    logs.close();
    chunks?.close();
    store.close();
    throw err;
  }
  metrics.start();
  autoscaler.start();
  acmeIssuer.start();
  logIndexer?.start();
  cron.start();
  await addonBackups.start();
  const httpPort = httpPortOf();
  let livenessFlushedAt = 0;
  const loop = setInterval(() => {
    try {
      // Once a second: a 6 s liveness window does not need it fresher, and each flush is a commit.
      if (clock.now() - livenessFlushedAt >= 1000) {
        livenessFlushedAt = clock.now();
        reports.flushLiveness();
      }
    } catch (err) {
      logger.error({ err }, 'could not record when agents were last heard from');
    }
    try {
      fleet.tick();
      rollouts.tick();
      rebalancer.tick();
      addons.tick();
      standbys.tick();
      runs.tick();
    } catch (err) {
      logger.error({ err }, 'coordinator loop failed');
    }
  }, c.tickMs);
  const prune = () => {
    try {
      const deleted = logs.prune(clock.now());
      if (deleted > 0) logger.debug({ deleted }, 'pruned old log lines');
    } catch (err) {
      logger.error({ err }, 'log retention failed');
    }
  };
  const pruneLoop = setInterval(prune, 30_000);
  prune();
  logger.info({ httpPort, grpcPort, dataDir: c.dataDir, epoch: deps.leadership?.epoch ?? 0 }, 'coordinator ready');

  let closed: Promise<void> | null = null;
  return {
    url: `${httpsOptions ? 'https' : 'http'}://${localHost(c.httpHost)}:${httpPort}`,
    httpPort,
    grpcPort,
    grpcAddress: `${localHost(c.grpcHost)}:${grpcPort}`,
    adminToken,
    joinToken,
    caFingerprint: tls.caFingerprint,
    routes,
    close() {
      closed ??= (async () => {
        stopped = true;
        clearInterval(loop);
        clearInterval(pruneLoop);
        for (const timer of goneTimers.values()) clearTimeout(timer);
        sync.close();
        addons.close();
        runs.close();
        cron.close();
        addonBackups.close();
        autoscaler.close();
        await acmeIssuer.close();
        await api.close();
        await hub.close();
        try {
          reports.flushLiveness();
        } catch (err) {
          logger.warn({ err }, 'could not record when agents were last heard from');
        }
        metrics.close();
        ingest.close();
        await logIndexer?.close();
        logs.close();
        chunks?.close();
        store.close();
        logger.info('coordinator stopped');
      })();
      return closed;
    },
  };
}
