import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { systemClock, type Clock, type ClockTimer } from '../../common/clock.js';
import type { AddonBackupView, AddonInfoView } from '../../common/api-types.js';
import { addonViews, cliOk, psql, redis } from '../helpers/addon-clients.js';
import { startCluster, tempDir, waitFor } from '../helpers/cluster.js';

/** The coordinator's backup scheduler reads this clock: the test moves it by hand (its timers are real). */
class HandClock implements Clock {
  at: number;
  constructor(iso: string) {
    this.at = Date.parse(iso);
  }
  now(): number {
    return this.at;
  }
  setTimeout(fn: () => void, ms: number): ClockTimer {
    return systemClock.setTimeout(fn, ms);
  }
  clearTimeout(timer: ClockTimer): void {
    systemClock.clearTimeout(timer);
  }
}

async function sha256Of(file: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(file))
    .digest('hex');
}

test('backups off the host: scheduled, copied with a SHA-256, verified by a restore; corrupt copies fail; restores', async (t) => {
  const clock = new HandClock('2030-01-01T03:00:30Z');
  const cluster = await startCluster(t, { agents: 2, coordinator: { backupIntervalMs: 100 }, backupClock: clock });
  const app = 'vault';
  const nas = await tempDir(t, 'hangar-nas-');
  await cliOk(cluster, ['apps:create', app]);
  await cliOk(cluster, ['addons:create', 'postgres', '--agent', 'agent-1', '-a', app]);
  const view = await addonViews(cluster, app, true);
  const pgUrl = view[0]?.url ?? '';
  assert.ok(pgUrl);
  await psql(pgUrl, 'CREATE TABLE orders (id serial PRIMARY KEY, total int); CREATE TABLE notes (id serial PRIMARY KEY, body text)');
  await psql(pgUrl, "INSERT INTO orders (total) SELECT g FROM generate_series(1, 250) g; INSERT INTO notes (body) VALUES ('a'), ('b')");
  // Reads go to the API straight (a CLI start costs seconds on a loaded machine); commands go through the CLI.
  const api = async <T>(path: string): Promise<T> => {
    const res = await request(`${cluster.coordinator.url}/v1/apps/${app}/addons/${path}`, {
      headers: { authorization: `Bearer ${cluster.coordinator.adminToken}` },
    });
    assert.equal(res.statusCode, 200);
    return (await res.body.json()) as T;
  };
  const backups = async (name = 'postgres-1') => (await api<{ backups: AddonBackupView[] }>(`${name}/backups`)).backups;
  const info = async () => (await api<{ addon: AddonInfoView }>('postgres-1/info')).addon;
  const copyOf = (agent: string, addon: string, name: string) =>
    join(cluster.dir, `agent-${agent}`, 'backup-copies', addon, `${name}.dump`);

  let first: AddonBackupView;
  await t.test('a scheduled backup lands on the other agent and in the directory, and is verified by a restore', async () => {
    const out = await cliOk(cluster, ['addons:backups:schedule', 'postgres-1', '--at', '03:01', '--keep', '1', '--dir', nas, '-a', app]);
    assert.match(out, /daily at 03:01 UTC \(1 kept, copied to /);
    assert.equal((await backups()).length, 0, 'nothing before its time');
    clock.at = Date.parse('2030-01-01T03:01:05Z');
    first = await waitFor(
      'the scheduled backup to be verified',
      async () => (await backups()).find((b) => b.verified !== 'unverified'),
      90_000,
      300,
    );
    assert.equal(first.verified, 'verified', first.verifyMessage);
    assert.equal(first.origin, 'scheduled');
    assert.match(first.verifyMessage, /restored on agent-2: 2 tables, 252 rows, as in the dump/);
    assert.equal(first.offHost, true);
    assert.equal(first.copyError, null);
    assert.deepEqual(
      first.stored.map((s) => s.agent ?? 'dir'),
      ['agent-1', 'agent-2', 'dir'],
    );
    const copy = copyOf('agent-2', 'postgres-1', first.name);
    assert.equal(await sha256Of(copy), first.sha256);
    const inDir = join(nas, app, 'postgres-1', `${first.name}.dump`);
    assert.equal(await sha256Of(inDir), first.sha256);
    assert.match(await readFile(`${inDir}.sha256`, 'utf8'), new RegExp(`^${first.sha256}  `));
    assert.equal((await stat(copy)).size, first.size);
    // Nothing stays in transit on the coordinator.
    assert.deepEqual(await readdir(join(cluster.dir, 'coordinator', 'backup-transit')), []);
    const shown = JSON.parse(await cliOk(cluster, ['addons:info', 'postgres-1', '-a', app, '--json'])) as { addon: AddonInfoView };
    assert.deepEqual(shown.addon.servers, [{ agent: 'agent-1', role: 'primary', state: 'up', lagBytes: null, lagSeconds: null }]);
    assert.equal(shown.addon.lastBackup?.name, first.name);
    assert.equal(shown.addon.lastVerifiedRestore?.ok, true);
    assert.equal(shown.addon.schedule?.nextAt, '2030-01-02T03:01:00.000Z');
  });

  await t.test('a corrupted copy is reported failed, never good', async () => {
    const copy = copyOf('agent-2', 'postgres-1', first.name);
    const bytes = await readFile(copy);
    const at = Math.floor(bytes.length / 2);
    bytes[at] = (bytes[at] ?? 0) ^ 0xff;
    await writeFile(copy, bytes);
    const res = await cluster.cli(['addons:backups:verify', 'postgres-1', first.name, '-a', app]);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /NOT good: verification on agent-2 failed: the copy of .* on agent-2 is corrupt/);
    const after = (await backups()).find((b) => b.name === first.name);
    assert.equal(after?.verified, 'failed');
    const shown = { addon: await info() };
    assert.equal(shown.addon.lastVerifiedRestore?.ok, false);
    const text = await cliOk(cluster, ['addons:backups', 'postgres-1', '-a', app]);
    assert.match(text, /FAILED verification/);
  });

  await t.test('restore --to-new gives a new add-on with the data; the add-on is untouched', async () => {
    await psql(pgUrl, 'INSERT INTO orders (total) VALUES (9999)');
    const out = await cliOk(cluster, ['addons:restore', 'postgres-1', first.name, '--to-new', '-a', app]);
    assert.match(out, /postgres-2 holds .*; its URL is in POSTGRES_2_URL/);
    const all = await addonViews(cluster, app, true);
    const fresh = all.find((a) => a.name === 'postgres-2');
    assert.ok(fresh?.url);
    assert.equal(await psql(fresh.url, 'SELECT count(*) FROM orders'), '250');
    assert.equal(await psql(fresh.url, 'SELECT count(*) FROM notes'), '2');
    assert.equal(await psql(pgUrl, 'SELECT count(*) FROM orders'), '251');
  });

  await t.test(
    'bad input changes nothing: a backup of another kind, no --confirm, a bad schedule time; a Redis backup is copied and verified',
    async () => {
      await cliOk(cluster, ['addons:create', 'redis', '--agent', 'agent-1', '-a', app]);
      const redisUrl = (await addonViews(cluster, app, true)).find((a) => a.kind === 'redis')?.url ?? '';
      const set = await redis(
        redisUrl,
        [
          ['SET', 'k1', 'v'],
          ['SET', 'k2', 'v'],
        ],
        2,
      );
      assert.equal(set, '+OK\r\n+OK\r\n+OK\r\n');
      const made = await cliOk(cluster, ['addons:backup', 'redis-1', '-a', app]);
      const redisBackup = /Backup (b[\d-]+) done/.exec(made)?.[1] ?? '';
      assert.match(made, /on agent-1, agent-2/);
      // The Redis copy on agent-2 restores into a scratch redis-server.
      const checked = await cliOk(cluster, ['addons:backups:verify', 'redis-1', redisBackup, '-a', app]);
      assert.match(checked, /is good: restored on agent-2: 2 keys, as in the RDB/);
      const before = (await backups()).length;
      const wrongKind = await cluster.cli(['addons:restore', 'postgres-1', redisBackup, '--confirm', 'postgres-1', '-a', app]);
      assert.equal(wrongKind.code, 1, wrongKind.stderr);
      assert.match(wrongKind.stderr, /is a redis backup/);
      const res = await request(`${cluster.coordinator.url}/v1/apps/${app}/addons/postgres-1/backups/${first.name}/restore`, {
        method: 'POST',
        headers: { authorization: `Bearer ${cluster.coordinator.adminToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({}),
      });
      assert.equal(res.statusCode, 400);
      assert.equal(((await res.body.json()) as { code: string }).code, 'BAD_INPUT');
      assert.equal((await backups()).length, before, 'no safety backup was taken');
      assert.equal(await psql(pgUrl, 'SELECT count(*) FROM orders'), '251');
      const badTime = await cluster.cli(['addons:backups:schedule', 'postgres-1', '--at', '25:00', '-a', app]);
      assert.equal(badTime.code, 2);
    },
  );

  await t.test('restore into the live add-on: a failed one leaves the data; then a safety backup first, then the old data', async () => {
    // A view the dump does not know depends on orders: pg_restore --clean cannot drop the table,
    // and its one transaction rolls back.
    await psql(pgUrl, 'CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100');
    const failed = await cluster.cli(['addons:restore', 'postgres-1', first.name, '--confirm', 'postgres-1', '-a', app]);
    assert.equal(failed.code, 1, failed.stdout);
    assert.match(failed.stderr, /pg_restore/);
    assert.equal(await psql(pgUrl, 'SELECT count(*) FROM orders'), '251', 'the previous data is in place');
    assert.equal(await psql(pgUrl, 'SELECT count(*) FROM big_orders'), '151');
    await psql(pgUrl, 'DROP VIEW big_orders');
    const out = await cliOk(cluster, ['addons:restore', 'postgres-1', first.name, '--confirm', 'postgres-1', '-a', app]);
    assert.match(out, /Safety backup b[\d-]+ taken first/);
    assert.equal(await psql(pgUrl, 'SELECT count(*) FROM orders'), '250');
    const safety = (await backups()).find((b) => b.origin === 'safety');
    assert.ok(safety?.offHost);
  });

  await t.test('the next scheduled backup replaces the oldest beyond --keep, its copies deleted too', async () => {
    clock.at = Date.parse('2030-01-02T03:01:05Z');
    const second = await waitFor(
      'the second scheduled backup to be verified',
      async () => (await backups()).find((b) => b.origin === 'scheduled' && b.name !== first.name && b.verified === 'verified'),
      90_000,
      300,
    );
    await waitFor(
      'the first scheduled backup to be pruned',
      async () => !(await backups()).some((b) => b.name === first.name),
      30_000,
      300,
    );
    await assert.rejects(stat(copyOf('agent-2', 'postgres-1', first.name)));
    await assert.rejects(stat(join(nas, app, 'postgres-1', `${first.name}.dump`)));
    assert.equal(await sha256Of(copyOf('agent-2', 'postgres-1', second.name)), second.sha256);
  });
});
