import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FIXTURES, HANGAR_BIN, startCluster, waitFor, type Cluster } from '../helpers/cluster.js';
import { ps, waitForPs } from '../helpers/deploy-fixture.js';

const run = promisify(execFile);
const QUEUE_APP = join(FIXTURES, 'queue-app');

async function cliOk(cluster: Cluster, args: string[]): Promise<string> {
  const res = await cluster.cli(args, { timeoutMs: 300_000 });
  assert.equal(res.code, 0, `hangar ${args.join(' ')} failed:\n${res.stdout}\n${res.stderr}`);
  return res.stdout;
}

function lines(path: string): string[][] {
  return existsSync(path)
    ? readFileSync(path, 'utf8')
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => l.split(' '))
    : [];
}

/** Each clock process's life from the log: [pid, first note, last note], by start time. */
function clockLives(path: string): { pid: string; from: number; to: number }[] {
  const lives = new Map<string, { pid: string; from: number; to: number }>();
  for (const [, pid, ts] of lines(path)) {
    if (!pid || !ts) continue;
    const life = lives.get(pid) ?? { pid, from: Number(ts), to: Number(ts) };
    life.to = Math.max(life.to, Number(ts));
    lives.set(pid, life);
  }
  return [...lives.values()].sort((a, b) => a.from - b.from);
}

/** Asserts no two clock processes ever wrote at overlapping times. */
function assertOneWriterAtATime(path: string): void {
  const lives = clockLives(path);
  for (let i = 1; i < lives.length; i++) {
    const before = lives[i - 1];
    const after = lives[i];
    assert.ok(before && after);
    assert.ok(
      after.from >= before.to,
      `clock pid ${after.pid} started at ${after.from} while pid ${before.pid} still ran (until ${before.to})`,
    );
  }
}

async function createQueueApp(cluster: Cluster, app: string, config: Record<string, string>): Promise<void> {
  await cliOk(cluster, ['apps:create', app]);
  await cliOk(cluster, ['config:set', ...Object.entries(config).map(([k, v]) => `${k}=${v}`), '-a', app]);
}

test('a Celery worker busy with a 10 s task is redeployed: the task finishes once, nothing is lost', { timeout: 300_000 }, async (t) => {
  const cluster = await startCluster(t, { agents: 1 });
  const app = 'tasks';
  const taskLog = join(cluster.appDir, 'tasks.log');
  await createQueueApp(cluster, app, { TASK_LOG: taskLog });
  await cliOk(cluster, ['addons:create', 'redis', '-a', app]);
  await cliOk(cluster, ['deploy', QUEUE_APP, '-a', app]);
  await waitForPs(cluster, app, 'worker.1 up', (r) => r.some((x) => x.id === 'worker.1' && x.state === 'up'));
  const redisUrl = (await cliOk(cluster, ['config:get', 'REDIS_URL', '-a', app])).trim();
  const enqueue = (n: number, seconds: number) =>
    run('/usr/bin/python3', ['-c', `import tasks; tasks.slow.delay(${n}, ${seconds})`], {
      cwd: QUEUE_APP,
      env: { ...process.env, REDIS_URL: redisUrl, TASK_LOG: taskLog },
      timeout: 30_000,
    });

  await enqueue(1, 10);
  await waitFor('task 1 to start', () => lines(taskLog).some((l) => l[0] === 'start' && l[1] === '1'), 60_000);
  const oldWorker = (await ps(cluster, app)).find((r) => r.id === 'worker.1');
  // A new release while the task runs: the old worker gets SIGTERM (its main process only) and
  // finishes the task before it exits.
  await cliOk(cluster, ['deploy', QUEUE_APP, '-a', app]);
  await waitFor('task 1 to end', () => lines(taskLog).some((l) => l[0] === 'end' && l[1] === '1'), 60_000);
  const newWorker = await waitForPs(cluster, app, 'only the new worker', (r) => r.filter((x) => x.type === 'worker').length === 1);
  assert.notEqual(newWorker.find((r) => r.id === 'worker.1')?.release, oldWorker?.release);

  // The new worker takes the next task.
  await enqueue(2, 1);
  await waitFor('task 2 to end', () => lines(taskLog).some((l) => l[0] === 'end' && l[1] === '2'), 60_000);

  const log = lines(taskLog);
  const of = (what: string, n: string) => log.filter((l) => l[0] === what && l[1] === n);
  assert.equal(of('start', '1').length, 1, `task 1 ran once:\n${log.join('\n')}`);
  assert.equal(of('end', '1').length, 1, 'task 1 finished');
  assert.equal(of('end', '1')[0]?.[2], of('start', '1')[0]?.[2], 'in the worker process that started it');
  assert.equal(of('start', '2').length, 1, 'task 2 ran once');
  assert.notEqual(of('start', '2')[0]?.[2], of('start', '1')[0]?.[2], 'task 2 ran in the new worker');
});

test('a clock is redeployed stop-then-start: never two writers at once', { timeout: 300_000 }, async (t) => {
  const cluster = await startCluster(t, { agents: 2 });
  const app = 'ticker';
  const clockLog = join(cluster.appDir, 'clock.log');
  await createQueueApp(cluster, app, { CLOCK_LOG: clockLog });
  await cliOk(cluster, ['deploy', QUEUE_APP, '-a', app]);
  await cliOk(cluster, ['scale', 'clock=1', 'worker=0', '-a', app]);
  await waitForPs(cluster, app, 'clock.1 up', (r) => r.some((x) => x.id === 'clock.1' && x.state === 'up'));
  await waitFor('the clock to tick', () => lines(clockLog).filter((l) => l[0] === 'tick').length >= 2, 30_000);
  const crowded = await cluster.cli(['scale', 'clock=2', '-a', app]);
  assert.notEqual(crowded.code, 0);
  assert.match(crowded.stderr, /clock is a singleton .* runs 0 or 1 instances/);

  const out = await cliOk(cluster, ['deploy', QUEUE_APP, '-a', app]);
  assert.match(out, /clock is a singleton: waiting for clock\.1 \(v1\)/);
  await waitFor('the new clock to tick', () => clockLives(clockLog).length === 2 && lines(clockLog).at(-1)?.[0] === 'tick', 30_000);
  assertOneWriterAtATime(clockLog);
  assert.equal(lines(clockLog).filter((l) => l[0] === 'stop').length, 1, 'the old clock stopped on its SIGTERM');
});

/** A network namespace joined to the host by a veth pair; removed after the test. */
async function netns(
  t: Pick<TestContext, 'after'>,
  name: string,
  subnet: number,
): Promise<{ hostIp: string; nsIp: string; cut(): Promise<void>; heal(): Promise<void> }> {
  const ip = (...args: string[]) => run('ip', args);
  const host = `${name}-h`;
  const peer = `${name}-n`;
  const hostIp = `10.231.${subnet}.1`;
  const nsIp = `10.231.${subnet}.2`;
  // Removed last: with the veth gone first, the coordinator's and agents' sockets on its addresses
  // would never see their FINs, and the test process would not exit.
  t.after(async () => {
    await ip('link', 'del', host).catch(() => undefined);
    await ip('netns', 'del', name).catch(() => undefined);
  });
  await ip('netns', 'add', name);
  await ip('link', 'add', host, 'type', 'veth', 'peer', 'name', peer);
  await ip('link', 'set', peer, 'netns', name);
  await ip('addr', 'add', `${hostIp}/24`, 'dev', host);
  await ip('link', 'set', host, 'up');
  await ip('netns', 'exec', name, 'ip', 'addr', 'add', `${nsIp}/24`, 'dev', peer);
  await ip('netns', 'exec', name, 'ip', 'link', 'set', peer, 'up');
  await ip('netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up');
  // A cut drops every packet both ways silently (blackhole routes: no RST, no ICMP), as a
  // partition does; the links and addresses stay.
  return {
    hostIp,
    nsIp,
    cut: async () => {
      await ip('route', 'add', 'blackhole', `${nsIp}/32`);
      await ip('netns', 'exec', name, 'ip', 'route', 'add', 'blackhole', `${hostIp}/32`);
    },
    heal: async () => {
      await ip('route', 'del', 'blackhole', `${nsIp}/32`);
      await ip('netns', 'exec', name, 'ip', 'route', 'del', 'blackhole', `${hostIp}/32`);
    },
  };
}

/** Time (Unix ms) of the first pino line of `log` at or after `after` whose msg matches, or null. */
function logTime(log: string, msg: RegExp, after: number): number | null {
  for (const line of log.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const entry = JSON.parse(line) as { time?: number; msg?: string };
      if (typeof entry.time === 'number' && entry.time >= after && msg.test(entry.msg ?? '')) return entry.time;
    } catch {
      // A partial line.
    }
  }
  return null;
}

/** `hangar agents --json`, as a map of name to state. */
async function agentStates(cluster: Cluster): Promise<Map<string, string>> {
  const agents = JSON.parse(await cliOk(cluster, ['agents', '--json'])) as { name: string; state: string }[];
  return new Map(agents.map((a) => [a.name, a.state]));
}

test(
  'a clock on an agent cut off from the coordinator: stopped there after the lease, started elsewhere only then, never two writers',
  { timeout: 300_000 },
  async (t) => {
    // node:test runs after-hooks in the order they were added: the namespace's go after the
    // cluster's and the isolated agent's.
    const later: (() => Promise<void>)[] = [];
    const ns = await netns({ after: (fn: () => Promise<void>) => later.push(fn) }, 'hgr-stops', 77);
    let cluster: Cluster;
    try {
      cluster = await startCluster(t, { agents: 0, coordinator: { grpcHost: ns.hostIp, heartbeatIntervalMs: 1000 } });
    } catch (err) {
      for (const fn of later) await fn();
      throw err;
    }
    const app = 'ticker';
    const clockLog = join(cluster.appDir, 'clock.log');
    const leaseS = 5;

    // The agent in the namespace, a process of its own (it dials the coordinator over the veth).
    const nsDir = join(cluster.dir, 'agent-isolated');
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        'hgr-stops',
        process.execPath,
        HANGAR_BIN,
        'agent',
        '--coordinator',
        cluster.coordinator.grpcAddress,
        '--join-token',
        cluster.coordinator.joinToken,
        '--data-dir',
        nsDir,
        '--name',
        'isolated',
        '--router-port',
        '0',
        '--advertise',
        ns.nsIp,
        '--singleton-lease',
        String(leaseS),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let agentOut = '';
    child.stdout.on('data', (d: Buffer) => (agentOut += d.toString()));
    child.stderr.on('data', (d: Buffer) => (agentOut += d.toString()));
    t.after(async () => {
      // Its instances first (an agent that exits leaves them running), then the agent.
      for (const name of existsSync(join(nsDir, 'instances')) ? readdirSync(join(nsDir, 'instances')) : []) {
        const pidfile = join(nsDir, 'instances', name, 'pid.json');
        if (!existsSync(pidfile)) continue;
        try {
          process.kill(-(JSON.parse(readFileSync(pidfile, 'utf8')) as { pid: number }).pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
    });
    t.after(async () => {
      for (const fn of later) await fn();
    });
    await waitFor('the isolated agent up', async () => (await agentStates(cluster)).get('isolated') === 'up', 60_000);

    await createQueueApp(cluster, app, { CLOCK_LOG: clockLog });
    await cliOk(cluster, ['deploy', QUEUE_APP, '-a', app]);
    await cliOk(cluster, ['scale', 'clock=1', 'worker=0', '-a', app]);
    await waitForPs(cluster, app, 'clock.1 up on isolated', (r) =>
      r.some((x) => x.id === 'clock.1' && x.state === 'up' && x.agent === 'isolated'),
    );
    await waitFor('the clock to tick', () => lines(clockLog).filter((l) => l[0] === 'tick').length >= 2, 30_000);
    // Somewhere to move to, on the host side.
    await cluster.startAgent('host');
    await waitFor('the host agent up', async () => (await agentStates(cluster)).get('host') === 'up', 60_000);

    const cutAt = Date.now();
    await ns.cut();
    await waitFor(
      'the coordinator to see the isolated agent down',
      async () => (await agentStates(cluster)).get('isolated') === 'down',
      60_000,
      100,
    );
    await waitFor('the isolated agent to notice', () => logTime(agentOut, /^lost the coordinator/, cutAt), 60_000, 100);
    await waitFor('the isolated clock to stop after its lease', () => lines(clockLog).some((l) => l[0] === 'stop'), 60_000, 100);
    await waitForPs(
      cluster,
      app,
      'clock.1 up on host',
      (r) => r.some((x) => x.id === 'clock.1' && x.state === 'up' && x.agent === 'host'),
      90_000,
    );
    await waitFor('the new clock to tick', () => clockLives(clockLog).length === 2 && lines(clockLog).at(-1)?.[0] === 'tick', 30_000);
    assertOneWriterAtATime(clockLog);
    const coordinatorLog = readFileSync(join(cluster.dir, 'coordinator.log'), 'utf8');
    const since = (at: number | null) => (at === null ? 'never' : `${((at - cutAt) / 1000).toFixed(1)} s`);
    const [first, second] = clockLives(clockLog);
    const timings = [
      `coordinator noticed the cut in ${since(logTime(coordinatorLog, /^agent disconnected/, cutAt))}`,
      `the agent in ${since(logTime(agentOut, /^lost the coordinator/, cutAt))}`,
      `its clock stopped at ${since(first ? first.to * 1000 : null)} (lease ${leaseS} s)`,
      `the new clock started at ${since(second ? second.from * 1000 : null)}`,
    ];

    const healAt = Date.now();
    await ns.heal();
    await waitFor('the isolated agent back up', async () => (await agentStates(cluster)).get('isolated') === 'up', 60_000, 100);
    const back = logTime(agentOut, /^connected to the coordinator/, healAt);
    timings.push(`reconnected ${back === null ? '?' : ((back - healAt) / 1000).toFixed(1)} s after the link healed`);
    // Back, it does not start its old copy again: still one clock, on the host.
    await waitFor(
      'a few more ticks',
      () => lines(clockLog).filter((l) => l[0] === 'tick').length >= clockLives(clockLog).length + 6,
      30_000,
    );
    assertOneWriterAtATime(clockLog);
    assert.equal(clockLives(clockLog).length, 2, 'no third clock');
    const rows = await ps(cluster, app);
    assert.deepEqual(
      rows.filter((r) => r.type === 'clock').map((r) => r.agent),
      ['host'],
    );
    console.log(`partition: ${timings.join('; ')}`);
  },
);
