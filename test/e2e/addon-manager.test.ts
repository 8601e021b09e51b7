import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { AddonManager, sha256File } from '../../agent/addons/addon-manager.js';
import type { AddonDriver } from '../../agent/addons/addon-kind.js';
import { redisDriver, redisPing, respCommand } from '../../agent/addons/redis.js';
import { restoreRedis } from '../../agent/addons/redis-restore.js';
import { findBinary } from '../../agent/addons/server-binaries.js';
import { socketExchange } from '../../agent/addons/socket-exchange.js';
import { systemClock } from '../../common/clock.js';
import { HangarError } from '../../common/errors.js';
import type { AddonJob__Output, AddonSpec__Output, AddonStatus } from '../../proto/loader.js';

async function waitUntil<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 30_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function addonJob(fields: Partial<AddonJob__Output> & { id: string; addon: string; action: string }): AddonJob__Output {
  return { backup: '', transfer: '', sha256: '', where: '', kind: '', app: '', database: '', standbyReplicationPassword: '', ...fields };
}

/**
 * The port these tests' add-ons ask for first. Not the kind's default (6379, 5432, 11211): other
 * test files start servers of their own at the same time, and two of them picking the same free
 * default port at once left one server failing to bind until its wait ran out.
 */
const PREFERRED_PORT = 20_000 + (process.pid % 600) * 20;

function spec(overrides: Partial<AddonSpec__Output>): AddonSpec__Output {
  return {
    id: 'id-1',
    name: 'redis-1',
    app: 'shop',
    kind: 'redis',
    port: PREFERRED_PORT,
    password: 'p4ssw0rd-for-tests',
    database: 'shop',
    memoryMb: 0,
    tlsCertPem: '',
    tlsKeyPem: '',
    adminPassword: '',
    standbyRole: '',
    standbyUpstreamHost: '',
    standbyUpstreamPort: 0,
    standbyReplicationPassword: '',
    ...overrides,
  };
}

async function manager(t: import('node:test').TestContext, drivers?: Partial<Record<'postgres' | 'redis' | 'memcached', AddonDriver>>) {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-addons-unit-'));
  // The servers' unprivileged user (when tests run as root) must walk into it.
  await chmod(dir, 0o711);
  const events: AddonStatus[] = [];
  const m = new AddonManager({
    dir: join(dir, 'data', 'addons'),
    host: 'test-agent',
    advertise: '127.0.0.1',
    backoff: { initialMs: 100, maxMs: 500 },
    retryMs: 300,
    graceMs: 5000,
    ...(drivers ? { drivers } : {}),
    clock: systemClock,
    logger: pino({ level: 'silent' }),
    onStatus: (s) => events.push(s),
  });
  t.after(async () => {
    await m.close({ stopInstances: true });
    await rm(dir, { recursive: true, force: true });
  });
  return { m, dir, events };
}

test('a Redis add-on: provisioned, answers with its password, restarts after kill -9 with its data', async (t) => {
  const { m, dir, events } = await manager(t);
  m.apply([spec({})]);
  const up = await waitUntil('redis-1 up', () => m.statuses().find((s) => s.name === 'redis-1' && s.state === 'up'));
  assert.ok(up.port && up.pid);
  assert.deepEqual([...new Set(events.map((e) => e.state))].slice(0, 2), ['provisioning', 'starting']);
  assert.equal(await redisPing('127.0.0.1', Number(up.port), 'p4ssw0rd-for-tests'), true);
  assert.equal(await redisPing('127.0.0.1', Number(up.port), 'wrong'), false);
  const set = await socketExchange({
    host: '127.0.0.1',
    port: Number(up.port),
    // Generous: two test files share two cores (the default 2 s once ran out under CI-like load).
    timeoutMs: 15_000,
    request: respCommand('AUTH', 'p4ssw0rd-for-tests') + respCommand('SET', 'greeting', 'hello'),
    complete: (r) => (r.match(/\r\n/g) ?? []).length >= 2,
  });
  assert.equal(set, '+OK\r\n+OK\r\n');
  // 500 more writes, each acknowledged, then kill -9 at once: the AOF (appendfsync everysec) has
  // every acknowledged write, since Redis writes it before it replies.
  const many = await socketExchange({
    host: '127.0.0.1',
    port: Number(up.port),
    // Generous: two test files share two cores (the default 2 s once ran out under CI-like load).
    timeoutMs: 15_000,
    request:
      respCommand('AUTH', 'p4ssw0rd-for-tests') + Array.from({ length: 500 }, (_, i) => respCommand('SET', `k${i}`, `v${i}`)).join(''),
    complete: (r) => (r.match(/\r\n/g) ?? []).length >= 501,
  });
  assert.equal(many, '+OK\r\n'.repeat(501));

  process.kill(Number(up.pid), 'SIGKILL');
  const back = await waitUntil('redis-1 restarted', () =>
    m.statuses().find((s) => s.name === 'redis-1' && s.state === 'up' && Number(s.restarts) >= 1),
  );
  assert.notEqual(back.pid, up.pid);
  assert.equal(back.port, up.port, 'same port after a restart');
  const get = await socketExchange({
    host: '127.0.0.1',
    port: Number(up.port),
    // Generous: two test files share two cores (the default 2 s once ran out under CI-like load).
    timeoutMs: 15_000,
    request: respCommand('AUTH', 'p4ssw0rd-for-tests') + respCommand('GET', 'greeting'),
    complete: (r) => r.includes('hello\r\n'),
  });
  assert.match(get, /\$5\r\nhello\r\n/);
  const size = await socketExchange({
    host: '127.0.0.1',
    port: Number(up.port),
    // Generous: two test files share two cores (the default 2 s once ran out under CI-like load).
    timeoutMs: 15_000,
    request: respCommand('AUTH', 'p4ssw0rd-for-tests') + respCommand('DBSIZE') + respCommand('GET', 'k499'),
    complete: (r) => r.includes('v499\r\n'),
  });
  assert.equal(size, '+OK\r\n:501\r\n$4\r\nv499\r\n', 'every acknowledged write survived kill -9');
  // The config holding the password is not readable by others; the output goes to files.
  const conf = join(dir, 'data', 'addons', 'redis-1', 'redis.conf');
  assert.equal((await stat(conf)).mode & 0o077, 0);
  assert.match(await readFile(join(dir, 'data', 'addons', 'redis-1', 'stdout.log'), 'utf8'), /Ready to accept connections/);

  // An RDB backup with its SHA-256, verified by loading it into a scratch redis-server; a
  // corrupted file is refused before anything loads it.
  const job = await m.runJob(addonJob({ id: 'job-1', addon: 'redis-1', action: 'backup' }));
  assert.equal(job.ok, true, job.error);
  assert.equal(job.backup?.kind, 'redis');
  const name = String(job.backup.name);
  const sha256 = String(job.backup.sha256);
  assert.match(sha256, /^[0-9a-f]{64}$/);
  const file = join(dir, 'data', 'addons', 'redis-1', 'backups', `${name}.dump`);
  assert.equal(sha256, await sha256File(file));
  const verified = await m.runJob(
    addonJob({ id: 'job-v', addon: 'redis-1', action: 'verify', backup: name, sha256, kind: 'redis', app: 'shop', where: 'backups' }),
  );
  assert.equal(verified.ok, true, verified.error);
  assert.deepEqual(JSON.parse(String(verified.report)), { keys: 501 });
  const bytes = await readFile(file);
  bytes[bytes.length - 3] = (bytes[bytes.length - 3] ?? 0) ^ 0xff;
  await writeFile(file, bytes);
  const corrupt = await m.runJob(
    addonJob({ id: 'job-c', addon: 'redis-1', action: 'verify', backup: name, sha256, kind: 'redis', app: 'shop', where: 'backups' }),
  );
  assert.equal(corrupt.ok, false);
  assert.equal(corrupt.errorCode, 'BACKUP_CORRUPT');
  const noBackups = await m.runJob(addonJob({ id: 'job-m', addon: 'memcached-9', action: 'backup' }));
  assert.equal(noBackups.ok, false);

  // Not wanted any more: stopped, data kept.
  m.apply([]);
  await waitUntil('redis-1 gone', () => m.statuses().length === 0);
  await stat(join(dir, 'data', 'addons', 'redis-1', 'data'));
  const purge = await m.runJob(addonJob({ id: 'job-2', addon: 'redis-1', action: 'purge' }));
  assert.equal(purge.ok, true);
  await assert.rejects(stat(join(dir, 'data', 'addons', 'redis-1')));
});

test('a Redis restore that fails once the server is on the new data puts the previous data back and serves it', async (t) => {
  // The real restore, but the first start on the restored data reports a failure after the
  // server came up (what a key count that does not match does).
  let starts = 0;
  const real = redisDriver();
  const flaky: AddonDriver = {
    ...real,
    restore: (ctx, file, server) =>
      restoreRedis(ctx, file, {
        stop: () => server.stop(),
        start: async () => {
          await server.start();
          if (++starts === 1) throw new HangarError('ADDON_FAILED', 'made to fail by the test');
        },
      }),
  };
  const { m, dir } = await manager(t, { redis: flaky });
  m.apply([spec({})]);
  const up = await waitUntil('redis-1 up', () => m.statuses().find((s) => s.name === 'redis-1' && s.state === 'up'));
  /** Asserts what the server answers to `commands` (after AUTH's +OK), waiting for as many lines as `expected` has. */
  const answers = async (commands: string[][], expected: string) => {
    const answer = await socketExchange({
      host: '127.0.0.1',
      port: Number(up.port),
      request: [['AUTH', 'p4ssw0rd-for-tests'], ...commands].map((c) => respCommand(...c)).join(''),
      complete: (r) => (r.match(/\r\n/g) ?? []).length >= (expected.match(/\r\n/g) ?? []).length,
    });
    assert.equal(answer, expected);
  };
  await answers(
    [
      ['SET', 'k', 'in-backup'],
      ['SET', 'other', 'x'],
    ],
    '+OK\r\n+OK\r\n+OK\r\n',
  );
  const made = await m.runJob(addonJob({ id: 'job-b', addon: 'redis-1', action: 'backup' }));
  assert.equal(made.ok, true, made.error);
  await answers(
    [
      ['SET', 'k', 'after'],
      ['DEL', 'other'],
    ],
    '+OK\r\n+OK\r\n:1\r\n',
  );
  const backup = String(made.backup?.name);
  const failed = await m.runJob(
    addonJob({ id: 'job-r', addon: 'redis-1', action: 'restore', backup, sha256: String(made.backup?.sha256) }),
  );
  assert.equal(failed.ok, false);
  assert.equal(failed.error, 'made to fail by the test; redis-1 serves its previous data again');
  assert.equal(starts, 2, 'started on the restored data, then on the previous data');
  assert.equal(m.statuses().find((s) => s.name === 'redis-1')?.state, 'up');
  await answers(
    [
      ['GET', 'k'],
      ['EXISTS', 'other'],
    ],
    '+OK\r\n$5\r\nafter\r\n:0\r\n',
  );
  const root = join(dir, 'data', 'addons', 'redis-1');
  await assert.rejects(stat(join(root, 'data.before-restore')));
  await assert.rejects(stat(join(root, 'data.restore')));
  // Nothing stops the next restore: it loads the backup.
  const again = await m.runJob(addonJob({ id: 'job-r2', addon: 'redis-1', action: 'restore', backup }));
  assert.equal(again.ok, true, again.error);
  assert.deepEqual(JSON.parse(String(again.report)), { keys: 2 });
  await answers(
    [
      ['GET', 'k'],
      ['GET', 'other'],
    ],
    '+OK\r\n$9\r\nin-backup\r\n$1\r\nx\r\n',
  );
});

test('a missing server package: the add-on is failed with the package to install, and tried again', async (t) => {
  let attempts = 0;
  const noMemcached: AddonDriver = {
    kind: 'memcached',
    preferredPort: 11211,
    async prepare() {
      attempts++;
      // The real lookup, in a directory without the binary.
      await findBinary('memcached', 'memcached', 'test-agent', ['/nonexistent-bin-dir']);
      throw new Error('unreachable');
    },
  };
  const { m } = await manager(t, { memcached: noMemcached });
  m.apply([spec({ id: 'id-2', name: 'memcached-1', kind: 'memcached' })]);
  const failed = await waitUntil('memcached-1 failed', () => m.statuses().find((s) => s.state === 'failed'));
  assert.match(String(failed.message), /memcached is not installed on test-agent: install the Debian package `memcached`/);
  await waitUntil('a second attempt', () => attempts >= 2, 10_000);
});
