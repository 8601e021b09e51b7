/**
 * An unprivileged user a workload runs as when the agent runs as root (app processes, release
 * phases, build steps and add-on servers all run as their app's user, see app-users.ts): a
 * system user, created when missing. An agent running as anyone else runs them all as itself.
 */
import { execFile } from 'node:child_process';
import { chmod, chown, lstat, mkdir, readdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { HangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';

const run = promisify(execFile);

/** A user to run children as. */
export interface RunAs {
  name: string;
  uid: number;
  gid: number;
  /** A HOME it may write to (pip and Python caches); {@link NO_HOME} when it was given none. */
  home: string;
}

/** The HOME of a user resolved without one (what `useradd --home-dir` uses for "none"). */
export const NO_HOME = '/nonexistent';

async function idOf(user: string, flag: '-u' | '-g'): Promise<number | null> {
  try {
    const { stdout } = await run('id', [flag, user], { timeout: 10_000 });
    return Number.parseInt(stdout.trim(), 10);
  } catch {
    return null;
  }
}

/**
 * The user to drop to: null when this process is not root (children then run as this user).
 * Creates the system user `name` (no home, no login shell) when it does not exist.
 *
 * @param home A directory made for it (owned by it) to serve as its HOME; without one, none is
 *   made and {@link RunAs.home} is {@link NO_HOME}.
 */
export async function resolveRunAs(name: string, home: string | null, logger: Logger): Promise<RunAs | null> {
  if (process.getuid?.() !== 0) return null;
  // useradd fails while another useradd holds /etc/passwd's lock (exit 10): try a few times.
  for (let attempt = 1; (await idOf(name, '-u')) === null; attempt++) {
    try {
      await run('useradd', ['--system', '--no-create-home', '--user-group', '--shell', '/usr/sbin/nologin', name], { timeout: 30_000 });
      logger.info({ user: name }, 'created the system user workloads run as');
    } catch (err) {
      if ((await idOf(name, '-u')) !== null) break;
      if (attempt < 5) {
        await new Promise((r) => setTimeout(r, 200 * attempt));
        continue;
      }
      throw new HangarError(
        'INTERNAL',
        `Could not create the system user ${name} that apps and add-on servers run as; create it with \`useradd --system ${name}\`.`,
        { cause: err },
      );
    }
  }
  const uid = await idOf(name, '-u');
  const gid = await idOf(name, '-g');
  if (uid === null || gid === null || uid === 0) {
    throw new HangarError(
      'INTERNAL',
      `The user ${name} that apps and add-on servers run as cannot be used (uid ${uid}); give it a non-root uid.`,
    );
  }
  if (home === null) return { name, uid, gid, home: NO_HOME };
  await mkdir(home, { recursive: true, mode: 0o700 });
  await chown(home, uid, gid);
  await chmod(home, 0o700);
  return { name, uid, gid, home };
}

/**
 * Checks that another user can reach `dir` (every ancestor searchable by others, or by `user`),
 * so the apps' users find their slugs and virtualenvs below it.
 *
 * @param user who must reach it; `uid`/`gid` -1 for "any other user"
 * @throws HangarError `BAD_INPUT` naming the first directory in the way.
 */
export async function assertReachable(dir: string, user: Pick<RunAs, 'name' | 'uid' | 'gid'>): Promise<void> {
  for (let current = resolve(dir); ; current = dirname(current)) {
    const info = await stat(current);
    const searchable =
      (info.mode & 0o001) !== 0 ||
      (info.uid === user.uid && (info.mode & 0o100) !== 0) ||
      (info.gid === user.gid && (info.mode & 0o010) !== 0);
    if (!searchable) {
      throw new HangarError(
        'BAD_INPUT',
        `Apps run as ${user.name}, which cannot reach ${dir}: ${current} is closed to other users. ` +
          `Use a data dir such as /var/lib/hangar-agent, or \`chmod o+x ${current}\`.`,
      );
    }
    if (current === dirname(current)) return;
  }
}

/**
 * Gives `path` and everything under it to `user` (nothing to do when null). Symlinks are not
 * followed; what `user` owns already is left alone, so a second call is cheap.
 *
 * @throws HangarError `INTERNAL` naming the tree and the user.
 */
export async function chownTree(path: string, user: RunAs | null): Promise<void> {
  if (!user) return;
  try {
    await chownEach(path, user);
  } catch (err) {
    throw new HangarError('INTERNAL', `Could not give ${path} to the user ${user.name}.`, { cause: err });
  }
}

async function chownEach(path: string, user: RunAs): Promise<void> {
  const info = await lstat(path);
  if (info.isSymbolicLink()) return;
  if (info.uid !== user.uid || info.gid !== user.gid) await chown(path, user.uid, user.gid);
  if (info.isDirectory()) {
    for (const name of await readdir(path)) await chownEach(join(path, name), user);
  }
}

/**
 * Makes `dir` (parents as needed) with `mode`, and when `user` is given makes it theirs: owned by
 * the user (`owner: 'user'`), or by root with the user's group (`owner: 'group'`: the app enters
 * and reads it but cannot rename what is in it, which the agent then creates safely).
 */
export async function ownedDir(dir: string, mode: number, user: RunAs | null, owner: 'user' | 'group'): Promise<void> {
  await mkdir(dir, { recursive: true, mode });
  if (user) await chown(dir, owner === 'user' ? user.uid : 0, user.gid);
  await chmod(dir, mode);
}
