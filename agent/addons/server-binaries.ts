/**
 * Where the add-on servers' programs are: Debian's `postgresql` (under
 * /usr/lib/postgresql/VERSION/bin, the newest version wins), `redis-server`, `memcached`. A
 * missing one is an error that names the Debian package to install.
 */
import { access, constants, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../../common/errors.js';

/** Root of Debian's PostgreSQL installs. */
export const POSTGRES_ROOT = '/usr/lib/postgresql';

async function executable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function missing(what: string, pkg: string, host: string): HangarError {
  return new HangarError(
    'ADDON_FAILED',
    `${what} is not installed on ${host}: install the Debian package \`${pkg}\` there (apt-get install ${pkg}), then create the add-on again.`,
  );
}

/**
 * The bin directory of the newest PostgreSQL under `root` that has `postgres`, `initdb`,
 * `pg_dump` and `pg_restore`.
 */
export async function findPostgresBin(host: string, root = POSTGRES_ROOT): Promise<string> {
  let versions: string[] = [];
  try {
    versions = await readdir(root);
  } catch {
    throw missing('PostgreSQL', 'postgresql', host);
  }
  versions.sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a) || b.localeCompare(a));
  for (const version of versions) {
    const bin = join(root, version, 'bin');
    const tools = await Promise.all(['postgres', 'initdb', 'psql', 'pg_dump', 'pg_restore'].map((t) => executable(join(bin, t))));
    if (tools.every(Boolean)) return bin;
  }
  throw missing('PostgreSQL', 'postgresql', host);
}

/** The path of a server program (`redis-server`, `memcached`) in the usual places. */
export async function findBinary(
  name: string,
  pkg: string,
  host: string,
  dirs = ['/usr/bin', '/usr/sbin', '/usr/local/bin'],
): Promise<string> {
  for (const dir of dirs) {
    const path = join(dir, name);
    if (await executable(path)) return path;
  }
  throw missing(name, pkg, host);
}
