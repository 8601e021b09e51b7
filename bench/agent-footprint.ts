/**
 * The agent's own footprint: its resident memory and idle CPU while it supervises 20 processes,
 * with production intervals (heartbeats every 2 s, metrics every 10 s, router up).
 *
 *   npm run bench:agent                    (measures 60 s)
 *   node dist/bench/agent-footprint.js --measure-s 120 --instances 20
 *
 * A coordinator runs in this process; the agent is the real `hangar agent` command in a child
 * process. The app is 20 small Python sleepers (a Procfile worker), deployed and scaled with the
 * real CLI. CPU is read from /proc/PID/stat (utime + stime) over the measuring window.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import type { PsRow } from '../common/api-types.js';
import { startCoordinator } from '../coordinator/coordinator.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HANGAR = join(ROOT, 'bin', 'hangar.js');

function run(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [HANGAR, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
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

async function memory(pid: number): Promise<{ rssMb: number; peakMb: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  return { rssMb: kb('VmRSS') / 1024, peakMb: kb('VmHWM') / 1024 };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'measure-s': { type: 'string', default: '60' },
      instances: { type: 'string', default: '20' },
      // V8 flags for the agent process, e.g. --max-semi-space-size=1 (a smaller young generation).
      'node-options': { type: 'string', default: '' },
    },
  });
  const measureS = Number(values['measure-s']);
  const count = Number(values.instances);
  const dir = await mkdtemp(join(tmpdir(), 'hangar-bench-agent-'));
  // As root, apps run as the `hangar` user: it must reach the agents' data dirs below this one.
  await chmod(dir, 0o711);
  const coordinator = await startCoordinator(
    { dataDir: join(dir, 'coordinator'), httpPort: 0, httpHost: '127.0.0.1', grpcPort: 0, grpcHost: '127.0.0.1', graceSeconds: 2 },
    { logger: pino({ level: 'warn' }) },
  );
  const env = { HANGAR_URL: coordinator.url, HANGAR_TOKEN: coordinator.adminToken, HANGAR_CREDENTIALS: join(dir, 'none.json') };
  let agent: ChildProcess | null = null;
  let pids: number[] = [];
  try {
    agent = spawn(
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
        '--advertise',
        '127.0.0.1',
      ],
      {
        env: { ...process.env, HANGAR_JOIN_TOKEN: coordinator.joinToken, HANGAR_LOG_LEVEL: 'warn', NODE_OPTIONS: values['node-options'] },
        stdio: ['ignore', 'ignore', 'inherit'],
      },
    );
    const agentPid = agent.pid as number;

    const src = join(dir, 'src');
    await mkdir(src);
    await writeFile(join(src, 'Procfile'), 'worker: python3 -c "import time; time.sleep(10**9)"\n');
    const must = async (args: string[]) => {
      const r = await run(args, env);
      if (r.code !== 0) throw new Error(`hangar ${args.join(' ')} failed:\n${r.out}`);
      return r.out;
    };
    await must(['apps:create', 'sleepers']);
    await must(['deploy', src, '-a', 'sleepers']);
    await must(['scale', `worker=${count}`, '-a', 'sleepers']);
    const deadline = Date.now() + 120_000;
    for (;;) {
      const rows = JSON.parse(await must(['ps', '-a', 'sleepers', '--json'])) as PsRow[];
      if (rows.filter((r) => r.state === 'up').length === count) {
        pids = rows.flatMap((r) => (r.pid ? [r.pid] : []));
        break;
      }
      if (Date.now() > deadline) throw new Error(`${count} workers did not come up`);
      await new Promise((r) => setTimeout(r, 500));
    }
    // Settle: startup work (builds, spawns) is over before measuring the idle agent.
    await new Promise((r) => setTimeout(r, 15_000));
    const t0 = await cpuTicks(agentPid);
    const start = performance.now();
    let rssMax = 0;
    for (let waited = 0; waited < measureS; waited += 5) {
      await new Promise((r) => setTimeout(r, 5000));
      rssMax = Math.max(rssMax, (await memory(agentPid)).rssMb);
    }
    const seconds = (performance.now() - start) / 1000;
    const cpuPct = (((await cpuTicks(agentPid)) - t0) / 100 / seconds) * 100;
    const mem = await memory(agentPid);
    console.log(
      `agent-footprint: ${count} supervised processes, heartbeats every 2 s, metrics every 10 s, measured ${seconds.toFixed(0)} s, NODE_OPTIONS="${values['node-options']}"`,
    );
    console.log(`agent RSS now:          ${mem.rssMb.toFixed(1)} MB (goal <= 60 MB)`);
    console.log(`agent RSS max (window): ${rssMax.toFixed(1)} MB`);
    console.log(`agent RSS peak (VmHWM, incl. startup and build): ${mem.peakMb.toFixed(1)} MB`);
    console.log(`agent idle CPU:         ${cpuPct.toFixed(2)}% of one core (goal <= 1%)`);
    await must(['scale', 'worker=0', '-a', 'sleepers']);
    for (let i = 0; i < 60; i++) {
      const rows = JSON.parse(await must(['ps', '-a', 'sleepers', '--json'])) as PsRow[];
      if (rows.length === 0) break;
      await new Promise((r) => setTimeout(r, 500));
    }
  } finally {
    agent?.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 1000));
    for (const pid of pids) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // Already stopped.
      }
    }
    await coordinator.close();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
