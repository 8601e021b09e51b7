/**
 * Reading and checking PEM certificates with node:crypto's X509Certificate: the key matches, the
 * certificate is in its validity period, and which host names it covers (wildcards as RFC 6125
 * has them: `*.shop.com` covers `www.shop.com`, not `shop.com` nor `a.b.shop.com`). Pure functions.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { HangarError } from '../../common/errors.js';

/** What Hangar keeps of a certificate. */
export interface CertificateFacts {
  /** The leaf first, then its chain, each PEM block as given. */
  certPem: string;
  /** DNS names of the leaf (subject alternative names, else its common name), lower-case. */
  names: string[];
  notBefore: number;
  notAfter: number;
  issuer: string;
  fingerprint: string;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** True when a certificate for `name` (possibly `*.zone`) covers `hostname`. */
export function nameCovers(name: string, hostname: string): boolean {
  if (name === hostname) return true;
  if (!name.startsWith('*.')) return false;
  const dot = hostname.indexOf('.');
  return dot > 0 && hostname.slice(dot + 1) === name.slice(2);
}

/** The host names among `hostnames` a certificate with `names` covers. */
export function coveredBy(names: readonly string[], hostnames: readonly string[]): string[] {
  return hostnames.filter((h) => names.some((n) => nameCovers(n, h)));
}

/**
 * Reads a certificate (chain) PEM.
 *
 * @throws HangarError `BAD_INPUT` when it holds no readable certificate.
 */
export function readCertificate(pem: string): { facts: CertificateFacts; leaf: X509Certificate } {
  const blocks = pem.match(PEM_CERT) ?? [];
  const first = blocks[0];
  if (first === undefined) {
    throw new HangarError(
      'BAD_INPUT',
      'The certificate file holds no PEM certificate (a "-----BEGIN CERTIFICATE-----" block); give the certificate file first, then the key.',
    );
  }
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(first);
    for (const b of blocks.slice(1)) new X509Certificate(b);
  } catch (err) {
    throw new HangarError(
      'BAD_INPUT',
      `The certificate file could not be read (${(err as Error).message}); check it is a PEM certificate.`,
      {
        cause: err,
      },
    );
  }
  const sans = (leaf.subjectAltName ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.startsWith('DNS:'))
    .map((s) => s.slice(4).toLowerCase());
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(leaf.subject)?.[1]?.toLowerCase();
  const names = sans.length > 0 ? sans : cn ? [cn] : [];
  return {
    leaf,
    facts: {
      certPem: `${blocks.join('\n')}\n`,
      names,
      notBefore: Date.parse(leaf.validFrom),
      notAfter: Date.parse(leaf.validTo),
      issuer: leaf.issuer.replace(/\n/g, ', '),
      fingerprint: leaf.fingerprint256,
    },
  };
}

/**
 * Checks an uploaded certificate and key for an app with `hostnames` (its domains), at `now`.
 * Returns what to keep and the host names it covers.
 *
 * @throws HangarError `BAD_INPUT` when either file cannot be read; `CERT_INVALID` when the key is
 *   not the certificate's, the certificate is expired or not yet valid, or it covers none of the
 *   app's domains.
 */
export function checkCertificate(
  certPem: string,
  keyPem: string,
  hostnames: readonly string[],
  now: number,
): { facts: CertificateFacts; covers: string[] } {
  const { facts, leaf } = readCertificate(certPem);
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new HangarError(
      'BAD_INPUT',
      'The key file holds no readable private key; give an unencrypted PEM key (remove a passphrase with `openssl pkey -in key.pem -out plain-key.pem`).',
      { cause: err },
    );
  }
  if (!leaf.checkPrivateKey(key)) {
    throw new HangarError(
      'CERT_INVALID',
      'The private key does not belong to this certificate; give the key the certificate was issued for.',
    );
  }
  if (facts.notAfter <= now) {
    throw new HangarError(
      'CERT_INVALID',
      `The certificate expired on ${new Date(facts.notAfter).toISOString()}; renew it with its issuer and add the new one.`,
    );
  }
  if (facts.notBefore > now) {
    throw new HangarError('CERT_INVALID', `The certificate is valid only from ${new Date(facts.notBefore).toISOString()}; add it then.`);
  }
  const covers = coveredBy(facts.names, hostnames);
  if (covers.length === 0) {
    throw new HangarError(
      'CERT_INVALID',
      `The certificate is for ${facts.names.join(', ') || 'no DNS name'}, which covers none of the app's domains (${hostnames.join(', ')}); add the domain first with \`hangar domains:add\`, or give the certificate of one of them.`,
    );
  }
  return { facts, covers };
}
