/** The coordinator's own token files in its data dir: the admin token and the agents' join token. */
import { randomBytes } from 'node:crypto';
import { chmod, readFile, rename, writeFile } from 'node:fs/promises';
import { formatJoinToken, parseJoinToken } from '../../common/join-token.js';

/** Reads a token file, or creates it (mode 0600) on first start. */
export async function ensureToken(path: string, prefix: string): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const token = `${prefix}_${randomBytes(24).toString('base64url')}`;
  await writeFile(path, `${token}\n`, { mode: 0o600, flag: 'wx' });
  return token;
}

/**
 * Reads the join token file, or writes it (mode 0600): `hgr_join_<secret>.<CA fingerprint>`. A
 * token of an older format, or of another CA, keeps its secret and gets the current fingerprint.
 */
export async function ensureJoinToken(path: string, caFingerprint: string): Promise<string> {
  let secret: string | null = null;
  try {
    const text = (await readFile(path, 'utf8')).trim();
    secret = /^hgr_join_[A-Za-z0-9_-]{16,128}$/.test(text) ? text : parseJoinToken(text).secret;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as { code?: string }).code !== 'BAD_INPUT') throw err;
  }
  secret ??= `hgr_join_${randomBytes(24).toString('base64url')}`;
  const token = formatJoinToken({ secret, caFingerprint });
  const current = await readFile(path, 'utf8').catch(() => '');
  if (current.trim() !== token) {
    await writeFile(`${path}.tmp`, `${token}\n`, { mode: 0o600 });
    await rename(`${path}.tmp`, path);
  }
  await chmod(path, 0o600);
  return token;
}
