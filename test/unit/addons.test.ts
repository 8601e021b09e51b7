import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { shellWords } from '../../agent/addons/addon-kind.js';
import { respCommand } from '../../agent/addons/redis.js';
import { checkKeyCount, keyspaceKeys } from '../../agent/addons/redis-restore.js';
import { findBinary, findPostgresBin } from '../../agent/addons/server-binaries.js';
import { parseAddonKind } from '../../cli/commands/addons.js';
import { isHangarError } from '../../common/errors.js';
import { addonUrl, configVarFor, databaseNameOf } from '../../coordinator/addons/addon-connection.js';

test('add-on URLs: Heroku-style schemes, password masked on request, null before the port is known', () => {
  const row = { app: 'my-shop', port: 5433, password: 'abc123' };
  assert.equal(addonUrl({ ...row, kind: 'postgres' }, '10.0.0.5', false), 'postgres://my_shop:abc123@10.0.0.5:5433/my_shop');
  assert.equal(addonUrl({ ...row, kind: 'postgres' }, '10.0.0.5', true), 'postgres://my_shop:****@10.0.0.5:5433/my_shop');
  assert.equal(addonUrl({ ...row, kind: 'redis' }, '10.0.0.5', false), 'redis://default:abc123@10.0.0.5:5433/0');
  assert.equal(addonUrl({ ...row, kind: 'memcached' }, '10.0.0.5', false), 'memcached://10.0.0.5:5433');
  assert.equal(addonUrl({ ...row, kind: 'redis' }, 'fd00::5', true), 'redis://default:****@[fd00::5]:5433/0');
  assert.equal(addonUrl({ ...row, port: null, kind: 'redis' }, '10.0.0.5', false), null);
  assert.equal(databaseNameOf('a-b-c'), 'a_b_c');
});

test('config vars: the first of a kind gets Heroku’s name, a second one NAME_URL', () => {
  assert.equal(configVarFor('postgres', 'postgres-1', []), 'DATABASE_URL');
  assert.equal(configVarFor('postgres', 'postgres-2', [{ desired: 'run', configVar: 'DATABASE_URL' }]), 'POSTGRES_2_URL');
  // A destroyed one no longer holds the name.
  assert.equal(configVarFor('postgres', 'postgres-2', [{ desired: 'destroyed', configVar: 'DATABASE_URL' }]), 'DATABASE_URL');
  assert.equal(configVarFor('redis', 'cache', [{ desired: 'run', configVar: 'DATABASE_URL' }]), 'REDIS_URL');
  assert.equal(configVarFor('redis', 'jobs-queue', [{ desired: 'run', configVar: 'REDIS_URL' }]), 'JOBS_QUEUE_URL');
  assert.equal(configVarFor('memcached', 'memcached-1', []), 'MEMCACHED_URL');
});

test('addons:create kinds: the three kinds and common aliases; anything else is bad input', () => {
  assert.equal(parseAddonKind('postgres'), 'postgres');
  assert.equal(parseAddonKind('PostgreSQL'), 'postgres');
  assert.equal(parseAddonKind('heroku-redis'), 'redis');
  assert.equal(parseAddonKind('memcache'), 'memcached');
  assert.throws(
    () => parseAddonKind('mysql'),
    (err) => isHangarError(err, 'BAD_INPUT') && /postgres, redis or memcached/.test(err.message),
  );
});

test('shell words: plain words stay, others are single-quoted', () => {
  assert.equal(shellWords(['/usr/bin/postgres', '-c', 'port=5432']), '/usr/bin/postgres -c port=5432');
  assert.equal(shellWords(['a b', "it's"]), `'a b' 'it'\\''s'`);
});

test('RESP commands are arrays of bulk strings (byte lengths)', () => {
  assert.equal(respCommand('AUTH', 'pässword'), '*2\r\n$4\r\nAUTH\r\n$9\r\npässword\r\n');
});

test('PostgreSQL binaries: the newest complete version under the root; a missing one names the Debian package', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'hangar-pgroot-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const install = async (version: string, tools: string[]) => {
    await mkdir(join(root, version, 'bin'), { recursive: true });
    for (const tool of tools) {
      await writeFile(join(root, version, 'bin', tool), '#!/bin/sh\n');
      await chmod(join(root, version, 'bin', tool), 0o755);
    }
  };
  const all = ['postgres', 'initdb', 'psql', 'pg_dump', 'pg_restore'];
  await install('9.6', all);
  await install('13', all);
  // Newest, but without initdb (e.g. only the client package): skipped.
  await install('16', ['psql', 'pg_dump']);
  assert.equal(await findPostgresBin('web-1', root), join(root, '13', 'bin'));

  const missing = (err: unknown) =>
    isHangarError(err, 'ADDON_FAILED') && /not installed on web-1/.test(err.message) && /`postgresql`/.test(err.message);
  await assert.rejects(findPostgresBin('web-1', join(root, 'nope')), missing);
  await assert.rejects(
    findBinary('redis-server-not-here', 'redis-server', 'web-1', [root]),
    (err) => isHangarError(err, 'ADDON_FAILED') && /apt-get install redis-server/.test(err.message),
  );
});

test('Redis key counts: every database of INFO keyspace; keys with a time to live may have gone since the RDB was read', () => {
  assert.equal(keyspaceKeys('# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=10\r\ndb2:keys=4,expires=0,avg_ttl=0\r\n'), 7);
  assert.equal(keyspaceKeys('# Keyspace\r\n'), 0);
  const rdb = { keys: 10, expires: 3, expired: 1 };
  for (const found of [7, 8, 9]) checkKeyCount(found, rdb, 'the server');
  for (const found of [6, 10]) {
    assert.throws(
      () => checkKeyCount(found, rdb, 'the server'),
      (err) =>
        isHangarError(err, 'ADDON_FAILED') &&
        err.message === `the server holds ${found} keys; the RDB holds 7 to 9 (3 with a time to live)`,
    );
  }
  assert.throws(() => checkKeyCount(4, { keys: 5, expires: 0, expired: 0 }, 'x'), /x holds 4 keys; the RDB holds 5$/);
});
