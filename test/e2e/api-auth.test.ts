import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { WebSocket, WebSocketServer } from 'ws';
import { systemClock } from '../../common/clock.js';
import { SecretBox } from '../../common/secret-box.js';
import { Authenticator, TOKEN_SUBPROTOCOL_PREFIX, authorizeUpgrade, selectWebsocketProtocol } from '../../coordinator/api/auth.js';
import { Store } from '../../coordinator/store/store.js';
import { startCluster, tempDir } from '../helpers/cluster.js';
import { TestCa } from '../helpers/test-certs.js';

interface Reply {
  status: number;
  body: { code?: string; message?: string } & Record<string, unknown>;
}

async function call(url: string, token: string | null, method: string, path: string, body?: unknown): Promise<Reply> {
  const res = await request(`${url}${path}`, {
    method: method as 'GET',
    headers: {
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: text ? (JSON.parse(text) as Reply['body']) : {} };
}

test(
  'API tokens: 401 without a live token, 403 below the route scope, created once, stored hashed, revocable',
  { timeout: 120_000 },
  async (t) => {
    const cluster = await startCluster(t, { agents: 0 });
    const url = cluster.coordinator.url;
    const admin = cluster.coordinator.adminToken;

    // No token, a wrong one, one in the URL: 401 UNAUTHORIZED. Health needs none.
    for (const [token, path] of [
      [null, '/v1/apps'],
      ['hgr_tok_wrong', '/v1/apps'],
      [null, `/v1/apps?token=${admin}`],
      [null, '/v1/tokens'],
      ['', '/v1/agents'],
    ] as const) {
      const r = await call(url, token, 'GET', path);
      assert.equal(r.status, 401, `${path}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, 'UNAUTHORIZED');
    }
    assert.equal((await call(url, null, 'GET', '/v1/health')).status, 200);
    assert.equal((await call(url, null, 'POST', '/v1/apps', { name: 'shop' })).status, 401);

    assert.equal((await call(url, admin, 'POST', '/v1/apps', { name: 'shop' })).status, 201);

    // Tokens from the CLI: shown once, listed without the secret.
    const made = await cluster.cli(['tokens:create', '--scope', 'read', '--name', 'dashboard', '--json']);
    assert.equal(made.code, 0, made.stderr);
    const readToken = JSON.parse(made.stdout) as { id: string; token: string; scope: string };
    assert.equal(readToken.scope, 'read');
    assert.match(readToken.token, /^hgr_tok_/);
    const deployMade = await cluster.cli(['tokens:create', '--scope', 'deploy']);
    assert.equal(deployMade.code, 0, deployMade.stderr);
    const deployToken = /^(hgr_tok_\S+)$/m.exec(deployMade.stdout)?.[1];
    assert.ok(deployToken, deployMade.stdout);
    const listed = await cluster.cli(['tokens', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.ok(!listed.stdout.includes(readToken.token), 'tokens are never listed');
    assert.deepEqual((JSON.parse(listed.stdout) as { scope: string }[]).map((r) => r.scope).sort(), ['admin', 'deploy', 'read']);

    // read: looks, cannot deploy, change config, scale, restart, read config values or manage.
    assert.equal((await call(url, readToken.token, 'GET', '/v1/apps')).status, 200);
    assert.equal((await call(url, readToken.token, 'GET', '/v1/apps/shop/releases')).status, 200);
    const forbidden: [string, string, unknown?][] = [
      ['POST', '/v1/apps/shop/releases', {}],
      ['PATCH', '/v1/apps/shop/config', { A: 'b' }],
      ['GET', '/v1/apps/shop/config'],
      ['PATCH', '/v1/apps/shop/formation', { formation: { web: 1 } }],
      ['POST', '/v1/apps/shop/ps/restart', {}],
      ['POST', '/v1/apps', { name: 'other' }],
      ['DELETE', '/v1/apps/shop?confirm=shop'],
      ['GET', '/v1/tokens'],
      ['POST', '/v1/tokens', { scope: 'admin' }],
    ];
    for (const [method, path, body] of forbidden) {
      const r = await call(url, readToken.token, method, path, body);
      assert.equal(r.status, 403, `${method} ${path}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, 'FORBIDDEN');
    }
    const upload = await request(`${url}/v1/apps/shop/builds`, {
      method: 'POST',
      headers: { authorization: `Bearer ${readToken.token}`, 'content-type': 'application/gzip' },
      body: Buffer.from('x'),
    });
    assert.equal(upload.statusCode, 403);
    assert.equal(((await upload.body.json()) as { code: string }).code, 'FORBIDDEN');
    const cliDeny = await cluster.cli(['scale', 'web=2', '-a', 'shop'], { env: { HANGAR_TOKEN: readToken.token } });
    assert.equal(cliDeny.code, 1);
    assert.match(cliDeny.stderr, /scope read/);

    // deploy: changes config, but does not create apps or manage tokens.
    const patched = await call(url, deployToken, 'PATCH', '/v1/apps/shop/config', { GREETING: 'hi' });
    assert.equal(patched.status, 200, JSON.stringify(patched.body));
    assert.equal((await call(url, deployToken, 'POST', '/v1/apps', { name: 'other' })).status, 403);
    assert.equal((await call(url, deployToken, 'GET', '/v1/tokens')).status, 403);

    // Stored hashed: no token appears in the data dir.
    const dataDir = join(cluster.dir, 'coordinator');
    for (const name of await readdir(dataDir)) {
      if (name === 'admin-token') continue;
      const text = await readFile(join(dataDir, name)).catch(() => Buffer.alloc(0));
      for (const token of [readToken.token, deployToken]) assert.ok(!text.includes(token), `${name} holds a token in clear`);
    }

    // Revoked: 401 at once.
    const revoked = await cluster.cli(['tokens:revoke', readToken.id]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.equal((await call(url, readToken.token, 'GET', '/v1/apps')).status, 401);
    assert.equal((await cluster.cli(['tokens:revoke', readToken.id])).code, 1);
  },
);

test('websocket upgrades authenticate by header or subprotocol, never by URL', { timeout: 60_000 }, async (t) => {
  const dir = await tempDir(t);
  const store = new Store({ path: join(dir, 'hangar.db'), secrets: await SecretBox.fromKeyFile(join(dir, 'secret-key')) });
  t.after(() => store.close());
  const auth = new Authenticator({ store, clock: systemClock });
  const { token } = auth.create('read', 'browser');
  const { token: other } = auth.create('read', 'other');
  store.deleteToken(store.listTokens().find((r) => r.name === 'other')?.id ?? '');

  const wss = new WebSocketServer({ noServer: true, handleProtocols: selectWebsocketProtocol });
  const server = createServer((_req, res) => res.writeHead(404).end());
  server.on('upgrade', (req, socket, head) => {
    const caller = authorizeUpgrade(auth, req, socket, 'read');
    if (!caller) return;
    wss.handleUpgrade(req, socket, head, (ws) => ws.send(JSON.stringify({ hello: caller.name })));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    wss.close();
    await new Promise((resolve) => server.close(resolve));
  });
  const port = (server.address() as { port: number }).port;
  const base = `ws://127.0.0.1:${port}/v1/apps/shop/logs/stream`;

  const attempt = (url: string, options: { headers?: Record<string, string>; protocols?: string[] } = {}) =>
    new Promise<{ status: number; message?: string; protocol?: string }>((resolve, reject) => {
      const ws = new WebSocket(url, options.protocols ?? [], { headers: options.headers ?? {} });
      const timer = setTimeout(() => reject(new Error('no answer')), 10_000);
      ws.on('unexpected-response', (_req, res) => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0 });
        ws.terminate();
      });
      ws.on('message', (data: Buffer) => {
        clearTimeout(timer);
        resolve({ status: 101, message: data.toString(), protocol: ws.protocol });
        ws.close();
      });
      ws.on('error', (err) => {
        if (!String(err.message).includes('Unexpected server response')) reject(err);
      });
    });

  assert.equal((await attempt(base)).status, 401, 'no token');
  assert.equal((await attempt(`${base}?token=${token}`)).status, 401, 'a token in the URL is ignored');
  assert.equal((await attempt(base, { headers: { authorization: 'Bearer nope' } })).status, 401, 'wrong token');
  assert.equal((await attempt(base, { headers: { authorization: `Bearer ${other}` } })).status, 401, 'revoked token');
  assert.equal((await attempt(base, { protocols: [`${TOKEN_SUBPROTOCOL_PREFIX}nope`, 'hangar.v1'] })).status, 401);

  const byHeader = await attempt(base, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(byHeader.status, 101);
  assert.deepEqual(JSON.parse(byHeader.message ?? ''), { hello: 'browser' });
  const byProtocol = await attempt(base, { protocols: [`${TOKEN_SUBPROTOCOL_PREFIX}${token}`, 'hangar.v1'] });
  assert.equal(byProtocol.status, 101);
  assert.equal(byProtocol.protocol, 'hangar.v1', 'the server never echoes the token subprotocol');

  // Scope is checked too.
  const weak = auth.create('read', 'weak').token;
  const strictServer = createServer();
  strictServer.on('upgrade', (req, socket) => {
    if (authorizeUpgrade(auth, req, socket, 'deploy')) socket.destroy();
  });
  await new Promise<void>((resolve) => strictServer.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => strictServer.close(resolve)));
  const strictPort = (strictServer.address() as { port: number }).port;
  assert.equal((await attempt(`ws://127.0.0.1:${strictPort}/`, { headers: { authorization: `Bearer ${weak}` } })).status, 403);
});

test('the HTTP API serves HTTPS with --tls-cert/--tls-key', { timeout: 60_000 }, async (t) => {
  const dir = await tempDir(t);
  const ca = await TestCa.create(dir);
  const { certPath: cert, keyPath: key } = await ca.issue(['IP:127.0.0.1']);
  const cluster = await startCluster(t, { agents: 0, coordinator: { tlsCert: cert, tlsKey: key } });
  assert.match(cluster.coordinator.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  const dispatcher = new Agent({ connect: { ca: await ca.caPem() } });
  t.after(() => dispatcher.close());
  const res = await request(`${cluster.coordinator.url}/v1/apps`, {
    dispatcher,
    headers: { authorization: `Bearer ${cluster.coordinator.adminToken}` },
  });
  assert.equal(res.statusCode, 200);
  await res.body.dump();
  await assert.rejects(request(cluster.coordinator.url.replace('https:', 'http:') + '/v1/health', { headersTimeout: 5000 }));
  const cli = await cluster.cli(['apps', '--json'], { env: { NODE_EXTRA_CA_CERTS: join(ca.dir, 'ca.pem') } });
  assert.equal(cli.code, 0, cli.stderr);
  assert.deepEqual(JSON.parse(cli.stdout), []);
});
