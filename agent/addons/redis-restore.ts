/**
 * Redis RDBs loaded back: what an RDB holds (`redis-check-rdb`, which checks its checksum too),
 * a scratch `redis-server` on a unix socket that loads one, and restores into a live add-on.
 *
 * A server with `appendonly yes` loads its append-only file at start, never the RDB beside it. So
 * a restore loads the RDB into a scratch server next to the add-on's data (`appendonly no`), checks
 * its keys, and has it write the append-only files from that (`CONFIG SET appendonly yes`, the
 * documented switch from RDB to AOF, which rewrites the AOF from the dataset). Only then is the
 * add-on's server stopped, its data dir moved aside to `data.before-restore` and the new one put in
 * its place; the server is started and its keys counted. When anything fails after the stop, the
 * previous data dir is put back and the server started on it again.
 */
import { copyFile, mkdir, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HangarError, describeError, isHangarError } from '../../common/errors.js';
import { chownTree, type RunAs } from '../workloads/run-as.js';
import type { AddonContext, ServerControl } from './addon-kind.js';
import { runChecked, runCommand } from './run-command.js';
import { ScratchServer, waitUntil } from './scratch-server.js';
import { findBinary } from './server-binaries.js';

/** What an RDB file holds, as `redis-check-rdb` read it. */
export interface RdbContents {
  /** Keys in every database. */
  keys: number;
  /** Of those, keys with a time to live. */
  expires: number;
  /** Of those, keys whose time to live had passed when the file was read (a server does not load them). */
  expired: number;
}

/**
 * What the RDB `file` holds.
 *
 * @throws HangarError `ADDON_FAILED` when redis-check-rdb refuses it (not an RDB, a bad checksum).
 */
export async function readRdb(host: string, file: string): Promise<RdbContents> {
  const check = await findBinary('redis-check-rdb', 'redis-tools', host);
  const result = await runCommand(check, [file], { timeoutMs: 600_000 });
  const count = (what: string) => Number(new RegExp(`\\[info\\] (\\d+) ${what}`).exec(result.stdout)?.[1] ?? NaN);
  const contents = { keys: count('keys read'), expires: count('expires'), expired: count('already expired') };
  if (result.code !== 0 || Number.isNaN(contents.keys)) {
    const tail = result.stdout.trim().split('\n').slice(-2).join(' ');
    throw new HangarError('ADDON_FAILED', `redis-check-rdb refused the RDB: ${tail}`);
  }
  return { keys: contents.keys, expires: contents.expires || 0, expired: contents.expired || 0 };
}

/** The keys of every database in an `INFO keyspace` answer (`db0:keys=3,expires=0,avg_ttl=0`). */
export function keyspaceKeys(info: string): number {
  let keys = 0;
  for (const m of info.matchAll(/^db\d+:keys=(\d+)/gm)) keys += Number(m[1]);
  return keys;
}

/**
 * Throws unless a server loaded from `rdb` holds `found` keys: every key without a time to live,
 * plus at most those with one that had not passed when the file was read (one may pass since).
 *
 * @param what the server, for the message
 */
export function checkKeyCount(found: number, rdb: RdbContents, what: string): void {
  const most = rdb.keys - rdb.expired;
  const least = rdb.keys - rdb.expires;
  if (found >= least && found <= most) return;
  const want = least === most ? `${most}` : `${least} to ${most} (${rdb.expires} with a time to live)`;
  throw new HangarError('ADDON_FAILED', `${what} holds ${found} keys; the RDB holds ${want}`);
}

/** A scratch server on an RDB: a command to it (`redis-cli` words; the answer, trimmed) and a bounded wait. */
export interface ScratchRedis {
  ask(...words: string[]): Promise<string>;
  until(what: string, ready: () => Promise<boolean>): Promise<void>;
}

/**
 * Starts a scratch `redis-server` on `dir`/dump.rdb (`appendonly no`, no snapshots, a unix
 * socket in a temporary directory of its own, no TCP port), waits until it has loaded the RDB,
 * hands it to `use`, and stops it whatever happens.
 */
export async function withScratchRedis<T>(
  o: { host: string; dir: string; runAs: RunAs | null },
  use: (redis: ScratchRedis) => Promise<T>,
): Promise<T> {
  // Short: a unix socket path must stay under 108 bytes.
  const sockDir = await mkdtemp(join(tmpdir(), 'hgr-'));
  let server: ScratchServer | null = null;
  try {
    await chownTree(sockDir, o.runAs);
    await chownTree(o.dir, o.runAs);
    const sock = join(sockDir, 'r.sock');
    const started = await ScratchServer.start(
      await findBinary('redis-server', 'redis-server', o.host),
      ['--port', '0', '--unixsocket', sock, '--dir', o.dir, '--dbfilename', 'dump.rdb', '--appendonly', 'no', '--save', ''],
      sockDir,
      o.runAs,
      'SIGTERM',
    );
    server = started;
    const cli = await findBinary('redis-cli', 'redis-tools', o.host);
    const redis: ScratchRedis = {
      ask: async (...words) => (await runCommand(cli, ['-s', sock, ...words], { timeoutMs: 30_000 })).stdout.trim(),
      until: (what, ready) => waitUntil(what, started, ready),
    };
    await redis.until('the scratch Redis server to load the RDB', async () => (await redis.ask('PING')) === 'PONG');
    return await use(redis);
  } finally {
    await server?.stop();
    await rm(sockDir, { recursive: true, force: true });
  }
}

/** The `name:value` lines of an INFO answer. */
function infoFields(info: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of info.split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return fields;
}

/**
 * Writes the append-only files of `dir`/dump.rdb into `dir` (what a server with `appendonly yes`
 * on `dir` then loads), after checking the keys the RDB loaded into.
 */
async function rdbToAof(host: string, dir: string, runAs: RunAs | null, rdb: RdbContents): Promise<void> {
  await withScratchRedis({ host, dir, runAs }, async (redis) => {
    checkKeyCount(keyspaceKeys(await redis.ask('INFO', 'keyspace')), rdb, 'the scratch server on the RDB');
    const set = await redis.ask('CONFIG', 'SET', 'appendonly', 'yes');
    if (set !== 'OK') throw new HangarError('ADDON_FAILED', `the scratch Redis server would not turn on its append-only file: ${set}`);
    let fields = new Map<string, string>();
    await redis.until('the scratch Redis server to write its append-only file', async () => {
      fields = infoFields(await redis.ask('INFO', 'persistence'));
      return fields.get('aof_rewrite_in_progress') === '0' && fields.get('aof_rewrite_scheduled') === '0';
    });
    if (fields.get('aof_last_bgrewrite_status') !== 'ok' || fields.get('aof_last_write_status') !== 'ok') {
      throw new HangarError('ADDON_FAILED', 'the scratch Redis server could not write the append-only file of the RDB (see its log)');
    }
  });
}

/** The keys the add-on's own server holds (AUTH with its password, from the environment). */
async function liveKeys(ctx: AddonContext): Promise<number> {
  const cli = await findBinary('redis-cli', 'redis-tools', ctx.host);
  const info = await runChecked(
    'redis-cli INFO keyspace',
    cli,
    ['-h', '127.0.0.1', '-p', String(ctx.port), '--no-auth-warning', 'INFO', 'keyspace'],
    { env: { REDISCLI_AUTH: ctx.spec.password }, timeoutMs: 30_000 },
  );
  return keyspaceKeys(info);
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Replaces the add-on's data with the RDB `file`, as the module comment says, and returns the
 * keys its server holds afterwards.
 *
 * @throws HangarError `ADDON_FAILED` when the RDB does not load or its keys do not match; the
 *   previous data is in place and served again then (the message says so, or where it is when
 *   even that failed).
 */
export async function restoreRedis(ctx: AddonContext, file: string, server: ServerControl): Promise<{ keys: number }> {
  const name = ctx.spec.name;
  const data = ctx.paths.data;
  const staged = `${data}.restore`;
  const previous = `${data}.before-restore`;
  if (await exists(previous)) {
    throw new HangarError(
      'ADDON_FAILED',
      `An earlier restore of ${name} on ${ctx.host} left ${previous} behind; look at it, remove it, then restore again.`,
    );
  }
  const rdb = await readRdb(ctx.host, file);
  await rm(staged, { recursive: true, force: true });
  await mkdir(staged, { mode: 0o700 });
  try {
    await copyFile(file, join(staged, 'dump.rdb'));
    await rdbToAof(ctx.host, staged, ctx.runAs, rdb);
    await server.stop();
    let movedAside = false;
    try {
      await rename(data, previous);
      movedAside = true;
      await rename(staged, data);
      await server.start();
      const keys = await liveKeys(ctx);
      checkKeyCount(keys, rdb, `${name} after the restore`);
      await rm(previous, { recursive: true, force: true });
      return { keys };
    } catch (err) {
      const why = describeError(err);
      try {
        await server.stop();
        if (movedAside) {
          await rm(data, { recursive: true, force: true });
          await rename(previous, data);
        }
        await server.start();
      } catch (again) {
        throw new HangarError(
          'ADDON_FAILED',
          `The restore of ${name} failed (${why}), and so did starting it again on its previous data (${describeError(again)}); that data is in ${movedAside ? previous : data} on ${ctx.host}.`,
          { cause: again },
        );
      }
      throw new HangarError(isHangarError(err) ? err.code : 'ADDON_FAILED', `${why}; ${name} serves its previous data again`, {
        cause: err,
      });
    }
  } finally {
    await rm(staged, { recursive: true, force: true });
  }
}
