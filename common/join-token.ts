/**
 * Join tokens, kubeadm style: `hgr_join_<secret>.<sha256 of the coordinator's CA certificate>`.
 * The secret lets an agent join once; the fingerprint tells it which CA to trust, so a joining
 * agent can fetch the CA over an unverified connection and still never talk to an impostor.
 */
import { HangarError } from './errors.js';

/** Name in the coordinator's server certificate; agents check it instead of the host they dial. */
export const COORDINATOR_TLS_NAME = 'hangar-coordinator';

/** A join token split into its parts. */
export interface JoinToken {
  /** `hgr_join_<random>`: what the coordinator checks. */
  secret: string;
  /** Lowercase hex SHA-256 of the CA certificate's DER. */
  caFingerprint: string;
}

const TOKEN = /^(hgr_join_[A-Za-z0-9_-]{16,128})\.([0-9a-fA-F]{64})$/;

/** Joins a secret and a CA fingerprint into a token. */
export function formatJoinToken(token: JoinToken): string {
  return `${token.secret}.${token.caFingerprint.toLowerCase()}`;
}

/**
 * Parses a join token.
 *
 * @throws HangarError `BAD_INPUT` when it is not `hgr_join_<secret>.<64 hex digits>`.
 */
export function parseJoinToken(text: string): JoinToken {
  const match = TOKEN.exec(text.trim());
  if (!match) {
    throw new HangarError(
      'BAD_INPUT',
      'The join token is malformed: copy it whole from the coordinator data dir (file join-token); it looks like hgr_join_<secret>.<64 hex digits>.',
    );
  }
  return { secret: match[1] as string, caFingerprint: (match[2] as string).toLowerCase() };
}
