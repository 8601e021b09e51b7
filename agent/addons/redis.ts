/**
 * Redis add-ons: a config file (mode 0600, owned by the server's user) with `requirepass`,
 * append-only persistence and its own port and dir; `redis-server CONF`. Health: AUTH + PING in
 * RESP over a plain socket. Backups: an RDB snapshot taken over the replication protocol
 * (`redis-cli --rdb`, the password in the environment); restores load one back (see
 * {@link restoreRedis}).
 */
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddonDriver, PreparedServer } from './addon-kind.js';
import { shellWords } from './addon-kind.js';
import { chownTree } from '../workloads/run-as.js';
import { findBinary } from './server-binaries.js';
import { restoreRedis } from './redis-restore.js';
import { runChecked } from './run-command.js';
import { socketExchange } from './socket-exchange.js';

/** A RESP command (array of bulk strings). */
export function respCommand(...words: string[]): string {
  return `*${words.length}\r\n${words.map((w) => `$${Buffer.byteLength(w)}\r\n${w}\r\n`).join('')}`;
}

/** True when Redis at host:port accepts `password` and answers PING with PONG. */
export async function redisPing(host: string, port: number, password: string, timeoutMs = 2000): Promise<boolean> {
  try {
    const answer = await socketExchange({
      host,
      port,
      request: respCommand('AUTH', password) + respCommand('PING'),
      // Two simple-string or error replies.
      complete: (r) => (r.match(/\r\n/g) ?? []).length >= 2,
      timeoutMs,
    });
    return answer.startsWith('+OK\r\n+PONG\r\n');
  } catch {
    return false;
  }
}

/** The Redis driver. */
export function redisDriver(): AddonDriver {
  return {
    kind: 'redis',
    preferredPort: 6379,
    async prepare(ctx): Promise<PreparedServer> {
      const bin = await findBinary('redis-server', 'redis-server', ctx.host);
      await mkdir(ctx.paths.data, { recursive: true, mode: 0o700 });
      const conf = join(ctx.paths.root, 'redis.conf');
      await writeFile(
        conf,
        [
          '# Written by Hangar on every start; edit the add-on through hangar instead.',
          `bind ${ctx.listen.join(' ')}`,
          `port ${ctx.port}`,
          `requirepass ${ctx.spec.password}`,
          'appendonly yes',
          'appendfsync everysec',
          `dir ${ctx.paths.data}`,
          'daemonize no',
          'supervised no',
          'logfile ""',
          'protected-mode no',
          '',
        ].join('\n'),
        { mode: 0o600 },
      );
      await chownTree(ctx.paths.root, ctx.runAs);
      return {
        command: shellWords([bin, conf]),
        env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' },
        cwd: ctx.paths.data,
        healthCheck: () => redisPing('127.0.0.1', ctx.port, ctx.spec.password),
      };
    },

    async backup(ctx, file) {
      const cli = await findBinary('redis-cli', 'redis-tools', ctx.host);
      const partial = `${file}.partial`;
      try {
        await runChecked('redis-cli --rdb', cli, ['-h', '127.0.0.1', '-p', String(ctx.port), '--no-auth-warning', '--rdb', partial], {
          env: { REDISCLI_AUTH: ctx.spec.password },
          timeoutMs: 6 * 3600_000,
        });
        await rename(partial, file);
      } finally {
        await rm(partial, { force: true });
      }
    },

    restore: restoreRedis,
  };
}
