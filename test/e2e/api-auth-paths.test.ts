import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { scopeAllows, type RouteScope, type TokenScope } from '../../coordinator/api/auth.js';
import { startCluster } from '../helpers/cluster.js';

/** What a raw HTTP/1.1 exchange answered: the status (0 when the server closed without one) and the body. */
interface RawAnswer {
  status: number;
  text: string;
}

/**
 * Sends one request exactly as written (request line included), so the test controls spellings
 * that HTTP clients normalise away: percent-encoding, `//`, `..`, absolute-form targets.
 */
function rawRequest(port: number, method: string, target: string, headers: Record<string, string>, body = ''): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${method} ${target}: no answer in 10 s`));
    }, 10_000);
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      // A 101 keeps the socket open: the status line is all we need.
      if (Buffer.concat(chunks).toString('latin1').startsWith('HTTP/1.1 101')) socket.destroy();
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('utf8');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      resolve({ status, text });
    });
    const lines = [`${method} ${target} HTTP/1.1`, `Host: 127.0.0.1:${port}`];
    if (!('Connection' in headers)) lines.push('Connection: close');
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
    if (body) lines.push('Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`);
    socket.write(`${lines.join('\r\n')}\r\n\r\n${body}`);
  });
}

/** Percent-encodes every letter and digit of `s` (what a router decodes back before matching). */
const encodeAll = (s: string) => s.replace(/[A-Za-z0-9]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`);

/** Every spelling of one path that an attacker might try to slip past an auth check. */
function spellings(path: string, port: number): [string, string][] {
  const [, first = '', rest = ''] = /^\/([^/]+)(.*)$/.exec(path) ?? [];
  return [
    ['plain', path],
    ['first segment percent-encoded', `/${encodeAll(first)}${rest}`],
    ['one letter percent-encoded', `/%${first.charCodeAt(0).toString(16)}${first.slice(1)}${rest}`],
    ['every segment percent-encoded', path.split('/').map(encodeAll).join('/')],
    ['double slashes', path.replace(/\//g, '//')],
    ['dot segments', `/x/..${path}`],
    ['current-dir segments', path.replace(/\//g, '/./')],
    ['upper case', path.toUpperCase()],
    ['trailing slash', `${path}/`],
    ['absolute-form', `http://127.0.0.1:${port}${path}`],
    ['absolute-form, encoded', `http://127.0.0.1:${port}/${encodeAll(first)}${rest}`],
    ['query string', `${path}?reveal=true`],
  ];
}

const PARAMS: Record<string, string> = { app: 'shop', name: 'nope', id: 'nope', type: 'web', agent: 'nope', backup: 'nope' };
const fill = (url: string) => url.replace(/:(\w+)/g, (_m, k: string) => PARAMS[k] ?? 'x');

test(
  'auth is decided by the route Fastify matched: no spelling of any path reaches a route without its scope',
  { timeout: 300_000 },
  async (t) => {
    const cluster = await startCluster(t, { agents: 0 });
    const port = cluster.coordinator.httpPort;
    const secret = 'sw0rdf1sh-never-leaks';
    assert.equal((await cluster.cli(['apps:create', 'shop'])).code, 0);
    assert.equal((await cluster.cli(['config:set', `STRIPE_KEY=${secret}`, '-a', 'shop'])).code, 0);
    const tokens: Record<TokenScope | 'none', string | null> = {
      none: null,
      read: null,
      deploy: null,
      admin: cluster.coordinator.adminToken,
    };
    for (const scope of ['read', 'deploy'] as const) {
      const made = await cluster.cli(['tokens:create', '--scope', scope, '--json']);
      assert.equal(made.code, 0, made.stderr);
      tokens[scope] = (JSON.parse(made.stdout) as { token: string }).token;
    }

    // The table is the API as registered: every route, none left without a scope.
    const routes: readonly RouteScope[] = cluster.coordinator.routes;
    const publicRoutes = routes.filter((r) => r.scope === 'none').map((r) => `${r.method} ${r.url}`);
    // Health, and the dashboard's page and login-code exchange (the one-time code is the credential).
    assert.deepEqual([...new Set(publicRoutes)].sort(), [
      'GET /',
      'GET /assets/:file',
      'GET /v1/health',
      'HEAD /',
      'HEAD /assets/:file',
      'HEAD /v1/health',
      'POST /v1/dashboard/login',
    ]);
    for (const must of [
      'GET /v1/apps/:app/config',
      'POST /v1/tokens',
      'GET /v1/apps/:app/addons',
      'GET /metrics',
      'GET /v1/apps/:app/logs',
    ]) {
      assert.ok(
        routes.some((r) => `${r.method} ${r.url}` === must),
        `${must} is in the table`,
      );
    }
    assert.ok(routes.length >= 30, `only ${routes.length} routes in the table`);

    let tried = 0;
    for (const route of routes) {
      if (route.scope === 'none') continue;
      const path = fill(route.url);
      const body = route.method === 'GET' || route.method === 'HEAD' || route.method === 'DELETE' ? '' : '{}';
      for (const [spelling, target] of spellings(path, port)) {
        for (const [held, token] of Object.entries(tokens) as [TokenScope | 'none', string | null][]) {
          const headers: Record<string, string> = token === null ? {} : { Authorization: `Bearer ${token}` };
          const answer = await rawRequest(port, route.method, target, headers, body);
          tried += 1;
          const what = `${route.method} ${target} (${spelling}) with ${held} token: ${answer.status} ${answer.text.slice(-200)}`;
          const allowed = held !== 'none' && scopeAllows(held, route.scope);
          if (!allowed) {
            assert.ok(!answer.text.includes(secret), `secret leaked: ${what}`);
            // Refused: 401 without a token, 403 for a weak one, or no route at all for a spelling
            // the router does not match (never a 2xx, never a handler's own answer).
            const expected = held === 'none' ? [401] : [403, 404];
            assert.ok(expected.includes(answer.status), what);
          } else if (spelling === 'plain') {
            // The same request with a strong enough token gets past the check (the test can fail).
            assert.ok(![401, 403].includes(answer.status), what);
          }
        }
      }
    }
    assert.ok(tried > 1000, `tried ${tried}`);

    // The attack of the report, by hand: no token, encoded path, config and a new admin token.
    const leaked = await rawRequest(port, 'GET', '/%76%31/apps/shop/config', {});
    assert.equal(leaked.status, 401, leaked.text);
    assert.match(leaked.text, /"code":"UNAUTHORIZED"/);
    const minted = await rawRequest(port, 'POST', '/%76%31/tokens', {}, JSON.stringify({ scope: 'admin' }));
    assert.equal(minted.status, 401, minted.text);
    const absolute = await rawRequest(port, 'GET', `http://127.0.0.1:${port}/v1/apps/shop/config`, {});
    assert.equal(absolute.status, 401, absolute.text);
    assert.equal((await cluster.cli(['tokens', '--json'])).stdout.match(/"scope"/g)?.length, 3, 'no token was minted');

    // Health stays public however it is spelled.
    assert.equal((await rawRequest(port, 'GET', '/v1/health', {})).status, 200);
    assert.equal((await rawRequest(port, 'GET', '/%76%31/health', {})).status, 200);

    // Add-on passwords (?reveal=true) need the scope that may read secrets.
    const revealRead = await rawRequest(port, 'GET', '/v1/apps/shop/addons?reveal=true', { Authorization: `Bearer ${tokens.read}` });
    assert.equal(revealRead.status, 403, revealRead.text);
    assert.match(revealRead.text, /"code":"FORBIDDEN"/);
    const revealDeploy = await rawRequest(port, 'GET', '/v1/apps/shop/addons?reveal=true', { Authorization: `Bearer ${tokens.deploy}` });
    assert.equal(revealDeploy.status, 200, revealDeploy.text);
    const listRead = await rawRequest(port, 'GET', '/v1/apps/shop/addons', { Authorization: `Bearer ${tokens.read}` });
    assert.equal(listRead.status, 200, listRead.text);

    // The websocket upgrade: no spelling of the log stream opens without a token.
    const upgrade = {
      Upgrade: 'websocket',
      Connection: 'Upgrade',
      'Sec-WebSocket-Version': '13',
      'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
    };
    for (const [spelling, target] of spellings('/v1/apps/shop/logs/stream', port)) {
      const answer = await rawRequest(port, 'GET', target, upgrade);
      assert.ok([0, 401, 404].includes(answer.status), `websocket ${target} (${spelling}) without a token: ${answer.status}`);
      const weak = await rawRequest(port, 'GET', target, { ...upgrade, Authorization: 'Bearer hgr_tok_wrong' });
      assert.notEqual(weak.status, 101, `websocket ${target} (${spelling}) with a wrong token`);
    }
    const opened = await rawRequest(port, 'GET', '/v1/apps/shop/logs/stream', { ...upgrade, Authorization: `Bearer ${tokens.read}` });
    assert.equal(opened.status, 101, 'a read token opens the stream');
  },
);
