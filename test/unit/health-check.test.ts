import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { httpHealthProbe, summariseBody } from '../../agent/workloads/health-check.js';
import { HealthFailureLog } from '../../agent/workloads/health-failure-log.js';

const DJANGO_400 = `<!DOCTYPE html><html lang="en"><head><title>DisallowedHost
          at /</title><style>body { color: red }</style></head><body><h1>DisallowedHost at /</h1>
<pre class="exception_value">Invalid HTTP_HOST header: &#x27;shop.localhost&#x27;. You may need to add &#x27;shop.localhost&#x27; to ALLOWED_HOSTS.</pre></body></html>`;

test('a failing health check says the status and the first lines of the page', async (t) => {
  const server = createServer((req, res) => {
    res.writeHead(req.url === '/ok' ? 200 : 400, { 'content-type': 'text/html' });
    res.end(req.url === '/ok' ? 'fine' : DJANGO_400);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as AddressInfo).port;
  assert.deepEqual(await httpHealthProbe({ port, path: '/ok', host: 'shop.localhost' }), { ok: true, reason: '' });
  const bad = await httpHealthProbe({ port, host: 'shop.localhost' });
  assert.equal(bad.ok, false);
  assert.match(bad.reason, /^HTTP 400 from GET \/ \(Host shop\.localhost\): DisallowedHost at \/ /);
  assert.match(bad.reason, /Invalid HTTP_HOST header: 'shop\.localhost'/);
  assert.doesNotMatch(bad.reason, /color: red|<h1>/);
});

test('a refused connection is said as such', async () => {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  const probe = await httpHealthProbe({ port, timeoutMs: 1000 });
  assert.equal(probe.ok, false);
  assert.match(probe.reason, /connection refused on port \d+/);
});

/** A server whose connections are reported as they close; `answer` handles each request. */
async function server(t: { after(fn: () => unknown): void }, answer: (res: ServerResponse) => void) {
  const srv = createServer((_req, res) => answer(res));
  const closed: Promise<void>[] = [];
  srv.on('connection', (socket: Socket) => closed.push(new Promise((r) => socket.once('close', () => r()))));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => {
    srv.closeAllConnections();
    return new Promise<void>((r) => srv.close(() => r()));
  });
  return { port: (srv.address() as AddressInfo).port, closed };
}

/** Resolves when every connection the server saw is closed; rejects after `ms`. */
function allClosed(closed: Promise<void>[], ms: number): Promise<void> {
  return Promise.race([
    Promise.all(closed).then(() => undefined),
    new Promise<void>((_, reject) => setTimeout(() => reject(new Error(`a connection of the check was still open after ${ms} ms`)), ms)),
  ]);
}

test('a check closes its connection: none is kept for reuse, nor left half-read', async (t) => {
  const big = 'x'.repeat(512 * 1024);
  const s = await server(t, (res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(big);
  });
  assert.deepEqual(await httpHealthProbe({ port: s.port }), { ok: true, reason: '' });
  assert.equal(s.closed.length, 1);
  await allClosed(s.closed, 5000);
});

test('an instance that accepts but never answers fails the check at its timeout, and the connection is closed', async (t) => {
  const s = await server(t, () => undefined);
  const probe = await httpHealthProbe({ port: s.port, timeoutMs: 300 });
  assert.equal(probe.ok, false);
  assert.match(probe.reason, /no answer within 300 ms/);
  await allClosed(s.closed, 5000);
});

test('a long body is cut to a few lines', () => {
  const s = summariseBody('x'.repeat(5000));
  assert.ok(s.length <= 240);
  assert.equal(summariseBody(''), '');
});

test('repeated identical failures are summarised, not logged each poll', () => {
  const log = new HealthFailureLog(30_000);
  const lines: string[] = [];
  const push = (l: string | null): void => {
    if (l !== null) lines.push(l);
  };
  // 4 polls a second for a minute: 240 failures.
  for (let n = 0; n < 240; n++) push(log.failed('HTTP 400 from GET /', n * 250));
  assert.ok(lines.length <= 3, lines.join('\n'));
  assert.equal(lines[0], 'Health check failed: HTTP 400 from GET /');
  assert.match(lines[1] ?? '', /^Health check failed \d+ more time\(s\) the same way: HTTP 400/);
  // Another reason is said at once, with the count of the old one.
  push(log.failed('connection refused', 60_000));
  assert.match(lines[lines.length - 1] ?? '', /now: Health check failed: connection refused$/);
  push(log.failed('connection refused', 60_250));
  assert.match(log.passed() ?? '', /failed 1 more time\(s\) the same way: connection refused/);
  assert.equal(log.passed(), null);
});
