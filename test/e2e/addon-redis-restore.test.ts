import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddonView } from '../../common/api-types.js';
import { apiAddons, apiGet, cliOk, redis } from '../helpers/addon-clients.js';
import { startCluster, waitFor } from '../helpers/cluster.js';

/** Asserts what Redis at `url` answers to `commands` (after AUTH's `+OK`); waits for as many lines as `expected` has. */
async function answers(url: string, commands: string[][], expected: string): Promise<void> {
  const lines = (expected.match(/\r\n/g) ?? []).length;
  assert.equal(await redis(url, commands, lines - 1), expected);
}

/** GET of each key. */
function gets(keys: string[]): string[][] {
  return keys.map((k) => ['GET', k]);
}

test('Redis restores: into the add-on (kept through a kill -9) and into a new one; a corrupt backup is refused, the data untouched', async (t) => {
  const cluster = await startCluster(t, { agents: 2 });
  const app = 'cache';
  await cliOk(cluster, ['apps:create', app]);
  await cliOk(cluster, ['addons:create', 'redis', '--agent', 'agent-1', '-a', app]);
  const url = (await apiAddons(cluster, app, true)).find((a) => a.name === 'redis-1')?.url ?? '';
  assert.ok(url);
  const addonDir = join(cluster.dir, 'agent-agent-1', 'addons', 'redis-1');
  const view = async (name: string): Promise<AddonView | undefined> => (await apiAddons(cluster, app)).find((a) => a.name === name);
  const pidOf = async () => (JSON.parse(await readFile(join(addonDir, 'pid.json'), 'utf8')) as { pid: number }).pid;
  /** SIGKILL to redis-server; resolves once the agent has it up again. */
  const killNine = async () => {
    const pid = await pidOf();
    const restarts = (await view('redis-1'))?.restarts ?? 0;
    process.kill(pid, 'SIGKILL');
    await waitFor(
      'redis-1 to be restarted by the agent',
      async () => {
        const v = await view('redis-1');
        return v?.state === 'up' && v.restarts > restarts && (await pidOf()) !== pid;
      },
      60_000,
      300,
    );
  };

  let backup = '';
  await t.test('a backup of keys in two databases, one with a time to live, is copied and verified', async () => {
    await answers(
      url,
      [
        ['SET', 'user:1', 'ada'],
        ['SET', 'user:2', 'grace'],
        ['RPUSH', 'queue', 'j1', 'j2', 'j3'],
        ['SET', 'session', 's1', 'EX', '3600'],
        ['SELECT', '1'],
        ['SET', 'other-db', 'x'],
      ],
      '+OK\r\n+OK\r\n+OK\r\n:3\r\n+OK\r\n+OK\r\n+OK\r\n',
    );
    const made = await cliOk(cluster, ['addons:backup', 'redis-1', '-a', app]);
    backup = /Backup (b[\d-]+) done/.exec(made)?.[1] ?? '';
    assert.ok(backup, made);
    assert.match(made, /on agent-1, agent-2/);
    const checked = await cliOk(cluster, ['addons:backups:verify', 'redis-1', backup, '-a', app]);
    assert.match(checked, /is good: restored on agent-2: 5 keys, as in the RDB/);
  });

  await t.test('restore --confirm: a safety backup first, then the backup’s keys, kept by the AOF through a kill -9', async () => {
    await redis(
      url,
      [
        ['SET', 'user:1', 'changed'],
        ['DEL', 'user:2', 'queue'],
        ['SET', 'after-backup', 'y'],
      ],
      3,
    );
    const pidBefore = await pidOf();
    const out = await cliOk(cluster, ['addons:restore', 'redis-1', backup, '--confirm', 'redis-1', '-a', app]);
    assert.match(out, /Safety backup b[\d-]+ taken first/);
    assert.match(out, new RegExp(`redis-1 restored from ${backup}`));
    assert.notEqual(await pidOf(), pidBefore, 'the server was restarted on the restored data');
    const check = async () => {
      await answers(url, gets(['user:1', 'user:2', 'after-backup']), '+OK\r\n$3\r\nada\r\n$5\r\ngrace\r\n$-1\r\n');
      await answers(url, [['LLEN', 'queue']], '+OK\r\n:3\r\n');
      assert.match(await redis(url, [['TTL', 'session']], 1), /^\+OK\r\n:(\d{3,4})\r\n$/);
      await answers(
        url,
        [
          ['SELECT', '1'],
          ['GET', 'other-db'],
        ],
        '+OK\r\n+OK\r\n$1\r\nx\r\n',
      );
      await answers(url, [['CONFIG', 'GET', 'appendonly']], '+OK\r\n*2\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n');
    };
    await check();
    // The restored data is in the append-only file, not only in memory.
    await killNine();
    await check();
    const { lines } = await apiGet<{ lines: { line: string }[] }>(cluster, `/v1/apps/${app}/logs?source=hangar`);
    assert.match(
      lines.map((l) => l.line).join('\n'),
      new RegExp(`Restored backup ${backup} into redis-1 \\(5 keys\\) \\(safety backup b[\\d-]+ taken first\\)`),
    );
  });

  await t.test('restore --to-new: a second Redis add-on with the keys, in REDIS_2_URL', async () => {
    const out = await cliOk(cluster, ['addons:restore', 'redis-1', backup, '--to-new', '-a', app]);
    assert.match(out, /redis-2 holds .*; its URL is in REDIS_2_URL/);
    const fresh = (await apiAddons(cluster, app, true)).find((a) => a.name === 'redis-2');
    assert.ok(fresh?.url);
    assert.equal(fresh.kind, 'redis');
    await answers(fresh.url, gets(['user:1', 'user:2']), '+OK\r\n$3\r\nada\r\n$5\r\ngrace\r\n');
    await answers(fresh.url, [['DBSIZE']], '+OK\r\n:4\r\n');
    const { config } = await apiGet<{ config: Record<string, string> }>(cluster, `/v1/apps/${app}/config`);
    assert.equal(config.REDIS_2_URL, fresh.url);
    assert.equal(config.REDIS_URL, url, 'REDIS_URL still names redis-1');
  });

  await t.test('a backup corrupt in every copy is refused; the live data stays and is served', async () => {
    const copies = [
      join(addonDir, 'backups', `${backup}.dump`),
      join(cluster.dir, 'agent-agent-2', 'backup-copies', 'redis-1', `${backup}.dump`),
    ];
    for (const file of copies) {
      const bytes = await readFile(file);
      const at = Math.floor(bytes.length / 2);
      bytes[at] = (bytes[at] ?? 0) ^ 0xff;
      await writeFile(file, bytes);
    }
    await redis(url, [['SET', 'user:1', 'live']], 1);
    const res = await cluster.cli(['addons:restore', 'redis-1', backup, '--confirm', 'redis-1', '-a', app]);
    assert.equal(res.code, 1, res.stdout);
    assert.match(res.stderr, /No good copy of backup .*corrupt/);
    await answers(url, gets(['user:1', 'user:2']), '+OK\r\n$4\r\nlive\r\n$5\r\ngrace\r\n');
    assert.equal((await view('redis-1'))?.state, 'up');
  });
});
