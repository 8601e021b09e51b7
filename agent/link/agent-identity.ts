/**
 * What an agent keeps after joining: the coordinator's CA certificate (pinned by the join token's
 * fingerprint) and the agent's own credential, in `DATA/credential.json` (mode 0600). The CA is
 * fetched kubeadm style: over a TLS connection that does not verify the server, then accepted only
 * when its SHA-256 equals the fingerprint in the join token.
 */
import { X509Certificate, createHash } from 'node:crypto';
import { chmod, readFile, rename, writeFile } from 'node:fs/promises';
import { connect, type PeerCertificate } from 'node:tls';
import { HangarError } from '../../common/errors.js';
import { COORDINATOR_TLS_NAME } from '../../common/join-token.js';

/** An agent's proof of membership. */
export interface AgentIdentity {
  /** The name it joined as. */
  name: string;
  /** PEM of the coordinator's CA. */
  caPem: string;
  /** Lowercase hex SHA-256 of the CA (the join token's suffix). */
  caFingerprint: string;
  /** `hgr_agent_...`: sent on every call. */
  credential: string;
}

const IDENTITY_KEYS = ['name', 'caPem', 'caFingerprint', 'credential'] as const;

/** Whether `value` is exactly an identity: its four strings and no other key. */
function isIdentity(value: unknown): value is AgentIdentity {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const record = value as Record<string, unknown>;
  return IDENTITY_KEYS.every((key) => typeof record[key] === 'string') && Object.keys(record).length === IDENTITY_KEYS.length;
}

/** Reads `path`, or null when there is none yet. */
export async function readIdentity(path: string): Promise<AgentIdentity | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const parsed: unknown = JSON.parse(text);
  return isIdentity(parsed)
    ? { name: parsed.name, caPem: parsed.caPem, caFingerprint: parsed.caFingerprint, credential: parsed.credential }
    : null;
}

/** Writes `path` (mode 0600) atomically. */
export async function writeIdentity(path: string, identity: AgentIdentity): Promise<void> {
  await writeFile(`${path}.tmp`, JSON.stringify(identity), { mode: 0o600 });
  await chmod(`${path}.tmp`, 0o600);
  await rename(`${path}.tmp`, path);
}

function fingerprintOf(raw: Buffer): string {
  return createHash('sha256').update(raw).digest('hex');
}

/**
 * Fetches the coordinator's CA certificate from the chain its TLS port presents and returns its
 * PEM when its fingerprint is `fingerprint`.
 *
 * @throws HangarError `UNREACHABLE` when the port cannot be reached; `FORBIDDEN` when no
 * certificate of the chain has the pinned fingerprint (another coordinator, or a man in the middle).
 */
export function fetchPinnedCa(address: string, fingerprint: string, timeoutMs = 10_000): Promise<string> {
  const colon = address.lastIndexOf(':');
  const host = address.slice(0, colon);
  const port = Number(address.slice(colon + 1));
  return new Promise((resolve, reject) => {
    // Unverified on purpose: the pinned fingerprint is what makes the CA trusted.
    const socket = connect({ host, port, servername: COORDINATOR_TLS_NAME, rejectUnauthorized: false, ALPNProtocols: ['h2'] });
    const timer = setTimeout(() => socket.destroy(new Error(`no TLS handshake within ${timeoutMs} ms`)), timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const seen: string[] = [];
      let cert: PeerCertificate | undefined = socket.getPeerCertificate(true);
      while (cert?.raw) {
        const fp = fingerprintOf(cert.raw);
        if (fp === fingerprint) {
          socket.end();
          resolve(new X509Certificate(cert.raw).toString());
          return;
        }
        seen.push(fp);
        const next: PeerCertificate | undefined = (cert as { issuerCertificate?: PeerCertificate }).issuerCertificate;
        cert = next && next !== cert ? next : undefined;
      }
      socket.destroy();
      reject(
        new HangarError(
          'FORBIDDEN',
          `The coordinator at ${address} does not present the CA this join token pins (${fingerprint.slice(0, 16)}...); refusing to connect. Check the address, and copy the join token again from that coordinator's data dir.`,
          { details: { seen } },
        ),
      );
    });
    socket.once('error', (err: Error) => {
      clearTimeout(timer);
      reject(new HangarError('UNREACHABLE', `Could not reach the coordinator at ${address} over TLS: ${err.message}.`, { cause: err }));
    });
  });
}
