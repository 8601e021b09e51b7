import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pino } from 'pino';
import { WebSocket } from 'ws';
import type { LogStreamMessage } from '../../common/api-types.js';
import { systemClock } from '../../common/clock.js';
import { LogHub } from '../../coordinator/logs/log-hub.js';
import { LogStore, type IncomingLogLine } from '../../coordinator/logs/log-store.js';
import { LogStreamServer } from '../../coordinator/logs/log-stream-server.js';
import { Store } from '../../coordinator/store/store.js';
import { tempDir, waitFor } from '../helpers/cluster.js';
import { randomBytes } from 'node:crypto';
import { SecretBox } from '../../common/secret-box.js';
import { Authenticator, authorizeUpgrade } from '../../coordinator/api/auth.js';

const TOKEN = 'test-token';

/** The real token check, with TOKEN as a `read` token. */
function tokenAuth(store: Store): Authenticator {
  const auth = new Authenticator({ store, clock: systemClock });
  auth.seed(TOKEN, 'read', 'test', 'test_token_seeded');
  return auth;
}

test('a slow websocket client is told what it missed and never slows ingestion or a fast client', { timeout: 120_000 }, async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'hangar.db');
  const store = new Store({ path, secrets: new SecretBox(randomBytes(32)) });
  store.createApp('shop', Date.now());
  const logs = new LogStore({ path });
  const hub = new LogHub();
  const streams = new LogStreamServer({
    logs,
    hub,
    appExists: (app) => store.getApp(app) !== null,
    authorize: (req, socket) => authorizeUpgrade(tokenAuth(store), req, socket, 'read') !== null,
    clock: systemClock,
    logger: pino({ level: 'silent' }),
    highWaterBytes: 256 * 1024,
    slowCutoffMs: 60_000,
  });
  const server = createServer((_req, res) => res.end());
  server.on('upgrade', (req, socket, head: Buffer) => streams.handleUpgrade(req, socket, head));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    streams.close();
    await new Promise((resolve) => server.close(resolve));
    logs.close();
    store.close();
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const connect = (onMessage: (m: LogStreamMessage) => void) =>
    new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/apps/shop/logs/stream?n=0`, { headers: { authorization: `Bearer ${TOKEN}` } });
      ws.on('message', (d: Buffer) => onMessage(JSON.parse(d.toString()) as LogStreamMessage));
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    });

  let fastLines = 0;
  const fast = await connect((m) => {
    if ('lines' in m) fastLines += m.lines.length;
  });
  const slowMessages: LogStreamMessage[] = [];
  const slow = await connect((m) => slowMessages.push(m));
  t.after(() => {
    fast.terminate();
    slow.terminate();
  });
  await waitFor('both clients live', () => slowMessages.some((m) => 'live' in m));
  // The slow client stops reading: its socket buffers fill up.
  const socket = (slow as unknown as { _socket: { pause(): void; resume(): void } })._socket;
  socket.pause();

  const total = 200_000;
  const batch = 2000;
  const started = performance.now();
  let slowestBatchMs = 0;
  for (let seq = 1; seq <= total; seq += batch) {
    const lines: IncomingLogLine[] = [];
    for (let s = seq; s < seq + batch; s++) {
      lines.push({ seq: s, ts: Date.now(), app: 'shop', source: 'web.1', stream: 'stdout', line: `line ${s} ${'z'.repeat(80)}` });
    }
    const t0 = performance.now();
    hub.publish(logs.ingest('agent-1', 'e1', lines).inserted);
    slowestBatchMs = Math.max(slowestBatchMs, performance.now() - t0);
    // Let the sockets move, as between gRPC batches.
    await new Promise((r) => setImmediate(r));
  }
  const elapsed = performance.now() - started;
  assert.equal(logs.count(), total);
  await waitFor('the fast client to get every line', () => fastLines === total, 30_000);

  socket.resume();
  await waitFor('the slow client to be told what it missed', () => slowMessages.some((m) => 'missed' in m), 30_000);
  const received = slowMessages.reduce((n, m) => n + ('lines' in m ? m.lines.length : 0), 0);
  const missed = slowMessages.reduce((n, m) => n + ('missed' in m ? m.missed : 0), 0);
  assert.ok(missed > 0, 'lines were skipped for the slow client');
  assert.equal(received + missed, total, `received ${received} + missed ${missed}`);
  t.diagnostic(
    `ingested ${total} lines in ${Math.round(elapsed)} ms (slowest batch ${Math.round(slowestBatchMs)} ms); slow client missed ${missed}`,
  );
});

test('the log stream refuses a missing token and an unknown app', { timeout: 30_000 }, async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'hangar.db');
  const store = new Store({ path, secrets: new SecretBox(randomBytes(32)) });
  const logs = new LogStore({ path });
  const streams = new LogStreamServer({
    logs,
    hub: new LogHub(),
    appExists: (app) => store.getApp(app) !== null,
    authorize: (req, socket) => authorizeUpgrade(tokenAuth(store), req, socket, 'read') !== null,
    clock: systemClock,
    logger: pino({ level: 'silent' }),
  });
  const server = createServer((_req, res) => res.end());
  server.on('upgrade', (req, socket, head: Buffer) => streams.handleUpgrade(req, socket, head));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    streams.close();
    await new Promise((resolve) => server.close(resolve));
    logs.close();
    store.close();
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const status = (headers: Record<string, string>, app = 'shop') =>
    new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/apps/${app}/logs/stream`, { headers });
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => reject(new Error('accepted')));
      ws.on('error', () => undefined);
    });
  assert.equal(await status({}), 401);
  assert.equal(await status({ authorization: 'Bearer wrong' }), 401);
  assert.equal(await status({ authorization: `Bearer ${TOKEN}` }, 'nope'), 404);
});
