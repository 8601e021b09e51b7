import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { systemClock, type Clock, type ClockTimer } from '../common/clock.js';
import { describeError } from '../common/errors.js';
import { createLogger, type Logger } from '../common/logger.js';
import { parseJoinToken } from '../common/join-token.js';
import { SecretBox } from '../common/secret-box.js';
import { HANGAR_VERSION } from '../common/version.js';
import { AddonManager } from './addons/addon-manager.js';
import { ArtifactStore } from './build/artifact-store.js';
import type { BackoffOptions } from './workloads/backoff.js';
import { VenvBuilds, buildRelease, type BuildOptions } from './build/builder.js';
import { DesiredStateApplier } from './desired-state/desired-state-applier.js';
import { DesiredStateCache } from './desired-state/desired-state-cache.js';
import { CoordinatorLink } from './link/coordinator-link.js';
import { installErrorHook } from './workloads/error-hook.js';
import { accessLine, lifecycleLine } from './logs/log-lines.js';
import { LogShipper } from './logs/log-shipper.js';
import { MetricsCollector } from './metrics/metrics-collector.js';
import { createInstanceRunner } from './workloads/instance-driver.js';
import { RouterClient } from './router/router-client.js';
import { AppUsers } from './workloads/app-users.js';
import { assertReachable } from './workloads/run-as.js';
import { TaskRunner } from './workloads/task-runner.js';
import { OneOffRunner } from './workloads/one-off-runner.js';

/** How often the singleton lease is looked at, ms. */
const LEASE_CHECK_MS = 250;
import { detectCgroups, type CgroupHierarchy } from './limits/cgroup.js';
import { agentConfigSchema, type AgentConfig, type AgentSettings } from './agent-config.js';

export { agentConfigSchema, defaultAdvertiseAddress, type AgentConfig } from './agent-config.js';

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
  /** Port of the router's HTTPS listener; 0 when it has none. */
  httpsPort: number;
  /**
   * Stops the agent. By default its instances keep running, to be adopted by the next start
   * (an agent restart never restarts apps); `stopInstances` stops them all.
   */
  close(options?: { stopInstances?: boolean }): Promise<void>;
}

/** Something started, and how to close it again. */
type Closer = (options: { stopInstances: boolean }) => unknown;

/**
 * Starts an agent: log shipping, router, the workload runners (adopting what a previous agent
 * left running), metrics, and the link to the coordinator. When a step fails, what was started
 * before it is closed again (its instances keep running) and the error is thrown.
 */
export async function startAgent(config: AgentConfig, deps: AgentDeps = {}): Promise<RunningAgent> {
  const c = agentConfigSchema.parse(config);
  const clock = deps.clock ?? systemClock;
  const logger = (deps.logger ?? createLogger()).child({ component: 'agent', agent: c.name });
  // Closed newest first, on close() or when start-up fails half-way.
  const started: Closer[] = [];
  const closeStarted = async (options: { stopInstances: boolean }) => {
    for (const close of started.splice(0).reverse()) {
      try {
        await close(options);
      } catch (err) {
        logger.error({ err }, 'could not close a part of the agent');
      }
    }
  };
  try {
    const agent = await assemble(c, { clock, logger, ...(deps.backoff ? { backoff: deps.backoff } : {}) }, started);
    logger.info(
      {
        routerPort: agent.routerPort,
        httpsPort: agent.httpsPort,
        coordinator: c.coordinator,
        advertise: c.advertise,
        appUser: agent.appUser,
      },
      'agent started',
    );
    let closing: Promise<void> | null = null;
    return {
      name: c.name,
      routerPort: agent.routerPort,
      httpsPort: agent.httpsPort,
      close(options = {}) {
        closing ??= closeStarted({ stopInstances: options.stopInstances ?? false }).then(() => logger.info('agent stopped'));
        return closing;
      },
    };
  } catch (err) {
    logger.warn({ err }, `agent did not start (${describeError(err)}); closing what had started`);
    await closeStarted({ stopInstances: false });
    throw err;
  }
}

/** Starts the agent's parts in order, pushing each one's close onto `started`. */
async function assemble(
  c: AgentSettings,
  deps: { clock: Clock; logger: Logger; backoff?: BackoffOptions },
  started: Closer[],
): Promise<{ routerPort: number; httpsPort: number; appUser: string | null }> {
  const { clock, logger } = deps;
  const joinToken = parseJoinToken(c.joinToken);
  await mkdir(c.dataDir, { recursive: true, mode: 0o700 });
  // The cached desired state holds config values: sealed with this agent's own key.
  const secrets = await SecretBox.fromKeyFile(join(c.dataDir, 'secret-key'));
  const users = new AppUsers({ homesDir: join(c.dataDir, 'home'), ...(c.appUser ? { shared: c.appUser } : {}), logger });
  // The apps' users must reach their slugs and virtualenvs below the data dir (but not list it);
  // what is the agent's alone (credential, keys, cache, spool, artifacts, task records) is closed.
  if (users.dropsPrivileges) {
    await chmod(c.dataDir, 0o711);
    await assertReachable(c.dataDir, { name: c.appUser ? `the user ${c.appUser}` : 'their own users (hangar-APP)', uid: -1, gid: -1 });
    await closeAgentFiles(c.dataDir);
  }

  let link: CoordinatorLink | null = null;
  let metrics: MetricsCollector | null = null;
  let applier: DesiredStateApplier | null = null;
  const instancesDir = join(c.dataDir, 'instances');
  // The coordinator's CA, public, for apps to verify their PostgreSQL add-on (PGSSLROOTCERT).
  const caFile = join(c.dataDir, 'ca.crt');
  const logs = new LogShipper({
    dir: join(c.dataDir, 'logs'),
    spoolBytes: c.logSpoolBytes,
    send: (batch) => link?.send({ logBatch: batch }) ?? false,
    clock,
    logger,
  });
  logs.start();
  started.push(() => logs.close());
  const hookDir = await installErrorHook(join(c.dataDir, 'python-hook'));

  // The router runs as a process of its own that outlives the agent (restarts, crashes, upgrades):
  // adopted when running, replaced when its code differs; stopped only when the agent stops for good.
  const router = new RouterClient({
    dataDir: c.dataDir,
    config: { port: c.routerPort, httpsPort: c.httpsPort, host: c.routerHost, trustedProxies: c.trustedProxies },
    logger,
    onAccess: (entries) => {
      for (const e of entries) metrics?.recordAccess(e);
      logs.writeMany(
        entries.flatMap((e) =>
          e.app ? [{ app: e.app, source: 'router', line: accessLine(e, applier?.domainOf(e.app) ?? e.app), ts: e.ts }] : [],
        ),
      );
    },
  });
  const { port: routerPort, httpsPort } = await router.start();
  started.push((o) => router.close({ stop: o.stopInstances }));

  const cache = new DesiredStateCache(join(c.dataDir, 'desired-state.json'), secrets, logger);
  started.push(() => cache.flush());
  const artifacts = new ArtifactStore(join(c.dataDir, 'artifacts'), (sha) => {
    if (!link) throw new Error('not connected');
    return link.fetchArtifact(sha);
  });
  // Builds of one virtualenv are shared between the instances and tasks that need it at once.
  const venvBuilds = new VenvBuilds();
  const build = (options: BuildOptions) => buildRelease({ ...options, venvBuilds });
  const userFor = (app: string) => users.forApp(app);
  const sendHeartbeat = () =>
    link?.send({
      heartbeat: {
        generation: applier?.generation ?? 0,
        instances: instances.statuses(),
        addons: addons.statuses(),
        sentAt: clock.now(),
      },
    });

  // Add-on servers (PostgreSQL, Redis, memcached): DATA/addons/NAME/{data,stdout.log,stderr.log,pid.json}.
  const addons = new AddonManager({
    dir: join(c.dataDir, 'addons'),
    copiesDir: join(c.dataDir, 'backup-copies'),
    transfers: {
      upload: (transfer, source) => {
        if (!link) throw new Error('not connected');
        return link.uploadBackup(transfer, source);
      },
      fetch: (transfer) => {
        if (!link) throw new Error('not connected');
        return link.fetchBackup(transfer);
      },
    },
    host: c.name,
    advertise: c.advertise,
    ...(deps.backoff ? { backoff: deps.backoff } : {}),
    runAs: userFor,
    clock,
    logger,
    onStatus: (status) => link?.send({ addonStatus: status }),
  });
  started.push((o) => addons.close(o));
  const instances = createInstanceRunner({
    instancesDir,
    cgroups: limitsHierarchy(c, logger),
    instanceAddress: c.instanceAddress ?? c.advertise,
    caFile,
    defaultLimits: { memoryBytes: c.defaultMemoryBytes ?? null, cpu: c.defaultCpu ?? null },
    router,
    artifacts,
    build,
    buildDataDir: c.dataDir,
    ...(c.python ? { python: c.python } : {}),
    ...(deps.backoff ? { backoff: deps.backoff } : {}),
    userFor,
    settleMs: c.settleMs,
    clock,
    logger,
    onStatus: (status, kind, exit) => {
      const life = lifecycleLine(status, kind, exit);
      if (life) logs.write({ app: life.app, source: 'hangar', line: life.line });
      link?.send({ instanceEvent: { status, kind, exitCode: exit?.code ?? 0, signal: exit?.signal ?? '' } });
    },
  });
  started.push((o) => instances.close(o));
  const tasks = new TaskRunner({
    dir: join(c.dataDir, 'tasks'),
    artifacts,
    build,
    buildDataDir: c.dataDir,
    ...(c.python ? { python: c.python } : {}),
    userFor,
    logger,
    onLine: (l) => {
      const app = applier?.appOfTask(l.taskId);
      if (app) logs.write({ app, source: l.source, stream: l.stream, line: l.line, ts: l.ts });
      link?.send({ taskOutput: { taskId: l.taskId, source: l.source, stream: l.stream, line: l.line, ts: l.ts } });
    },
    onOutcome: (o) => link?.send({ taskResult: { taskId: o.taskId, ok: o.ok, error: o.error, errorCode: o.errorCode, phase: o.phase } }),
  });
  started.push(() => tasks.close());
  // One-off runs (`hangar run`, cron firings): DATA/runs/ID.json keeps each one's outcome.
  const runs = new OneOffRunner({
    dir: join(c.dataDir, 'runs'),
    artifacts,
    build,
    buildDataDir: c.dataDir,
    ...(c.python ? { python: c.python } : {}),
    userFor,
    clock,
    logger,
    onOutput: (runId, stream, data) => link?.send({ runOutput: { runId, stream, data } }),
    onLine: (spec, stream, line) => logs.write({ app: spec.app, source: spec.name, stream, line }),
    onReport: (r) => link?.send({ runStatus: r }),
  });
  started.push(() => runs.close());

  applier = new DesiredStateApplier({
    instancesDir,
    addonsDir: join(c.dataDir, 'addons'),
    hookDir,
    router,
    instances,
    addons,
    tasks,
    runs,
    logs,
    cache,
    logger,
    onApplied: sendHeartbeat,
  });
  // An agent restart keeps apps running: adopt what the cached state says should run.
  await applier.resume(await cache.read());

  metrics = new MetricsCollector({
    dataDir: c.dataDir,
    ...(c.metricsIntervalMs ? { intervalMs: c.metricsIntervalMs } : {}),
    instances: () => new Map(instances.statuses().flatMap((s) => (s.key && s.pid ? [[s.key, s.pid] as const] : []))),
    inFlight: (key) => router.inFlight(key),
    send: (report) => link?.send({ metrics: report }) ?? false,
    clock,
    logger,
  });
  metrics.start();
  started.push(() => metrics?.close());
  // Access lines of requests served while no agent ran (a restart, a crash) arrive now.
  router.followAccess();

  // The singleton lease: counted from the sending of the last heartbeat the coordinator acked (the
  // coordinator's "last heard" is later than that), or from this start.
  let lastAcked = clock.now();
  let connections = 0;
  let fencedOn = -1;
  let leaseTimer: ClockTimer | null = null;
  const watchLease = () => {
    leaseTimer = clock.setTimeout(() => {
      if (clock.now() - lastAcked >= c.singletonLeaseMs && !desired.fenced) {
        fencedOn = connections;
        desired.fenceSingletons();
      }
      watchLease();
    }, LEASE_CHECK_MS);
  };

  let heartbeat: ClockTimer | null = null;
  const beat = (intervalMs: number) => {
    heartbeat = clock.setTimeout(() => {
      sendHeartbeat();
      beat(intervalMs);
    }, intervalMs);
  };
  const desired = applier;
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
      httpsPort,
      capacity: { cpus: cpus().length, memoryMb: Math.round(totalmem() / 1048576), maxInstances: c.maxInstances },
      instances: instances.statuses(),
      addons: addons.statuses(),
      version: HANGAR_VERSION,
      generation: desired.generation,
      logEpoch: logs.epoch,
      logAckedSeq: logs.acked,
      singletonLeaseMs: c.singletonLeaseMs,
    }),
    onHeartbeatAck: (sentAt) => {
      lastAcked = Math.max(lastAcked, sentAt);
      // Fenced on this very stream (a slow coordinator, not a lost one): nothing moved meanwhile,
      // since the coordinator never replaces what a connected agent reports running.
      if (desired.fenced && fencedOn === connections && clock.now() - lastAcked < c.singletonLeaseMs) desired.unfence();
    },
    onConnected: (intervalMs, metricsIntervalMs) => {
      connections += 1;
      const caPem = link?.caPem;
      if (caPem) void placeCaFile(caFile, caPem, logger);
      if (heartbeat) clock.clearTimeout(heartbeat);
      beat(intervalMs);
      if (!c.metricsIntervalMs && metricsIntervalMs > 0) metrics?.setInterval(metricsIntervalMs);
      logs.onConnected();
    },
    onDisconnected: () => logs.onDisconnected(),
    onLogAck: (seq, epoch) => logs.onAck(seq, epoch),
    onDesiredState: (state) => desired.apply(state, { fromCache: false }),
    leaderEpoch: () => desired.leaderEpoch,
    onLeaderEpoch: (epoch) => desired.noteLeaderEpoch(epoch),
    onRunInput: (input) => runs.input(input),
    onAddonJob: (job) => void addons.runJob(job).then((result) => link?.send({ addonJobResult: result })),
  });
  link.start();
  watchLease();
  started.push(() => {
    if (leaseTimer) clock.clearTimeout(leaseTimer);
    if (heartbeat) clock.clearTimeout(heartbeat);
    link?.close();
  });
  return { routerPort, httpsPort, appUser: users.dropsPrivileges ? (c.appUser ?? 'hangar-APP') : null };
}

/** The cgroups instances get their limits from, or null (said in the log) when limits cannot be enforced. */
function limitsHierarchy(c: AgentSettings, logger: Logger): CgroupHierarchy | null {
  if (c.cgroupRoot === null) return null;
  if (process.getuid?.() !== 0) {
    logger.info('memory and CPU limits are not enforced: the agent does not run as root');
    return null;
  }
  const hierarchy = detectCgroups(c.cgroupRoot);
  if (hierarchy === null)
    logger.warn({ cgroupRoot: c.cgroupRoot }, 'memory and CPU limits are not enforced: no cgroup memory controller here');
  else logger.info({ cgroups: hierarchy.version, cgroupRoot: c.cgroupRoot }, 'instances run with memory and CPU limits (cgroups)');
  return hierarchy;
}

/** Writes the coordinator's CA certificate where every app may read it (it is public); logs a failure. */
async function placeCaFile(path: string, pem: string, logger: Logger): Promise<void> {
  try {
    if ((await readFile(path, 'utf8').catch(() => null)) === pem) return;
    await writeFile(`${path}.tmp`, pem, { mode: 0o644 });
    await chmod(`${path}.tmp`, 0o644);
    await rename(`${path}.tmp`, path);
  } catch (err) {
    logger.warn({ err, path }, 'could not place the CA certificate for apps; PGSSLROOTCERT is not set');
  }
}

/** The agent's own files and folders under DATA that no app may read (made 0700/0600 when present). */
const AGENT_PRIVATE = {
  dirs: ['logs', 'tasks', 'runs', 'artifacts'],
  files: ['credential.json', 'secret-key', 'desired-state.json'],
};

/** Closes the agent's own data to the apps' users, including what an older agent left open. */
async function closeAgentFiles(dataDir: string): Promise<void> {
  for (const name of AGENT_PRIVATE.dirs) {
    await mkdir(join(dataDir, name), { recursive: true, mode: 0o700 });
    await chmod(join(dataDir, name), 0o700);
  }
  for (const name of AGENT_PRIVATE.files) {
    await chmod(join(dataDir, name), 0o600).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    });
  }
}
