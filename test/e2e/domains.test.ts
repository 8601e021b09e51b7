import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import { join } from 'node:path';
import { request } from 'undici';
import type { CertView, DomainView, LogLineView } from '../../common/api-types.js';
import type { Clock } from '../../common/clock.js';
import type { RunningAgent } from '../../agent/agent.js';
import { FIXTURES, startCluster, tempDir, waitFor, type Cluster } from '../helpers/cluster.js';
import { planPebble, startPebble } from '../helpers/pebble.js';
import { TestCa } from '../helpers/test-certs.js';

const DAY = 86_400_000;

/** The clock of certificate validity: the system's, moved forward by `offset` when the test says. */
function movableClock(): Clock & { offset: number } {
  const clock = {
    offset: 0,
    now: () => Date.now() + clock.offset,
    setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
    clearTimeout: (timer: unknown) => clearTimeout(timer as NodeJS.Timeout),
  };
  return clock;
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function httpGet(port: number, host: string, path = '/'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, headers: { host }, timeout: 10_000, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      })
      .on('error', reject);
  });
}

/** An HTTPS request to an agent's router for `host` (SNI and Host), trusting `ca` only. */
function httpsGet(agent: RunningAgent, host: string, ca: string, path = '/'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    https
      .get(
        { host: '127.0.0.1', port: agent.httpsPort, path, servername: host, headers: { host }, ca, timeout: 10_000, agent: false },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        },
      )
      .on('error', reject);
  });
}

/** SHA-256 fingerprint of the certificate an agent's router presents for `host`. */
function servedFingerprint(agent: RunningAgent, host: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port: agent.httpsPort, servername: host, rejectUnauthorized: false }, () => {
      resolve(socket.getPeerCertificate().fingerprint256);
      socket.end();
    });
    socket.on('error', reject);
  });
}

/** `openssl s_client -servername HOST -connect 127.0.0.1:PORT -CAfile ROOT`: its output. */
function sClient(agent: RunningAgent, host: string, caFile: string): Promise<string> {
  return new Promise((resolve) => {
    const child = execFile(
      'openssl',
      ['s_client', '-servername', host, '-connect', `127.0.0.1:${agent.httpsPort}`, '-CAfile', caFile, '-verify_hostname', host],
      { timeout: 15_000 },
      (_err, stdout, stderr) => resolve(`${stdout}\n${stderr}`),
    );
    child.stdin?.end();
  });
}

async function json<T>(cluster: Cluster, args: string[]): Promise<T> {
  const res = await cluster.cli(args);
  assert.equal(res.code, 0, `${args.join(' ')}: ${res.stderr}`);
  return JSON.parse(res.stdout) as T;
}

/** Requests over plain HTTP to every router, until stopped; any answer but 200 is a failure. */
function keepAsking(cluster: Cluster, host: string): { stop(): Promise<{ ok: number; failures: string[] }> } {
  let stopped = false;
  let ok = 0;
  const failures: string[] = [];
  const loop = (async () => {
    while (!stopped) {
      for (const agent of cluster.agents) {
        try {
          const res = await httpGet(agent.routerPort, host);
          if (res.status === 200) ok++;
          else failures.push(`${agent.name}: ${res.status} ${res.body.slice(0, 200)}`);
        } catch (err) {
          failures.push(`${agent.name}: ${(err as Error).message}`);
        }
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return { ok, failures };
    },
  };
}

test(
  'custom domains, uploaded and ACME certificates on every router, renewal and a coordinator restart',
  { timeout: 600_000 },
  async (t) => {
    const pebbleDir = await tempDir(t, 'hangar-pebble-');
    const plan = await planPebble(pebbleDir);
    const certClock = movableClock();
    const cluster = await startCluster(t, {
      agents: 2,
      certClock,
      coordinator: { acmeDirectory: plan.directoryUrl, acmeCaFile: plan.caFile, acmeIntervalMs: 500, acmeRetryBaseMs: 2_000 },
    });
    const [a1, a2] = cluster.agents;
    assert.ok(a1 && a2);
    // Pebble validates HTTP-01 on agent-1's router; its DNS answers every name with 127.0.0.1.
    const { rootPem } = await startPebble(t, plan, a1.routerPort);
    const rootFile = join(pebbleDir, 'pebble-root.pem');
    await writeFile(rootFile, rootPem);

    assert.equal((await cluster.cli(['apps:create', 'shop'])).code, 0);
    assert.equal((await cluster.cli(['apps:create', 'other'])).code, 0);
    const set = await cluster.cli([
      'config:set',
      `DATABASE_URL=sqlite:///${join(cluster.appDir, 'shop.sqlite3')}`,
      'DJANGO_ALLOWED_HOSTS=.localhost,.shop.test,.byo.test',
      '-a',
      'shop',
    ]);
    assert.equal(set.code, 0, set.stderr);
    const deploy = await cluster.cli(['deploy', join(FIXTURES, 'django-app'), '-a', 'shop'], { timeoutMs: 300_000 });
    assert.equal(deploy.code, 0, `${deploy.stdout}\n${deploy.stderr}`);
    await waitFor('both routers to serve shop', async () => {
      for (const agent of cluster.agents) if ((await httpGet(agent.routerPort, 'shop.localhost')).status !== 200) return false;
      return true;
    });
    const traffic = keepAsking(cluster, 'shop.localhost');

    await t.test('domains:add serves the domain on every router and prints DNS records', async () => {
      const added = await cluster.cli(['domains:add', 'WWW.Shop.Test', '-a', 'shop']);
      assert.equal(added.code, 0, added.stderr);
      assert.match(added.stdout, /Adding www\.shop\.test to shop\.\.\. done/);
      assert.match(added.stdout, /A\s+www\.shop\.test\s+127\.0\.0\.1/);
      for (const agent of cluster.agents) {
        const res = await waitFor(`${agent.name} to serve www.shop.test`, async () => {
          const r = await httpGet(agent.routerPort, 'www.shop.test');
          return r.status === 200 ? r : null;
        });
        assert.equal((JSON.parse(res.body) as { app: string }).app, 'shop', 'Django answered');
      }
      const domains = await json<DomainView[]>(cluster, ['domains', '-a', 'shop', '--json']);
      assert.deepEqual(
        domains.map((d) => [d.hostname, d.kind, d.certificate.state]),
        [
          ['shop.localhost', 'default', 'none'],
          ['www.shop.test', 'custom', 'none'],
        ],
      );
    });

    await t.test('a taken, malformed or reserved domain is refused with a sentence, and nothing is added', async () => {
      const taken = await cluster.cli(['domains:add', 'www.shop.test', '-a', 'other']);
      assert.equal(taken.code, 1);
      assert.match(taken.stderr, /already a domain of another app; remove it there first/);
      const api = async (hostname: string) => {
        const res = await request(`${cluster.coordinator.url}/v1/apps/other/domains`, {
          method: 'POST',
          headers: { authorization: `Bearer ${cluster.coordinator.adminToken}`, 'content-type': 'application/json' },
          body: JSON.stringify({ hostname }),
        });
        return { status: res.statusCode, body: (await res.body.json()) as { code: string; message: string } };
      };
      const conflict = await api('www.SHOP.test');
      assert.equal(conflict.status, 409);
      assert.equal(conflict.body.code, 'DOMAIN_TAKEN');
      for (const [hostname, why] of [
        ['10.0.0.1', /IP address/],
        ['shop', /single label/],
        ['bad_name.test', /label/],
        ['x.localhost', /coordinator's own domain/],
      ] as const) {
        const res = await api(hostname);
        assert.equal(res.status, 400, hostname);
        assert.equal(res.body.code, 'BAD_INPUT');
        assert.match(res.body.message, why);
      }
      const malformed = await cluster.cli(['domains:add', 'https://www.shop.test/', '-a', 'other']);
      assert.equal(malformed.code, 2);
      assert.match(malformed.stderr, /without a scheme, port, path/);
      assert.deepEqual(
        (await json<DomainView[]>(cluster, ['domains', '-a', 'other', '--json'])).map((d) => d.hostname),
        ['other.localhost'],
      );
    });

    const byoCa = await TestCa.create(await tempDir(t, 'hangar-byo-ca-'));
    const byoCaPem = await byoCa.caPem();
    let byoKeyPem = '';

    await t.test('certs:add refuses a certificate of another domain, a key that does not match, an expired one', async () => {
      assert.equal((await cluster.cli(['domains:add', 'api.byo.test', '-a', 'shop'])).code, 0);
      const elsewhere = await byoCa.issue(['api.nowhere.test'], { until: new Date(Date.now() + 60 * DAY) });
      // Longer-lived than ACME's, so moving the clock to renew that one never makes this one due.
      const wildcard = await byoCa.issue(['*.byo.test'], { until: new Date(Date.now() + 20 * 365 * DAY) });
      const expired = await byoCa.issue(['api.byo.test'], { from: new Date('2020-01-01'), until: new Date('2020-02-01') });
      const cases = [
        [elsewhere.certPath, elsewhere.keyPath, /covers none of the app's domains/],
        [wildcard.certPath, elsewhere.keyPath, /private key does not belong to this certificate/],
        [expired.certPath, expired.keyPath, /expired on 2020-02-01/],
      ] as const;
      for (const [cert, key, why] of cases) {
        const res = await cluster.cli(['certs:add', cert, key, '-a', 'shop']);
        assert.equal(res.code, 1, res.stdout);
        assert.match(res.stderr, why);
      }
      const missing = await cluster.cli(['certs:add', join(pebbleDir, 'nope.pem'), wildcard.keyPath, '-a', 'shop']);
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /Cannot read the certificate file/);
      assert.deepEqual((await json<{ certs: CertView[] }>(cluster, ['certs', '-a', 'shop', '--json'])).certs, []);

      const added = await cluster.cli(['certs:add', wildcard.certPath, wildcard.keyPath, '-a', 'shop']);
      assert.equal(added.code, 0, added.stderr);
      assert.match(added.stdout, /for \*\.byo\.test to shop\.\.\. done; it serves api\.byo\.test/);
      byoKeyPem = wildcard.keyPem;
      for (const agent of cluster.agents) {
        const res = await waitFor(`${agent.name} to serve api.byo.test over HTTPS`, () =>
          httpsGet(agent, 'api.byo.test', byoCaPem).catch(() => null),
        );
        assert.equal(res.status, 200, res.body);
        assert.equal((JSON.parse(res.body) as { app: string }).app, 'shop');
        assert.equal(res.headers['strict-transport-security'], undefined, 'HSTS is opt-in');
        const plain = await httpGet(agent.routerPort, 'api.byo.test', '/notes/');
        assert.equal(plain.status, 308);
        assert.equal(plain.headers.location, `https://api.byo.test:${agent.httpsPort}/notes/`);
      }
    });

    let acmeFingerprint = '';
    await t.test('certs:auto:enable gets a certificate through HTTP-01 that both routers serve', async () => {
      const enabled = await cluster.cli(['certs:auto:enable', '--hsts', '-a', 'shop'], { timeoutMs: 200_000 });
      assert.equal(enabled.code, 0, `${enabled.stdout}\n${enabled.stderr}`);
      assert.match(enabled.stdout, /www\.shop\.test: valid, valid until/);
      assert.match(enabled.stdout, /Every custom domain of shop is served over HTTPS/);
      const { certs } = await json<{ certs: CertView[] }>(cluster, ['certs', '-a', 'shop', '--json']);
      const acme = certs.filter((c) => c.source === 'acme');
      assert.deepEqual(
        acme.map((c) => c.names),
        [['www.shop.test']],
        'only the domain without a long-valid certificate was ordered',
      );
      acmeFingerprint = acme[0]?.fingerprint ?? '';
      for (const agent of [a1, a2]) {
        const out = await sClient(agent, 'www.shop.test', rootFile);
        assert.match(out, /Verify return code: 0 \(ok\)/, out);
        assert.match(out, /subject=CN = www\.shop\.test/, out);
        const res = await httpsGet(agent, 'www.shop.test', rootPem, '/notes/');
        assert.equal(res.status, 200, res.body);
        assert.equal(res.headers['strict-transport-security'], 'max-age=31536000');
        assert.equal(await servedFingerprint(agent, 'www.shop.test'), acmeFingerprint);
      }
      const logs = await cluster.cli(['logs', '-a', 'shop', '--source', 'hangar', '--json', '-n', '50']);
      const lines = logs.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as LogLineView);
      assert.ok(
        lines.some((l) => l.source === 'hangar' && /^Certificate for www\.shop\.test issued by ACME/.test(l.line)),
        logs.stdout,
      );
    });

    const wwwCert = (certs: CertView[]) => certs.find((c) => c.source === 'acme' && c.names.includes('www.shop.test'));
    await t.test('a certificate due for renewal is renewed and pushed to every router', async () => {
      const { certs } = await json<{ certs: CertView[] }>(cluster, ['certs', '-a', 'shop', '--json']);
      const notAfter = Date.parse(wwwCert(certs)?.notAfter ?? '');
      // 29 days before expiry: within the renewal window.
      certClock.offset = notAfter - Date.now() - 29 * DAY;
      const renewed = await waitFor(
        'the ACME certificate to be renewed',
        async () => {
          const acme = (await json<{ certs: CertView[] }>(cluster, ['certs', '-a', 'shop', '--json'])).certs.filter(
            (c) => c.source === 'acme',
          );
          assert.deepEqual(
            acme.map((c) => c.names),
            [['www.shop.test']],
            'a renewal replaces the certificate it renews, and nothing else is ordered',
          );
          return acme[0]?.fingerprint !== acmeFingerprint ? acme[0] : null;
        },
        120_000,
        500,
      );
      certClock.offset = 0;
      assert.notEqual(renewed.fingerprint, acmeFingerprint);
      // Once renewals settle, both routers serve the certificate the coordinator holds.
      await waitFor(
        'both routers to serve the renewed certificate',
        async () => {
          const held = wwwCert((await json<{ certs: CertView[] }>(cluster, ['certs', '-a', 'shop', '--json'])).certs);
          for (const agent of [a1, a2]) if ((await servedFingerprint(agent, 'www.shop.test')) !== held?.fingerprint) return false;
          return held?.fingerprint !== acmeFingerprint;
        },
        60_000,
      );
      const logs = await cluster.cli(['logs', '-a', 'shop', '--source', 'hangar', '-n', '50']);
      assert.match(logs.stdout, /Certificate for www\.shop\.test renewed by ACME/);
    });

    await t.test('after a coordinator restart every router still serves both certificates', async () => {
      const before = wwwCert((await json<{ certs: CertView[] }>(cluster, ['certs', '-a', 'shop', '--json'])).certs);
      await cluster.restartCoordinator();
      // A change after the restart: its desired state must still carry the certificates.
      assert.equal((await cluster.cli(['domains:add', 'new.shop.test', '-a', 'shop'])).code, 0);
      for (const agent of [a1, a2]) {
        await waitFor(
          `${agent.name} to serve new.shop.test`,
          async () => (await httpGet(agent.routerPort, 'new.shop.test')).status === 200,
        );
        assert.equal((await httpsGet(agent, 'www.shop.test', rootPem)).status, 200);
        assert.equal((await httpsGet(agent, 'api.byo.test', byoCaPem)).status, 200);
      }
      const after = wwwCert((await json<{ certs: CertView[] }>(cluster, ['certs', '-a', 'shop', '--json'])).certs);
      assert.equal(after?.fingerprint, before?.fingerprint);
    });

    await t.test('domains:remove stops serving the domain; a name without a certificate fails TLS and the routers serve on', async () => {
      const removed = await cluster.cli(['domains:remove', 'api.byo.test', '-a', 'shop']);
      assert.equal(removed.code, 0, removed.stderr);
      for (const agent of [a1, a2]) {
        await waitFor(`${agent.name} to drop api.byo.test`, async () => (await httpGet(agent.routerPort, 'api.byo.test')).status === 404);
        await assert.rejects(httpsGet(agent, 'api.byo.test', byoCaPem));
        assert.equal((await httpsGet(agent, 'www.shop.test', rootPem)).status, 200);
      }
      const gone = await cluster.cli(['domains:remove', 'api.byo.test', '-a', 'shop']);
      assert.equal(gone.code, 1);
      assert.match(gone.stderr, /has no custom domain api\.byo\.test/);
    });

    await t.test('private keys are nowhere in clear: not in the database, not in any log', async () => {
      const body = byoKeyPem.split('\n')[1] ?? '';
      assert.ok(body.length > 20);
      for (const file of await readdir(cluster.dir, { recursive: true })) {
        const name = String(file);
        if (!/(\.log|\.db|\.db-wal|desired-state\.json)$/.test(name)) continue;
        const text = await readFile(join(cluster.dir, name), 'latin1').catch(() => '');
        assert.ok(!text.includes(body), `${name} holds a private key in clear`);
        assert.ok(!text.includes('PRIVATE KEY-----'), `${name} holds a PEM private key`);
      }
    });

    const { ok, failures } = await traffic.stop();
    t.diagnostic(`${ok} requests to shop.localhost served through both routers during the test`);
    assert.deepEqual(failures, [], 'every router kept serving');
    assert.ok(ok > 0);
  },
);
