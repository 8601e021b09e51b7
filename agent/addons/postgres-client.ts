/**
 * How the agent talks to its PostgreSQL servers: the superuser `hangar_admin` (or the app's role)
 * over TCP on loopback, the password in the environment only, and one-statement queries.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddonContext } from './addon-kind.js';
import { runCommand } from './run-command.js';

/** The superuser the agent administers a cluster as; only the agent knows its password. */
export const ADMIN = 'hangar_admin';

/** True when `path` exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The file that says a cluster was made with {@link ADMIN} as its superuser. */
export function adminMarker(ctx: AddonContext): string {
  return join(ctx.paths.root, 'admin');
}

/**
 * Environment of the PostgreSQL client tools, as the app's role or as the admin: the password
 * never goes on a command line.
 */
export function clientEnv(ctx: AddonContext, as: 'app' | 'admin' = 'app'): Record<string, string> {
  return {
    PGPASSWORD: as === 'admin' ? ctx.spec.adminPassword : ctx.spec.password,
    PGHOST: '127.0.0.1',
    PGPORT: String(ctx.port),
    PGUSER: as === 'admin' ? ADMIN : ctx.spec.database,
    PGCONNECT_TIMEOUT: '3',
    PGSSLMODE: ctx.spec.tlsCertPem ? 'require' : 'disable',
  };
}

/**
 * Runs one statement as the admin (in database `postgres`) and returns its unaligned output, or
 * null when it failed (the server's message in `error`).
 */
export async function adminQuery(
  ctx: AddonContext,
  bin: string,
  query: string,
  timeoutMs = 15_000,
): Promise<{ out: string | null; error: string }> {
  const result = await runCommand(join(bin, 'psql'), ['-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-tAc', query], {
    env: clientEnv(ctx, 'admin'),
    timeoutMs,
  });
  return result.code === 0 ? { out: result.stdout.trim(), error: '' } : { out: null, error: result.stderr.trim() };
}
