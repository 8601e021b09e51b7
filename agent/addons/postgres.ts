/**
 * PostgreSQL add-ons: `initdb` (scram-sha-256, the superuser `hangar_admin` with its password from
 * a pwfile that is removed right after) into DATA/addons/NAME/data; a role named after the app
 * that owns the app's database and is no superuser; `postgres -D DIR` on its own port, listening
 * on the agent's advertise address and loopback, its unix socket in the add-on's directory, and
 * serving TLS with a certificate from the coordinator's CA. Health: a real query over TCP as the
 * app's role. Backups: pg_dump custom format; restore: pg_restore --clean.
 *
 * With a standby (see postgres-replication.ts) the primary runs as above and the standby is a
 * pg_basebackup of it that streams its WAL.
 *
 * A cluster made before add-ons had an admin of their own (no `admin` marker) keeps its app role
 * as the superuser it was made with.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { appendFile, chmod, chown, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../../common/errors.js';
import type { AddonContext, AddonDriver, PreparedServer } from './addon-kind.js';
import { shellWords } from './addon-kind.js';
import { chownTree } from '../workloads/run-as.js';
import { runChecked, runCommand } from './run-command.js';
import { findPostgresBin } from './server-binaries.js';
import { ADMIN, adminMarker, clientEnv, exists } from './postgres-client.js';
import { ensureReplicationHba, fencedMarker, prepareStandby } from './postgres-replication.js';

/**
 * PostgreSQL's SCRAM-SHA-256 verifier of `password` (RFC 5803, what `CREATE ROLE … PASSWORD`
 * stores): the password itself never reaches a command line or the server's log.
 */
export function scramVerifier(password: string, salt: Buffer = randomBytes(16), iterations = 4096): string {
  const salted = pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256');
  const storedKey = createHash('sha256').update(createHmac('sha256', salted).update('Client Key').digest()).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

async function initialize(ctx: AddonContext, bin: string): Promise<void> {
  const { paths, runAs } = ctx;
  // A data dir without PG_VERSION is a half-done initdb: start over.
  await rm(paths.data, { recursive: true, force: true });
  await mkdir(paths.data, { mode: 0o700 });
  const pwfile = join(paths.root, '.initdb-password');
  // The superuser is the agent's own (the app's role is made later, without superuser rights);
  // a coordinator from before that sends no admin password and the app's role is the superuser.
  const admin = ctx.spec.adminPassword !== '';
  await writeFile(pwfile, `${admin ? ctx.spec.adminPassword : ctx.spec.password}\n`, { mode: 0o600 });
  try {
    await chownTree(paths.root, runAs);
    await runChecked(
      'initdb',
      join(bin, 'initdb'),
      [
        '-D',
        paths.data,
        '-U',
        admin ? ADMIN : ctx.spec.database,
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
  if (admin) await writeFile(adminMarker(ctx), `${ADMIN}\n`, { mode: 0o644 });
}

/**
 * The server certificate and key from desired state, in the data dir: the key 0600 and owned by
 * the server's user, as PostgreSQL requires. False when the add-on has none.
 */
async function writeTlsFiles(ctx: AddonContext): Promise<boolean> {
  if (!ctx.spec.tlsCertPem || !ctx.spec.tlsKeyPem) return false;
  for (const [name, pem] of [
    ['server.crt', ctx.spec.tlsCertPem],
    ['server.key', ctx.spec.tlsKeyPem],
  ] as const) {
    const path = join(ctx.paths.data, name);
    const tmp = `${path}.tmp`;
    await writeFile(tmp, pem, { mode: 0o600 });
    if (ctx.runAs) await chown(tmp, ctx.runAs.uid, ctx.runAs.gid);
    await chmod(tmp, 0o600);
    await rename(tmp, path);
  }
  return true;
}

/**
 * Creates the app's role (a login, no superuser, no CREATEROLE) and its database, owned by it,
 * once the server answers (initdb makes only `postgres`).
 */
async function ensureDatabase(ctx: AddonContext, bin: string): Promise<boolean> {
  if (!(await exists(adminMarker(ctx)))) return ensureLegacyDatabase(ctx, bin);
  const psql = join(bin, 'psql');
  const env = clientEnv(ctx, 'admin');
  const db = ctx.spec.database;
  const sql = async (query: string): Promise<string | null> => {
    const result = await runCommand(psql, ['-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-tAc', query], { env, timeoutMs: 15_000 });
    if (result.code === 0) return result.stdout.trim();
    ctx.logger.warn({ addon: ctx.spec.name, stderr: result.stderr.trim() }, 'could not set up the database yet');
    return null;
  };
  const role = await sql(`SELECT 1 FROM pg_roles WHERE rolname = '${db}'`);
  if (role === null) return false;
  // The password's SCRAM verifier, not the password: `ps` and the server log never see it.
  if (role !== '1' && (await sql(`CREATE ROLE "${db}" LOGIN PASSWORD '${scramVerifier(ctx.spec.password)}'`)) === null) return false;
  const found = await sql(`SELECT 1 FROM pg_database WHERE datname = '${db}'`);
  if (found === null) return false;
  if (found === '1') return true;
  return (await sql(`CREATE DATABASE "${db}" OWNER "${db}"`)) !== null;
}

/** A cluster from before add-ons had an admin: the app's role is its superuser. */
async function ensureLegacyDatabase(ctx: AddonContext, bin: string): Promise<boolean> {
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
      let replication: { args: string[]; env: Record<string, string> } = { args: [], env: {} };
      if (ctx.spec.standbyRole === 'standby') {
        replication = await prepareStandby(ctx, bin);
      } else {
        if (await exists(fencedMarker(ctx))) {
          throw new HangarError(
            'ADDON_FAILED',
            `${ctx.spec.name} on ${ctx.host} was replaced by its standby and never starts as a primary again; it waits for the coordinator to make it a standby`,
          );
        }
        if (!(await exists(join(ctx.paths.data, 'PG_VERSION')))) {
          ctx.logger.info({ addon: ctx.spec.name, bin }, 'initializing a PostgreSQL cluster');
          await initialize(ctx, bin);
        }
        // Every cluster can get a standby: only the replication role, which has none until then, may use them.
        await ensureReplicationHba(ctx);
      }
      const tls = await writeTlsFiles(ctx);
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
          // Paths relative to the data dir; TLS 1.2 at least.
          ...(tls
            ? ['-c', 'ssl=on', '-c', 'ssl_cert_file=server.crt', '-c', 'ssl_key_file=server.key', '-c', 'ssl_min_protocol_version=TLSv1.2']
            : []),
          ...replication.args,
        ]),
        env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8', ...replication.env },
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
