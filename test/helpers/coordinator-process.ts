/**
 * `hangar coordinator` as a child process among several (coordinator/ha), and the probes the
 * failover tests ask it with: health, `GET /v1/coordinators`, authenticated GETs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { request } from 'undici';
import { startAgent, type AgentDeps, type RunningAgent } from '../../agent/agent.js';
import type { CoordinatorsView, HealthView } from '../../common/api-types.js';
import { fileLogger, HANGAR_BIN, loopbackAgentConfig, removeAppUsers, runCli, shareWithApps, userNames, type Cluster } from './cluster.js';

/** A free TCP port on loopback (the coordinators need fixed ports: each names the other's). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  return typeof address === 'object' && address ? address.port : 0;
}

export interface CoordinatorProcess {
  name: string;
  url: string;
  /** `127.0.0.1:GRPC_PORT`, what agents dial. */
  grpcAddress: string;
  child: ChildProcess;
  log: string;
}

/** Undone newest first after the test (node:test runs `after` hooks in the order they were added). */
export type Cleanups = (() => unknown)[];

/** Settings of {@link spawnCoordinator}. */
export interface CoordinatorProcessOptions {
  /** Where its output goes (`DIR/NAME-TIME.log`). */
  dir: string;
  dataDir: string;
  name: string;
  httpPort: number;
  grpcPort: number;
  /** `--database-url` (PostgreSQL). Default: SQLite in the data dir. */
  databaseUrl?: string;
}

/**
 * `hangar coordinator` as a child process in its own group, with a short lease (5 s, renewed every
 * 0.5 s, 1.5 s margin), advertised on 127.0.0.1; stopped (SIGCONT, then SIGKILL of its group)
 * after the test.
 */
export function spawnCoordinator(cleanups: Cleanups, o: CoordinatorProcessOptions): CoordinatorProcess {
  const log = join(o.dir, `${o.name}-${Date.now()}.log`);
  const out = createWriteStream(log);
  const child = spawn(
    process.execPath,
    [
      HANGAR_BIN,
      'coordinator',
      '--data-dir',
      o.dataDir,
      ...(o.databaseUrl === undefined ? [] : ['--database-url', o.databaseUrl]),
      '--http-port',
      String(o.httpPort),
      '--grpc-port',
      String(o.grpcPort),
      '--advertise',
      '127.0.0.1',
      '--name',
      o.name,
      // A short lease keeps the tests short; the defaults are 10 s / 2 s / 3 s.
      '--lease-ms',
      '5000',
      '--renew-ms',
      '500',
      '--lease-margin-ms',
      '1500',
    ],
    { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HANGAR_LOG_LEVEL: 'info' } },
  );
  child.stdout?.pipe(out);
  child.stderr?.pipe(out);
  cleanups.push(() => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    try {
      process.kill(-child.pid, 'SIGCONT');
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  });
  return { name: o.name, url: `http://127.0.0.1:${o.httpPort}`, grpcAddress: `127.0.0.1:${o.grpcPort}`, child, log };
}

/** `GET /v1/health` of the coordinator at `url`, or null when it does not answer 200. */
export async function health(url: string): Promise<HealthView | null> {
  try {
    const res = await request(`${url}/v1/health`, { headersTimeout: 2000, bodyTimeout: 2000 });
    return res.statusCode === 200 ? ((await res.body.json()) as HealthView) : (await res.body.dump(), null);
  } catch {
    return null;
  }
}

/**
 * `GET /v1/coordinators` answered by the coordinator at `url` itself (the API of a leader), or
 * null: a follower's forwarded answer (`hangar-forwarded-by`) is the leader's view, not its own.
 */
export async function coordinators(url: string, token: string): Promise<CoordinatorsView | null> {
  try {
    const res = await request(`${url}/v1/coordinators`, {
      headers: { authorization: `Bearer ${token}` },
      headersTimeout: 2000,
      bodyTimeout: 2000,
    });
    if (res.statusCode !== 200 || res.headers['hangar-forwarded-by'] !== undefined) return (await res.body.dump(), null);
    return (await res.body.json()) as CoordinatorsView;
  } catch {
    return null;
  }
}

/** `GET url+path` with the token: the JSON answer, or null when not 200. */
export async function getJson<T>(url: string, path: string, token: string, timeoutMs = 5000): Promise<T | null> {
  try {
    const res = await request(`${url}${path}`, {
      headers: { authorization: `Bearer ${token}` },
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    return res.statusCode === 200 ? ((await res.body.json()) as T) : (await res.body.dump(), null);
  } catch {
    return null;
  }
}

/** True when the leader at `url` lists agent `name` up. */
export async function agentUp(url: string, token: string, name: string): Promise<boolean> {
  const body = await getJson<{ agents: { name: string; state: string }[] }>(url, '/v1/agents', token);
  return body?.agents.some((x) => x.name === name && x.state === 'up') ?? false;
}

/** Resolves once `child` has exited. */
export function stopped(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => child.once('exit', () => resolve()));
}

/** What a test of `hangar coordinator` processes works in: see {@link coordinatorTest}. */
export interface CoordinatorTest {
  /** A temp dir, removed after the test. */
  dir: string;
  /** Its part the app users may read (fixtures are copied there). */
  appDir: string;
  /** Undone newest first after the test. */
  cleanups: Cleanups;
  /** {@link spawnCoordinator} in `dir`; its elections and step-downs are printed after the test. */
  spawn(o: Omit<CoordinatorProcessOptions, 'dir'>): CoordinatorProcess;
  /** An agent on loopback (`DIR/agent-NAME`, its log `DIR/agent-NAME.log`), closed with its instances after the test. */
  agent(name: string, coordinator: string, joinToken: string, deps?: Pick<AgentDeps, 'backoff'>): Promise<RunningAgent>;
  /** What deployFixture and waitForPs use of a {@link Cluster}: this dir and the CLI with `env`. */
  cluster(env: Record<string, string>): Cluster;
}

/**
 * Sets up a test of coordinator processes: a temp dir shared with the app users, undone after
 * the test with the app users it made, and the elections of every coordinator spawned through
 * it in the test's diagnostics (their logs go with the temp dir).
 */
export async function coordinatorTest(t: TestContext, prefix: string): Promise<CoordinatorTest> {
  const cleanups: Cleanups = [];
  t.after(async () => {
    for (const undo of cleanups.reverse()) await undo();
  });
  const dir = await mkdtemp(join(tmpdir(), prefix));
  cleanups.push(() => rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 }));
  const appDir = await shareWithApps(dir);
  const usersBefore = new Set((await userNames()).values());
  cleanups.push(() => removeAppUsers(dir, usersBefore));
  const logs: string[] = [];
  cleanups.push(async () => {
    for (const log of logs) {
      const text = await readFile(log, 'utf8').catch(() => '');
      for (const line of text.split('\n').filter((l) => /elected leader|stepped down|fenced|released the lease|could not start/.test(l))) {
        t.diagnostic(`${log.split('/').at(-1) ?? ''}: ${line.slice(0, 260)}`);
      }
    }
  });
  return {
    dir,
    appDir,
    cleanups,
    spawn(o) {
      const c = spawnCoordinator(cleanups, { ...o, dir });
      logs.push(c.log);
      return c;
    },
    async agent(name, coordinator, joinToken, deps = {}) {
      const agent = await startAgent(loopbackAgentConfig(dir, name, coordinator, joinToken), {
        logger: fileLogger(dir, `agent-${name}`),
        ...deps,
      });
      cleanups.push(() => agent.close({ stopInstances: true }));
      return agent;
    },
    cluster(env) {
      return { dir, appDir, cli: (args: string[], o: { timeoutMs?: number } = {}) => runCli(args, env, o.timeoutMs) } as unknown as Cluster;
    },
  };
}
