/**
 * Redis RDBs loaded back: what an RDB holds (`redis-check-rdb`, which checks its checksum too),
 * and a scratch `redis-server` on a unix socket that loads one.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HangarError } from '../../common/errors.js';
import { chownTree, type RunAs } from '../workloads/run-as.js';
import { runCommand } from './run-command.js';
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
