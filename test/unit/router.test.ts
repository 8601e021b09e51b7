import { test, describe, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';
import { once } from 'node:events';
import { Router, type AccessEntry, type AppRoute, type RouterOptions } from '../../agent/router/router.js';
import {
  forwardRequestHeaders,
  forwardResponseHeaders,
  hasRequestBody,
  hostnameOf,
  acceptableRequestId,
} from '../../agent/router/http-headers.js';
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

  test('forwardRequestHeaders drops hop-by-hop, appends X-Forwarded-For, sets router headers', () => {
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
        'X-Forwarded-Proto',
        'https',
        'Cookie',
        'a=1',
        'Cookie',
        'b=2',
      ],
      { clientAddress: '10.0.0.9', proto: 'http', port: 80, requestId: 'rid' },
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
    const { port } = await startRouter(t, [route('a', [a])]);
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
