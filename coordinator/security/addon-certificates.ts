/**
 * Server certificates for add-on servers (PostgreSQL), issued by the coordinator's own CA (the one
 * agents pin, see certificate-authority.ts): an app that trusts that CA (`sslmode=verify-full`
 * with `PGSSLROOTCERT`) knows it talks to the add-on, not to whoever took its address.
 */
import { execFile } from 'node:child_process';
import { isIP } from 'node:net';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HangarError } from '../../common/errors.js';

const run = promisify(execFile);

/** A certificate and its private key, PEM. */
export interface IssuedCertificate {
  certPem: string;
  keyPem: string;
}

/**
 * Issues a server certificate (EC P-256, 825 days) for `names` (host names and IP addresses, the
 * first is the common name) signed by the CA in `DATA/tls/`. The key is made in a private
 * temporary directory that is removed afterwards; it is only returned.
 */
export async function issueServerCertificate(dataDir: string, names: readonly string[]): Promise<IssuedCertificate> {
  const [first] = names;
  if (first === undefined) throw new HangarError('INTERNAL', 'a certificate needs at least one name');
  const tls = join(dataDir, 'tls');
  const tmp = await mkdtemp(join(dataDir, '.cert-'));
  try {
    const san = [...new Set(names)].map((n) => (isIP(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
    await writeFile(join(tmp, 'server.ext'), `subjectAltName=${san}\nextendedKeyUsage=serverAuth\n`);
    const openssl = async (args: string[]) => {
      try {
        await run('openssl', args, { cwd: tmp, timeout: 30_000 });
      } catch (err) {
        throw new HangarError('INTERNAL', 'Could not issue the add-on certificate with openssl; check that openssl is installed.', {
          cause: err,
        });
      }
    };
    await openssl([
      'req',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      'server.key',
      '-out',
      'server.csr',
      '-subj',
      `/CN=${first}`,
    ]);
    await openssl([
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      join(tls, 'ca.crt'),
      '-CAkey',
      join(tls, 'ca.key'),
      '-set_serial',
      `0x${Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString('hex')}`,
      '-out',
      'server.crt',
      '-days',
      '825',
      '-sha256',
      '-extfile',
      'server.ext',
    ]);
    const [certPem, keyPem] = await Promise.all([readFile(join(tmp, 'server.crt'), 'utf8'), readFile(join(tmp, 'server.key'), 'utf8')]);
    return { certPem, keyPem };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
