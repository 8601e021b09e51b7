/**
 * The agent's own footprint as a user lives it: the real `hangar agent` (a child process) supervises
 * 10 gunicorn web instances of the Django test app (health-checked, behind its router, with
 * traffic through the router) and 10 workers that each log two lines a second, at production
 * intervals (the coordinator's defaults). Measured after the rollout settles:
 *
 * - RSS now (end of the window), RSS max over the window (sampled every second), and the peak
 *   (VmHWM, start-up and the build included), each against the goal ≤ 60 MB;
 * - CPU of the agent process (utime + stime from /proc) over the window, goal ≤ 1% of one core.
 *
 * The router runs as a process of its own (it outlives the agent): its RSS and CPU are printed
 * beside the agent's, and the two together, without a goal of their own.
 *
 * Exits non-zero when a goal is missed.
 *
 *   npm run bench:agent                                   (measures 60 s)
 *   node dist/bench/agent-footprint.js --measure-s 120 --web 10 --workers 10 --rps 10
 *   node dist/bench/agent-footprint.js --node-args="--cpu-prof --cpu-prof-dir=/tmp/prof"
 *
 * A coordinator runs in this process; the app is deployed and scaled with the real CLI.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { request } from 'undici';
import type { AgentView, PsRow } from '../common/api-types.js';
import { startCoordinator } from '../coordinator/coordinator.js';
import { Goals } from './goals.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HANGAR = join(ROOT, 'bin', 'hangar.js');
const APP = 'footprint';
const RSS_GOAL_MB = 60;
const CPU_GOAL_PCT = 1;

function run(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [HANGAR, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

async function cpuTicks(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

/** CPU ticks per thread name (main thread, V8 GC helpers, libuv's pool), from /proc/PID/task. */
async function threadTicks(pid: number): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    try {
      const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = tid === String(pid) ? 'main' : stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(name, (out.get(name) ?? 0) + Number(f[11]) + Number(f[12]));
    } catch {
      // The thread ended.
    }
  }
  return out;
}

async function memory(pid: number): Promise<{ rssMb: number; peakMb: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  return { rssMb: kb('VmRSS') / 1024, peakMb: kb('VmHWM') / 1024 };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'measure-s': { type: 'string', default: '60' },
      web: { type: 'string', default: '10' },
      workers: { type: 'string', default: '10' },
      // Requests per second through the agent's router during the window.
      rps: { type: 'string', default: '10' },
      // Node flags for the agent process, e.g. --cpu-prof --cpu-prof-dir=DIR or --heapsnapshot-signal=SIGUSR2.
      'node-options': { type: 'string', default: '' },
      // Flags Node takes only on its command line (not in NODE_OPTIONS), e.g. --cpu-prof --cpu-prof-dir=DIR.
      'node-args': { type: 'string', default: '' },
    },
  });
  const measureS = Number(values['measure-s']);
  const web = Number(values.web);
  const workers = Number(values.workers);
  const rps = Number(values.rps);
  const dir = await mkdtemp(join(tmpdir(), 'hangar-bench-agent-'));
  // As root, apps run as the `hangar` user: it must reach the agents' data dirs below this one.
  await chmod(dir, 0o711);
  const appFiles = join(dir, 'app-files');
  await mkdir(appFiles, { mode: 0o1777 });
  await chmod(appFiles, 0o1777);
  const coordinator = await startCoordinator(
    { dataDir: join(dir, 'coordinator'), httpPort: 0, httpHost: '127.0.0.1', grpcPort: 0, grpcHost: '127.0.0.1', graceSeconds: 2 },
    { logger: pino({ level: 'warn' }) },
  );
  const env = { HANGAR_URL: coordinator.url, HANGAR_TOKEN: coordinator.adminToken, HANGAR_CREDENTIALS: join(dir, 'none.json') };
  let agent: ChildProcess | null = null;
  let pids: number[] = [];
  const must = async (args: string[]) => {
    const r = await run(args, env);
    if (r.code !== 0) throw new Error(`hangar ${args.join(' ')} failed:\n${r.out}`);
    return r.out;
  };
  const goals = new Goals();
  try {
    agent = spawn(
      process.execPath,
      [
        ...values['node-args'].split(' ').filter(Boolean),
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
        env: { ...process.env, HANGAR_JOIN_TOKEN: coordinator.joinToken, HANGAR_LOG_LEVEL: 'warn', NODE_OPTIONS: values['node-options'] },
        stdio: ['ignore', 'ignore', 'inherit'],
      },
    );
    const agentPid = agent.pid as number;

    // The Django test app: gunicorn with one sync worker per web instance (20 processes fit a
    // small machine), its access log on; the worker prints a line every 0.5 s.
    const src = join(dir, 'src');
    await cp(join(ROOT, 'test', 'fixtures', 'django-app'), src, { recursive: true });
    await writeFile(
      join(src, 'Procfile'),
      'web: gunicorn mysite.wsgi --bind 0.0.0.0:$PORT --workers 1 --access-logfile -\nworker: python worker.py\nrelease: python manage.py migrate --noinput\n',
    );
    for (let i = 0; ; i++) {
      const up = (JSON.parse(await must(['agents', '--json'])) as AgentView[]).some((a) => a.state === 'up');
      if (up) break;
      if (i > 120) throw new Error('the agent did not connect');
      await sleep(500);
    }
    await must(['apps:create', APP]);
    await must(['config:set', `DATABASE_URL=sqlite:///${join(appFiles, 'footprint.sqlite3')}`, '-a', APP]);
    await must(['deploy', src, '-a', APP]);
    await must(['scale', `web=${web}`, `worker=${workers}`, '-a', APP]);
    const deadline = Date.now() + 300_000;
    for (;;) {
      const rows = JSON.parse(await must(['ps', '-a', APP, '--json'])) as PsRow[];
      if (rows.filter((r) => r.state === 'up').length === web + workers) {
        pids = rows.flatMap((r) => (r.pid ? [r.pid] : []));
        break;
      }
      if (Date.now() > deadline) throw new Error(`${web} web and ${workers} workers did not come up`);
      await sleep(1000);
    }
    const agents = JSON.parse(await must(['agents', '--json'])) as AgentView[];
    const routerPort = agents[0]?.routerPort;
    if (!routerPort) throw new Error('the agent reports no router port');
    const routerPid = Number((await readFile(join(dir, 'agent', 'router', 'router.pid'), 'utf8')).trim());

    // Router traffic through the whole window (and the settle before it), paced at --rps.
    let traffic = true;
    let ok = 0;
    let failed = 0;
    const load = (async () => {
      const gap = 1000 / rps;
      let next = performance.now();
      while (traffic) {
        next += gap;
        try {
          const res = await request(`http://127.0.0.1:${routerPort}/`, { headers: { host: `${APP}.localhost` } });
          await res.body.dump();
          if (res.statusCode === 200) ok++;
          else failed++;
        } catch {
          failed++;
        }
        await sleep(Math.max(0, next - performance.now()));
      }
    })();

    // Settle: the rollout's work (builds, spawns, first health checks) is over before measuring.
    await sleep(15_000);
    ok = 0;
    failed = 0;
    const t0 = await cpuTicks(agentPid);
    const routerT0 = await cpuTicks(routerPid);
    const threads0 = await threadTicks(agentPid);
    const start = performance.now();
    let rssMax = 0;
    let routerRssMax = 0;
    let totalRssMax = 0;
    while (performance.now() - start < measureS * 1000) {
      await sleep(1000);
      const [a, r] = [(await memory(agentPid)).rssMb, (await memory(routerPid)).rssMb];
      rssMax = Math.max(rssMax, a);
      routerRssMax = Math.max(routerRssMax, r);
      totalRssMax = Math.max(totalRssMax, a + r);
    }
    const seconds = (performance.now() - start) / 1000;
    const cpuPct = (((await cpuTicks(agentPid)) - t0) / 100 / seconds) * 100;
    const routerCpuPct = (((await cpuTicks(routerPid)) - routerT0) / 100 / seconds) * 100;
    const mem = await memory(agentPid);
    const routerMem = await memory(routerPid);
    const threads1 = await threadTicks(agentPid);
    const byThread = [...threads1]
      .map(([name, ticks]) => [name, ((ticks - (threads0.get(name) ?? 0)) / 100 / seconds) * 100] as const)
      .filter(([, pct]) => pct > 0)
      .sort((a, b) => b[1] - a[1])
      .map(([name, pct]) => `${name} ${pct.toFixed(2)}%`)
      .join(', ');
    traffic = false;
    await load;
    console.log(
      `agent-footprint: ${web} gunicorn web instances (health-checked, ${rps} requests/s through the router: ${ok} ok, ${failed} failed) ` +
        `and ${workers} workers logging 2 lines/s each; coordinator's default intervals; measured ${seconds.toFixed(0)} s; NODE_OPTIONS="${values['node-options']}"; node args "${values['node-args']}"`,
    );
    console.log(`agent CPU by thread: ${byThread}`);
    goals.check({ name: 'agent RSS now', value: mem.rssMb, unit: 'MB', op: '<=', goal: RSS_GOAL_MB });
    goals.check({ name: 'agent RSS max over the window', value: rssMax, unit: 'MB', op: '<=', goal: RSS_GOAL_MB });
    goals.check({
      name: 'agent RSS peak (VmHWM, start-up and build included)',
      value: mem.peakMb,
      unit: 'MB',
      op: '<=',
      goal: RSS_GOAL_MB,
    });
    goals.check({ name: 'agent CPU over the window', value: cpuPct, unit: '% of a core', op: '<=', goal: CPU_GOAL_PCT, digits: 2 });
    const mb = (n: number) => `${n.toFixed(1)} MB`;
    console.log(
      `router process (pid ${routerPid}, no goal of its own): RSS now ${mb(routerMem.rssMb)}, max over the window ${mb(routerRssMax)}, ` +
        `peak ${mb(routerMem.peakMb)}; CPU ${routerCpuPct.toFixed(2)} % of a core`,
    );
    console.log(
      `agent + router: RSS now ${mb(mem.rssMb + routerMem.rssMb)}, max over the window ${mb(totalRssMax)}; ` +
        `CPU ${(cpuPct + routerCpuPct).toFixed(2)} % of a core`,
    );
    if (failed > 0) goals.check({ name: 'router requests failed', value: failed, unit: 'requests', op: '<=', goal: 0, digits: 0 });
    await must(['scale', 'web=0', 'worker=0', '-a', APP]);
    for (let i = 0; i < 60; i++) {
      const rows = JSON.parse(await must(['ps', '-a', APP, '--json'])) as PsRow[];
      if (rows.length === 0) break;
      await sleep(500);
    }
  } finally {
    agent?.kill('SIGTERM');
    if (agent && agent.exitCode === null) {
      const [code, signal] = await new Promise<[number | null, string | null]>((r) => agent?.once('exit', (c, s) => r([c, s])));
      if (code !== 0) console.log(`the agent exited with ${code ?? signal}`);
    }
    for (const pid of pids) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // Already stopped.
      }
    }
    await coordinator.close();
    await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  }
  goals.finish('agent-footprint');
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
