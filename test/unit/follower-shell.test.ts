import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { pino } from 'pino';
import { request } from 'undici';
import { WebSocket, WebSocketServer } from 'ws';
import type { LeaderView } from '../../common/api-types.js';
import { FORWARDED_BY_HEADER, FollowerShell } from '../../coordinator/ha/follower-shell.js';
import { ensureCoordinatorTls } from '../../coordinator/security/certificate-authority.js';

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

/** A stand-in for the leader's API on loopback: records what reaches it, echoes websockets. */
async function fakeLeader(t: TestContext): Promise<{ url: string; seen: Seen[]; server: Server }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      if (req.url === '/v1/stream') {
        // Streamed in parts with a pause: the follower must pass each part on as it comes.
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('first\n');
        setTimeout(() => res.end('second\n'), 300);
        return;
      }
      const status = req.headers.authorization === 'Bearer good' ? 201 : 401;
      res.writeHead(status, { 'content-type': 'application/json', 'set-cookie': ['a=1', 'b=2'] });
      res.end(JSON.stringify(status === 201 ? { ok: true, got: body } : { code: 'UNAUTHORIZED', message: 'bad token' }));
    });
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    if (req.headers.authorization !== 'Bearer good') {
      socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (data) => ws.send(`echo:${(data as Buffer).toString()}`)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, server };
}

async function shell(t: TestContext, leader: () => LeaderView | null): Promise<{ url: string; shell: FollowerShell }> {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-follower-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const tls = await ensureCoordinatorTls(dir);
  const s = new FollowerShell({
    httpHost: '127.0.0.1',
    httpPort: 0,
    grpcHost: '127.0.0.1',
    grpcPort: 0,
    tls: { certChainPem: tls.certChainPem, keyPem: tls.keyPem },
    name: () => 'coord-b',
    version: 'test',
    leader,
    logger: pino({ level: 'silent' }),
  });
  await s.start();
  t.after(() => s.close());
  return { url: `http://127.0.0.1:${s.ports.httpPort}`, shell: s };
}

const leaderAt = (url: string): LeaderView => ({ name: 'coord-a', address: '127.0.0.1:1', url, epoch: 3, leaseExpiresAt: null });

test('a follower forwards API requests to the leader: method, path, body, token, status, headers; health stays its own', async (t) => {
  const leader = await fakeLeader(t);
  const { url } = await shell(t, () => leaderAt(leader.url));

  const answer = await request(`${url}/v1/apps/shop/config?x=1`, {
    method: 'PATCH',
    headers: { authorization: 'Bearer good', 'content-type': 'application/json' },
    body: JSON.stringify({ A: '1' }),
  });
  assert.equal(answer.statusCode, 201);
  assert.equal(answer.headers[FORWARDED_BY_HEADER], 'coord-b');
  assert.deepEqual(answer.headers['set-cookie'], ['a=1', 'b=2']);
  assert.deepEqual(await answer.body.json(), { ok: true, got: '{"A":"1"}' });
  const seen = leader.seen[0];
  assert.equal(seen?.method, 'PATCH');
  assert.equal(seen?.url, '/v1/apps/shop/config?x=1');
  assert.equal(seen?.headers.authorization, 'Bearer good');
  assert.equal(seen?.headers[FORWARDED_BY_HEADER], 'coord-b');
  assert.equal(seen?.headers['x-forwarded-for'], '127.0.0.1');

  // The leader's refusals come back as they are.
  const refused = await request(`${url}/v1/apps`, { headers: { authorization: 'Bearer bad' } });
  assert.equal(refused.statusCode, 401);
  assert.deepEqual(await refused.body.json(), { code: 'UNAUTHORIZED', message: 'bad token' });

  const health = await request(`${url}/v1/health`);
  assert.equal(health.statusCode, 200);
  assert.deepEqual(await health.body.json(), {
    ok: true,
    version: 'test',
    role: 'follower',
    name: 'coord-b',
    leader: leaderAt(leader.url),
  });
  assert.equal(leader.seen.length, 2, 'health is not forwarded');
});

test('a streamed answer passes through part by part', async (t) => {
  const leader = await fakeLeader(t);
  const { url } = await shell(t, () => leaderAt(leader.url));
  const answer = await request(`${url}/v1/stream`);
  const parts: { text: string; at: number }[] = [];
  const began = Date.now();
  for await (const chunk of answer.body) parts.push({ text: String(chunk), at: Date.now() - began });
  assert.equal(parts.map((p) => p.text).join(''), 'first\nsecond\n');
  assert.equal(parts[0]?.text, 'first\n', 'the first part arrived on its own, before the leader ended');
});

test('websockets are tunnelled to the leader both ways; a refused upgrade comes back as the leader said', async (t) => {
  const leader = await fakeLeader(t);
  const { url, shell: s } = await shell(t, () => leaderAt(leader.url));
  const ws = new WebSocket(`${url.replace('http', 'ws')}/v1/apps/shop/logs/stream`, { headers: { authorization: 'Bearer good' } });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const replies: string[] = [];
  const two = new Promise<void>((resolve) =>
    ws.on('message', (data) => {
      replies.push((data as Buffer).toString());
      if (replies.length === 2) resolve();
    }),
  );
  ws.send('one');
  ws.send('two');
  await two;
  assert.deepEqual(replies, ['echo:one', 'echo:two']);

  const refused = new WebSocket(`${url.replace('http', 'ws')}/v1/apps/shop/logs/stream`, { headers: { authorization: 'Bearer bad' } });
  const status = await new Promise<number>((resolve, reject) => {
    refused.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    refused.once('open', () => reject(new Error('opened')));
    refused.once('error', reject);
  });
  assert.equal(status, 401);

  // Closing the shell (this coordinator is about to lead) cuts the tunnels it holds.
  const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
  await s.close();
  await closed;
});

test('no leader, a leader out of reach, or a request forwarded once already: 503 NOT_LEADER naming the leader', async (t) => {
  let current: LeaderView | null = null;
  const { url } = await shell(t, () => current);
  const none = await request(`${url}/v1/apps`);
  assert.equal(none.statusCode, 503);
  const noneBody = (await none.body.json()) as { code: string; message: string; leader: string | null };
  assert.equal(noneBody.code, 'NOT_LEADER');
  assert.match(noneBody.message, /no leader is elected right now; try again in a few seconds/);

  // A port nothing listens on: the leader's address is stale.
  const gone = createServer();
  await new Promise<void>((resolve) => gone.listen(0, '127.0.0.1', resolve));
  const goneUrl = `http://127.0.0.1:${(gone.address() as AddressInfo).port}`;
  await new Promise<void>((resolve) => gone.close(() => resolve()));
  current = leaderAt(goneUrl);
  const unreachable = await request(`${url}/v1/apps`, { method: 'POST', body: '{}' });
  assert.equal(unreachable.statusCode, 503);
  const body = (await unreachable.body.json()) as { code: string; message: string; leader: string };
  assert.equal(body.code, 'NOT_LEADER');
  assert.equal(body.leader, goneUrl);
  assert.match(body.message, /could not reach it \(.*ECONNREFUSED/);

  // Another follower's stale view sent it here: answered, never forwarded on.
  const leader = await fakeLeader(t);
  current = leaderAt(leader.url);
  const loop = await request(`${url}/v1/apps`, { headers: { [FORWARDED_BY_HEADER]: 'coord-c' } });
  assert.equal(loop.statusCode, 503);
  assert.equal(((await loop.body.json()) as { code: string }).code, 'NOT_LEADER');
  assert.equal(leader.seen.length, 0);
});
