/**
 * The unprivileged user add-on servers run as. An agent running as root runs them as the
 * `hangar` system user (created with `useradd --system` when missing; PostgreSQL's initdb refuses
 * to run as root anyway); an agent running as anyone else runs them as itself.
 */
import { chown, lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { runCommand } from './run-command.js';

/** A user and group id to run a process as. */
export interface RunAs {
  user: string;
  uid: number;
  gid: number;
}

/** Name of the system user add-ons run as when the agent is root. */
export const ADDON_USER = 'hangar';

async function lookup(user: string): Promise<RunAs | null> {
  const uid = await runCommand('id', ['-u', user]);
  const gid = await runCommand('id', ['-g', user]);
  if (uid.code !== 0 || gid.code !== 0) return null;
  return { user, uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/**
 * Who add-on servers run as: null when the agent is not root (they run as the agent's user),
 * else the `hangar` system user, created when missing.
 */
export async function resolveRunAs(logger: Logger, user = ADDON_USER): Promise<RunAs | null> {
  if (process.getuid?.() !== 0) return null;
  const found = await lookup(user);
  if (found) return found;
  const made = await runCommand('useradd', [
    '--system',
    '--user-group',
    '--no-create-home',
    '--home-dir',
    '/nonexistent',
    '--shell',
    '/usr/sbin/nologin',
    user,
  ]);
  const again = await lookup(user);
  if (!again) {
    throw new HangarError(
      'ADDON_FAILED',
      `Add-on servers run as the system user ${user}, which is missing and could not be created (${made.stderr.trim() || `useradd exit ${made.code}`}); create it with \`useradd --system ${user}\`.`,
    );
  }
  logger.info({ user, uid: again.uid }, 'created the system user add-on servers run as');
  return again;
}

/** Gives `path` and everything under it to `runAs` (no-op when null). Symlinks are not followed. */
export async function chownTree(path: string, runAs: RunAs | null): Promise<void> {
  if (!runAs) return;
  const stat = await lstat(path);
  if (stat.isSymbolicLink()) return;
  if (stat.uid !== runAs.uid || stat.gid !== runAs.gid) await chown(path, runAs.uid, runAs.gid);
  if (stat.isDirectory()) {
    for (const name of await readdir(path)) await chownTree(join(path, name), runAs);
  }
}
