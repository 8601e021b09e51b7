import { test, describe, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import net, { type AddressInfo, type Socket } from 'node:net';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { once } from 'node:events';
import { Router, type AccessEntry, type AppRoute, type RouterOptions } from '../../agent/router/router.js';
import {
  forwardRequestHeaders,
  forwardRawResponseHeaders,
  forwardResponseHeaders,
  hasRequestBody,
  hostnameOf,
  acceptableRequestId,
} from '../../agent/router/http-headers.js';
import { TrustedProxies, parseCidr } from '../../agent/router/trusted-proxies.js';
import { silentLogger } from '../../common/logger.js';
import { isHangarError } from '../../common/errors.js';

const WAIT_MS = 5_000;

/** Polls until `cond` holds; fails the test after `ms`. */
async function waitFor(cond: () => boolean, what: string, ms = WAIT_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Rejects after `ms` unless `p` settles first. */
async function bounded<T>(p: Promise<T>, what: string, ms = WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

interface TestBackend {
  name: string;
  port: number;
  hits: number;
  connections: number;
  open: Set<Socket>;
  seen: http.IncomingHttpHeaders[];
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, b: TestBackend) => void;

/** Answers 200 with `{ name, bytes }` after reading the whole body. */
const echo: Handler = (req, res, b) => {
  let bytes = 0;
  req.on('data', (c: Buffer) => (bytes += c.length));
  req.on('end', () => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ name: b.name, bytes }));
  });
};

async function startBackend(t: TestContext, name: string, handler: Handler = echo): Promise<TestBackend> {
  const b: TestBackend = { name, port: 0, hits: 0, connections: 0, open: new Set(), seen: [] };
  const server = http.createServer((req, res) => {
    b.hits++;
    b.seen.push(req.headers);
    handler(req, res, b);
  });
  server.on('connection', (socket: Socket) => {
    b.connections++;
    b.open.add(socket);
    socket.on('close', () => b.open.delete(socket));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  b.port = (server.address() as AddressInfo).port;
  t.after(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return b;
}

/** A loopback port with nothing listening (connections are refused). */
async function deadPort(): Promise<number> {
  const server = http.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

async function startRouter(
  t: TestContext,
  routes: AppRoute[],
  options: Partial<RouterOptions> = {},
): Promise<{ router: Router; port: number; access: AccessEntry[] }> {
  const access: AccessEntry[] = [];
  const router = new Router({ port: 0, host: '127.0.0.1', logger: silentLogger(), onAccess: (e) => access.push(e), ...options });
  t.after(() => router.close());
  router.setRoutes(routes);
  const { port } = await router.start();
  return { router, port, access };
}

function route(app: string, backends: TestBackend[], domains = [`${app}.example.com`]): AppRoute {
  return { app, domains, backends: backends.map((b) => ({ instanceKey: b.name, host: '127.0.0.1', port: b.port })) };
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request on its own connection, bounded. */
function send(
  port: number,
  opts: { host: string; method?: string; path?: string; headers?: http.OutgoingHttpHeaders; body?: string | Buffer },
): Promise<Reply> {
  return bounded(
    new Promise<Reply>((resolve, reject) => {
      const req = http.request(
        {
          port,
          host: '127.0.0.1',
          method: opts.method ?? 'GET',
          path: opts.path ?? '/',
          agent: false,
          headers: { host: opts.host, ...opts.headers },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(opts.body);
    }),
    `response from ${opts.host}${opts.path ?? '/'}`,
  );
}

function nameOf(reply: Reply): string {
  return (JSON.parse(reply.body) as { name: string }).name;
}

describe('http-headers', () => {
  test('hostnameOf lower-cases and strips port and trailing dot', () => {
    assert.equal(hostnameOf('App.Example.COM:8080'), 'app.example.com');
    assert.equal(hostnameOf('app.example.com.'), 'app.example.com');
    assert.equal(hostnameOf('[::1]:80'), '[::1]');
    assert.equal(hostnameOf(undefined), null);
    assert.equal(hostnameOf(''), null);
  });

  test('forwardRequestHeaders drops hop-by-hop, appends X-Forwarded-For of a trusted peer, sets router headers', () => {
    const out = forwardRequestHeaders(
      [
        'Host',
        'A.example.com',
        'Connection',
        'keep-alive, X-Secret',
        'X-Secret',
        '1',
        'TE',
        'trailers',
        'Proxy-Authorization',
        'x',
        'X-Forwarded-For',
        '1.1.1.1',
        'Cookie',
        'a=1',
        'Cookie',
        'b=2',
      ],
      { clientAddress: '10.0.0.9', proto: 'http', port: 80, requestId: 'rid', peerTrusted: true },
    );
    assert.deepEqual(out, [
      'Host',
      'A.example.com',
      'Cookie',
      'a=1',
      'Cookie',
      'b=2',
      'x-forwarded-for',
      '1.1.1.1, 10.0.0.9',
      'x-forwarded-proto',
      'http',
      'x-forwarded-port',
      '80',
      'x-real-ip',
      '10.0.0.9',
      'forwarded',
      'for=10.0.0.9;proto=http',
      'x-request-id',
      'rid',
    ]);
  });

  test('forwardResponseHeaders drops hop-by-hop and sets X-Request-Id', () => {
    const out = forwardResponseHeaders(
      { connection: 'close, x-a', 'x-a': '1', 'transfer-encoding': 'chunked', 'set-cookie': ['a=1', 'b=2'], 'x-request-id': 'theirs' },
      'ours',
    );
    assert.deepEqual(out, { 'set-cookie': ['a=1', 'b=2'], 'x-request-id': 'ours' });
  });

  test('forwardRawResponseHeaders drops hop-by-hop, keeps repeated headers and sets X-Request-Id (and HSTS when asked)', () => {
    const raw = [
      'Connection',
      'close, X-A',
      'X-A',
      '1',
      'Transfer-Encoding',
      'chunked',
      'Set-Cookie',
      'a=1',
      'Set-Cookie',
      'b=2',
      'X-Request-Id',
      'theirs',
    ];
    assert.deepEqual(forwardRawResponseHeaders(raw, 'ours'), ['Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'x-request-id', 'ours']);
    assert.deepEqual(forwardRawResponseHeaders(['Keep-Alive', 'timeout=2'], 'ours', true), [
      'strict-transport-security',
      'max-age=31536000',
      'x-request-id',
      'ours',
    ]);
    // The app's own HSTS is kept, not doubled.
    assert.deepEqual(forwardRawResponseHeaders(['Strict-Transport-Security', 'max-age=60'], 'ours', true), [
      'Strict-Transport-Security',
      'max-age=60',
      'x-request-id',
      'ours',
    ]);
  });

  test('forwardRequestHeaders from an untrusted peer replaces X-Forwarded-For, -Proto and -Port', () => {
    const raw = ['Host', 'a', 'X-Forwarded-For', '6.6.6.6', 'X-Forwarded-Proto', 'https', 'X-Forwarded-Port', '443'];
    const base = { clientAddress: '10.0.0.9', proto: 'http', port: 80, requestId: 'rid' };
    const expected = [
      'Host',
      'a',
      'x-forwarded-for',
      '10.0.0.9',
      'x-forwarded-proto',
      'http',
      'x-forwarded-port',
      '80',
      'x-real-ip',
      '10.0.0.9',
      'forwarded',
      'for=10.0.0.9;proto=http',
      'x-request-id',
      'rid',
    ];
    assert.deepEqual(forwardRequestHeaders(raw, base), expected);
    assert.deepEqual(forwardRequestHeaders(raw, { ...base, peerTrusted: false }), expected);
    assert.deepEqual(forwardRequestHeaders(raw, { ...base, peerTrusted: true }), [
      'Host',
      'a',
      'x-forwarded-for',
      '6.6.6.6, 10.0.0.9',
      'x-forwarded-proto',
      'https',
      'x-forwarded-port',
      '443',
      'x-real-ip',
      '10.0.0.9',
      'forwarded',
      'for=10.0.0.9;proto=http',
      'x-request-id',
      'rid',
    ]);
    // Even a trusted proxy cannot inject a malformed scheme or port.
    const odd = forwardRequestHeaders(['X-Forwarded-Proto', 'javascript', 'X-Forwarded-Port', '80, 443'], { ...base, peerTrusted: true });
    assert.deepEqual(odd, [
      'x-forwarded-for',
      '10.0.0.9',
      'x-forwarded-proto',
      'http',
      'x-forwarded-port',
      '80',
      'x-real-ip',
      '10.0.0.9',
      'forwarded',
      'for=10.0.0.9;proto=http',
      'x-request-id',
      'rid',
    ]);
  });

  test('forwardRequestHeaders: X-Forwarded-Host, X-Real-IP and Forwarded only from a trusted proxy', () => {
    const raw = [
      'Host',
      'a',
      'X-Forwarded-Host',
      'evil.example',
      'X-Forwarded-Prefix',
      '/admin',
      'X-Real-IP',
      '6.6.6.6',
      'Forwarded',
      'for=6.6.6.6;proto=https;host=evil.example',
    ];
    const base = { clientAddress: '2001:db8::9', proto: 'http', port: 80, requestId: 'rid' };
    assert.deepEqual(forwardRequestHeaders(raw, base), [
      'Host',
      'a',
      'x-forwarded-for',
      '2001:db8::9',
      'x-forwarded-proto',
      'http',
      'x-forwarded-port',
      '80',
      'x-real-ip',
      '2001:db8::9',
      'forwarded',
      'for="[2001:db8::9]";proto=http',
      'x-request-id',
      'rid',
    ]);
    assert.deepEqual(forwardRequestHeaders(raw, { ...base, peerTrusted: true }), [
      'Host',
      'a',
      'X-Forwarded-Host',
      'evil.example',
      'X-Forwarded-Prefix',
      '/admin',
      'x-forwarded-for',
      '2001:db8::9',
      'x-forwarded-proto',
      'http',
      'x-forwarded-port',
      '80',
      'x-real-ip',
      '6.6.6.6',
      'forwarded',
      'for=6.6.6.6;proto=https;host=evil.example, for="[2001:db8::9]";proto=http',
      'x-request-id',
      'rid',
    ]);
  });

  test('forwardRequestHeaders never passes the maintenance bypass secret on', () => {
    const out = forwardRequestHeaders(['Host', 'a', 'X-Hangar-Maintenance-Bypass', 's3cret'], {
      clientAddress: '10.0.0.9',
      proto: 'http',
      port: 80,
      requestId: 'rid',
      peerTrusted: true,
    });
    assert.ok(!out.some((v) => v.toLowerCase() === 'x-hangar-maintenance-bypass' || v === 's3cret'));
  });

  test('TrustedProxies matches IPv4, IPv6 and IPv4-mapped peers; rejects malformed ranges', () => {
    const trusted = new TrustedProxies(['10.0.0.0/8', '192.168.1.7', '2001:db8::/32']);
    assert.equal(trusted.has('10.200.3.4'), true);
    assert.equal(trusted.has('::ffff:10.1.2.3'), true);
    assert.equal(trusted.has('192.168.1.7'), true);
    assert.equal(trusted.has('192.168.1.8'), false);
    assert.equal(trusted.has('2001:db8:1::5'), true);
    assert.equal(trusted.has('2001:db9::5'), false);
    assert.equal(trusted.has('11.0.0.1'), false);
    assert.equal(trusted.has(undefined), false);
    assert.equal(new TrustedProxies([]).has('10.0.0.1'), false);
    assert.deepEqual(parseCidr('10.0.0.0/8'), ['10.0.0.0', 8, 'ipv4']);
    assert.equal(parseCidr('10.0.0.0/33'), null);
    assert.equal(parseCidr('10.0.0/8'), null);
    assert.equal(parseCidr('::1/129'), null);
    assert.throws(
      () => new TrustedProxies(['10.0.0.0/8', 'nope', '1.2.3.4/x']),
      (err) => isHangarError(err, 'BAD_INPUT') && /"nope", "1\.2\.3\.4\/x"/.test(err.message),
    );
  });

  test('hasRequestBody and acceptableRequestId', () => {
    assert.equal(hasRequestBody({ 'content-length': '0' }), false);
    assert.equal(hasRequestBody({}), false);
    assert.equal(hasRequestBody({ 'content-length': '3' }), true);
    assert.equal(hasRequestBody({ 'transfer-encoding': 'chunked' }), true);
    assert.equal(acceptableRequestId('abc-123'), 'abc-123');
    assert.equal(acceptableRequestId('bad id\n'), undefined);
    assert.equal(acceptableRequestId('x'.repeat(201)), undefined);
  });
});

describe('Router', () => {
  test('start and close are idempotent; start after close fails with CONFLICT', async (t) => {
    const router = new Router({ port: 0, host: '127.0.0.1', logger: silentLogger() });
    t.after(() => router.close());
    const [a, b] = await Promise.all([router.start(), router.start()]);
    assert.ok(a.port > 0);
    assert.equal(b.port, a.port);
    assert.equal(router.state, 'up');
    await Promise.all([router.close(), router.close()]);
    assert.equal(router.state, 'closed');
    await assert.rejects(router.start(), (err) => isHangarError(err, 'CONFLICT'));
  });

  test('routes by Host header, case-insensitive and without port', async (t) => {
    const a = await startBackend(t, 'a');
    const b = await startBackend(t, 'b');
    const { port } = await startRouter(t, [route('a', [a]), route('b', [b], ['b.example.com', 'www.b.example.com'])]);
    assert.equal(nameOf(await send(port, { host: 'A.Example.COM:8080' })), 'a');
    assert.equal(nameOf(await send(port, { host: 'b.example.com' })), 'b');
    assert.equal(nameOf(await send(port, { host: 'www.b.example.com.' })), 'b');
    // The original Host reaches the app untouched (Django's ALLOWED_HOSTS reads it).
    assert.equal(a.seen[0]?.host, 'A.Example.COM:8080');
  });

  test('unknown host gets 404 saying no app is served there', async (t) => {
    const a = await startBackend(t, 'a');
    const { port, access } = await startRouter(t, [route('a', [a])]);
    const reply = await send(port, { host: 'nope.example.com' });
    assert.equal(reply.status, 404);
    assert.match(reply.body, /No app is served at nope\.example\.com/);
    assert.match(String(reply.headers['content-type']), /^text\/plain/);
    assert.ok(reply.headers['x-request-id']);
    assert.equal(a.hits, 0);
    assert.equal(access[0]?.status, 404);
    assert.equal(access[0]?.failure, 'NO_APP');
    assert.equal(access[0]?.instanceKey, null);
  });

  test('app without backends, or with only drained ones, gets 503 naming hangar ps', async (t) => {
    const a = await startBackend(t, 'a');
    const { router, port, access } = await startRouter(t, [route('empty', []), route('a', [a])]);
    const reply = await send(port, { host: 'empty.example.com' });
    assert.equal(reply.status, 503);
    assert.match(reply.body, /No web processes running/);
    assert.match(reply.body, /hangar ps -a empty/);
    assert.equal(access[0]?.failure, 'NO_BACKENDS');
    await bounded(router.drain('a', 1000), 'drain of an idle instance');
    assert.equal((await send(port, { host: 'a.example.com' })).status, 503);
    assert.equal(a.hits, 0);
  });

  test('spreads sequential requests round-robin and prefers the least loaded', async (t) => {
    const release = deferred();
    const handler: Handler = (req, res, b) => {
      if (req.url === '/slow') void release.promise.then(() => echo(req, res, b));
      else echo(req, res, b);
    };
    const a = await startBackend(t, 'a', handler);
    const b = await startBackend(t, 'b', handler);
    t.after(() => release.resolve());
    const { port } = await startRouter(t, [route('app', [a, b])]);
    for (let i = 0; i < 10; i++) assert.equal((await send(port, { host: 'app.example.com' })).status, 200);
    assert.equal(a.hits, 5);
    assert.equal(b.hits, 5);

    const slow = send(port, { host: 'app.example.com', path: '/slow' });
    await waitFor(() => a.hits + b.hits === 11, 'slow request to arrive');
    const busy = a.seen.length === 6 ? 'a' : 'b';
    for (let i = 0; i < 4; i++) assert.notEqual(nameOf(await send(port, { host: 'app.example.com' })), busy);
    release.resolve();
    assert.equal(nameOf(await slow), busy);
  });

  test('refused connection: GET is retried on another instance, POST with a body gets 502', async (t) => {
    const good = await startBackend(t, 'good');
    const dead = await deadPort();
    const routes: AppRoute[] = [
      {
        app: 'app',
        domains: ['app.example.com'],
        backends: [
          { instanceKey: 'dead', host: '127.0.0.1', port: dead },
          { instanceKey: 'good', host: '127.0.0.1', port: good.port },
        ],
      },
    ];
    const first = await startRouter(t, routes);
    const reply = await send(first.port, { host: 'app.example.com', path: '/x' });
    assert.equal(reply.status, 200);
    assert.equal(nameOf(reply), 'good');
    assert.equal(first.access[0]?.attempts, 2, 'the dead instance was tried first');
    assert.equal(first.access[0]?.instanceKey, 'good');

    // A fresh router, so the dead instance is tried first again (no failure cool-down).
    const second = await startRouter(t, routes);
    const hitsBefore = good.hits;
    const post = await send(second.port, { host: 'app.example.com', method: 'POST', body: 'payment=1' });
    assert.equal(post.status, 502);
    assert.match(post.body, /could not be reached/);
    assert.equal(good.hits, hitsBefore, 'the POST was not replayed');
    assert.equal(second.access[0]?.failure, 'BACKEND_UNREACHABLE');
    assert.equal(second.access[0]?.instanceKey, 'dead');
  });

  test('connection reset before a response: GET retried, POST not replayed', async (t) => {
    const flaky = await startBackend(t, 'flaky', (req) => req.socket.destroy());
    const good = await startBackend(t, 'good');
    const first = await startRouter(t, [route('app', [flaky, good])]);
    const reply = await send(first.port, { host: 'app.example.com' });
    assert.equal(reply.status, 200);
    assert.equal(nameOf(reply), 'good');
    assert.equal(first.access[0]?.attempts, 2);

    const second = await startRouter(t, [route('app', [flaky, good])]);
    const flakyBefore = flaky.hits;
    const goodBefore = good.hits;
    const post = await send(second.port, { host: 'app.example.com', method: 'POST', body: 'x=1' });
    assert.equal(post.status, 502);
    assert.equal(flaky.hits, flakyBefore + 1);
    assert.equal(good.hits, goodBefore);
  });

  test('the only instance refusing: GET tried twice on it, then 502', async (t) => {
    const dead = await deadPort();
    const { port, access } = await startRouter(t, [
      { app: 'app', domains: ['app.example.com'], backends: [{ instanceKey: 'dead', host: '127.0.0.1', port: dead }] },
    ]);
    const reply = await send(port, { host: 'app.example.com' });
    assert.equal(reply.status, 502);
    assert.equal(access[0]?.attempts, 2);
  });

  test('drain waits for the in-flight request and sends no new ones to the drained instance', async (t) => {
    const release = deferred();
    const handler: Handler = (req, res, b) => {
      if (req.url === '/slow') void release.promise.then(() => echo(req, res, b));
      else echo(req, res, b);
    };
    const a = await startBackend(t, 'a', handler);
    const b = await startBackend(t, 'b', handler);
    t.after(() => release.resolve());
    const { router, port } = await startRouter(t, [route('app', [a, b])]);
    const slow = send(port, { host: 'app.example.com', path: '/slow' });
    await waitFor(() => a.hits === 1, 'slow request at a');
    let drained = false;
    const drain = router.drain('a', 10_000).then(() => (drained = true));
    // Slow ones pile up on b: least-in-flight alone would send the 2nd and 3rd to a.
    const more = [0, 1, 2].map(() => send(port, { host: 'app.example.com', path: '/slow' }));
    await waitFor(() => a.hits + b.hits === 4, 'three more requests to arrive');
    assert.equal(b.hits, 3);
    // A stale route table still listing the instance must not undo the drain.
    router.setRoutes([route('app', [a, b])]);
    assert.equal(nameOf(await send(port, { host: 'app.example.com' })), 'b');
    assert.equal(drained, false);
    assert.equal(router.inFlight('a'), 1);
    release.resolve();
    assert.equal((await slow).status, 200);
    for (const r of await Promise.all(more)) assert.equal(nameOf(r), 'b');
    await bounded(drain, 'drain to resolve');
    assert.equal(router.inFlight('a'), 0);
    assert.equal(a.hits, 1);
  });

  test('drain resolves at its timeout when a request never finishes', async (t) => {
    const hang = await startBackend(t, 'hang', () => undefined);
    const { router, port } = await startRouter(t, [route('app', [hang])]);
    const pending = send(port, { host: 'app.example.com' }).catch(() => undefined);
    await waitFor(() => hang.hits === 1, 'request at hang');
    const started = Date.now();
    await bounded(router.drain('hang', 100), 'drain timeout');
    assert.ok(Date.now() - started >= 90);
    assert.equal(router.inFlight('hang'), 1);
    await router.close();
    await pending;
  });

  test('setRoutes removing an instance lets its in-flight request finish, then closes its pool', async (t) => {
    const release = deferred();
    const a = await startBackend(t, 'a', (req, res, b) => void release.promise.then(() => echo(req, res, b)));
    const b = await startBackend(t, 'b');
    t.after(() => release.resolve());
    const { router, port } = await startRouter(t, [route('app', [a])]);
    const slow = send(port, { host: 'app.example.com' });
    await waitFor(() => a.hits === 1, 'slow request at a');
    router.setRoutes([route('app', [b])]);
    assert.equal(nameOf(await send(port, { host: 'app.example.com' })), 'b');
    assert.equal(router.inFlight('a'), 1);
    release.resolve();
    const reply = await slow;
    assert.equal(reply.status, 200);
    assert.equal(nameOf(reply), 'a');
    assert.equal(router.inFlight(), 0);
    await waitFor(() => a.open.size === 0, 'pool of the removed instance to close');
    assert.equal(a.hits, 1);
  });

  test('streams a 20 MB response without buffering it', async (t) => {
    const total = 20 * 1024 * 1024;
    const firstSeen = deferred();
    let backendDone = false;
    const big = await startBackend(t, 'big', (_req, res) => {
      void (async () => {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        const chunk = Buffer.alloc(64 * 1024, 7);
        res.write(chunk);
        // The rest is written only once the client has bytes: a buffering router would deadlock here.
        await bounded(firstSeen.promise, 'client to see the first bytes');
        for (let sent = chunk.length; sent < total; sent += chunk.length) {
          if (!res.write(chunk)) await once(res, 'drain');
        }
        res.end();
        backendDone = true;
      })().catch(() => res.destroy());
    });
    const { port, access } = await startRouter(t, [route('big', [big])]);
    let received = 0;
    let sawFirstBeforeEnd = false;
    await bounded(
      new Promise<void>((resolve, reject) => {
        const req = http.get({ port, host: '127.0.0.1', agent: false, headers: { host: 'big.example.com' } }, (res) => {
          res.on('data', (c: Buffer) => {
            if (received === 0) {
              sawFirstBeforeEnd = !backendDone;
              firstSeen.resolve();
            }
            received += c.length;
          });
          res.on('end', resolve);
          res.on('error', reject);
        });
        req.on('error', reject);
      }),
      '20 MB response',
      20_000,
    );
    assert.equal(received, total);
    assert.equal(sawFirstBeforeEnd, true);
    await waitFor(() => access.length === 1, 'access entry');
    assert.equal(access[0]?.bytes, total);
  });

  test('streams a 20 MB request body without buffering it', async (t) => {
    const block = randomBytes(1024 * 1024);
    const total = 20 * block.length;
    const firstArrived = deferred();
    const sink = await startBackend(t, 'sink', (req, res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      req.on('data', (c: Buffer) => {
        bytes += c.length;
        hash.update(c);
        firstArrived.resolve();
      });
      req.on('end', () => res.end(JSON.stringify({ bytes, sha: hash.digest('hex') })));
    });
    const { port } = await startRouter(t, [route('sink', [sink])]);
    const expected = createHash('sha256');
    const reply = await bounded(
      new Promise<Reply>((resolve, reject) => {
        const req = http.request(
          {
            port,
            host: '127.0.0.1',
            method: 'PUT',
            path: '/upload',
            agent: false,
            headers: { host: 'sink.example.com', 'transfer-encoding': 'chunked' },
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
          },
        );
        req.on('error', reject);
        void (async () => {
          req.write(block);
          expected.update(block);
          // The rest is sent only once the app has bytes: a buffering router would deadlock here.
          await bounded(firstArrived.promise, 'app to see the first bytes');
          for (let i = 1; i < 20; i++) {
            expected.update(block);
            if (!req.write(block)) await once(req, 'drain');
          }
          req.end();
        })().catch(reject);
      }),
      '20 MB upload',
      20_000,
    );
    assert.equal(reply.status, 200);
    assert.deepEqual(JSON.parse(reply.body), { bytes: total, sha: expected.digest('hex') });
  });

  test('adds X-Forwarded-* and X-Request-Id upstream, strips hop-by-hop, returns the request id', async (t) => {
    const a = await startBackend(t, 'a');
    // The client's X-Forwarded-For is extended only when its peer is a trusted proxy.
    const { port } = await startRouter(t, [route('a', [a])], { trustedProxies: ['127.0.0.1/32'] });
    const reply = await send(port, {
      host: 'a.example.com',
      headers: {
        'x-forwarded-for': '1.2.3.4',
        connection: 'x-secret',
        'x-secret': 'hop',
        'proxy-authorization': 'Basic x',
        'x-kept': 'yes',
      },
    });
    assert.equal(reply.status, 200);
    const seen = a.seen[0];
    assert.ok(seen);
    assert.equal(seen['x-forwarded-for'], '1.2.3.4, 127.0.0.1');
    assert.equal(seen['x-forwarded-proto'], 'http');
    assert.equal(seen['x-forwarded-port'], String(port));
    assert.equal(seen['x-kept'], 'yes');
    assert.equal(seen['x-secret'], undefined);
    assert.equal(seen['proxy-authorization'], undefined);
    assert.match(String(seen['x-request-id']), /^[0-9a-f-]{36}$/);
    assert.equal(reply.headers['x-request-id'], seen['x-request-id']);

    const again = await send(port, { host: 'a.example.com', headers: { 'x-request-id': 'client-id-42' } });
    assert.equal(a.seen[1]?.['x-request-id'], 'client-id-42');
    assert.equal(again.headers['x-request-id'], 'client-id-42');
  });

  test('reuses keep-alive connections to an instance', async (t) => {
    const a = await startBackend(t, 'a');
    const { port } = await startRouter(t, [route('a', [a])]);
    for (let i = 0; i < 20; i++) assert.equal((await send(port, { host: 'a.example.com' })).status, 200);
    assert.equal(a.hits, 20);
    assert.equal(a.connections, 1);
  });

  test('an instance closing every connection (Connection: close, as gunicorn sync workers do) is served request after request, and errors keep their stack traces', async (t) => {
    const limit = Error.stackTraceLimit;
    const a = await startBackend(t, 'a', (req, res, b) => {
      res.setHeader('connection', 'close');
      echo(req, res, b);
    });
    const { port } = await startRouter(t, [route('a', [a])]);
    for (let i = 0; i < 10; i++) {
      const reply = await send(port, { host: 'a.example.com' });
      assert.equal(reply.status, 200);
      assert.equal(nameOf(reply), 'a');
      // The router makes undici's 'reset' error frameless only until the next microtask.
      assert.equal(Error.stackTraceLimit, limit);
      assert.match(new Error('probe').stack ?? '', /router\.test\.js/);
    }
    assert.equal(a.hits, 10);
    assert.equal(a.connections, 10);
  });

  test('records an access entry per request', async (t) => {
    const a = await startBackend(t, 'a');
    const { port, access } = await startRouter(t, [route('a', [a])]);
    const before = Date.now();
    const reply = await send(port, { host: 'a.example.com', method: 'POST', path: '/items?x=1', body: 'abc' });
    await waitFor(() => access.length === 1, 'access entry');
    const e = access[0];
    assert.ok(e);
    assert.equal(e.app, 'a');
    assert.equal(e.method, 'POST');
    assert.equal(e.path, '/items?x=1');
    assert.equal(e.status, 200);
    assert.equal(e.instanceKey, 'a');
    assert.equal(e.bytes, Buffer.byteLength(reply.body));
    assert.equal(e.requestId, reply.headers['x-request-id']);
    assert.equal(e.attempts, 1);
    assert.equal(e.failure, undefined);
    assert.ok(e.ts >= before && e.ts <= Date.now());
    assert.ok(e.durationMs >= 0);
  });

  test('an instance that sends no headers in time gets 504', async (t) => {
    const hang = await startBackend(t, 'hang', () => undefined);
    const { port, access } = await startRouter(t, [route('app', [hang])], { requestTimeoutMs: 200 });
    const reply = await send(port, { host: 'app.example.com' });
    assert.equal(reply.status, 504);
    assert.match(reply.body, /did not respond/);
    assert.equal(hang.hits, 1, 'a timed-out GET is not retried');
    assert.equal(access[0]?.failure, 'BACKEND_TIMEOUT');
  });

  test('an instance that goes silent mid-body past the timeout has the client connection cut and its own closed', async (t) => {
    let upstreamClosed = false;
    const silent = await startBackend(t, 'silent', (_req, res) => {
      res.on('close', () => (upstreamClosed = true));
      res.writeHead(200, { 'content-length': '1000' });
      res.write('x'.repeat(10));
    });
    const { port, access } = await startRouter(t, [route('app', [silent])], { requestTimeoutMs: 200 });
    const started = Date.now();
    const complete = await bounded(
      new Promise<boolean>((resolve) => {
        const req = http.get({ port, host: '127.0.0.1', agent: false, headers: { host: 'app.example.com' } }, (res) => {
          res.on('error', () => undefined);
          res.resume();
          res.on('close', () => resolve(res.complete));
        });
        req.on('error', () => resolve(false));
      }),
      'cut response',
    );
    assert.equal(complete, false);
    assert.ok(Date.now() - started >= 150, 'cut at the timeout, not before');
    await waitFor(() => access.length === 1 && upstreamClosed, 'access entry and the upstream connection closed');
    assert.equal(access[0]?.failure, 'BACKEND_ERROR');
    assert.equal(access[0]?.status, 200);
  });

  test('repeated response headers (Set-Cookie) and the status reach the client as the instance sent them', async (t) => {
    const a = await startBackend(t, 'a', (_req, res) => {
      res.writeHead(201, [
        ['Set-Cookie', 'a=1'],
        ['Set-Cookie', 'b=2'],
        ['X-App', 'yes'],
        ['Keep-Alive', 'timeout=5'],
      ]);
      res.end('made');
    });
    const { port } = await startRouter(t, [route('app', [a])]);
    const reply = await send(port, { host: 'app.example.com' });
    assert.equal(reply.status, 201);
    assert.equal(reply.body, 'made');
    assert.deepEqual(reply.headers['set-cookie'], ['a=1', 'b=2']);
    assert.equal(reply.headers['x-app'], 'yes');
    assert.equal(reply.headers['keep-alive'], undefined, "the instance's Keep-Alive is hop-by-hop (this client closes)");
  });

  test('client disconnect aborts the upstream request', async (t) => {
    let upstreamAborted = false;
    const hang = await startBackend(t, 'hang', (_req, res) => {
      res.on('close', () => (upstreamAborted = !res.writableFinished));
    });
    const { router, port, access } = await startRouter(t, [route('app', [hang])]);
    const req = http.get({ port, host: '127.0.0.1', agent: false, headers: { host: 'app.example.com' } });
    req.on('error', () => undefined);
    await waitFor(() => hang.hits === 1, 'request at the instance');
    assert.equal(router.inFlight('hang'), 1);
    req.destroy();
    await waitFor(() => upstreamAborted, 'upstream request to be aborted');
    await waitFor(() => router.inFlight() === 0 && access.length === 1, 'in-flight count to drop');
    assert.equal(access[0]?.failure, 'CLIENT_CLOSED');
    assert.equal(access[0]?.status, 499);
  });

  test('an instance dying mid-body cuts the client connection; the router keeps serving', async (t) => {
    const dying = await startBackend(t, 'dying', (req, res) => {
      if (req.url === '/die') {
        res.writeHead(200, { 'content-length': '1000' });
        res.write('x'.repeat(10), () => setTimeout(() => res.socket?.destroy(), 20));
      } else {
        res.end('{"name":"dying"}');
      }
    });
    const { port, access } = await startRouter(t, [route('app', [dying])]);
    const complete = await bounded(
      new Promise<boolean>((resolve) => {
        const req = http.get({ port, host: '127.0.0.1', path: '/die', agent: false, headers: { host: 'app.example.com' } }, (res) => {
          res.on('error', () => undefined);
          res.resume();
          res.on('close', () => resolve(res.complete));
        });
        req.on('error', () => resolve(false));
      }),
      'truncated response',
    );
    assert.equal(complete, false, 'a truncated body must not look complete');
    await waitFor(() => access.length === 1, 'access entry');
    assert.equal(access[0]?.failure, 'BACKEND_ERROR');
    assert.equal(access[0]?.attempts, 1, 'a request whose response began is never retried');
    assert.equal((await send(port, { host: 'app.example.com' })).status, 200);
  });

  test('a client aborting mid-upload aborts the upstream request and frees the slot', async (t) => {
    let upstreamAborted = false;
    const sink = await startBackend(t, 'sink', (req, res) => {
      req.on('error', () => undefined);
      req.resume();
      req.on('end', () => res.end('{"name":"sink"}'));
      req.on('close', () => (upstreamAborted ||= !req.complete));
    });
    const { router, port, access } = await startRouter(t, [route('app', [sink])]);
    const req = http.request({
      port,
      host: '127.0.0.1',
      method: 'POST',
      agent: false,
      headers: { host: 'app.example.com', 'transfer-encoding': 'chunked' },
    });
    req.on('error', () => undefined);
    req.write(Buffer.alloc(64 * 1024));
    await waitFor(() => sink.hits === 1, 'upload to reach the instance');
    req.destroy();
    await waitFor(() => upstreamAborted, 'upstream upload to be aborted');
    await waitFor(() => router.inFlight() === 0 && access.length === 1, 'in-flight count to drop');
    assert.equal(access[0]?.failure, 'CLIENT_CLOSED');
    assert.equal((await send(port, { host: 'app.example.com' })).status, 200);
  });
});

/** A raw client connection; `data` collects what the router sent, `closed` settles when it closes. */
interface RawClient {
  socket: Socket;
  data: () => string;
  closed: Promise<void>;
}

async function rawConnect(t: TestContext, port: number): Promise<RawClient> {
  const socket = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  // A reset after the router answered is fine: the answer is in `data`.
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  t.after(() => socket.destroy());
  await bounded(once(socket, 'connect'), 'raw connection');
  return { socket, data: () => Buffer.concat(chunks).toString('latin1'), closed };
}

/** A backend with a websocket server that greets each client and echoes its messages. */
async function startWsBackend(t: TestContext, name: string): Promise<{ port: number; seen: http.IncomingHttpHeaders[] }> {
  const seen: http.IncomingHttpHeaders[] = [];
  const server = http.createServer((_req, res) => res.end(JSON.stringify({ name })));
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws, req) => {
    seen.push(req.headers);
    ws.send(`hello from ${name}`);
    ws.on('message', (data: RawData, isBinary) => ws.send(data, { binary: isBinary }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(async () => {
    for (const ws of wss.clients) ws.terminate();
    await new Promise<void>((r) => wss.close(() => r()));
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return { port: (server.address() as AddressInfo).port, seen };
}

/** A websocket client through the router; `messages` are the text messages received so far. */
async function wsConnect(
  t: TestContext,
  port: number,
  host: string,
  path = '/',
): Promise<{ ws: WebSocket; messages: string[]; closed: Promise<void> }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, { headers: { host } });
  const messages: string[] = [];
  ws.on('message', (data: RawData, isBinary) => {
    if (!isBinary) messages.push((data as Buffer).toString('utf8'));
  });
  ws.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
  t.after(() => ws.terminate());
  await bounded(
    new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade answered ${res.statusCode}`)));
      ws.once('error', reject);
    }),
    'websocket to open',
  );
  return { ws, messages, closed };
}

describe('Router: slow, greedy and upgraded clients', () => {
  test('slowloris: connections dribbling their headers get 408 after the header timeout; others are served meanwhile', async (t) => {
    const a = await startBackend(t, 'a');
    const { port, access } = await startRouter(t, [route('a', [a])], { headersTimeoutMs: 1_000, maxConnectionsPerClient: 1_000 });
    const clients = await Promise.all(Array.from({ length: 300 }, () => rawConnect(t, port)));
    const timers = clients.map((c) => {
      c.socket.write('GET / HTTP/1.1\r\nHost: a.example.com\r\nX-Slow: ');
      // One byte at a time: each write resets an idle timer, but not the header deadline.
      return setInterval(() => {
        if (c.socket.writable) c.socket.write('x');
      }, 100);
    });
    t.after(() => timers.forEach(clearInterval));
    assert.equal((await send(port, { host: 'a.example.com' })).status, 200, 'served while 300 slow clients are connected');
    await bounded(Promise.all(clients.map((c) => c.closed)), '300 slow connections to be closed', 15_000);
    for (const c of clients) assert.match(c.data(), /^HTTP\/1\.1 408 /);
    assert.match(clients[0]?.data() ?? '', /took too long/);
    assert.equal(a.hits, 1, 'no slow request reached the app');
    assert.equal(access.length, 1);
    assert.equal((await send(port, { host: 'a.example.com' })).status, 200, 'still serving afterwards');
  });

  test('a client address over its connection cap has further connections closed; trusted proxies are exempt', async (t) => {
    const a = await startBackend(t, 'a');
    const request = 'GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n';
    const held = async (port: number): Promise<RawClient> => {
      const c = await rawConnect(t, port);
      c.socket.write(request);
      await waitFor(() => c.data().includes('"name":"a"'), 'an answer on a held connection');
      return c;
    };
    const { port } = await startRouter(t, [route('a', [a])], { maxConnectionsPerClient: 3 });
    const kept = [await held(port), await held(port), await held(port)];
    const extra = await rawConnect(t, port);
    extra.socket.write(request);
    await bounded(extra.closed, 'the connection over the cap to be closed');
    assert.equal(extra.data(), '');
    assert.equal(a.hits, 3);
    // A freed slot is usable again.
    kept[0]?.socket.destroy();
    await waitFor(() => kept[0]?.socket.destroyed === true, 'first connection to close');
    const deadline = Date.now() + WAIT_MS;
    let served = false;
    while (!served && Date.now() < deadline)
      served = await send(port, { host: 'a.example.com' }).then(
        (r) => r.status === 200,
        () => false,
      );
    assert.equal(served, true);

    const behindProxy = await startRouter(t, [route('a', [a])], { maxConnectionsPerClient: 1, trustedProxies: ['127.0.0.0/8'] });
    await held(behindProxy.port);
    await held(behindProxy.port);
  });

  test('a 64 KB header gets 431 with a sentence, and never reaches the app', async (t) => {
    const a = await startBackend(t, 'a');
    const { port } = await startRouter(t, [route('a', [a])]);
    const c = await rawConnect(t, port);
    c.socket.write(`GET / HTTP/1.1\r\nHost: a.example.com\r\nCookie: ${'a'.repeat(64 * 1024)}\r\n\r\n`);
    await bounded(c.closed, 'connection to close');
    assert.match(c.data(), /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
    assert.match(c.data(), /content-type: text\/plain/);
    assert.match(c.data(), /\r\n\r\nThe request headers are larger than this Hangar router accepts \(16384 bytes\)/);
    assert.equal(a.hits, 0);
    assert.equal((await send(port, { host: 'a.example.com' })).status, 200);
  });

  test('X-Forwarded-* from an untrusted peer are replaced, from a trusted proxy kept and extended', async (t) => {
    const a = await startBackend(t, 'a');
    const spoof = { 'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'https', 'x-forwarded-port': '443' };
    const untrusted = await startRouter(t, [route('a', [a])]);
    assert.equal((await send(untrusted.port, { host: 'a.example.com', headers: spoof })).status, 200);
    assert.equal(a.seen[0]?.['x-forwarded-for'], '127.0.0.1');
    assert.equal(a.seen[0]?.['x-forwarded-proto'], 'http');
    assert.equal(a.seen[0]?.['x-forwarded-port'], String(untrusted.port));

    const trusted = await startRouter(t, [route('a', [a])], { trustedProxies: ['10.0.0.0/8', '127.0.0.1'] });
    assert.equal((await send(trusted.port, { host: 'a.example.com', headers: spoof })).status, 200);
    assert.equal(a.seen[1]?.['x-forwarded-for'], '6.6.6.6, 127.0.0.1');
    assert.equal(a.seen[1]?.['x-forwarded-proto'], 'https');
    assert.equal(a.seen[1]?.['x-forwarded-port'], '443');
    assert.throws(
      () => new Router({ port: 0, logger: silentLogger(), trustedProxies: ['10.0.0.0/40'] }),
      (err) => isHangarError(err, 'BAD_INPUT'),
    );
  });

  test('a websocket is proxied both ways, with an access entry of status 101', async (t) => {
    const backend = await startWsBackend(t, 'ws1');
    const { router, port, access } = await startRouter(t, [
      { app: 'chat', domains: ['chat.example.com'], backends: [{ instanceKey: 'ws1', host: '127.0.0.1', port: backend.port }] },
    ]);
    const client = await wsConnect(t, port, 'chat.example.com', '/live?room=1');
    await waitFor(() => client.messages.includes('hello from ws1'), 'greeting from the app');
    client.ws.send('ping 1');
    await waitFor(() => client.messages.includes('ping 1'), 'echo of a text message');
    const big = randomBytes(256 * 1024);
    const echoed = new Promise<Buffer>((resolve) => client.ws.once('message', (data: RawData) => resolve(data as Buffer)));
    client.ws.send(big);
    assert.deepEqual(await bounded(echoed, 'echo of a 256 KB binary message'), big);
    assert.equal(router.openTunnels('ws1'), 1);
    assert.equal(router.inFlight('ws1'), 0);

    await waitFor(() => access.length === 1, 'access entry');
    const e = access[0];
    assert.equal(e?.status, 101);
    assert.equal(e?.app, 'chat');
    assert.equal(e?.path, '/live?room=1');
    assert.equal(e?.instanceKey, 'ws1');
    assert.equal(e?.attempts, 1);
    assert.equal(e?.failure, undefined);
    assert.equal(backend.seen[0]?.['x-forwarded-for'], '127.0.0.1');
    assert.equal(backend.seen[0]?.['x-request-id'], e?.requestId);
    assert.equal(backend.seen[0]?.host, 'chat.example.com');

    client.ws.close();
    await bounded(client.closed, 'websocket to close');
    await waitFor(() => router.openTunnels() === 0, 'tunnel to be released');

    // One left open does not keep the router from closing.
    const open = await wsConnect(t, port, 'chat.example.com');
    await waitFor(() => router.openTunnels() === 1, 'second tunnel');
    await bounded(router.close(), 'router close with a websocket open');
    await bounded(open.closed, 'websocket closed by the router');
  });

  test('an upgrade the app declines is relayed as a normal response, body included', async (t) => {
    const a = await startBackend(t, 'a');
    const { router, port, access } = await startRouter(t, [route('a', [a])]);
    const h2c = { connection: 'Upgrade, HTTP2-Settings', upgrade: 'h2c', 'http2-settings': 'AAMAAABkAAQCAAAAAAIAAAAA' };
    const get = await send(port, { host: 'a.example.com', headers: h2c });
    assert.equal(get.status, 200);
    assert.deepEqual(JSON.parse(get.body), { name: 'a', bytes: 0 });
    const post = await send(port, { host: 'a.example.com', method: 'POST', headers: h2c, body: 'x=12345' });
    assert.equal(post.status, 200);
    assert.deepEqual(JSON.parse(post.body), { name: 'a', bytes: 7 });
    assert.equal(a.seen[1]?.upgrade, 'h2c');
    await waitFor(() => access.length === 2, 'access entries');
    assert.deepEqual(
      access.map((e) => [e.method, e.status, e.failure]),
      [
        ['GET', 200, undefined],
        ['POST', 200, undefined],
      ],
    );
    assert.equal(router.openTunnels(), 0);
    const unknown = await send(port, { host: 'nope.example.com', headers: h2c });
    assert.equal(unknown.status, 404);
    assert.match(unknown.body, /No app is served at nope\.example\.com/);
  });

  test('server-sent events reach the client event by event, before the response ends', async (t) => {
    const seenByClient: (() => void)[] = [];
    const sse = await startBackend(t, 'sse', (_req, res) => {
      void (async () => {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        for (let i = 1; i <= 3; i++) {
          const seen = deferred();
          seenByClient.push(seen.resolve);
          res.write(`data: event ${i}\n\n`);
          // The next event is written only once the client has this one: a buffering router deadlocks.
          await bounded(seen.promise, `client to see event ${i}`);
        }
        res.end();
      })().catch(() => res.destroy());
    });
    const { port } = await startRouter(t, [route('sse', [sse])]);
    const events: string[] = [];
    let contentType = '';
    await bounded(
      new Promise<void>((resolve, reject) => {
        const req = http.get({ port, host: '127.0.0.1', agent: false, headers: { host: 'sse.example.com' } }, (res) => {
          contentType = String(res.headers['content-type']);
          let buffered = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            buffered += chunk;
            let end: number;
            while ((end = buffered.indexOf('\n\n')) !== -1) {
              events.push(buffered.slice(0, end));
              buffered = buffered.slice(end + 2);
              seenByClient[events.length - 1]?.();
            }
          });
          res.on('end', resolve);
          res.on('error', reject);
        });
        req.on('error', reject);
      }),
      'event stream',
      10_000,
    );
    assert.equal(contentType, 'text/event-stream');
    assert.deepEqual(events, ['data: event 1', 'data: event 2', 'data: event 3']);
  });

  test('drain lets an open websocket run up to its bound, then closes it; new ones go elsewhere', async (t) => {
    const one = await startWsBackend(t, 'one');
    const two = await startWsBackend(t, 'two');
    const { router, port } = await startRouter(
      t,
      [
        {
          app: 'chat',
          domains: ['chat.example.com'],
          backends: [
            { instanceKey: 'one', host: '127.0.0.1', port: one.port },
            { instanceKey: 'two', host: '127.0.0.1', port: two.port },
          ],
        },
      ],
      { upgradeDrainTimeoutMs: 1_000 },
    );
    const first = await wsConnect(t, port, 'chat.example.com');
    await waitFor(() => first.messages.length === 1, 'greeting');
    const drainedFrom = first.messages[0] === 'hello from one' ? 'one' : 'two';
    const other = drainedFrom === 'one' ? 'two' : 'one';
    let drained = false;
    const started = Date.now();
    const drain = router.drain(drainedFrom, 5_000).then(() => (drained = true));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(drained, false, 'drain waits for the open websocket');
    first.ws.send('still there');
    await waitFor(() => first.messages.includes('still there'), 'echo during the drain');
    const second = await wsConnect(t, port, 'chat.example.com');
    await waitFor(() => second.messages.length === 1, 'greeting on a new websocket');
    assert.equal(second.messages[0], `hello from ${other}`, 'a new websocket goes to the instance not drained');
    await bounded(drain, 'drain to end at its bound');
    assert.ok(Date.now() - started >= 950, 'the websocket was given its bound');
    await bounded(first.closed, 'the drained websocket to be closed');
    assert.equal(router.openTunnels(drainedFrom), 0);
    assert.equal(router.openTunnels(other), 1);
    second.ws.send('unaffected');
    await waitFor(() => second.messages.includes('unaffected'), 'the other websocket still works');
  });
});

describe('Router: drain during a websocket handshake', () => {
  test('a handshake in flight when the drain starts becomes a tunnel that the drain still bounds', async (t) => {
    const gotUpgrade = deferred();
    const release = deferred();
    t.after(() => release.resolve());
    const server = http.createServer();
    const wss = new WebSocketServer({ noServer: true });
    server.on('upgrade', (req, socket, head) => {
      gotUpgrade.resolve();
      void release.promise.then(() => wss.handleUpgrade(req, socket, head, (ws) => ws.send('late hello')));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.after(async () => {
      for (const ws of wss.clients) ws.terminate();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    });
    const backendPort = (server.address() as AddressInfo).port;
    const { router, port } = await startRouter(
      t,
      [{ app: 'chat', domains: ['chat.example.com'], backends: [{ instanceKey: 'slow', host: '127.0.0.1', port: backendPort }] }],
      { upgradeDrainTimeoutMs: 1_000 },
    );
    const opening = wsConnect(t, port, 'chat.example.com');
    await bounded(gotUpgrade.promise, 'handshake at the instance');
    assert.equal(router.inFlight('slow'), 1);
    let drained = false;
    const drain = router.drain('slow', 5_000).then(() => (drained = true));
    release.resolve();
    const client = await opening;
    await waitFor(() => client.messages.includes('late hello'), 'greeting over the late tunnel');
    assert.equal(drained, false, 'the drain waits for the tunnel too');
    await bounded(drain, 'drain to end at its bound');
    assert.equal(router.openTunnels('slow'), 0);
    await bounded(client.closed, 'the late websocket to be closed');
  });
});

describe('Router: maintenance mode and per-app limits', () => {
  const digest = (v: string): string => createHash('sha256').update(v).digest('hex');

  test('maintenance: 503 with the default HTML page and Retry-After; the app gets nothing; off again serves', async (t) => {
    const a = await startBackend(t, 'a1');
    const r = route('shop', [a]);
    const { router, port, access } = await startRouter(t, [
      { ...r, maintenance: { pageHtml: '', bypassSha256: '', retryAfterSeconds: 300 } },
    ]);
    const reply = await send(port, { host: 'shop.example.com', path: '/cart' });
    assert.equal(reply.status, 503);
    assert.equal(reply.headers['retry-after'], '300');
    assert.match(String(reply.headers['content-type']), /^text\/html/);
    assert.match(reply.body, /maintenance/i);
    assert.match(reply.body, /shop/);
    const post = await send(port, { host: 'shop.example.com', method: 'POST', path: '/notes/', body: 'x'.repeat(1000) });
    assert.equal(post.status, 503);
    assert.equal(a.hits, 0);
    assert.equal(access.at(-1)?.failure, 'MAINTENANCE');
    router.setRoutes([r]);
    assert.equal((await send(port, { host: 'shop.example.com' })).status, 200);
    assert.equal(a.hits, 1);
  });

  test('maintenance: a custom page; the bypass header with the right secret reaches the app, without the secret', async (t) => {
    const a = await startBackend(t, 'a1');
    const page = '<html><body><h1>Back at 6</h1></body></html>';
    const { port } = await startRouter(t, [
      { ...route('shop', [a]), maintenance: { pageHtml: page, bypassSha256: digest('open-sesame'), retryAfterSeconds: 60 } },
    ]);
    const custom = await send(port, { host: 'shop.example.com' });
    assert.equal(custom.status, 503);
    assert.equal(custom.body, page);
    const wrong = await send(port, { host: 'shop.example.com', headers: { 'x-hangar-maintenance-bypass': 'guess' } });
    assert.equal(wrong.status, 503);
    assert.equal(a.hits, 0);
    const bypassed = await send(port, { host: 'shop.example.com', headers: { 'x-hangar-maintenance-bypass': 'open-sesame' } });
    assert.equal(bypassed.status, 200);
    assert.equal(a.hits, 1);
    assert.equal(a.seen[0]?.['x-hangar-maintenance-bypass'], undefined);
  });

  test('max body: a declared length over the limit gets 413 before the app; a chunked one is cut at the limit', async (t) => {
    const a = await startBackend(t, 'a1');
    const { port, access } = await startRouter(t, [{ ...route('shop', [a]), maxBodyBytes: 1024 }]);
    const big = await send(port, { host: 'shop.example.com', method: 'POST', path: '/notes/', body: 'x'.repeat(4096) });
    assert.equal(big.status, 413);
    assert.match(big.body, /max_body/);
    assert.equal(a.hits, 0);
    assert.equal(access.at(-1)?.failure, 'BODY_TOO_LARGE');
    const small = await send(port, { host: 'shop.example.com', method: 'POST', path: '/notes/', body: 'x'.repeat(1024) });
    assert.equal(small.status, 200);
    assert.equal((JSON.parse(small.body) as { bytes: number }).bytes, 1024);

    const chunked = await bounded(
      new Promise<number>((resolve, reject) => {
        const req = http.request(
          {
            port,
            host: '127.0.0.1',
            method: 'POST',
            path: '/notes/',
            agent: false,
            headers: { host: 'shop.example.com', 'transfer-encoding': 'chunked' },
          },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        for (let i = 0; i < 8; i++) req.write('y'.repeat(512));
        req.end();
      }),
      'chunked upload answer',
    );
    assert.equal(chunked, 413);
  });

  test('upstream timeout per app: the app that is slower than its own timeout gets 504; others keep the router default', async (t) => {
    const slow: Handler = (_req, res) => {
      const timer = setTimeout(() => res.end('late'), 1_500);
      res.on('close', () => clearTimeout(timer));
    };
    const a = await startBackend(t, 'a1', slow);
    const b = await startBackend(t, 'b1', slow);
    const { port } = await startRouter(t, [{ ...route('shop', [a]), upstreamTimeoutMs: 200 }, route('blog', [b])]);
    const timedOut = await send(port, { host: 'shop.example.com' });
    assert.equal(timedOut.status, 504);
    assert.match(timedOut.body, /did not respond within/);
    const patient = await send(port, { host: 'blog.example.com' });
    assert.equal(patient.status, 200);
    assert.equal(patient.body, 'late');
  });
});

describe('Router: per-app drain bound', () => {
  test("drain's own bound (app.json drain_seconds) closes a websocket long before the router's default of 30 s", async (t) => {
    const one = await startWsBackend(t, 'one');
    const { router, port } = await startRouter(t, [
      { app: 'chat', domains: ['chat.example.com'], backends: [{ instanceKey: 'one', host: '127.0.0.1', port: one.port }] },
    ]);
    const ws = await wsConnect(t, port, 'chat.example.com');
    await waitFor(() => ws.messages.length === 1, 'greeting');
    await bounded(router.drain('one', 300, 300), 'drain to end at its own bound');
    await bounded(ws.closed, 'the websocket to be closed by the drain');
    assert.equal(router.openTunnels('one'), 0);
  });
});
