/**
 * Reconnect benchmark: how soon a real `hangar agent` (a child process) is connected again after
 * the coordinator it lost comes back. The coordinator runs in this process; it is closed, left
 * down for each `--outages` duration (long enough for the agent's backoff to grow), and started
 * again on the same ports and data dir. The figure is the time from the coordinator listening
 * again to the agent being connected (`up` in the agent list, which a restarted coordinator says
 * only after the agent's hello on a new stream), per outage; goal ≤ 2 s for each.
 *
 *   node dist/bench/reconnect.js [--outages 3,10,30]
 */
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { ApiClient } from '../cli/api-client.js';
import { startCoordinator, type RunningCoordinator } from '../coordinator/coordinator.js';
import { Goals } from './goals.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HANGAR = join(ROOT, 'bin', 'hangar.js');
const GOAL_S = 2;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { outages: { type: 'string', default: '3,10,30' } } });
  const outages = values.outages.split(',').map(Number);
  const dir = await mkdtemp(join(tmpdir(), 'hangar-bench-reconnect-'));
  await chmod(dir, 0o711);
  const start = (httpPort = 0, grpcPort = 0) =>
    startCoordinator(
      { dataDir: join(dir, 'coordinator'), httpPort, httpHost: '127.0.0.1', grpcPort, grpcHost: '127.0.0.1' },
      { logger: pino({ level: 'silent' }) },
    );
  let coordinator: RunningCoordinator | null = await start();
  const { httpPort, grpcPort } = coordinator;
  const agent = spawn(
    process.execPath,
    [
      HANGAR,
      'agent',
      '--coordinator',
      coordinator.grpcAddress,
      '--data-dir',
      join(dir, 'agent'),
      '--name',
      'bench',
      '--router-port',
      '0',
      '--https-port',
      '0',
      '--advertise',
      '127.0.0.1',
    ],
    {
      env: { ...process.env, HANGAR_JOIN_TOKEN: coordinator.joinToken, HANGAR_LOG_LEVEL: 'error' },
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  const goals = new Goals();
  /** Polls the agent list until the agent is up; false on timeout. */
  const waitUp = async (c: RunningCoordinator, timeoutMs: number): Promise<boolean> => {
    const api = new ApiClient({ url: c.url, token: c.adminToken });
    const deadline = performance.now() + timeoutMs;
    try {
      while (performance.now() < deadline) {
        if ((await api.listAgents()).some((a) => a.name === 'bench' && a.state === 'up')) return true;
        await sleep(20);
      }
      return false;
    } finally {
      await api.close();
    }
  };
  try {
    if (!(await waitUp(coordinator, 60_000))) throw new Error('the agent did not connect');
    for (const outage of outages) {
      await sleep(3000);
      await coordinator.close();
      coordinator = null;
      await sleep(outage * 1000);
      coordinator = await start(httpPort, grpcPort);
      const t0 = performance.now();
      const ok = await waitUp(coordinator, 60_000);
      goals.check({
        name: `connected again after a ${outage} s outage (coordinator listening → agent up)`,
        value: ok ? (performance.now() - t0) / 1000 : Number.NaN,
        unit: 's',
        op: '<=',
        goal: GOAL_S,
        digits: 2,
      });
    }
  } finally {
    agent.kill('SIGTERM');
    if (agent.exitCode === null) await new Promise((r) => agent.once('exit', r));
    await coordinator?.close();
    await rm(dir, { recursive: true, force: true });
  }
  goals.finish('reconnect');
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
