import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test, type TestContext } from 'node:test';
import type { AppView, DeployView, PsRow, ReleaseView } from '../../common/api-types.js';
import { isHangarError } from '../../common/errors.js';
import { ApiClient } from '../../cli/api-client.js';

const TOKEN = 'tok-3f9c-very-secret';

interface Recorded {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

interface Reply {
  status?: number;
  json?: unknown;
  text?: string;
}

/** A loopback HTTP server that records requests and answers with `handler`. */
async function fakeCoordinator(
  t: TestContext,
  handler: (req: Recorded) => Reply,
): Promise<{ url: string; requests: Recorded[]; close: () => Promise<void> }> {
  const requests: Recorded[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const recorded = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) };
      requests.push(recorded);
      const reply = handler(recorded);
      if (reply.json !== undefined) {
        res.writeHead(reply.status ?? 200, { 'content-type': 'application/json' }).end(JSON.stringify(reply.json));
      } else {
        res.writeHead(reply.status ?? 200, { 'content-type': 'text/plain' }).end(reply.text ?? '');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const close = () => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  };
  t.after(() => (server.listening ? close() : undefined));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests, close };
}

function client(t: TestContext, url: string): ApiClient {
  const c = new ApiClient({ url, token: TOKEN, timeoutMs: 5_000 });
  t.after(() => c.close());
  return c;
}

const app: AppView = {
  name: 'shop',
  domain: 'shop.localhost',
  url: 'http://shop.localhost',
  createdAt: '2026-01-02T03:04:05.000Z',
  release: 'v3',
  formation: { web: 2 },
  maintenance: false,
};
const release: ReleaseView = {
  version: 4,
  name: 'v4',
  status: 'running',
  description: 'Set SECRET_KEY',
  createdAt: '2026-01-02T03:04:05.000Z',
  createdBy: 'admin',
  artifactSha256: 'ab'.repeat(32),
  processTypes: ['web'],
  current: false,
};
const deploy: DeployView = {
  id: 'd1',
  app: 'shop',
  release: 'v4',
  status: 'building',
  error: null,
  errorCode: null,
  lines: [{ seq: 1, ts: '2026-01-02T03:04:05.000Z', source: 'build', stream: 'stdout', line: 'Collecting django' }],
  next: 1,
  createdAt: '2026-01-02T03:04:05.000Z',
  finishedAt: null,
};
const row: PsRow = {
  id: 'web.1',
  type: 'web',
  release: 'v3',
  agent: 'a1',
  state: 'up',
  pid: 42,
  port: 5000,
  restarts: 0,
  since: '2026-01-02T03:04:05.000Z',
  reason: null,
  memoryBytes: null,
  memoryLimitBytes: null,
  cpuLimit: null,
};

test('every method sends its route, method, token and body, and returns the API shape', async (t) => {
  const server = await fakeCoordinator(t, (req) => {
    const route = `${req.method} ${req.url}`;
    switch (route) {
      case 'GET /v1/health':
        return { json: { ok: true, version: '0.1.0' } };
      case 'GET /v1/agents':
        return { json: { agents: [] } };
      case 'GET /v1/apps':
        return { json: { apps: [app] } };
      case 'POST /v1/apps':
        return { status: 201, json: { app } };
      case 'GET /v1/apps/shop':
        return { json: { app } };
      case 'DELETE /v1/apps/shop?confirm=shop':
        return { json: { ok: true } };
      case 'GET /v1/apps/shop/config':
        return { json: { config: { A: '1' } } };
      case 'PATCH /v1/apps/shop/config':
        return { json: { config: { A: '2' }, release, deploy } };
      case 'POST /v1/apps/shop/builds':
        return { status: 202, json: { deploy } };
      case 'GET /v1/apps/shop/deploys/d1?after=7':
        return { json: { deploy: { ...deploy, lines: [], next: 7 } } };
      case 'GET /v1/apps/shop/releases':
        return { json: { releases: [release] } };
      case 'POST /v1/apps/shop/releases':
        return { status: 202, json: { release, deploy } };
      case 'GET /v1/apps/shop/ps':
        return { json: { ps: [row] } };
      case 'POST /v1/apps/shop/ps/restart':
        return { json: { restarted: ['web.1'] } };
      case 'GET /v1/apps/shop/formation':
        return { json: { formation: { web: 2 } } };
      case 'PATCH /v1/apps/shop/formation':
        return { json: { formation: { web: 3, worker: 1 } } };
      default:
        return { status: 404, json: { code: 'NOT_FOUND', message: `no route ${route}` } };
    }
  });
  const api = client(t, `${server.url}/`);

  assert.deepEqual(await api.health(), { ok: true, version: '0.1.0' });
  assert.deepEqual(await api.listAgents(), []);
  assert.deepEqual(await api.listApps(), [app]);
  assert.deepEqual(await api.createApp('shop'), app);
  assert.deepEqual(await api.getApp('shop'), app);
  await api.destroyApp('shop', 'shop');
  assert.deepEqual(await api.getConfig('shop'), { A: '1' });
  assert.deepEqual(await api.updateConfig('shop', { A: '2', B: null }), { config: { A: '2' }, release, deploy });
  assert.deepEqual(await api.createBuild('shop', Buffer.from([0x1f, 0x8b, 1, 2])), deploy);
  assert.equal((await api.getDeploy('shop', 'd1', 7)).next, 7);
  assert.deepEqual(await api.listReleases('shop'), [release]);
  assert.deepEqual(await api.rollback('shop', 2), { release, deploy });
  await api.rollback('shop');
  assert.deepEqual(await api.listPs('shop'), [row]);
  assert.deepEqual(await api.restart('shop', 'web.1'), ['web.1']);
  await api.restart('shop');
  assert.deepEqual(await api.getFormation('shop'), { web: 2 });
  assert.deepEqual(await api.scale('shop', { web: 3, worker: 1 }), { web: 3, worker: 1 });

  const byRoute = (method: string, url: string): Recorded[] => server.requests.filter((r) => r.method === method && r.url === url);
  for (const req of server.requests) assert.equal(req.headers.authorization, `Bearer ${TOKEN}`);
  assert.deepEqual(JSON.parse(byRoute('POST', '/v1/apps')[0]?.body.toString() ?? ''), { name: 'shop' });
  assert.deepEqual(JSON.parse(byRoute('PATCH', '/v1/apps/shop/config')[0]?.body.toString() ?? ''), { A: '2', B: null });
  const build = byRoute('POST', '/v1/apps/shop/builds')[0];
  assert.equal(build?.headers['content-type'], 'application/gzip');
  assert.deepEqual([...(build?.body ?? [])], [0x1f, 0x8b, 1, 2]);
  const rollbacks = byRoute('POST', '/v1/apps/shop/releases').map((r) => JSON.parse(r.body.toString()) as unknown);
  assert.deepEqual(rollbacks, [{ rollback: 2 }, {}]);
  const restarts = byRoute('POST', '/v1/apps/shop/ps/restart').map((r) => JSON.parse(r.body.toString()) as unknown);
  assert.deepEqual(restarts, [{ target: 'web.1' }, {}]);
  assert.deepEqual(JSON.parse(byRoute('PATCH', '/v1/apps/shop/formation')[0]?.body.toString() ?? ''), { formation: { web: 3, worker: 1 } });
});

test('app names are encoded in paths', async (t) => {
  const server = await fakeCoordinator(t, () => ({ json: { app } }));
  await client(t, server.url).getApp('a/b c');
  assert.equal(server.requests[0]?.url, '/v1/apps/a%2Fb%20c');
});

test('a 4xx error body becomes a HangarError with the server code, message and details', async (t) => {
  const server = await fakeCoordinator(t, (req) =>
    req.method === 'POST'
      ? { status: 409, json: { code: 'APP_EXISTS', message: 'An app named shop exists; pick another name' } }
      : { status: 400, json: { code: 'BAD_INPUT', message: 'formation.web: must be >= 0', details: [{ path: 'formation.web' }] } },
  );
  const api = client(t, server.url);
  await assert.rejects(api.createApp('shop'), (err: unknown) => {
    assert.ok(isHangarError(err, 'APP_EXISTS'));
    assert.equal(err.message, 'An app named shop exists; pick another name');
    return true;
  });
  await assert.rejects(api.scale('shop', { web: 1 }), (err: unknown) => {
    assert.ok(isHangarError(err, 'BAD_INPUT'));
    assert.deepEqual(err.details, [{ path: 'formation.web' }]);
    return true;
  });
});

test('401 and 404 keep their codes; a non-Hangar error body is reported without the token', async (t) => {
  const server = await fakeCoordinator(t, (req) =>
    req.url === '/v1/apps'
      ? { status: 401, json: { code: 'UNAUTHORIZED', message: 'Missing or invalid token' } }
      : req.url === '/v1/agents'
        ? { status: 502, text: '<html>Bad Gateway</html>' }
        : { status: 404, json: { code: 'APP_NOT_FOUND', message: 'No app named nope' } },
  );
  const api = client(t, server.url);
  await assert.rejects(api.listApps(), (err: unknown) => isHangarError(err, 'UNAUTHORIZED'));
  await assert.rejects(api.getApp('nope'), (err: unknown) => isHangarError(err, 'APP_NOT_FOUND'));
  await assert.rejects(api.listAgents(), (err: unknown) => {
    assert.ok(isHangarError(err, 'INTERNAL'));
    assert.match(err.message, /HTTP 502/);
    assert.ok(!err.message.includes(TOKEN));
    return true;
  });
});

test('a 2xx answer without the expected field is an error, not a silent undefined', async (t) => {
  const server = await fakeCoordinator(t, () => ({ json: { things: [] } }));
  await assert.rejects(client(t, server.url).listApps(), (err: unknown) => isHangarError(err, 'INTERNAL') && /"apps"/.test(err.message));
});

test('connection refused is UNREACHABLE, names the URL and says what to run, never the token', async (t) => {
  // A port that was just free: listen, note it, close.
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));

  const api = client(t, `http://127.0.0.1:${port}`);
  await assert.rejects(api.listApps(), (err: unknown) => {
    assert.ok(isHangarError(err, 'UNREACHABLE'));
    assert.match(err.message, new RegExp(`Cannot reach the coordinator at http://127\\.0\\.0\\.1:${port}`));
    assert.match(err.message, /hangar coordinator/);
    assert.ok(!err.message.includes(TOKEN));
    return true;
  });
});

test('close is idempotent', async () => {
  const api = new ApiClient({ url: 'http://127.0.0.1:9', token: TOKEN });
  await api.close();
  await api.close();
});

test('logs follows next cursors page after page, with the same filters, until there is none', async (t) => {
  const line = (i: number) => ({ ts: new Date(i).toISOString(), source: 'web.1', stream: 'stdout', agent: 'a1', line: `l${i}` });
  const server = await fakeCoordinator(t, (req) => {
    const cursor = new URL(req.url, 'http://x').searchParams.get('cursor');
    if (cursor === null) return { json: { lines: [line(1), line(2)], next: 'c2' } };
    if (cursor === 'c2') return { json: { lines: [line(3)], next: 'c3' } };
    return { json: { lines: [line(4)], next: null } };
  });
  const pages: string[][] = [];
  await client(t, server.url).eachLogPage(
    'shop',
    { n: 200_000, grep: 'l', until: '5m' },
    (lines) => void pages.push(lines.map((l) => l.line)),
  );
  assert.deepEqual(pages, [['l1', 'l2'], ['l3'], ['l4']]);
  assert.deepEqual(
    server.requests.map((r) => r.url),
    [
      '/v1/apps/shop/logs?n=200000&grep=l&until=5m',
      '/v1/apps/shop/logs?n=200000&grep=l&until=5m&cursor=c2',
      '/v1/apps/shop/logs?n=200000&grep=l&until=5m&cursor=c3',
    ],
  );
  assert.deepEqual(
    (await client(t, server.url).logs('shop', {})).map((l) => l.line),
    ['l1', 'l2', 'l3', 'l4'],
  );
});

test('several coordinators: the leader is found through /v1/health, and a NOT_LEADER answer is retried at the leader it names', async (t) => {
  const b = await fakeCoordinator(t, (req) =>
    req.url === '/v1/health' ? { json: { ok: true, role: 'leader' } } : { json: { apps: [app] } },
  );
  // `a` says it leads, then loses the lead under the request: its error body names `b` in `details`.
  const a = await fakeCoordinator(t, (req) =>
    req.url === '/v1/health'
      ? { json: { ok: true, role: 'leader' } }
      : { status: 503, json: { code: 'NOT_LEADER', message: 'this coordinator just lost the lead', details: { leader: b.url } } },
  );
  const c = client(t, ` ${a.url}/ , ${b.url}`);
  assert.deepEqual(await c.listApps(), [app]);
  assert.equal(c.url, b.url);
  assert.deepEqual(
    a.requests.map((r) => r.url),
    ['/v1/health', '/v1/apps'],
  );
  assert.deepEqual(
    b.requests.map((r) => r.url),
    ['/v1/apps'],
  );

  // A follower names the leader in its health answer.
  const follower = await fakeCoordinator(t, () => ({ json: { ok: true, role: 'follower', leader: { url: `${b.url}/` } } }));
  const d = client(t, `${follower.url},${a.url}`);
  assert.deepEqual(await d.listApps(), [app]);
  assert.equal(d.url, b.url);
});

test('several coordinators: when the leader goes away, reads and refused writes go to the new leader', async (t) => {
  let bLeads = false;
  const b = await fakeCoordinator(t, (req) => {
    if (req.url === '/v1/health') return { json: { ok: true, role: bLeads ? 'leader' : 'follower', ...(bLeads ? {} : { leader: null }) } };
    return req.method === 'POST' ? { status: 201, json: { app } } : { json: { apps: [app] } };
  });
  const a = await fakeCoordinator(t, (req) => (req.url === '/v1/health' ? { json: { ok: true, role: 'leader' } } : { json: { apps: [] } }));
  const c = client(t, `${a.url},${b.url}`);
  assert.deepEqual(await c.listApps(), []);
  assert.equal(c.url, a.url);

  // `a` dies; `b` is still electing itself: the read says no one leads yet (the deploy loop waits on that).
  await a.close();
  await assert.rejects(c.listApps(), (err) => isHangarError(err, 'NOT_LEADER') && /try again/.test(err.message));
  bLeads = true;
  assert.deepEqual(await c.listApps(), [app]);
  assert.equal(c.url, b.url);
  assert.deepEqual(await c.createApp('shop'), app);
  assert.deepEqual(
    b.requests.map((r) => `${r.method} ${r.url}`),
    ['GET /v1/health', 'GET /v1/health', 'GET /v1/apps', 'POST /v1/apps'],
  );
});
