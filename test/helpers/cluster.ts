import { execFile, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { pino } from 'pino';
import type { TestContext } from 'node:test';
import { startAgent, type AgentConfig, type RunningAgent } from '../../agent/agent.js';
import { startCoordinator, type CoordinatorConfig, type CoordinatorDeps, type RunningCoordinator } from '../../coordinator/coordinator.js';
import type { Logger } from '../../common/logger.js';
import { testDatabaseUrl } from './postgres-server.js';

/** The repository root (tests run from dist/test/...). */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const FIXTURES = join(ROOT, 'test', 'fixtures');
export const HANGAR_BIN = join(ROOT, 'bin', 'hangar.js');

/** A temporary directory removed after the test. */
export async function tempDir(t: TestContext, prefix = 'hangar-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  // Retries: an app process may still be writing its last lines while the tree is removed.
  t.after(() => rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 }));
  return dir;
}

/** A logger writing to DIR/NAME.log (set HANGAR_TEST_LOG=debug for more). */
export function fileLogger(dir: string, name: string): Logger {
  return pino({ level: process.env.HANGAR_TEST_LOG ?? 'info', base: { node: name } }, createWriteStream(join(dir, `${name}.log`)));
}

/** An agent of a test on loopback: data in `DIR/agent-NAME`, its router and HTTPS ports picked by the kernel. */
export function loopbackAgentConfig(dir: string, name: string, coordinator: string, joinToken: string): AgentConfig {
  return {
    coordinator,
    joinToken,
    dataDir: join(dir, `agent-${name}`),
    name,
    routerPort: 0,
    httpsPort: 0,
    routerHost: '127.0.0.1',
    advertise: '127.0.0.1',
  };
}

/** Polls `fn` until it returns a truthy value; throws with the last value after `timeoutMs`. */
export async function waitFor<T>(what: string, fn: () => Promise<T> | T, timeoutMs = 60_000, intervalMs = 200): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      last = await fn();
      if (last) return last as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export interface Cluster {
  dir: string;
  /** A directory apps may write to (mode 1777): agents running as root run apps as `hangar`. */
  appDir: string;
  coordinator: RunningCoordinator;
  agents: RunningAgent[];
  /** Runs the `hangar` CLI against this coordinator. */
  cli(args: string[], options?: { timeoutMs?: number; env?: Record<string, string> }): Promise<CliResult>;
  /** GET through an agent's router with the app's Host header. */
  get(agent: RunningAgent, app: string, path?: string): Promise<{ status: number; body: string }>;
  startAgent(name: string, extra?: Partial<AgentConfig>): Promise<RunningAgent>;
  /** Stops the coordinator and starts it again on the same data dir and ports. */
  restartCoordinator(): Promise<RunningCoordinator>;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node bin/hangar.js ARGS` with the given env; bounded. */
export function runCli(args: string[], env: Record<string, string>, timeoutMs = 300_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [HANGAR_BIN, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`hangar ${args.join(' ')} did not finish in ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Agents running as root start apps as the `hangar` user, which must reach the agents' data dirs
 * below `dir`: makes `dir` searchable (0711) and returns `dir/app-files` (1777), where apps may
 * write (e.g. a shared SQLite database).
 */
export async function shareWithApps(dir: string): Promise<string> {
  await chmod(dir, 0o711);
  const appDir = join(dir, 'app-files');
  await mkdir(appDir, { recursive: true });
  await chmod(appDir, 0o1777);
  return appDir;
}

/** Names of the users in /etc/passwd. */
export async function userNames(): Promise<Map<number, string>> {
  const users = new Map<number, string>();
  for (const line of (await readFile('/etc/passwd', 'utf8')).split('\n')) {
    const [name, , uid] = line.split(':');
    if (name && uid) users.set(Number(uid), name);
  }
  return users;
}

/**
 * Removes the apps' users (`hangar-APP`) that the agents under `dir` made during this test: the
 * owners of their DATA/home/APP that did not exist before it.
 */
export async function removeAppUsers(dir: string, before: Set<string>): Promise<void> {
  const users = await userNames();
  const made = new Set<string>();
  for (const agent of (await readdir(dir)).filter((n) => n.startsWith('agent-'))) {
    const homes = join(dir, agent, 'home');
    for (const home of await readdir(homes).catch(() => [])) {
      const name = users.get((await lstat(join(homes, home))).uid);
      if (name?.startsWith('hangar-') && !before.has(name)) made.add(name);
    }
  }
  for (const name of made) await new Promise((done) => execFile('userdel', [name], () => done(undefined)));
}

/**
 * A coordinator and `agents` agents on loopback, each with its own data dir and router on a free
 * port, all closed (instances stopped) after the test.
 */
export async function startCluster(
  t: TestContext,
  options: {
    agents?: number;
    coordinator?: Partial<CoordinatorConfig>;
    onAutoscaleDecision?: CoordinatorDeps['onAutoscaleDecision'];
    certClock?: CoordinatorDeps['certClock'];
    /** What time it is for the coordinator's cron scheduler. */
    cronClock?: CoordinatorDeps['cronClock'];
    /** What time it is for the coordinator's add-on backup schedules. */
    backupClock?: CoordinatorDeps['backupClock'];
  } = {},
): Promise<Cluster> {
  // Removed only after everything that writes into it has stopped (add-on servers keep writing).
  const dir = await mkdtemp(join(tmpdir(), 'hangar-test-'));
  const appDir = await shareWithApps(dir);
  const usersBefore = new Set((await userNames()).values());
  let coordinator: RunningCoordinator;
  // HANGAR_TEST_DATABASE=postgres: the coordinator keeps its state in a fresh PostgreSQL database.
  const databaseUrl = options.coordinator?.databaseUrl ?? (await testDatabaseUrl());
  const coordinatorConfig: CoordinatorConfig = {
    dataDir: join(dir, 'coordinator'),
    httpPort: 0,
    httpHost: '127.0.0.1',
    grpcPort: 0,
    grpcHost: '127.0.0.1',
    heartbeatIntervalMs: 500,
    graceSeconds: 5,
    healthTimeoutMs: 60_000,
    ...options.coordinator,
    ...(databaseUrl === undefined ? {} : { databaseUrl }),
  };
  let starts = 0;
  const coordinatorDeps = (): CoordinatorDeps => ({
    logger: fileLogger(dir, starts++ === 0 ? 'coordinator' : `coordinator-${starts}`),
    ...(options.onAutoscaleDecision ? { onAutoscaleDecision: options.onAutoscaleDecision } : {}),
    ...(options.certClock ? { certClock: options.certClock } : {}),
    ...(options.cronClock ? { cronClock: options.cronClock } : {}),
    ...(options.backupClock ? { backupClock: options.backupClock } : {}),
  });
  try {
    coordinator = await startCoordinator(coordinatorConfig, coordinatorDeps());
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const agents: RunningAgent[] = [];
  t.after(async () => {
    try {
      await Promise.all(agents.map((a) => a.close({ stopInstances: true })));
      await cluster.coordinator.close();
      if (process.getuid?.() === 0) await removeAppUsers(dir, usersBefore);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
  const env = { HANGAR_URL: coordinator.url, HANGAR_TOKEN: coordinator.adminToken, HANGAR_CREDENTIALS: join(dir, 'no-credentials.json') };
  const cluster: Cluster = {
    dir,
    appDir,
    coordinator,
    agents,
    cli: (args, o = {}) => runCli(args, { ...env, ...o.env }, o.timeoutMs),
    async get(agent, app, path = '/') {
      const res = await request(`http://127.0.0.1:${agent.routerPort}${path}`, {
        headers: { host: `${app}.localhost` },
        headersTimeout: 10_000,
        bodyTimeout: 10_000,
      });
      return { status: res.statusCode, body: await res.body.text() };
    },
    async startAgent(name, extra = {}) {
      const agent = await startAgent(
        { ...loopbackAgentConfig(dir, name, coordinator.grpcAddress, coordinator.joinToken), ...extra },
        { logger: fileLogger(dir, `agent-${name}`), backoff: { initialMs: 200, maxMs: 2000 } },
      );
      agents.push(agent);
      return agent;
    },
    async restartCoordinator() {
      const { httpPort, grpcPort } = cluster.coordinator;
      await cluster.coordinator.close();
      cluster.coordinator = await startCoordinator({ ...coordinatorConfig, httpPort, grpcPort }, coordinatorDeps());
      return cluster.coordinator;
    },
  };
  for (let i = 1; i <= (options.agents ?? 1); i++) await cluster.startAgent(`agent-${i}`);
  return cluster;
}
