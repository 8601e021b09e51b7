/**
 * The coordinator's own certificate authority for the agent gRPC port. On first start it makes a
 * CA (EC P-256, 10 years) and a server certificate signed by it, with `openssl` (Debian ships
 * it; node:crypto makes keys but cannot issue X.509 certificates). Agents pin the CA by the
 * SHA-256 fingerprint carried in the join token, so the server certificate's names do not matter:
 * agents check it against the pinned CA and the fixed name {@link COORDINATOR_TLS_NAME}.
 */
import { execFile } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HangarError } from '../../common/errors.js';
import { COORDINATOR_TLS_NAME } from '../../common/join-token.js';

const run = promisify(execFile);

/** The key material the gRPC server uses. */
export interface CoordinatorTls {
  /** PEM of the CA certificate (what agents pin). */
  caPem: string;
  /** PEM chain the server presents: its certificate, then the CA's (so joining agents can fetch it). */
  certChainPem: string;
  /** PEM of the server's private key. */
  keyPem: string;
  /** Lowercase hex SHA-256 of the CA certificate's DER. */
  caFingerprint: string;
}

/** Lowercase hex SHA-256 of a PEM certificate's DER encoding. */
export function certificateFingerprint(pem: string): string {
  return createHash('sha256').update(new X509Certificate(pem).raw).digest('hex');
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run('openssl', args, { cwd, timeout: 30_000 });
  } catch (err) {
    throw new HangarError('INTERNAL', 'Could not create the TLS certificates with openssl; install the openssl package and start again.', {
      cause: err,
    });
  }
}

/**
 * Loads `DIR/tls/{ca,server}.{crt,key}`, creating them (keys mode 0600) when missing. Creation
 * happens in a temporary directory renamed into place, so a crash never leaves half a CA.
 */
export async function ensureCoordinatorTls(dataDir: string): Promise<CoordinatorTls> {
  const dir = join(dataDir, 'tls');
  try {
    return await loadTls(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const tmp = join(dataDir, `.tls-${process.pid}-${Date.now()}`);
  await mkdir(tmp, { recursive: true, mode: 0o700 });
  try {
    await writeFile(join(tmp, 'server.ext'), `subjectAltName=DNS:${COORDINATOR_TLS_NAME}\nextendedKeyUsage=serverAuth\n`);
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    await openssl(
      ['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '3650', '-subj', '/CN=Hangar coordinator CA', '-sha256'],
      tmp,
    );
    await openssl(['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', `/CN=${COORDINATOR_TLS_NAME}`], tmp);
    await openssl(
      [
        'x509',
        '-req',
        '-in',
        'server.csr',
        '-CA',
        'ca.crt',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        'server.crt',
        '-days',
        '3650',
        '-sha256',
        '-extfile',
        'server.ext',
      ],
      tmp,
    );
    for (const f of ['ca.key', 'server.key']) await chmod(join(tmp, f), 0o600);
    await rm(join(tmp, 'server.csr'), { force: true });
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  return loadTls(dir);
}

async function loadTls(dir: string): Promise<CoordinatorTls> {
  const [caPem, certPem, keyPem] = await Promise.all(['ca.crt', 'server.crt', 'server.key'].map((f) => readFile(join(dir, f), 'utf8')));
  return {
    caPem: caPem as string,
    certChainPem: `${(certPem as string).trim()}\n${(caPem as string).trim()}\n`,
    keyPem: keyPem as string,
    caFingerprint: certificateFingerprint(caPem as string),
  };
}
