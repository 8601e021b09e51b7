/**
 * Verification restores: a backup is loaded into a scratch server of its kind (a fresh PostgreSQL
 * cluster, or a redis-server on the RDB) that listens only on a unix socket in a temporary
 * directory, and what the server then holds is compared with what the file itself says (the
 * tables and the rows of each COPY block of the dump; the keys of the RDB, read by redis-check-rdb).
 * The scratch server runs in its own process group and is stopped, and its directory removed,
 * whatever happens.
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { HangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { chownTree, type RunAs } from '../workloads/run-as.js';
import { checkKeyCount, keyspaceKeys, readRdb, withScratchRedis } from './redis-restore.js';
import { runChecked } from './run-command.js';
import { ScratchServer, waitUntil } from './scratch-server.js';
import { findPostgresBin } from './server-binaries.js';

/** What a verification found: rows per table (PostgreSQL) or the number of keys (Redis). */
export type VerifyReport = { tables: Record<string, number> } | { keys: number };

/** What {@link verifyBackup} needs. */
export interface VerifyOptions {
  kind: string;
  file: string;
  /** PostgreSQL: the database the dump is restored into (the add-on's). */
  database: string;
  /** The scratch server's user (PostgreSQL refuses to run as root). */
  runAs: RunAs | null;
  /** The agent's name, for messages. */
  host: string;
  logger: Logger;
  /** Where the scratch directory is made. Default: the system's temporary directory. */
  scratchParent?: string;
}

/**
 * Restores `file` into a scratch server and checks it holds what the file says.
 *
 * @throws HangarError `ADDON_FAILED` with what did not match, or why it did not restore.
 */
export async function verifyBackup(o: VerifyOptions): Promise<VerifyReport> {
  if (o.kind !== 'postgres' && o.kind !== 'redis') throw new HangarError('BAD_INPUT', `${o.kind} add-ons have no backups to verify`);
  // Short: a unix socket path must stay under 108 bytes.
  const dir = await mkdtemp(join(o.scratchParent ?? tmpdir(), 'hgv-'));
  let server: ScratchServer | null = null;
  try {
    await chownTree(dir, o.runAs);
    if (o.kind === 'postgres') {
      const bin = await findPostgresBin(o.host);
      const expected = await dumpContents(bin, o.file);
      await runChecked(
        'initdb (scratch)',
        join(bin, 'initdb'),
        ['-D', join(dir, 'data'), '-U', 'hangar_admin', '--auth=trust', '-E', 'UTF8', '--locale=C.UTF-8'],
        { runAs: o.runAs, cwd: dir, timeoutMs: 120_000 },
      );
      server = await ScratchServer.start(
        join(bin, 'postgres'),
        ['-D', join(dir, 'data'), '-c', 'listen_addresses=', '-c', `unix_socket_directories=${dir}`, '-c', 'fsync=off', '-c', 'port=5432'],
        dir,
        o.runAs,
        'SIGINT',
      );
      const env = { PGHOST: dir, PGPORT: '5432', PGUSER: 'hangar_admin', PGCONNECT_TIMEOUT: '3' };
      const psql = (db: string, sql: string) =>
        runChecked('psql (scratch)', join(bin, 'psql'), ['-d', db, '-v', 'ON_ERROR_STOP=1', '-tAc', sql], { env, timeoutMs: 60_000 });
      await waitUntil(
        'the scratch PostgreSQL server to start',
        server,
        async () => (await psql('postgres', 'SELECT 1').catch(() => '')).trim() === '1',
      );
      await psql('postgres', `CREATE DATABASE "${o.database}"`);
      await runChecked(
        'pg_restore (verification)',
        join(bin, 'pg_restore'),
        ['--no-owner', '--no-privileges', '--exit-on-error', '-d', o.database, o.file],
        { env, timeoutMs: 6 * 3600_000 },
      );
      const listed = await psql(
        o.database,
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
      );
      const restoredTables = listed
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean);
      const missing = Object.keys(expected).filter((t) => !restoredTables.includes(t));
      if (missing.length > 0) throw new HangarError('ADDON_FAILED', `the restored backup lacks table(s) ${missing.join(', ')}`);
      const tables: Record<string, number> = {};
      for (const table of restoredTables) {
        const [schema, name] = splitTable(table);
        const rows = Number((await psql(o.database, `SELECT count(*) FROM ONLY "${schema}"."${name}"`)).trim());
        const want = expected[table] ?? 0;
        if (rows !== want)
          throw new HangarError('ADDON_FAILED', `table ${table} has ${rows} rows after the restore; the dump holds ${want}`);
        tables[table] = rows;
      }
      return { tables };
    }
    const rdb = await readRdb(o.host, o.file);
    await copyFile(o.file, join(dir, 'dump.rdb'));
    const keys = await withScratchRedis({ host: o.host, dir, runAs: o.runAs }, async (redis) =>
      keyspaceKeys(await redis.ask('INFO', 'keyspace')),
    );
    checkKeyCount(keys, rdb, 'the restored RDB');
    return { keys };
  } finally {
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

function splitTable(qualified: string): [string, string] {
  const dot = qualified.indexOf('.');
  return [qualified.slice(0, dot), qualified.slice(dot + 1)];
}

/** The tables of a pg_dump -Fc file and the rows of each one's COPY block. */
export async function dumpContents(bin: string, file: string): Promise<Record<string, number>> {
  const list = await runChecked('pg_restore --list', join(bin, 'pg_restore'), ['--list', file], { timeoutMs: 600_000 });
  const tables: Record<string, number> = {};
  for (const line of list.split('\n')) {
    // `215; 1259 16390 TABLE public notes_note owner` (not `TABLE DATA public notes_note owner`)
    const m = /^\d+; \d+ \d+ TABLE (?!DATA )(\S+) (\S+) /.exec(line);
    if (m) tables[`${m[1]}.${m[2]}`] = 0;
  }
  const child = spawn(join(bin, 'pg_restore'), ['--data-only', '-f', '-', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4096)));
  const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
  let current: string | null = null;
  for await (const line of createInterface({ input: child.stdout, crlfDelay: Infinity })) {
    if (current === null) {
      // `COPY public.notes_note (id, text) FROM stdin;`
      const m = /^COPY (\S+?)(?: \(.*\))? FROM stdin;$/.exec(line);
      if (m?.[1]) current = m[1].replaceAll('"', '');
    } else if (line === '\\.') {
      current = null;
    } else {
      tables[current] = (tables[current] ?? 0) + 1;
    }
  }
  const code = await closed;
  if (code !== 0)
    throw new HangarError('ADDON_FAILED', `pg_restore could not read the dump: ${stderr.trim().split('\n').slice(-2).join(' ')}`);
  return tables;
}
