import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { cpus, hostname, networkInterfaces, totalmem } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { systemClock, type Clock, type ClockTimer } from '../common/clock.js';
import { createLogger, type Logger } from '../common/logger.js';
import { parseJoinToken } from '../common/join-token.js';
import { SecretBox } from '../common/secret-box.js';
import { HANGAR_VERSION } from '../common/version.js';
import type { DesiredState__Output } from '../proto/loader.js';
import { AddonManager } from './addons/addon-manager.js';
import { ArtifactStore } from './build/artifact-store.js';
import type { BackoffOptions } from './workloads/backoff.js';
import { VenvBuilds, buildRelease, type BuildOptions } from './build/builder.js';
import { CoordinatorLink } from './link/coordinator-link.js';
import { installErrorHook, withHookOnPath } from './workloads/error-hook.js';
import { accessLine, lifecycleLine, parseInstanceKey } from './logs/log-lines.js';
import { LogShipper } from './logs/log-shipper.js';
import { MetricsCollector } from './metrics/metrics-collector.js';
import { createInstanceRunner, instanceDirName } from './workloads/instance-driver.js';
import { Router } from './router/router.js';
import { assertReachable, resolveRunAs } from './workloads/run-as.js';
import { TaskRunner } from './workloads/task-runner.js';

/** The first non-internal IPv4 address of this host, else loopback. */
export function defaultAdvertiseAddress(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const ni of list ?? []) if (ni.family === 'IPv4' && !ni.internal) return ni.address;
  }
  return '127.0.0.1';
}

/** Settings of an agent; defaults live here. */
export const agentConfigSchema = z
  .object({
    /** `HOST:PORT` of the coordinator's gRPC server. */
    coordinator: z.string().regex(/^[^\s:]+:\d{1,5}$/, 'must be HOST:PORT'),
    /** The join token from the coordinator's data dir: `hgr_join_<secret>.<CA fingerprint>`. */
    joinToken: z.string().min(8),
    /** Where builds, instances and the desired-state cache live. */
    dataDir: z.string().min(1),
    /** Name shown in `hangar agents`. Default: the host name. */
    name: z
      .string()
      .regex(/^[a-z0-9][a-z0-9.-]{0,62}$/i, 'must be letters, digits, dots and dashes')
      .default(() =>
        hostname()
          .toLowerCase()
          .replace(/[^a-z0-9.-]/g, '-'),
      ),
    /** Port of the HTTP router. Default 80; 0 picks a free one. */
    routerPort: z.number().int().min(0).max(65535).default(80),
    /** Address the router listens on. Default 0.0.0.0. */
    routerHost: z.string().default('0.0.0.0'),
    /** Address other agents' routers reach this agent's instances on. Default: first non-internal IPv4. */
    advertise: z.string().min(1).default(defaultAdvertiseAddress),
    /** Most instances the scheduler may place here. Default 50. */
    maxInstances: z.number().int().positive().default(50),
    /** Python used for virtualenvs. Default: /usr/bin/python3 when present. */
    python: z.string().optional(),
    /** Non-web instances count as up after running this long, ms. Default 1000. */
    settleMs: z.number().int().min(0).default(1000),
    /** Interval of metrics reports, ms. Default: what the coordinator asks for (10 s unless configured). */
    metricsIntervalMs: z.number().int().positive().optional(),
    /** Largest on-disk log spool (lines not yet acked by the coordinator), bytes. Default 256 MiB. */
    logSpoolBytes: z
      .number()
      .int()
      .min(1024 * 1024)
      .default(256 * 1024 * 1024),
    /** System user apps, release phases and builds run as when the agent runs as root (created if missing). Default `hangar`. */
    appUser: z
      .string()
      .regex(/^[a-z_][a-z0-9_-]{0,31}$/)
      .default('hangar'),
  })
  .strict();

export type AgentConfig = z.input<typeof agentConfigSchema>;

/** Dependencies an agent takes from its caller. */
export interface AgentDeps {
  logger?: Logger;
  clock?: Clock;
  /** Restart backoff of crashed instances (tests shorten it). */
  backoff?: BackoffOptions;
}

/** A running agent. */
export interface RunningAgent {
  name: string;
  /** Port the router listens on. */
  routerPort: number;
  /**
   * Stops the agent. By default its instances keep running, to be adopted by the next start
   * (an agent restart never restarts apps); `stopInstances` stops them all.
   */
  close(options?: { stopInstances?: boolean }): Promise<void>;
}

/** Starts an agent: router, reconciler, and the link to the coordinator. */
export async function startAgent(config: AgentConfig, deps: AgentDeps = {}): Promise<RunningAgent> {
  const c = agentConfigSchema.parse(config);
  const clock = deps.clock ?? systemClock;
  const logger = (deps.logger ?? createLogger()).child({ component: 'agent', agent: c.name });
  const joinToken = parseJoinToken(c.joinToken);
  await mkdir(c.dataDir, { recursive: true, mode: 0o700 });
  const cachePath = join(c.dataDir, 'desired-state.json');
  // The cached desired state holds config values: sealed with this agent's own key.
  const secrets = await SecretBox.fromKeyFile(join(c.dataDir, 'secret-key'));
  const user = await resolveRunAs(c.appUser, join(c.dataDir, 'home'), logger);
  // The app's user must reach its slug and virtualenv below the data dir (but not list it).
  if (user) {
    await chmod(c.dataDir, 0o711);
    await assertReachable(c.dataDir, user);
  }

  let link: CoordinatorLink | null = null;
  const instancesDir = join(c.dataDir, 'instances');
  const logs = new LogShipper({
    dir: join(c.dataDir, 'logs'),
    spoolBytes: c.logSpoolBytes,
    send: (batch) => link?.send({ logBatch: batch }) ?? false,
    clock,
    logger,
  });
  logs.start();
  const hookDir = await installErrorHook(join(c.dataDir, 'python-hook'));
  // App processes get the error hook first on PYTHONPATH; tailing follows their output files.
  const prepare = (state: DesiredState__Output): DesiredState__Output => ({
    ...state,
    instances: state.instances.map((s) => ({ ...s, env: withHookOnPath(s.env, hookDir) })),
  });
  const domains = new Map<string, string>();
  const taskApps = new Map<string, string>();
  const followInstances = (state: DesiredState__Output) => {
    logs.setTails(
      'instances',
      state.instances.flatMap((s) => {
        const dir = join(instancesDir, instanceDirName(s.key));
        const source = parseInstanceKey(s.key).instance;
        return [
          { path: join(dir, 'stdout.log'), app: s.app, source, stream: 'stdout' as const },
          { path: join(dir, 'stderr.log'), app: s.app, source, stream: 'stderr' as const },
        ];
      }),
    );
    logs.setTails(
      'addons',
      (state.addons ?? []).flatMap((a) => {
        const dir = join(c.dataDir, 'addons', a.name);
        const source = `addon[${a.name}]`;
        return [
          { path: join(dir, 'stdout.log'), app: a.app, source, stream: 'stdout' as const },
          { path: join(dir, 'stderr.log'), app: a.app, source, stream: 'stderr' as const },
        ];
      }),
    );
    for (const s of state.instances) if (s.domain) domains.set(s.app, s.domain);
    for (const r of state.routes) if (r.domains[0]) domains.set(r.app, r.domains[0]);
  };

  const router = new Router({
    port: c.routerPort,
    host: c.routerHost,
    logger,
    onAccess: (e) => {
      metrics?.recordAccess(e);
      if (e.app) logs.write({ app: e.app, source: 'router', line: accessLine(e, domains.get(e.app) ?? e.app), ts: e.ts });
    },
  });
  let metrics: MetricsCollector | null = null;
  const { port: routerPort } = await router.start();

  const artifacts = new ArtifactStore(join(c.dataDir, 'artifacts'), (sha) => {
    if (!link) throw new Error('not connected');
    return link.fetchArtifact(sha);
  });
  // Builds of one virtualenv are shared between the instances and tasks that need it at once.
  const venvBuilds = new VenvBuilds();
  const build = (options: BuildOptions) => buildRelease({ ...options, venvBuilds, user });
  let appliedGeneration = 0;
  const sendHeartbeat = () =>
    link?.send({
      heartbeat: { generation: appliedGeneration, instances: reconciler.statuses(), addons: addons.statuses(), sentAt: clock.now() },
    });

  const reconciler = createInstanceRunner({
    instancesDir,
    router,
    artifacts,
    build,
    buildDataDir: c.dataDir,
    ...(c.python ? { python: c.python } : {}),
    ...(deps.backoff ? { backoff: deps.backoff } : {}),
    ...(user ? { uid: user.uid, gid: user.gid } : {}),
    settleMs: c.settleMs,
    clock,
    logger,
    onStatus: (status, kind, exit) => {
      const life = lifecycleLine(status, kind, exit);
      if (life) logs.write({ app: life.app, source: 'hangar', line: life.line });
      link?.send({ instanceEvent: { status, kind, exitCode: exit?.code ?? 0, signal: exit?.signal ?? '' } });
    },
  });
  // Add-on servers (PostgreSQL, Redis, memcached): DATA/addons/NAME/{data,stdout.log,stderr.log,pid.json}.
  const addons = new AddonManager({
    dir: join(c.dataDir, 'addons'),
    host: c.name,
    advertise: c.advertise,
    ...(deps.backoff ? { backoff: deps.backoff } : {}),
    clock,
    logger,
    onStatus: (status) => link?.send({ addonStatus: status }),
  });
  const tasks = new TaskRunner({
    dir: join(c.dataDir, 'tasks'),
    artifacts,
    build,
    buildDataDir: c.dataDir,
    ...(c.python ? { python: c.python } : {}),
    user,
    logger,
    onLine: (l) => {
      const app = taskApps.get(l.taskId);
      if (app) logs.write({ app, source: l.source, stream: l.stream, line: l.line, ts: l.ts });
      link?.send({ taskOutput: { taskId: l.taskId, source: l.source, stream: l.stream, line: l.line, ts: l.ts } });
    },
    onOutcome: (o) => link?.send({ taskResult: { taskId: o.taskId, ok: o.ok, error: o.error, errorCode: o.errorCode } }),
  });

  // Writes of the cache are serialized; only the newest snapshot matters.
  let cacheWrite: Promise<void> = Promise.resolve();
  const cache = (state: DesiredState__Output) => {
    cacheWrite = cacheWrite
      .then(async () => {
        const tmp = `${cachePath}.tmp`;
        await writeFile(tmp, secrets.seal(JSON.stringify(state)), { mode: 0o600 });
        await rename(tmp, cachePath);
      })
      .catch((err: unknown) => logger.error({ err }, 'could not cache desired state'));
  };

  const apply = (state: DesiredState__Output, fromCache: boolean) => {
    if (state.generation < appliedGeneration) {
      logger.debug({ generation: state.generation, applied: appliedGeneration }, 'ignoring an old desired state');
      return;
    }
    followInstances(state);
    router.setRoutes(
      state.routes.map((r) => ({
        app: r.app,
        domains: r.domains,
        backends: r.backends.map((b) => ({ instanceKey: b.instanceKey, host: b.host, port: b.port })),
      })),
    );
    reconciler.apply(prepare(state).instances);
    // Add-ons start from the cached state too: they stay up while the coordinator is away.
    addons.apply(state.addons ?? []);
    if (!fromCache) {
      for (const t of state.tasks) taskApps.set(t.id, t.app);
      tasks.apply(state.tasks);
      cache(state);
    }
    appliedGeneration = state.generation;
    sendHeartbeat();
  };

  // An agent restart keeps apps running: adopt what the cached state says should run.
  let cached: DesiredState__Output | null = null;
  try {
    cached = JSON.parse(secrets.open(await readFile(cachePath, 'utf8'))) as DesiredState__Output;
  } catch {
    cached = null;
  }
  await reconciler.adopt(cached ? prepare(cached).instances : []);
  await addons.adopt(cached?.addons ?? []);
  if (cached) apply(cached, true);

  metrics = new MetricsCollector({
    dataDir: c.dataDir,
    ...(c.metricsIntervalMs ? { intervalMs: c.metricsIntervalMs } : {}),
    instances: () => new Map(reconciler.statuses().flatMap((s) => (s.key && s.pid ? [[s.key, s.pid] as const] : []))),
    inFlight: (key) => router.inFlight(key),
    send: (report) => link?.send({ metrics: report }) ?? false,
    clock,
    logger,
  });
  metrics.start();

  let heartbeat: ClockTimer | null = null;
  const beat = (intervalMs: number) => {
    heartbeat = clock.setTimeout(() => {
      sendHeartbeat();
      beat(intervalMs);
    }, intervalMs);
  };
  link = new CoordinatorLink({
    address: c.coordinator,
    joinToken,
    identityPath: join(c.dataDir, 'credential.json'),
    name: c.name,
    clock,
    logger,
    hello: () => ({
      name: c.name,
      advertiseAddress: c.advertise,
      routerPort,
      capacity: { cpus: cpus().length, memoryMb: Math.round(totalmem() / 1048576), maxInstances: c.maxInstances },
      instances: reconciler.statuses(),
      addons: addons.statuses(),
      version: HANGAR_VERSION,
      generation: appliedGeneration,
      logEpoch: logs.epoch,
      logAckedSeq: logs.acked,
    }),
    onConnected: (intervalMs, metricsIntervalMs) => {
      if (heartbeat) clock.clearTimeout(heartbeat);
      beat(intervalMs);
      if (!c.metricsIntervalMs && metricsIntervalMs > 0) metrics?.setInterval(metricsIntervalMs);
      logs.onConnected();
    },
    onDisconnected: () => logs.onDisconnected(),
    onLogAck: (seq, epoch) => logs.onAck(seq, epoch),
    onDesiredState: (state) => apply(state, false),
    onAddonJob: (job) => void addons.runJob(job).then((result) => link?.send({ addonJobResult: result })),
  });
  link.start();
  logger.info({ routerPort, coordinator: c.coordinator, advertise: c.advertise, appUser: user?.name ?? null }, 'agent started');

  let closing: Promise<void> | null = null;
  return {
    name: c.name,
    routerPort,
    close(options = {}) {
      closing ??= (async () => {
        if (heartbeat) clock.clearTimeout(heartbeat);
        metrics?.close();
        tasks.close();
        link?.close();
        await reconciler.close({ stopInstances: options.stopInstances ?? false });
        await addons.close({ stopInstances: options.stopInstances ?? false });
        await router.close();
        logs.close();
        await cacheWrite;
        logger.info('agent stopped');
      })();
      return closing;
    },
  };
}
