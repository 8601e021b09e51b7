/**
 * Log pipeline benchmark: lines written to a file → one agent's tailer, spool and shipper →
 * gRPC → the coordinator's log store (SQLite) → live websocket. Three processes, as in real life:
 * this one runs the coordinator and a websocket client; it spawns an agent (the log pipeline of
 * `hangar agent`: LogShipper over a CoordinatorLink) and a writer that appends to the tailed file.
 *
 *   npm run bench:logs [-- --lines 1000000 --rate 10000 --seconds 10]
 *
 * Prints, each beside its goal (met / missed; a miss exits non-zero):
 * - flood: end-to-end lines/s for a burst of `--lines` — from the first line written to the
 *   moment the last one is both delivered to the live websocket follower and readable from the
 *   store (`GET /v1/apps/APP/logs`); every line must arrive within `--timeout-s`. Goal ≥ 150,000.
 * - paced: p99 latency from write to websocket delivery at `--rate` lines/s over every line
 *   written; a line that never arrives counts as the timeout. Goal < 250 ms.
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
import { Goals } from './goals.js';

const THROUGHPUT_GOAL = 150_000;
const P99_GOAL_MS = 250;

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
    'timeout-s': { type: 'string', default: '30' },
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
      for (let k = 0; k < 5000 && i < total; k++) chunk += `flood ${++i} ${t} ${PAD}\n`;
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
        chunk += `paced ${++i} ${nowMs().toFixed(3)} ${PAD}\n`;
      }
      if (chunk) writeSync(fd, chunk);
      await new Promise((r) => setTimeout(r, 1));
    }
    // The main process counts every paced line; the ones that never arrive count as the timeout.
    await new Promise<void>((resolve) =>
      process.send ? process.send({ type: 'written', n: i }, undefined, {}, () => resolve()) : resolve(),
    );
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

/**
 * Websocket client: counts lines, records write → delivery latency of each paced line (by its
 * number, so a line lost or delivered twice is seen), reports over IPC.
 */
function client(): void {
  let delivered = 0;
  let missed = 0;
  let lastDeliveredAt = 0;
  /** Latency of paced line i at [i - 1]; NaN until it arrives. */
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
    for (const l of m.lines) {
      if (!l.line.startsWith('paced ')) continue;
      const [, n, t] = l.line.split(' ');
      const i = Number(n) - 1;
      if (i >= 0 && Number.isNaN(latencies[i] ?? Number.NaN)) latencies[i] = now - Number(t);
    }
  });
  const progress = setInterval(() => process.send?.({ type: 'progress', delivered, missed, lastDeliveredAt }), 20);
  process.on('message', (m: { type: string; written?: number; timeoutMs?: number }) => {
    if (m.type === 'record') {
      latencies = [];
    } else if (m.type === 'report') {
      const written = m.written ?? 0;
      const timeoutMs = m.timeoutMs ?? 0;
      const all: number[] = [];
      let lost = 0;
      for (let i = 0; i < written; i++) {
        const v = latencies[i];
        if (v === undefined || Number.isNaN(v)) {
          lost++;
          all.push(timeoutMs);
        } else all.push(v);
      }
      all.sort((a, b) => a - b);
      process.send?.({
        type: 'latency',
        n: written,
        lost,
        p50: percentile(all, 50),
        p99: percentile(all, 99),
        max: all[all.length - 1] ?? Number.NaN,
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
  lost: number;
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

    const goals = new Goals();
    const timeoutMs = Number(args['timeout-s']) * 1000;
    /** The number of the newest line readable from the store (`GET /v1/apps/bench/logs?n=1`), for lines tagged `tag`. */
    const lastStored = async (tag: string): Promise<number> => {
      const res = await request(`${coordinator.url}/v1/apps/bench/logs?n=1`, {
        headers: { authorization: `Bearer ${coordinator.adminToken}` },
      });
      const body = (await res.body.json()) as { lines?: { line: string }[] };
      const line = body.lines?.at(-1)?.line ?? '';
      return line.startsWith(`${tag} `) ? Number(line.split(' ')[1]) : 0;
    };
    /** Waits until `target` lines are on the websocket and line `last` of `tag` is stored; returns when both held (NaN on timeout). */
    const waitDelivered = async (target: number, tag: string, last: number, deadline: number): Promise<number> => {
      let storedAt = Number.NaN;
      while (Date.now() < deadline) {
        if (Number.isNaN(storedAt) && (await lastStored(tag)) >= last) storedAt = nowMs();
        if (progress.delivered >= target && !Number.isNaN(storedAt)) return Math.max(storedAt, progress.lastDeliveredAt);
        if (progress.missed > 0) return Number.NaN;
        await new Promise((r) => setTimeout(r, 25));
      }
      return Number.NaN;
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
    const doneAt = await waitDelivered(lines, 'flood', lines, Date.now() + timeoutMs + (writtenAt - floodStart));
    const seconds = (doneAt - floodStart) / 1000;
    const cpu = {
      coordinator: cpuSeconds(undefined) - cpuBefore.coordinator,
      main: cpuSeconds(undefined, true) - cpuBefore.main,
      agent: cpuSeconds(agentChild.pid) - cpuBefore.agent,
      client: cpuSeconds(wsChild.pid) - cpuBefore.client,
    };
    console.log(
      `flood: ${lines} lines written in ${((writtenAt - floodStart) / 1000).toFixed(2)} s; ` +
        `${progress.delivered} delivered on the websocket${progress.missed ? ` (${progress.missed} skipped as slow-client)` : ''}` +
        (Number.isNaN(doneAt)
          ? `; ${progress.missed > 0 ? 'stopped waiting once the follower was skipped lines' : `not all delivered and stored within ${timeoutMs / 1000} s`} — what did arrive came at ` +
            `${Math.round(progress.delivered / ((progress.lastDeliveredAt - floodStart) / 1000)).toLocaleString('en-US')} lines/s ` +
            `(${progress.delivered} lines on the websocket by ${((progress.lastDeliveredAt - floodStart) / 1000).toFixed(2)} s; the goal figure below counts a timeout as 0)`
          : `, all stored and delivered in ${seconds.toFixed(2)} s`),
    );
    console.log(
      `flood CPU: coordinator ${cpu.coordinator.toFixed(2)} s (its main thread ${cpu.main.toFixed(2)} s: ` +
        `${Math.round(lines / cpu.main).toLocaleString('en-US')} lines per CPU-second), agent ${cpu.agent.toFixed(2)} s, websocket client ${cpu.client.toFixed(2)} s ` +
        `(${Math.round(lines / cpu.coordinator).toLocaleString('en-US')} lines per coordinator CPU-second, ` +
        `${Math.round(lines / cpu.agent).toLocaleString('en-US')} per agent CPU-second); load average ${loadavg()[0]?.toFixed(2)}`,
    );
    goals.check({
      name: `end to end, ${lines.toLocaleString('en-US')}-line burst, capture → stored and on a live websocket`,
      value: Number.isNaN(doneAt) ? 0 : lines / seconds,
      unit: 'lines/s',
      op: '>=',
      goal: THROUGHPUT_GOAL,
      digits: 0,
    });
    goals.check({
      name: 'burst lines lost or skipped',
      value: Math.max(0, lines - progress.delivered),
      unit: 'lines',
      op: '<=',
      goal: 0,
      digits: 0,
    });

    // 2. Latency at a steady rate.
    const rate = Number(args.rate);
    const secs = Number(args.seconds);
    const base = progress.delivered;
    wsChild.send({ type: 'record' });
    const w2 = run('writer', ['--file', file, '--mode', 'paced', '--rate', String(rate), '--seconds', String(secs)]);
    children.push(w2);
    let written = 0;
    w2.on('message', (m: { type: string; n: number }) => {
      if (m.type === 'written') written = m.n;
    });
    await exited(w2);
    if (written === 0) throw new Error('the paced writer did not say how many lines it wrote');
    await waitDelivered(base + written, 'paced', written, Date.now() + timeoutMs);
    wsChild.send({ type: 'report', written, timeoutMs });
    const deadline = Date.now() + 10_000;
    while (!latency && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const l = latency as Latency | null;
    if (!l) throw new Error('the websocket client did not report');
    console.log(
      `latency at ${rate.toLocaleString('en-US')} lines/s for ${secs} s (${l.n} lines written, ${l.lost} never arrived and count as ${timeoutMs} ms; write → websocket): ` +
        `p50 ${l.p50.toFixed(1)} ms, max ${l.max.toFixed(1)} ms`,
    );
    goals.check({
      name: `p99 write → websocket at ${rate.toLocaleString('en-US')} lines/s`,
      value: l.p99,
      unit: 'ms',
      op: '<',
      goal: P99_GOAL_MS,
    });
    goals.check({ name: 'paced lines lost', value: l.lost, unit: 'lines', op: '<=', goal: 0, digits: 0 });
    wsChild.send({ type: 'stop' });
    goals.finish('logs');
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
