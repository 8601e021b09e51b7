import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SecretBox } from '../../common/secret-box.js';
import { silentLogger } from '../../common/logger.js';
import type { Clock } from '../../common/clock.js';
import { Store } from '../../coordinator/store/store.js';
import { CertStore } from '../../coordinator/certs/cert-store.js';
import { AcmeIssuer } from '../../coordinator/certs/acme-issuer.js';
import { Domains } from '../../coordinator/certs/domains.js';

/** An ACME directory that answers 404 (acme-client retries refused connections and 5xx for half a minute). */
async function missingDirectory(t: { after(fn: () => unknown): void }): Promise<string> {
  const server = http.createServer((_req, res) => {
    res.statusCode = 404;
    res.end('no directory here');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise((r) => server.close(r)));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/directory`;
}

test('a failed ACME order is recorded on the domain (state, last error, next attempt), logged for the app and retried with backoff', async (t) => {
  let now = Date.UTC(2026, 0, 1);
  const clock: Clock = {
    now: () => now,
    setTimeout: (fn, ms) => setTimeout(fn, ms),
    clearTimeout: (x) => clearTimeout(x as NodeJS.Timeout),
  };
  const store = new Store({ path: ':memory:', secrets: new SecretBox(randomBytes(32)) });
  t.after(() => store.close());
  const certs = new CertStore(store, new SecretBox(randomBytes(32)));
  store.createApp('shop', now);
  const events: string[] = [];
  const issuer = new AcmeIssuer({
    certs,
    directoryUrl: await missingDirectory(t),
    challenges: new Map(),
    publish: () => Promise.resolve(),
    recordEvent: (app, line) => events.push(`${app}: ${line}`),
    clock,
    logger: silentLogger(),
    retryBaseMs: 60_000,
    intervalMs: 3_600_000,
  });
  t.after(() => issuer.close());
  const domains = new Domains({
    store,
    certs,
    domain: 'example.com',
    sync: { requestSync: () => undefined },
    resolve: () => Promise.resolve([]),
    clock,
    logger: silentLogger(),
  });
  domains.add('shop', 'www.shop.test');
  domains.setTls('shop', { acme: true });

  const failedOnce = async (attempts: number) => {
    for (let i = 0; i < 400 && certs.getDomain('www.shop.test')?.acmeAttempts !== attempts; i++)
      await new Promise((r) => setTimeout(r, 25));
    return certs.getDomain('www.shop.test');
  };
  issuer.tick();
  const first = await failedOnce(1);
  assert.equal(first?.acmeState, 'failed');
  assert.match(first?.acmeError ?? '', /404|directory/);
  assert.equal(first?.acmeNextAt, now + 60_000);
  assert.equal(events.length, 1);
  assert.match(
    events[0] ?? '',
    /^shop: ACME could not get a certificate for www\.shop\.test \(attempt 1\): .+ Next attempt at 2026-01-01T00:01:00\.000Z/,
  );

  const view = (await domains.list('shop')).find((d) => d.hostname === 'www.shop.test');
  assert.equal(view?.certificate.state, 'failed');
  assert.equal(view?.certificate.nextAttemptAt, '2026-01-01T00:01:00.000Z');
  assert.match(view?.certificate.lastError ?? '', /404|directory/);

  // Not before its time; then again, with the pause doubled.
  issuer.tick();
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(certs.getDomain('www.shop.test')?.acmeAttempts, 1);
  now += 60_000;
  issuer.tick();
  const second = await failedOnce(2);
  assert.equal(second?.acmeNextAt, now + 120_000);
  assert.equal(events.length, 2);
});
