/**
 * Log pipeline benchmark: lines written to a file → one agent's tailer, spool and shipper →
 * gRPC → the coordinator's log store (SQLite) → live websocket. Three processes, as in real life:
 * this one runs the coordinator and a websocket client; it spawns an agent (the log pipeline of
 * `hangar agent`: LogShipper over a CoordinatorLink) and a writer that appends to the tailed file.
 *
 *   npm run bench:logs [-- --lines 1000000 --rate 10000 --seconds 10]
 *
 * Prints: end-to-end lines/s (first write → last line delivered on the websocket) for a flood of
 * `--lines`, and p50/p99 latency from write to websocket delivery at `--rate` lines/s.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { request } from 'undici';
import { WebSocket } from 'ws';
import { CoordinatorLink } from '../agent/link/coordinator-link.js';
import { LogShipper } from '../agent/logs/log-shipper.js';
import type { LogStreamMessage } from '../common/api-types.js';
import { systemClock } from '../common/clock.js';
import { parseJoinToken } from '../common/join-token.js';
import { startCoordinator } from '../coordinator/coordinator.js';

const SELF = fileURLToPath(import.meta.url);
const quiet = () => pino({ level: 'warn' }, pino.destination(2));
/** Milliseconds of the system's monotonic clock (CLOCK_MONOTONIC): the same in every process on this host. */
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

const { values: args } = parseArgs({
  options: {
    role: { type: 'string', default: 'main' },
    lines: { type: 'string', default: '1000000' },
    rate: { type: 'string', default: '10000' },
    seconds: { type: 'string', default: '10' },
    file: { type: 'string' },
    dir: { type: 'string' },
    coordinator: { type: 'string' },
    token: { type: 'string' },
    mode: { type: 'string' },
  },
});

const PAD = 'x'.repeat(60);

/** Writer: appends `bench <i> <writeMs> <pad>` lines, flat out or paced. */
async function writer(): Promise<void> {
  const fd = openSync(args.file ?? '', 'a');
  const total = Number(args.lines);
  if (args.mode === 'flood') {
    let i = 0;
    while (i < total) {
      let chunk = '';
      const t = nowMs().toFixed(3);
      for (let k = 0; k < 5000 && i < total; k++) chunk += `bench ${++i} ${t} ${PAD}\n`;
      writeSync(fd, chunk);
    }
  } else {
    const rate = Number(args.rate);
    const end = nowMs() + Number(args.seconds) * 1000;
    const start = nowMs();
    let i = 0;
    while (nowMs() < end) {
      // Catch up to where the rate says we should be, a millisecond at a time.
      const due = Math.floor(((nowMs() - start) / 1000) * rate);
      let chunk = '';
      while (i < due) {
        chunk += `bench ${++i} ${nowMs().toFixed(3)} ${PAD}\n`;
      }
      if (chunk) writeSync(fd, chunk);
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  closeSync(fd);
}

/** Agent: the log pipeline of `hangar agent`, tailing one file. */
function agent(): void {
  const logger = quiet();
  let link: CoordinatorLink | null = null;
  const shipper = new LogShipper({
    dir: args.dir ?? '',
    send: (batch) => link?.send({ logBatch: batch }) ?? false,
    clock: systemClock,
    logger,
  });
  shipper.start();
  shipper.tail({ path: args.file ?? '', app: 'bench', source: 'web.1', stream: 'stdout' });
  link = new CoordinatorLink({
    address: args.coordinator ?? '',
    joinToken: parseJoinToken(args.token ?? ''),
    identityPath: join(args.dir ?? '', 'identity.json'),
    name: 'bench-agent',
    clock: systemClock,
    logger,
    hello: () => ({
      name: 'bench-agent',
      advertiseAddress: '127.0.0.1',
      routerPort: 1,
      capacity: { cpus: 1, memoryMb: 1024, maxInstances: 0 },
      instances: [],
      version: 'bench',
      generation: 0,
      logEpoch: shipper.epoch,
      logAckedSeq: shipper.acked,
    }),
    onConnected: () => shipper.onConnected(),
    onDisconnected: () => shipper.onDisconnected(),
    onLogAck: (seq, epoch) => shipper.onAck(seq, epoch),
    onDesiredState: () => undefined,
  });
  link.start();
  process.on('SIGTERM', () => {
    link?.close();
    shipper.close();
    process.exit(0);
  });
}

/** Websocket client: counts lines, records write → delivery latency, reports over IPC. */
function client(): void {
  let delivered = 0;
  let missed = 0;
  let lastDeliveredAt = 0;
  let recording = false;
  let latencies: number[] = [];
  const ws = new WebSocket(`${args.coordinator ?? ''}/v1/apps/bench/logs/stream?n=0`, {
    headers: { authorization: `Bearer ${args.token ?? ''}` },
  });
  ws.on('message', (data: Buffer) => {
    const m = JSON.parse(data.toString()) as LogStreamMessage;
    if ('missed' in m) missed += m.missed;
    if ('live' in m) process.send?.({ type: 'open' });
    if (!('lines' in m)) return;
    const now = nowMs();
    delivered += m.lines.length;
    lastDeliveredAt = now;
    if (recording) for (const l of m.lines) latencies.push(now - Number(l.line.split(' ')[2]));
  });
  const progress = setInterval(() => process.send?.({ type: 'progress', delivered, missed, lastDeliveredAt }), 20);
  process.on('message', (m: { type: string }) => {
    if (m.type === 'record') {
      recording = true;
      latencies = [];
    } else if (m.type === 'report') {
      recording = false;
      latencies.sort((a, b) => a - b);
      process.send?.({
        type: 'latency',
        n: latencies.length,
        p50: percentile(latencies, 50),
        p99: percentile(latencies, 99),
        max: latencies[latencies.length - 1] ?? NaN,
      });
    } else if (m.type === 'stop') {
      clearInterval(progress);
      ws.close();
      process.disconnect?.();
    }
  });
}

interface Progress {
  delivered: number;
  missed: number;
  lastDeliveredAt: number;
}

interface Latency {
  n: number;
  p50: number;
  p99: number;
  max: number;
}

function run(role: string, extra: string[]): ChildProcess {
  return spawn(
    process.execPath,
    [
      ...(process.env.BENCH_CPU_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF_DIR}`] : []),
      SELF,
      '--role',
      role,
      ...extra,
    ],
    { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
  );
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', () => resolve())));
}

/** CPU seconds (user + system) a process (or with `mainThread`, its main thread) has used, from /proc (Linux). */
function cpuSeconds(pid: number | undefined, mainThread = false): number {
  try {
    const p = pid ?? process.pid;
    const stat = readFileSync(mainThread ? `/proc/${p}/task/${p}/stat` : `/proc/${p}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-bench-logs-'));
  const coordinator = await startCoordinator(
    { dataDir: join(dir, 'coordinator'), httpPort: 0, httpHost: '127.0.0.1', grpcPort: 0, grpcHost: '127.0.0.1' },
    { logger: quiet() },
  );
  const children: ChildProcess[] = [];
  try {
    await request(`${coordinator.url}/v1/apps`, {
      method: 'POST',
      headers: { authorization: `Bearer ${coordinator.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'bench' }),
    }).then((r) => r.body.text());

    // One websocket client, in its own process as real clients are.
    const progress: Progress = { delivered: 0, missed: 0, lastDeliveredAt: 0 };
    let latency: Latency | null = null;
    const wsChild = run('client', ['--coordinator', coordinator.url.replace(/^http/, 'ws'), '--token', coordinator.adminToken]);
    children.push(wsChild);
    await new Promise<void>((resolve) => {
      wsChild.on('message', (m: { type: string } & Partial<Progress> & Partial<Latency>) => {
        if (m.type === 'open') resolve();
        else if (m.type === 'progress') Object.assign(progress, m);
        else if (m.type === 'latency') latency = m as Latency;
      });
    });

    const file = join(dir, 'app.log');
    closeSync(openSync(file, 'a'));
    const agentChild = run('agent', [
      '--dir',
      join(dir, 'agent'),
      '--file',
      file,
      '--coordinator',
      coordinator.grpcAddress,
      '--token',
      coordinator.joinToken,
    ]);
    children.push(agentChild);
    await new Promise((r) => setTimeout(r, 1500));

    const waitDelivered = async (target: number, timeoutMs: number) => {
      const deadline = Date.now() + timeoutMs;
      while (progress.delivered + progress.missed < target && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    };

    // 1. Flood.
    const lines = Number(args.lines);
    const cpuBefore = {
      coordinator: cpuSeconds(undefined),
      main: cpuSeconds(undefined, true),
      agent: cpuSeconds(agentChild.pid),
      client: cpuSeconds(wsChild.pid),
    };
    const floodStart = nowMs();
    const w1 = run('writer', ['--file', file, '--mode', 'flood', '--lines', String(lines)]);
    children.push(w1);
    await exited(w1);
    const writtenAt = nowMs();
    await waitDelivered(lines, 300_000);
    const seconds = (progress.lastDeliveredAt - floodStart) / 1000;
    const cpu = {
      coordinator: cpuSeconds(undefined) - cpuBefore.coordinator,
      main: cpuSeconds(undefined, true) - cpuBefore.main,
      agent: cpuSeconds(agentChild.pid) - cpuBefore.agent,
      client: cpuSeconds(wsChild.pid) - cpuBefore.client,
    };
    console.log(
      `flood: ${lines} lines written in ${((writtenAt - floodStart) / 1000).toFixed(2)} s; ` +
        `${progress.delivered} delivered on the websocket${progress.missed ? ` (${progress.missed} skipped as slow-client)` : ''} ` +
        `in ${seconds.toFixed(2)} s: ${Math.round(progress.delivered / seconds).toLocaleString('en-US')} lines/s end to end`,
    );
    console.log(
      `flood CPU: coordinator ${cpu.coordinator.toFixed(2)} s (its main thread ${cpu.main.toFixed(2)} s: ` +
        `${Math.round(lines / cpu.main).toLocaleString('en-US')} lines per CPU-second), agent ${cpu.agent.toFixed(2)} s, websocket client ${cpu.client.toFixed(2)} s ` +
        `(${Math.round(lines / cpu.coordinator).toLocaleString('en-US')} lines per coordinator CPU-second, ` +
        `${Math.round(lines / cpu.agent).toLocaleString('en-US')} per agent CPU-second); load average ${loadavg()[0]?.toFixed(2)}`,
    );

    // 2. Latency at a steady rate.
    const rate = Number(args.rate);
    const secs = Number(args.seconds);
    const base = progress.delivered;
    wsChild.send({ type: 'record' });
    const w2 = run('writer', ['--file', file, '--mode', 'paced', '--rate', String(rate), '--seconds', String(secs)]);
    children.push(w2);
    await exited(w2);
    await waitDelivered(base + Math.floor(rate * secs * 0.99), 30_000);
    await new Promise((r) => setTimeout(r, 500));
    wsChild.send({ type: 'report' });
    const deadline = Date.now() + 10_000;
    while (!latency && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const l = latency as Latency | null;
    if (!l) throw new Error('the websocket client did not report');
    console.log(
      `latency at ${rate.toLocaleString('en-US')} lines/s for ${secs} s (${l.n} lines, write → websocket): ` +
        `p50 ${l.p50.toFixed(1)} ms, p99 ${l.p99.toFixed(1)} ms, max ${l.max.toFixed(1)} ms`,
    );
    wsChild.send({ type: 'stop' });
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    await Promise.all(children.map(exited));
    await coordinator.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

switch (args.role) {
  case 'writer':
    await writer();
    break;
  case 'agent':
    agent();
    break;
  case 'client':
    client();
    break;
  default:
    await main();
}
