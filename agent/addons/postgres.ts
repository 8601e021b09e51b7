/**
 * PostgreSQL add-ons: `initdb` (scram-sha-256, password from a pwfile that is removed right after)
 * into DATA/addons/NAME/data, a database and user named after the app, `postgres -D DIR` on its
 * own port, listening on the agent's advertise address and loopback, its unix socket in the
 * add-on's directory. Health: a real query over TCP with the add-on's password. Backups: pg_dump
 * custom format; restore: pg_restore --clean.
 */
import { appendFile, mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../../common/errors.js';
import type { AddonContext, AddonDriver, PreparedServer } from './addon-kind.js';
import { shellWords } from './addon-kind.js';
import { chownTree } from '../workloads/run-as.js';
import { runChecked, runCommand } from './run-command.js';
import { findPostgresBin } from './server-binaries.js';

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Environment of the PostgreSQL client tools: the password never goes on a command line. */
function clientEnv(ctx: AddonContext): Record<string, string> {
  return {
    PGPASSWORD: ctx.spec.password,
    PGHOST: '127.0.0.1',
    PGPORT: String(ctx.port),
    PGUSER: ctx.spec.database,
    PGCONNECT_TIMEOUT: '3',
    PGSSLMODE: 'disable',
  };
}

async function initialize(ctx: AddonContext, bin: string): Promise<void> {
  const { paths, runAs } = ctx;
  // A data dir without PG_VERSION is a half-done initdb: start over.
  await rm(paths.data, { recursive: true, force: true });
  await mkdir(paths.data, { mode: 0o700 });
  const pwfile = join(paths.root, '.initdb-password');
  await writeFile(pwfile, `${ctx.spec.password}\n`, { mode: 0o600 });
  try {
    await chownTree(paths.root, runAs);
    await runChecked(
      'initdb',
      join(bin, 'initdb'),
      [
        '-D',
        paths.data,
        '-U',
        ctx.spec.database,
        `--pwfile=${pwfile}`,
        '--auth-local=scram-sha-256',
        '--auth-host=scram-sha-256',
        '-E',
        'UTF8',
        '--locale=C.UTF-8',
      ],
      { runAs, cwd: paths.root, timeoutMs: 120_000 },
    );
  } finally {
    await rm(pwfile, { force: true });
  }
  // App instances on other agents connect over the network, always with the password.
  await appendFile(
    join(paths.data, 'pg_hba.conf'),
    '\n# Hangar: app instances on any host, with the add-on password\nhost all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n',
  );
  await chownTree(paths.data, runAs);
}

/** Creates the app's database once the server answers (initdb makes only `postgres`). */
async function ensureDatabase(ctx: AddonContext, bin: string): Promise<boolean> {
  const psql = join(bin, 'psql');
  const env = clientEnv(ctx);
  const db = ctx.spec.database;
  const found = await runCommand(psql, ['-d', 'postgres', '-tAc', `SELECT 1 FROM pg_database WHERE datname = '${db}'`], {
    env,
    timeoutMs: 5000,
  });
  if (found.code !== 0) return false;
  if (found.stdout.trim() === '1') return true;
  const created = await runCommand(psql, ['-d', 'postgres', '-c', `CREATE DATABASE "${db}"`], { env, timeoutMs: 15_000 });
  if (created.code !== 0) ctx.logger.warn({ addon: ctx.spec.name, stderr: created.stderr.trim() }, 'could not create the database yet');
  return created.code === 0;
}

/** The PostgreSQL driver. */
export function postgresDriver(): AddonDriver {
  return {
    kind: 'postgres',
    preferredPort: 5432,

    async prepare(ctx): Promise<PreparedServer> {
      if (!/^[a-z_][a-z0-9_]{0,62}$/.test(ctx.spec.database)) {
        throw new HangarError('BAD_INPUT', `"${ctx.spec.database}" is not a valid PostgreSQL database name`);
      }
      const bin = await findPostgresBin(ctx.host);
      if (!(await exists(join(ctx.paths.data, 'PG_VERSION')))) {
        ctx.logger.info({ addon: ctx.spec.name, bin }, 'initializing a PostgreSQL cluster');
        await initialize(ctx, bin);
      }
      let databaseReady = false;
      return {
        command: shellWords([
          join(bin, 'postgres'),
          '-D',
          ctx.paths.data,
          '-c',
          `port=${ctx.port}`,
          '-c',
          `listen_addresses=${ctx.listen.join(',')}`,
          '-c',
          `unix_socket_directories=${ctx.paths.root}`,
        ]),
        env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' },
        cwd: ctx.paths.root,
        // SIGTERM is "smart" shutdown: it waits for every client to disconnect.
        stopSignal: 'SIGINT',
        async healthCheck() {
          try {
            if (!databaseReady) databaseReady = await ensureDatabase(ctx, bin);
            if (!databaseReady) return false;
            const ping = await runCommand(join(bin, 'psql'), ['-d', ctx.spec.database, '-tAc', 'SELECT 1'], {
              env: clientEnv(ctx),
              timeoutMs: 5000,
            });
            return ping.code === 0 && ping.stdout.trim() === '1';
          } catch {
            return false;
          }
        },
      };
    },

    async backup(ctx, file) {
      const bin = await findPostgresBin(ctx.host);
      const partial = `${file}.partial`;
      try {
        await runChecked('pg_dump', join(bin, 'pg_dump'), ['-Fc', '-d', ctx.spec.database, '-f', partial], {
          env: clientEnv(ctx),
          runAs: ctx.runAs,
          cwd: ctx.paths.root,
          timeoutMs: 6 * 3600_000,
        });
        await rename(partial, file);
      } finally {
        await rm(partial, { force: true });
      }
    },

    async restore(ctx, file) {
      const bin = await findPostgresBin(ctx.host);
      await runChecked(
        'pg_restore',
        join(bin, 'pg_restore'),
        ['--clean', '--if-exists', '--no-owner', '--single-transaction', '-d', ctx.spec.database, file],
        { env: clientEnv(ctx), runAs: ctx.runAs, cwd: ctx.paths.root, timeoutMs: 6 * 3600_000 },
      );
    },
  };
}
