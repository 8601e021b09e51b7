import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { WebSocket, WebSocketServer, type ClientOptions } from 'ws';
import { Router, type AppRoute } from '../../agent/router/router.js';
import { silentLogger } from '../../common/logger.js';
import { TestCa, type TestCert } from '../helpers/test-certs.js';

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  reused: boolean;
}

function get(url: string, options: https.RequestOptions = {}): Promise<Answer> {
  const lib = url.startsWith('https:') ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.get(url, { timeout: 5_000, ...options }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, reused: req.reusedSocket }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

describe('the router over HTTPS', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-router-tls-'));
  let ca: TestCa;
  let caPem: string;
  let www: TestCert;
  let backend: http.Server;
  let router: Router;
  let httpPort: number;
  let httpsPort: number;
  const routes = (redirect: boolean): AppRoute[] => {
    const port = (backend.address() as AddressInfo).port;
    return [
      {
        app: 'shop',
        domains: ['shop.localhost', 'www.shop.test'],
        backends: [{ instanceKey: 'shop:web.1:v1', host: '127.0.0.1', port }],
        httpsRedirect: redirect,
        hsts: true,
      },
      {
        app: 'other',
        domains: ['other.test'],
        backends: [{ instanceKey: 'other:web.1:v1', host: '127.0.0.1', port }],
        httpsRedirect: true,
      },
    ];
  };

  before(async () => {
    ca = await TestCa.create(dir);
    caPem = await ca.caPem();
    www = await ca.issue(['www.shop.test']);
    backend = http.createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ path: req.url, proto: req.headers['x-forwarded-proto'], port: req.headers['x-forwarded-port'] }));
    });
    const wss = new WebSocketServer({ server: backend });
    wss.on('connection', (ws) => ws.on('message', (m: Buffer) => ws.send(`echo ${m.toString()}`)));
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
    router = new Router({ port: 0, httpsPort: 0, host: '127.0.0.1', logger: silentLogger() });
    router.setRoutes(routes(true));
    router.setTls({
      certificates: [{ id: 'c1', domains: ['www.shop.test'], certPem: www.certPem, keyPem: www.keyPem }],
      challenges: new Map([['tok-1', 'tok-1.thumbprint']]),
    });
    ({ port: httpPort, httpsPort } = await router.start());
    assert.notEqual(httpsPort, 0);
    assert.equal(router.httpsPort, httpsPort);
  });

  after(async () => {
    await router.close();
    backend.closeAllConnections();
    await new Promise((r) => backend.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  const secure = (path: string, agent?: https.Agent) =>
    get(`https://127.0.0.1:${httpsPort}${path}`, {
      servername: 'www.shop.test',
      headers: { host: 'www.shop.test' },
      ca: caPem,
      ...(agent ? { agent } : {}),
    });

  it('serves the certificate of the requested name (SNI) and proxies with X-Forwarded-Proto https and the port, on kept-alive connections', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: caPem });
    try {
      const first = await secure('/a?b=1', agent);
      assert.equal(first.status, 200);
      assert.deepEqual(JSON.parse(first.body), { path: '/a?b=1', proto: 'https', port: String(httpsPort) });
      assert.equal(first.headers['strict-transport-security'], 'max-age=31536000');
      const second = await secure('/again', agent);
      assert.equal(second.status, 200);
      assert.equal(second.reused, true, 'HTTP/1.1 keep-alive over TLS');
    } finally {
      agent.destroy();
    }
  });

  it('fails the TLS handshake of a name without a certificate, cleanly, and serves on', async () => {
    await assert.rejects(
      get(`https://127.0.0.1:${httpsPort}/`, { servername: 'other.test', headers: { host: 'other.test' }, ca: caPem }),
      (err: NodeJS.ErrnoException) => /alert|handshake|socket hang up|ECONNRESET/i.test(`${err.code} ${err.message}`),
    );
    await assert.rejects(
      new Promise((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port: httpsPort, ca: caPem }, () => resolve(s));
        s.on('error', reject);
      }),
      'no SNI at all: no certificate either',
    );
    assert.equal((await secure('/')).status, 200);
  });

  it('redirects plain HTTP with 308 to HTTPS for a name with a certificate only, and answers ACME challenges before that', async () => {
    const redirected = await get(`http://127.0.0.1:${httpPort}/path?q=1`, { headers: { host: 'www.shop.test' } });
    assert.equal(redirected.status, 308);
    assert.equal(redirected.headers.location, `https://www.shop.test:${httpsPort}/path?q=1`);
    const noCert = await get(`http://127.0.0.1:${httpPort}/`, { headers: { host: 'shop.localhost' } });
    assert.equal(noCert.status, 200);
    assert.equal((JSON.parse(noCert.body) as { proto: string }).proto, 'http');
    assert.equal(noCert.headers['strict-transport-security'], undefined, 'no HSTS over plain HTTP');
    const challenge = await get(`http://127.0.0.1:${httpPort}/.well-known/acme-challenge/tok-1`, { headers: { host: 'www.shop.test' } });
    assert.equal(challenge.status, 200);
    assert.equal(challenge.body, 'tok-1.thumbprint');
    const anyHost = await get(`http://127.0.0.1:${httpPort}/.well-known/acme-challenge/tok-1`, { headers: { host: 'new.example.test' } });
    assert.equal(anyHost.body, 'tok-1.thumbprint');
    const unknown = await get(`http://127.0.0.1:${httpPort}/.well-known/acme-challenge/nope`, { headers: { host: 'www.shop.test' } });
    assert.equal(unknown.status, 308, 'an unknown token is not answered by the router');
  });

  it('serves plain HTTP without a redirect when the app opted out', async () => {
    router.setRoutes(routes(false));
    try {
      const plain = await get(`http://127.0.0.1:${httpPort}/`, { headers: { host: 'www.shop.test' } });
      assert.equal(plain.status, 200);
    } finally {
      router.setRoutes(routes(true));
    }
  });

  it('tunnels websockets over TLS', async () => {
    // ws hands TLS options on to https.request; its types do not list `servername`.
    const tlsOptions = { servername: 'www.shop.test', ca: caPem } as ClientOptions;
    const ws = new WebSocket(`wss://127.0.0.1:${httpsPort}/ws`, { ...tlsOptions, headers: { host: 'www.shop.test' } });
    try {
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      const reply = new Promise<string>((resolve) => ws.once('message', (m: Buffer) => resolve(m.toString())));
      ws.send('hi');
      assert.equal(await reply, 'echo hi');
    } finally {
      ws.close();
    }
  });

  it('drops a certificate it cannot load and keeps serving the others', async () => {
    router.setTls({
      certificates: [
        { id: 'c1', domains: ['www.shop.test'], certPem: www.certPem, keyPem: www.keyPem },
        { id: 'bad', domains: ['other.test'], certPem: 'not a cert', keyPem: 'not a key' },
      ],
      challenges: new Map(),
    });
    assert.equal((await secure('/')).status, 200);
  });
});
