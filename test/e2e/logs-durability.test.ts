import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import type { LogLineView, PsRow } from '../../common/api-types.js';
import { freePort } from '../../agent/workloads/free-port.js';
import { FIXTURES, HANGAR_BIN, runCli, shareWithApps, tempDir, waitFor } from '../helpers/cluster.js';

const COUNTER = `import sys, time
n = 0
while True:
    n += 1
    print(f'count {n}', flush=True)
    if n % 2 == 0:
        time.sleep(0.01)
`;

/** A `hangar coordinator` or `hangar agent` as a real child process, output to DIR/NAME-N.log. */
function server(dir: string, name: string, args: string[], runs: number): ChildProcess {
  const child = spawn(process.execPath, [HANGAR_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = createWriteStream(join(dir, `${name}-${runs}.log`));
  child.stdout?.pipe(out);
  child.stderr?.pipe(out);
  return child;
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
  });
}

async function kill9(child: ChildProcess): Promise<void> {
  child.kill('SIGKILL');
  await exited(child);
}

/** Counts seen in the logs; asserts each of 1..max appears exactly once. */
function checkCounts(lines: readonly LogLineView[]): number {
  const counts = lines.flatMap((l) => {
    const m = /^count (\d+)$/.exec(l.line);
    return m ? [Number(m[1])] : [];
  });
  const max = Math.max(0, ...counts);
  const seen = new Map<number, number>();
  for (const c of counts) seen.set(c, (seen.get(c) ?? 0) + 1);
  const missing: number[] = [];
  const doubled: number[] = [];
  for (let i = 1; i <= max; i++) {
    const n = seen.get(i) ?? 0;
    if (n === 0) missing.push(i);
    if (n > 1) doubled.push(i);
  }
  assert.deepEqual({ missing: missing.slice(0, 20), doubled: doubled.slice(0, 20) }, { missing: [], doubled: [] });
  assert.equal(counts.length, max);
  return max;
}

async function start(t: TestContext) {
  const dir = await tempDir(t);
  const appDir = await shareWithApps(dir);
  const [httpPort, grpcPort, routerPort] = [await freePort(), await freePort(), await freePort()];
  const coordArgs = [
    'coordinator',
    '--data-dir',
    join(dir, 'coordinator'),
    '--http-port',
    String(httpPort),
    '--grpc-port',
    String(grpcPort),
  ];
  const url = `http://127.0.0.1:${httpPort}`;
  let coordRuns = 0;
  let agentRuns = 0;
  const procs = { coordinator: null as ChildProcess | null, agent: null as ChildProcess | null };
  const health = () =>
    waitFor(
      'the coordinator to answer',
      async () => (await request(`${url}/v1/health`, { headersTimeout: 2000 })).statusCode === 200,
      30_000,
    );
  const startCoordinator = async () => {
    procs.coordinator = server(dir, 'coordinator', coordArgs, ++coordRuns);
    await health();
  };
  await startCoordinator();
  const adminToken = (await readFile(join(dir, 'coordinator', 'admin-token'), 'utf8')).trim();
  const joinToken = (await readFile(join(dir, 'coordinator', 'join-token'), 'utf8')).trim();
  const env = { HANGAR_URL: url, HANGAR_TOKEN: adminToken, HANGAR_CREDENTIALS: join(dir, 'no-credentials.json') };
  const cli = (args: string[], timeoutMs?: number) => runCli(args, env, timeoutMs);
  const agentArgs = [
    'agent',
    '--coordinator',
    `127.0.0.1:${grpcPort}`,
    '--join-token',
    joinToken,
    '--data-dir',
    join(dir, 'agent'),
    '--name',
    'agent-1',
    '--router-port',
    String(routerPort),
    '--https-port',
    '0',
    '--advertise',
    '127.0.0.1',
  ];
  const startAgentProcess = () => {
    procs.agent = server(dir, 'agent', agentArgs, ++agentRuns);
  };
  startAgentProcess();
  t.after(async () => {
    // Stop the apps first (an agent's exit leaves them running), then the servers.
    const rows = await cli(['ps', '-a', 'shop', '--json'], 20_000).catch(() => null);
    const pids = rows?.code === 0 ? (JSON.parse(rows.stdout) as PsRow[]).flatMap((r) => (r.pid ? [r.pid] : [])) : [];
    await cli(['scale', 'web=0', 'counter=0', '-a', 'shop'], 20_000).catch(() => null);
    await waitFor(
      'the apps to stop',
      async () => {
        const r = await cli(['ps', '-a', 'shop', '--json'], 20_000);
        return r.code !== 0 || (JSON.parse(r.stdout) as PsRow[]).length === 0;
      },
      30_000,
    ).catch(() => null);
    for (const pid of pids) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    for (const child of [procs.agent, procs.coordinator]) {
      if (!child) continue;
      child.kill('SIGTERM');
      await Promise.race([exited(child), new Promise((r) => setTimeout(r, 10_000))]);
      child.kill('SIGKILL');
    }
  });
  return { dir, appDir, cli, procs, startCoordinator, startAgentProcess };
}

async function counterLogs(
  cli: (args: string[]) => Promise<{ code: number | null; stdout: string; stderr: string }>,
): Promise<LogLineView[]> {
  const res = await cli(['logs', '-a', 'shop', '--source', 'counter', '-n', '50000', '--json']);
  assert.equal(res.code, 0, res.stderr);
  return res.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as LogLineView);
}

test('no log line is lost or doubled across a kill -9 of the coordinator and of the agent', { timeout: 600_000 }, async (t) => {
  const { dir, appDir, cli, procs, startCoordinator, startAgentProcess } = await start(t);
  const app = join(dir, 'app');
  await cp(join(FIXTURES, 'django-app'), app, { recursive: true });
  const procfile = await readFile(join(app, 'Procfile'), 'utf8');
  await writeFile(join(app, 'Procfile'), `${procfile.trimEnd()}\ncounter: python counter.py\n`);
  await writeFile(join(app, 'counter.py'), COUNTER);

  assert.equal((await cli(['apps:create', 'shop'])).code, 0);
  assert.equal((await cli(['config:set', `DATABASE_URL=sqlite:///${join(appDir, 'shop.sqlite3')}`, '-a', 'shop'])).code, 0);
  await waitFor('the agent to join', async () => {
    const r = await cli(['agents', '--json']);
    return r.code === 0 && r.stdout.includes('"up"');
  });
  const deploy = await cli(['deploy', app, '-a', 'shop'], 300_000);
  assert.equal(deploy.code, 0, `deploy failed:\n${deploy.stdout}\n${deploy.stderr}`);
  assert.equal((await cli(['scale', 'counter=1', '-a', 'shop'])).code, 0);

  const progress = (atLeast: number) =>
    waitFor(
      `the logs to reach count ${atLeast}`,
      async () => {
        const max = checkCounts(await counterLogs(cli));
        return max >= atLeast ? max : null;
      },
      120_000,
      500,
    );
  let max = await progress(300);

  // kill -9 of the coordinator: the agent spools meanwhile and resends what was not acked.
  assert.ok(procs.coordinator);
  await kill9(procs.coordinator);
  await new Promise((r) => setTimeout(r, 2000));
  await startCoordinator();
  max = await progress(max + 600);

  // kill -9 of the agent: the app keeps writing its file; the next agent resumes where the spool says.
  assert.ok(procs.agent);
  await kill9(procs.agent);
  await new Promise((r) => setTimeout(r, 2000));
  startAgentProcess();
  max = await progress(max + 800);

  // Both at once, for good measure: the agent dies mid-batch while the coordinator is down.
  await kill9(procs.coordinator);
  await kill9(procs.agent);
  await new Promise((r) => setTimeout(r, 1000));
  startAgentProcess();
  await new Promise((r) => setTimeout(r, 1000));
  await startCoordinator();
  max = await progress(max + 800);
  assert.ok(max > 2000, `count reached ${max}`);
});
