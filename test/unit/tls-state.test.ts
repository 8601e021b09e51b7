import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { SecretBox } from '../../common/secret-box.js';
import { systemClock } from '../../common/clock.js';
import { Store } from '../../coordinator/store/store.js';
import { CertStore, type CertRow } from '../../coordinator/certs/cert-store.js';
import { TlsState } from '../../coordinator/certs/tls-state.js';
import { appDomains, routeTable } from '../../coordinator/fleet/route-table.js';

const DAY = 86_400_000;

test('desired state carries each domain once, its certificate, the HTTPS settings and the challenges; keys sealed at rest', () => {
  const store = new Store({ path: ':memory:', secrets: new SecretBox(randomBytes(32)) });
  const certs = new CertStore(store, new SecretBox(randomBytes(32)));
  const now = Date.now();
  store.createApp('shop', now);
  store.createApp('blog', now);
  certs.insertDomain('www.shop.test', 'shop', now);
  certs.insertDomain('api.shop.test', 'shop', now + 1);
  certs.insertDomain('blog.test', 'blog', now);
  certs.setTls('shop', { hsts: true });
  certs.setTls('blog', { redirect: false });
  const cert = (id: string, names: string[], notAfter: number): CertRow => ({
    id,
    app: 'shop',
    source: 'uploaded',
    names,
    certPem: `CERT ${id}`,
    keyPem: `KEY ${id}`,
    notBefore: now - DAY,
    notAfter,
    issuer: 'test',
    fingerprint: id,
    createdAt: now,
  });
  certs.insertCert(cert('wild', ['*.shop.test'], now + 90 * DAY));
  certs.insertCert(cert('www', ['www.shop.test'], now + 10 * DAY));
  certs.insertCert(cert('expired', ['api.shop.test'], now - 1));
  const sealed = store.database.prepare('SELECT key_pem FROM certificates').all() as { key_pem: string }[];
  assert.ok(sealed.every((r) => SecretBox.isSealed(r.key_pem) && !r.key_pem.includes('KEY')));

  const challenges = new Map([['tok', 'tok.key']]);
  const snapshot = new TlsState({ certs, domain: 'example.com', challenges, clock: systemClock }).snapshot();
  assert.deepEqual(
    snapshot.certificates.map((c) => [c.id, c.domains, c.keyPem]),
    [['wild', ['www.shop.test', 'api.shop.test'], 'KEY wild']],
  );
  assert.deepEqual(snapshot.challenges, [{ token: 'tok', keyAuthorization: 'tok.key' }]);

  const routes = routeTable(store.listApps(), [], [], 'example.com', undefined, snapshot.routes);
  assert.deepEqual(
    routes.map((r) => [r.app, r.domains, r.httpsRedirect, r.hsts]),
    [
      ['blog', ['blog.example.com', 'blog.test'], false, false],
      ['shop', ['shop.example.com', 'www.shop.test', 'api.shop.test'], true, true],
    ],
  );
  assert.deepEqual(appDomains('shop', 'example.com', ['www.shop.test']), ['shop.example.com', 'www.shop.test']);

  // A removed app's domains and certificates go with it.
  store.deleteApp('shop');
  assert.deepEqual(
    certs.listDomains().map((d) => d.hostname),
    ['blog.test'],
  );
  assert.deepEqual(certs.listCerts(), []);
  store.close();
});
