/**
 * What coordinators on one PostgreSQL database share, kept in the database (`shared_files`) so that
 * each has its own data dir: the CA certificate and key (agents pin the CA), the admin token and
 * the join token's secret, the secret ones sealed with the SecretBox of `DATA_DIR/secret-key`.
 * That key is the one file copied to every coordinator; it is never stored in the database.
 *
 * The first coordinator to start (under the set-up lock of leader-lease.ts) stores its files; every
 * later one writes the stored values into its data dir, where the rest of the coordinator reads
 * them as before, and issues its own server certificate from the shared CA.
 */
import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../../common/errors.js';
import { COORDINATOR_TLS_NAME, formatJoinToken, parseJoinToken } from '../../common/join-token.js';
import { SecretBox } from '../../common/secret-box.js';
import { issueServerCertificate } from '../security/addon-certificates.js';
import { certificateFingerprint, ensureCoordinatorTls } from '../security/certificate-authority.js';
import { ensureJoinToken, ensureToken } from '../security/token-files.js';
import type { SqlDatabase } from '../store/sql.js';

/** Options of {@link shareCoordinatorFiles}. */
export interface SharedFilesOptions {
  /** A connection inside the transaction holding the set-up lock (LeaderLease.exclusive). */
  db: SqlDatabase;
  dataDir: string;
  /** The host agents dial this coordinator on: a name of its server certificate. */
  advertisedHost: string;
  /** Unix ms, for the rows' `created_at`. */
  now: number;
}

/**
 * Stores this coordinator's CA and tokens when the database has none yet (made first when the
 * data dir has none either), else writes the stored ones into the data dir.
 *
 * @throws HangarError `INTERNAL` when `DATA_DIR/secret-key` does not open the stored values.
 */
export async function shareCoordinatorFiles(o: SharedFilesOptions): Promise<void> {
  const secrets = await SecretBox.fromKeyFile(join(o.dataDir, 'secret-key'));
  const rows = o.db.prepare('SELECT name, value FROM shared_files').all() as { name: string; value: string }[];
  const stored = new Map(rows.map((r) => [r.name, r.value]));
  if (stored.size === 0) {
    const tls = await ensureCoordinatorTls(o.dataDir);
    const adminToken = await ensureToken(join(o.dataDir, 'admin-token'), 'hgr_admin');
    const joinToken = await ensureJoinToken(join(o.dataDir, 'join-token'), tls.caFingerprint);
    const caKey = await readFile(join(o.dataDir, 'tls', 'ca.key'), 'utf8');
    const insert = o.db.prepare('INSERT INTO shared_files (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING');
    insert.run('ca.crt', tls.caPem, o.now);
    insert.run('ca.key', secrets.seal(caKey), o.now);
    insert.run('admin-token', secrets.seal(adminToken), o.now);
    insert.run('join-secret', secrets.seal(parseJoinToken(joinToken).secret), o.now);
    return;
  }
  const value = (name: string): string => {
    const text = stored.get(name);
    if (text === undefined) {
      throw new HangarError('INTERNAL', `The database lacks the shared ${name} of the coordinators; restore the database from a backup.`);
    }
    try {
      return secrets.open(text);
    } catch (err) {
      throw new HangarError(
        'INTERNAL',
        `This coordinator's secret key does not open what the first coordinator stored in the database: ` +
          `copy secret-key from the first coordinator to ${join(o.dataDir, 'secret-key')} (mode 0600) and start again.`,
        { cause: err },
      );
    }
  };
  const caPem = value('ca.crt');
  const caKey = value('ca.key');
  const adminToken = value('admin-token');
  const joinSecret = value('join-secret');

  const tlsDir = join(o.dataDir, 'tls');
  await mkdir(tlsDir, { recursive: true, mode: 0o700 });
  const localCa = await readFile(join(tlsDir, 'ca.crt'), 'utf8').catch(() => '');
  if (localCa.trim() !== caPem.trim() || !(await issuedBy(join(tlsDir, 'server.crt'), caPem))) {
    await writeAtomically(join(tlsDir, 'ca.crt'), caPem, 0o644);
    await writeAtomically(join(tlsDir, 'ca.key'), caKey, 0o600);
    const issued = await issueServerCertificate(o.dataDir, [COORDINATOR_TLS_NAME, o.advertisedHost]);
    await writeAtomically(join(tlsDir, 'server.key'), issued.keyPem, 0o600);
    await writeAtomically(join(tlsDir, 'server.crt'), issued.certPem, 0o644);
  }
  await writeAtomically(join(o.dataDir, 'admin-token'), `${adminToken}\n`, 0o600);
  const caFingerprint = certificateFingerprint(caPem);
  await writeAtomically(join(o.dataDir, 'join-token'), `${formatJoinToken({ secret: joinSecret, caFingerprint })}\n`, 0o600);
}

/** True when the certificate at `path` exists and was signed by the CA `caPem`. */
async function issuedBy(path: string, caPem: string): Promise<boolean> {
  try {
    const cert = new X509Certificate(await readFile(path, 'utf8'));
    const ca = new X509Certificate(caPem);
    return cert.checkIssued(ca) && cert.verify(ca.publicKey);
  } catch {
    return false;
  }
}

/** Writes `text` to `path` through a temporary file (mode `mode`), unless it is there already. */
async function writeAtomically(path: string, text: string, mode: number): Promise<void> {
  if ((await readFile(path, 'utf8').catch(() => null)) === text) return;
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    await writeFile(tmp, text, { mode });
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
