import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, cp, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request, type Dispatcher } from 'undici';
import { socketExchange } from '../../agent/addons/socket-exchange.js';
import type { AddonBackupView } from '../../common/api-types.js';
import { addonViews as addons, cliOk, psql, redis } from '../helpers/addon-clients.js';
import { FIXTURES, startCluster, tempDir, waitFor, type Cluster } from '../helpers/cluster.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function config(cluster: Cluster, app: string): Promise<Record<string, string>> {
  return JSON.parse(await cliOk(cluster, ['config', '-a', app, '--json'])) as Record<string, string>;
}

/** Runs `redis-cli -u URL ARGS...` and returns its stdout (rejects with stdout and stderr on failure). */
function redisCli(url: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('redis-cli', ['-u', url, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`redis-cli failed (${code}): ${out}${err}`));
    });
  });
}

async function notesCount(cluster: Cluster, app: string): Promise<number> {
  const agent = cluster.agents[cluster.agents.length - 1];
  assert.ok(agent);
  const res = await cluster.get(agent, app, '/notes/');
  assert.equal(res.status, 200, res.body);
  return (JSON.parse(res.body) as { count: number }).count;
}

test('add-ons: PostgreSQL keeps the app data, Redis queues, memcached answers, all stay up', { timeout: 900_000 }, async (t) => {
  const cluster = await startCluster(t, { agents: 1 });
  // Add-on servers run as the unprivileged `hangar` user when tests run as root: it must be
  // able to walk into the agent's data dir.
  await chmod(cluster.dir, 0o711);
  const app = 'shop';
  await cliOk(cluster, ['apps:create', app]);
  await cliOk(cluster, ['config:set', 'DJANGO_ALLOWED_HOSTS=.localhost', '-a', app]);

  // The fixture app plus an RQ-style queue worker (a Procfile variant in a temp copy).
  const src = join(await tempDir(t, 'hangar-addons-src-'), 'app');
  await cp(join(FIXTURES, 'django-app'), src, { recursive: true });
  await cp(join(FIXTURES, 'addons', 'queue_worker.py'), join(src, 'queue_worker.py'));
  const procfile = await readFile(join(src, 'Procfile'), 'utf8');
  await writeFile(join(src, 'Procfile'), `${procfile.trimEnd()}\nqueue: python queue_worker.py\n`);
  await cliOk(cluster, ['deploy', src, '-a', app]);

  const agentDir = join(cluster.dir, 'agent-agent-1');
  let pgUrl = '';

  await t.test('addons:create postgres provisions a server and sets DATABASE_URL', async () => {
    const started = Date.now();
    const out = await cliOk(cluster, ['addons:create', 'postgres', '-a', app]);
    const total = (Date.now() - started) / 1000;
    const upAt = /postgres-1: up \(([\d.]+) s\)/.exec(out)?.[1];
    assert.ok(upAt, out);
    t.diagnostic(
      `addons:create postgres: server up in ${upAt} s; command done (DATABASE_URL set, new release rolled out) in ${total.toFixed(1)} s`,
    );
    console.log(`addons:create postgres: server up in ${upAt} s, command done in ${total.toFixed(1)} s`);
    assert.match(out, /Setting DATABASE_URL on shop/);
    assert.match(out, /deployed/);

    const [pg] = await addons(cluster, app, true);
    assert.ok(pg);
    assert.equal(pg.name, 'postgres-1');
    assert.equal(pg.kind, 'postgres');
    assert.equal(pg.state, 'up');
    assert.equal(pg.configVar, 'DATABASE_URL');
    assert.equal(pg.attached, true);
    assert.ok(pg.url);
    pgUrl = pg.url;
    assert.equal((await config(cluster, app)).DATABASE_URL, pgUrl);
    // Masked unless --reveal.
    const [masked] = await addons(cluster, app);
    assert.match(masked?.url ?? '', /^postgres:\/\/shop:\*\*\*\*@127\.0\.0\.1:\d+\/shop$/);
    const table = await cliOk(cluster, ['addons', '-a', app]);
    assert.match(table, /postgres-1\s+postgres\s+agent-1\s+up\s+DATABASE_URL/);
    assert.doesNotMatch(table, new RegExp(new URL(pgUrl).password));
    // Output goes to files the log shipper can tail; the server runs unprivileged.
    await stat(join(agentDir, 'addons', 'postgres-1', 'stderr.log'));
    // ... and it does: the server's own output is in the app's logs.
    await waitFor(
      'postgres output in hangar logs',
      async () => {
        const res = await cluster.cli(['logs', '-a', app, '--source', 'addon[postgres-1]', '-n', '200']);
        return res.code === 0 && /database system is ready to accept connections/.test(res.stdout);
      },
      30_000,
    );
    const pid = (JSON.parse(await readFile(join(agentDir, 'addons', 'postgres-1', 'pid.json'), 'utf8')) as { pid: number }).pid;
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
    if (process.getuid?.() === 0) assert.notEqual(uid, 0, 'PostgreSQL does not run as root');
  });

  await t.test('the Django app keeps its data in PostgreSQL', async () => {
    const agent = cluster.agents[0];
    assert.ok(agent);
    for (let i = 0; i < 3; i++) {
      const res = await cluster.get(agent, app, '/notes/');
      assert.equal(res.status, 200);
    }
    for (let i = 0; i < 3; i++) {
      const res: Dispatcher.ResponseData = await request(`http://127.0.0.1:${agent.routerPort}/notes/`, {
        method: 'POST',
        headers: { host: `${app}.localhost`, 'content-type': 'application/json' },
        body: JSON.stringify({ text: `note ${i}` }),
      });
      assert.equal(res.statusCode, 201, await res.body.text());
    }
    assert.equal(await notesCount(cluster, app), 3);
    assert.equal(await psql(pgUrl, 'SELECT count(*) FROM notes_note'), '3');
  });

  await t.test('kill -9 of the PostgreSQL server: it comes back with the data', async () => {
    const pidfile = join(agentDir, 'addons', 'postgres-1', 'pid.json');
    const { pid } = JSON.parse(await readFile(pidfile, 'utf8')) as { pid: number };
    process.kill(pid, 'SIGKILL');
    await waitFor(
      'postgres-1 to restart',
      async () => {
        const [pg] = await addons(cluster, app);
        return pg?.state === 'up' && pg.restarts >= 1;
      },
      60_000,
      300,
    );
    const { pid: newPid } = JSON.parse(await readFile(pidfile, 'utf8')) as { pid: number };
    assert.notEqual(newPid, pid);
    assert.equal(alive(pid), false);
    assert.equal(await psql(pgUrl, 'SELECT count(*) FROM notes_note'), '3');
    assert.equal(await waitFor('the app to reach the database again', async () => (await notesCount(cluster, app)) === 3, 30_000), true);
  });

  await t.test('backups: pg_dump, listed with size and time, restored with pg_restore', async () => {
    const out = await cliOk(cluster, ['addons:backup', 'postgres-1', '-a', app]);
    assert.match(out, /Backup b\d{8}-\d{6} done/);
    const backups = JSON.parse(await cliOk(cluster, ['addons:backups', 'postgres-1', '-a', app, '--json'])) as AddonBackupView[];
    const backup = backups.find((b) => b.origin === 'manual');
    assert.ok(backup && backup.size > 0 && !Number.isNaN(Date.parse(backup.createdAt)));
    await psql(pgUrl, "INSERT INTO notes_note (text) VALUES ('after the backup')");
    assert.equal(await notesCount(cluster, app), 4);
    // Into the live add-on only with --confirm: a single-agent cluster keeps it on the host, and says so.
    assert.match(out, /only on agent-1, not off the host/);
    const unconfirmed = await cluster.cli(['addons:restore', 'postgres-1', backup.name, '-a', app]);
    assert.equal(unconfirmed.code, 2, unconfirmed.stderr);
    assert.match(unconfirmed.stderr, /--confirm postgres-1/);
    assert.equal(await psql(pgUrl, 'SELECT count(*) FROM notes_note'), '4');
    await cliOk(cluster, ['addons:restore', 'postgres-1', backup.name, '-a', app, '--confirm', 'postgres-1']);
    assert.equal(await psql(pgUrl, 'SELECT count(*) FROM notes_note'), '3');
    assert.equal(await notesCount(cluster, app), 3);
    const missing = await cluster.cli(['addons:restore', 'postgres-1', 'b-nope', '-a', app, '--confirm', 'postgres-1']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no backup b-nope/);
  });

  let redisUrl = '';
  await t.test('Redis: REDIS_URL with its password, PING, and a queue worker', async () => {
    const out = await cliOk(cluster, ['addons:create', 'redis', '-a', app]);
    assert.match(out, /redis-1: up/);
    const redisAddon = (await addons(cluster, app, true)).find((a) => a.kind === 'redis');
    assert.ok(redisAddon?.url);
    redisUrl = redisAddon.url;
    assert.equal((await config(cluster, app)).REDIS_URL, redisUrl);
    assert.equal(await redis(redisUrl, [['PING']], 1), '+OK\r\n+PONG\r\n');
    assert.match(await redis(redisUrl, [['PING']], 1, false), /^-NOAUTH/);
    // Debian's redis-cli 7 refuses a URL with an empty user name; REDIS_URL must work as given.
    assert.equal((await redisCli(redisUrl, ['ping'])).trim(), 'PONG');

    await cliOk(cluster, ['scale', 'queue=1', '-a', app]);
    await redis(redisUrl, [['LPUSH', 'jobs', 'job-1', 'job-2']], 1);
    const results = await waitFor(
      'the queue worker to process both jobs',
      async () => {
        const answer = await redis(redisUrl, [['LRANGE', 'results', '0', '-1']], 5);
        return answer.includes('done:job-1:queue.1') && answer.includes('done:job-2:queue.1') ? answer : null;
      },
      90_000,
      500,
    );
    assert.match(results, /done:job-1/);
  });

  await t.test('memcached answers version; MEMCACHED_URL is set', async () => {
    const out = await cliOk(cluster, ['addons:create', 'memcached', '-a', app]);
    assert.match(out, /memcached-1: up/);
    const mc = (await addons(cluster, app)).find((a) => a.kind === 'memcached');
    assert.ok(mc?.url);
    assert.equal((await config(cluster, app)).MEMCACHED_URL, mc.url);
    const u = new URL(mc.url);
    const answer = await socketExchange({
      host: u.hostname,
      port: Number(u.port),
      request: 'version\r\n',
      complete: (r) => r.includes('\r\n'),
    });
    assert.match(answer, /^VERSION \d/);
  });

  await t.test('the add-on API validates its input: 4xx {code, message}', async () => {
    const call = async (method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown) => {
      const res = await request(`${cluster.coordinator.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${cluster.coordinator.adminToken}`, ...(body ? { 'content-type': 'application/json' } : {}) },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      return { status: res.statusCode, body: (await res.body.json()) as { code: string; message: string } };
    };
    let res = await call('POST', `/v1/apps/${app}/addons`, { kind: 'mysql' });
    assert.equal(res.status, 400);
    assert.equal(res.body.code, 'BAD_INPUT');
    assert.match(res.body.message, /kind/);
    res = await call('POST', `/v1/apps/${app}/addons`, { kind: 'redis', size: 'huge' });
    assert.equal(res.status, 400);
    res = await call('POST', `/v1/apps/${app}/addons`, { kind: 'redis', name: 'postgres-1' });
    assert.equal(res.status, 409);
    assert.equal(res.body.code, 'ADDON_EXISTS');
    res = await call('POST', `/v1/apps/${app}/addons`, { kind: 'redis', agent: 'no-such-agent' });
    assert.equal(res.status, 404);
    res = await call('GET', `/v1/apps/${app}/addons/nope-1`);
    assert.equal(res.status, 404);
    assert.equal(res.body.code, 'ADDON_NOT_FOUND');
    res = await call('GET', `/v1/apps/${app}/addons/memcached-1/backups`);
    assert.equal(res.status, 400);
    assert.match(res.body.message, /backups are for PostgreSQL/);
    res = await call('DELETE', `/v1/apps/${app}/addons/postgres-1`);
    assert.equal(res.status, 400);
    assert.match(res.body.message, /--confirm postgres-1/);
    res = await call('GET', `/v1/apps/no-app/addons`);
    assert.equal(res.status, 404);
    assert.equal(res.body.code, 'APP_NOT_FOUND');
    // Nothing was created by the refused calls.
    assert.equal((await addons(cluster, app)).length, 3);
  });

  await t.test('an agent restart adopts the running add-on servers', async () => {
    const pidfile = join(agentDir, 'addons', 'postgres-1', 'pid.json');
    const { pid } = JSON.parse(await readFile(pidfile, 'utf8')) as { pid: number };
    const old = cluster.agents[0];
    assert.ok(old);
    await old.close();
    assert.equal(alive(pid), true, 'PostgreSQL keeps running while the agent is away');
    await cluster.startAgent('agent-1');
    await waitFor(
      'add-ons up after the agent restart',
      async () => {
        const rows = await addons(cluster, app);
        return rows.length === 3 && rows.every((a) => a.state === 'up');
      },
      60_000,
      300,
    );
    const { pid: after } = JSON.parse(await readFile(pidfile, 'utf8')) as { pid: number };
    assert.equal(after, pid, 'adopted, not restarted');
    assert.equal(await psql(pgUrl, 'SELECT count(*) FROM notes_note'), '3');
    assert.equal(await redis(redisUrl, [['PING']], 1), '+OK\r\n+PONG\r\n');
  });

  await t.test('addons:destroy stops it and unsets the var; the data is kept', async () => {
    const pidfile = join(agentDir, 'addons', 'redis-1', 'pid.json');
    const { pid } = JSON.parse(await readFile(pidfile, 'utf8')) as { pid: number };
    const refused = await cluster.cli(['addons:destroy', 'redis-1', '-a', app]);
    assert.equal(refused.code, 2);
    const out = await cliOk(cluster, ['addons:destroy', 'redis-1', '-a', app, '--confirm', 'redis-1']);
    assert.match(out, /data kept on agent-1/);
    assert.equal((await config(cluster, app)).REDIS_URL, undefined);
    await waitFor('redis-server to stop', () => !alive(pid), 30_000);
    await stat(join(agentDir, 'addons', 'redis-1', 'data', 'appendonlydir'));
    const rows = await addons(cluster, app);
    assert.equal(rows.find((a) => a.name === 'redis-1')?.state, 'destroyed');

    await cliOk(cluster, ['addons:destroy', 'redis-1', '-a', app, '--confirm', 'redis-1', '--purge']);
    await assert.rejects(stat(join(agentDir, 'addons', 'redis-1')));
    assert.equal(
      (await addons(cluster, app)).some((a) => a.name === 'redis-1'),
      false,
    );
  });

  await t.test('a second PostgreSQL of the app gets its own server and NAME_URL', async () => {
    const out = await cliOk(cluster, ['addons:create', 'postgres', '-a', app]);
    assert.match(out, /postgres-2: up/);
    const rows = await addons(cluster, app, true);
    const second = rows.find((a) => a.name === 'postgres-2');
    const first = rows.find((a) => a.name === 'postgres-1');
    assert.ok(second?.url && first?.url);
    assert.equal(second.configVar, 'POSTGRES_2_URL');
    assert.notEqual(second.port, first.port);
    const vars = await config(cluster, app);
    assert.equal(vars.POSTGRES_2_URL, second.url);
    assert.equal(vars.DATABASE_URL, pgUrl, 'DATABASE_URL still names the first one');
    assert.equal(await psql(second.url, 'SELECT current_database()'), 'shop');
    assert.equal(await psql(second.url, "SELECT count(*) FROM pg_tables WHERE tablename = 'notes_note'"), '0');
    await cliOk(cluster, ['addons:destroy', 'postgres-2', '-a', app, '--confirm', 'postgres-2', '--purge']);
    assert.equal((await config(cluster, app)).POSTGRES_2_URL, undefined);
  });
});
