import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkCertificate, coveredBy, nameCovers } from '../../coordinator/certs/certificate-check.js';
import { bestCertificate } from '../../coordinator/certs/tls-state.js';
import { retryDelayMs } from '../../coordinator/certs/acme-issuer.js';
import type { CertRow } from '../../coordinator/certs/cert-store.js';
import { isHangarError } from '../../common/errors.js';
import { TestCa, type TestCert } from '../helpers/test-certs.js';

const DAY = 86_400_000;

describe('certificate checks', () => {
  let ca: TestCa;
  let www: TestCert;
  let wildcard: TestCert;
  let expired: TestCert;
  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hangar-certs-'));
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
    ca = await TestCa.create(dir);
    www = await ca.issue(['www.shop.test']);
    wildcard = await ca.issue(['*.shop.test']);
    expired = await ca.issue(['www.shop.test'], { from: new Date('2020-01-01'), until: new Date('2020-02-01') });
  });

  it('accepts a matching certificate and key and says which domains it covers, chain kept', async () => {
    const chain = `${www.certPem}${await ca.caPem()}`;
    const { facts, covers } = checkCertificate(chain, www.keyPem, ['shop.localhost', 'www.shop.test'], Date.now());
    assert.deepEqual(covers, ['www.shop.test']);
    assert.deepEqual(facts.names, ['www.shop.test']);
    assert.equal((facts.certPem.match(/BEGIN CERTIFICATE/g) ?? []).length, 2);
    assert.ok(facts.notAfter > Date.now() + 19 * DAY);
    assert.match(facts.issuer, /Hangar Test CA/);
  });

  it('covers names below a wildcard one level deep only', () => {
    const { covers } = checkCertificate(wildcard.certPem, wildcard.keyPem, ['shop.test', 'www.shop.test', 'a.b.shop.test'], Date.now());
    assert.deepEqual(covers, ['www.shop.test']);
    assert.equal(nameCovers('*.shop.test', 'api.shop.test'), true);
    assert.equal(nameCovers('*.shop.test', 'shop.test'), false);
    assert.deepEqual(coveredBy(['a.test', '*.b.test'], ['a.test', 'x.b.test', 'c.test']), ['a.test', 'x.b.test']);
  });

  it('refuses a key of another certificate, an expired certificate, and one for none of the domains', () => {
    const code = (c: string, re: RegExp) => (err: unknown) => isHangarError(err) && err.code === c && re.test(err.message);
    assert.throws(
      () => checkCertificate(www.certPem, wildcard.keyPem, ['www.shop.test'], Date.now()),
      code('CERT_INVALID', /does not belong/),
    );
    assert.throws(
      () => checkCertificate(expired.certPem, expired.keyPem, ['www.shop.test'], Date.now()),
      code('CERT_INVALID', /expired on 2020-02-01/),
    );
    assert.throws(
      () => checkCertificate(www.certPem, www.keyPem, ['shop.localhost', 'api.other.test'], Date.now()),
      code('CERT_INVALID', /covers none/),
    );
    assert.throws(() => checkCertificate('hello', www.keyPem, ['www.shop.test'], Date.now()), code('BAD_INPUT', /no PEM certificate/));
    assert.throws(() => checkCertificate(www.certPem, 'nope', ['www.shop.test'], Date.now()), code('BAD_INPUT', /no readable private key/));
  });

  it('serves, per host name, the certificate in date that expires last', () => {
    const now = Date.now();
    const row = (id: string, names: string[], notAfter: number, notBefore = now - DAY): CertRow => ({
      id,
      app: 'shop',
      source: 'uploaded',
      names,
      certPem: '',
      keyPem: '',
      notBefore,
      notAfter,
      issuer: '',
      fingerprint: '',
      createdAt: now,
    });
    const certs = [
      row('old', ['www.shop.test'], now - 1),
      row('short', ['www.shop.test'], now + DAY),
      row('wild', ['*.shop.test'], now + 9 * DAY),
      row('future', ['www.shop.test'], now + 99 * DAY, now + DAY),
    ];
    assert.equal(bestCertificate(certs, 'www.shop.test', now)?.id, 'wild');
    assert.equal(bestCertificate(certs.slice(0, 2), 'www.shop.test', now)?.id, 'short');
    assert.equal(bestCertificate(certs, 'shop.test', now), null);
  });

  it('backs off ACME retries exponentially, up to a bound', () => {
    assert.deepEqual(
      [1, 2, 3, 4, 10].map((n) => retryDelayMs(n, 1000, 6000)),
      [1000, 2000, 4000, 6000, 6000],
    );
  });
});
