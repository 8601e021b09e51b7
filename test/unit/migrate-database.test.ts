import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { pino } from 'pino';
import { registerServerCommands } from '../../cli/commands/server.js';
import { main } from '../../cli/main.js';
import { systemClock } from '../../common/clock.js';
import { isHangarError } from '../../common/errors.js';
import { SecretBox } from '../../common/secret-box.js';
import { AutoscaleStore } from '../../coordinator/autoscale/autoscale-store.js';
import { CertStore } from '../../coordinator/certs/cert-store.js';
import { LeaderLease } from '../../coordinator/ha/leader-lease.js';
import { LogStore } from '../../coordinator/logs/log-store.js';
import { MetricsStore } from '../../coordinator/metrics/metrics-store.js';
import { RunStore } from '../../coordinator/runs/run-store.js';
import { maskDatabaseUrl, migrateSqliteToPostgres } from '../../coordinator/store/migrate-database.js';
import { MIGRATIONS } from '../../coordinator/store/migrations.js';
import { existingDayPartitions } from '../../coordinator/store/postgres-partitions.js';
import { PostgresDatabase } from '../../coordinator/store/postgres.js';
import { Store, newInstanceRow } from '../../coordinator/store/store.js';
import type { MetricsReport__Output } from '../../proto/loader.js';
import { testPostgres } from '../helpers/postgres-server.js';

const silent = pino({ level: 'silent' });
const DAY = 86_400_000;
/** Noon UTC, three days before the lines' last day. */
const T0 = Date.UTC(2026, 10, 27, 12);

async function sha256(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

function report(ts: number): MetricsReport__Output {
  const t = { requests: 50, p50Ms: 10, p95Ms: 40, p99Ms: 60, status2xx: 49, status3xx: 0, status4xx: 0, status5xx: 1, inFlight: 1 };
  return {
    ts,
    intervalMs: 10_000,
    host: { cpu_pct: 12, mem_used_bytes: 1e9, mem_total_bytes: 4e9 },
    instances: [{ key: 'shop:web.1:v2', cpuPct: 12, rssBytes: 50e6, processes: 3 }],
    apps: [{ key: 'shop', ...t }],
    backends: [{ key: 'shop:web.1:v2', ...t }],
  };
}

/** A stopped coordinator's data dir: hangar.db filled through the stores' own methods. */
async function filledCoordinator(t: { after(fn: () => unknown): void }) {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-migrate-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'hangar.db');
  const secrets = await SecretBox.fromKeyFile(join(dir, 'secret-key'));
  const store = new Store({ path, secrets });
  const now = T0 + 3 * DAY;
  store.nextGeneration();
  store.nextGeneration();
  store.createApp('shop', T0);
  store.createApp('blog', T0 + 1);
  store.putArtifact('a'.repeat(64), 1234, T0);
  for (const [i, secret] of ['one', 'two'].entries()) {
    store.createRelease({
      app: 'shop',
      artifactSha256: 'a'.repeat(64),
      procfile: { web: 'gunicorn shop.wsgi' },
      config: { SECRET_KEY: secret },
      appJson: null,
      status: 'succeeded',
      description: `Deploy ${i + 1}`,
      createdBy: 'admin',
      createdAt: T0 + i,
    });
  }
  store.setCurrentRelease('shop', 2);
  store.patchConfig('shop', { SECRET_KEY: 'two', DEBUG: '0' });
  store.setFormation('shop', { web: 2, worker: 1 });
  store.createDeploy({
    id: 'dep1',
    app: 'shop',
    release: 2,
    previousRelease: 1,
    status: 'succeeded',
    error: null,
    errorCode: null,
    taskAgent: 'a1',
    skipReleasePhase: false,
    deadline: null,
    createdAt: T0,
    finishedAt: T0 + 5,
  });
  store.appendDeployLine('dep1', { ts: T0, source: 'build', stream: 'stdout', line: 'Installing requirements' });
  store.upsertAgent({
    name: 'a1',
    address: '127.0.0.1',
    routerPort: 80,
    cpus: 2,
    memoryMb: 2048,
    maxInstances: 50,
    singletonLeaseMs: 30_000,
    version: '1',
    lastSeen: now,
    createdAt: T0,
  });
  store.setAgentCredential('a1', 'f'.repeat(64), T0);
  store.insertInstance(newInstanceRow({ key: 'shop:web.1:v2', app: 'shop', type: 'web', idx: 1, release: 2, agent: 'a1' }, T0));
  store.insertToken({ id: 'tok1', name: 'ci', scope: 'deploy', hash: 'e'.repeat(64), createdAt: T0, lastUsedAt: null });
  store.insertAddon({
    name: 'redis-1',
    id: 'r1',
    app: 'shop',
    kind: 'redis',
    agent: 'a1',
    port: 6400,
    configVar: 'REDIS_URL',
    desired: 'run',
    attachedUrl: 'redis://:pw-redis@127.0.0.1:6400',
    deployId: null,
    state: 'up',
    pid: 99,
    restarts: 0,
    since: T0,
    message: '',
    password: 'pw-redis',
    adminPassword: '',
    tls: null,
    createdAt: T0,
  });
  const certs = new CertStore(store, secrets);
  certs.insertDomain('shop.example.com', 'shop', T0);
  certs.insertCert({
    id: 'cert1',
    app: 'shop',
    source: 'uploaded',
    names: ['shop.example.com'],
    certPem: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
    keyPem: '-----BEGIN PRIVATE KEY-----\nsecret-key-bytes\n-----END PRIVATE KEY-----\n',
    notBefore: T0,
    notAfter: T0 + 90 * DAY,
    issuer: 'CN=test',
    fingerprint: 'AA:BB',
    createdAt: T0,
  });
  certs.setTls('shop', { hsts: true });
  new RunStore(store).insert({
    id: 'run-a',
    app: 'shop',
    command: 'python manage.py migrate',
    release: 2,
    agent: 'a1',
    tty: false,
    attached: false,
    cols: 80,
    rows: 24,
    term: 'xterm',
    timeoutSeconds: 0,
    createdBy: 'admin',
    cronJob: null,
    status: 'exited',
    desired: 'run',
    pid: 123,
    exitCode: 0,
    signal: null,
    message: '',
    createdAt: T0,
    startedAt: T0,
    endedAt: T0 + 1,
  });
  const autoscale = new AutoscaleStore(store);
  autoscale.setPolicy({ app: 'shop', type: 'web', min: 1, max: 4, p95Ms: 300, cpuPct: 62.5 }, T0);
  autoscale.addDecision({ ts: T0, app: 'shop', type: 'web', from: 1, to: 2, reason: 'p95 400 ms' });
  autoscale.addDecision({ ts: T0 + 1, app: 'shop', type: 'web', from: 2, to: 3, reason: 'p95 500 ms' });
  let clockNow = now - 5 * 60_000;
  const clock = { now: () => clockNow, setTimeout: () => ({}), clearTimeout: () => undefined };
  const metrics = new MetricsStore({ store, clock, logger: silent, rawRetentionMs: 3_600_000 });
  for (let i = 0; i < 6; i++) {
    metrics.ingest('a1', report(clockNow));
    clockNow += 10_000;
  }
  metrics.flush(true);
  metrics.close();

  // Log lines over four UTC days, and a second stream.
  const logs = new LogStore({ path, maxAgeMs: 30 * DAY });
  const lines = Array.from({ length: 1203 }, (_, i) => ({
    seq: i + 1,
    ts: T0 + Math.floor((i * 3 * DAY) / 1202),
    app: i % 3 === 0 ? 'blog' : 'shop',
    source: i % 2 === 0 ? 'web.1' : 'router',
    stream: i % 5 === 0 ? 'stderr' : 'stdout',
    line: `line ${i} ünïcode ${'x'.repeat(i % 40)}`,
  }));
  logs.ingest('a1', 'epoch-1', lines);
  logs.ingest('a2', 'epoch-9', [{ seq: 1, ts: now, app: 'shop', source: 'web.2', stream: 'stdout', line: 'from a2' }]);
  const shopLines = logs.query({ app: 'shop', n: 10_000 });
  logs.close();

  // A coordinator led here (epoch 1) an hour ago and died holding the lease, long expired.
  const lease = new LeaderLease({ path, logger: silent, clock: { ...systemClock, now: () => Date.now() - 3_600_000 } });
  lease.configure(
    { name: 'c1', apiUrl: 'http://c1:7080', grpcAddress: 'c1:7081' },
    { onElected: () => undefined, onLost: () => undefined },
  );
  lease.tick();
  assert.equal(lease.epoch, 1);
  lease.stepDown('the test stops it without releasing the lease');
  lease.close();
  store.close();
  return { dir, path, secrets, lines, shopLines, now };
}

test('migrate copies every table into PostgreSQL; the Store on PostgreSQL reads the same values, ids continue, the SQLite file is untouched', async (t) => {
  const c = await filledCoordinator(t);
  const url = (await testPostgres()).createDatabase('migrate');
  const before = await sha256(c.path);
  const progress = new Map<string, number>();
  const result = migrateSqliteToPostgres({
    from: c.path,
    to: url,
    batchRows: 100,
    onProgress: (p) => progress.set(p.table, p.copied),
  });
  assert.equal(await sha256(c.path), before, 'the SQLite file changed');

  const byTable = new Map(result.tables.map((r) => [r.table, r]));
  for (const r of result.tables) assert.equal(r.postgresRows, r.sqliteRows, r.table);
  assert.equal(byTable.get('log_lines')?.sqliteRows, 1204);
  assert.equal(progress.get('log_lines'), 1204);
  assert.equal(byTable.get('apps')?.keysChecked, true);
  assert.ok((byTable.get('metric_samples')?.sqliteRows ?? 0) > 0);
  assert.ok((byTable.get('metric_rollups')?.sqliteRows ?? 0) > 0);
  assert.equal(
    result.rows,
    result.tables.reduce((n, r) => n + r.sqliteRows, 0),
  );
  assert.deepEqual(
    result.skipped.map((s) => s.table),
    ['coordinators'],
  );
  // Parents before children.
  const order = result.tables.map((r) => r.table);
  for (const child of ['releases', 'config_vars', 'addons', 'domains', 'runs', 'addon_standbys']) {
    assert.ok(order.indexOf('apps') < order.indexOf(child), child);
  }
  assert.ok(order.indexOf('addons') < order.indexOf('addon_standbys'));
  assert.ok(order.indexOf('deploys') < order.indexOf('deploy_lines'));

  const pg = new Store({ path: url, secrets: c.secrets });
  t.after(() => pg.close());
  assert.deepEqual(
    pg.listApps().map((a) => a.name),
    ['blog', 'shop'],
  );
  assert.equal(pg.getApp('shop')?.currentRelease, 2);
  assert.deepEqual(pg.getConfig('shop'), { DEBUG: '0', SECRET_KEY: 'two' });
  assert.deepEqual(
    pg.listReleases('shop').map((r) => [r.version, r.config.SECRET_KEY, r.description]),
    [
      [2, 'two', 'Deploy 2'],
      [1, 'one', 'Deploy 1'],
    ].sort((a, b) => (b[0] as number) - (a[0] as number)),
  );
  assert.deepEqual(pg.getFormation('shop'), { web: 2, worker: 1 });
  assert.equal(pg.getDeploy('dep1')?.status, 'succeeded');
  assert.deepEqual(
    pg.deployLines('dep1', 0).map((l) => l.line),
    ['Installing requirements'],
  );
  assert.equal(pg.getAgent('a1')?.memoryMb, 2048);
  assert.equal(pg.getAgentCredentialHash('a1'), 'f'.repeat(64));
  assert.equal(pg.getInstance('shop:web.1:v2')?.agent, 'a1');
  assert.equal(pg.findTokenByHash('e'.repeat(64))?.name, 'ci');
  const addon = pg.getAddon('redis-1');
  assert.equal(addon?.password, 'pw-redis');
  assert.equal(addon?.attachedUrl, 'redis://:pw-redis@127.0.0.1:6400');
  const certs = new CertStore(pg, c.secrets);
  assert.equal(certs.getDomain('shop.example.com')?.app, 'shop');
  assert.match(certs.listCerts('shop')[0]?.keyPem ?? '', /secret-key-bytes/);
  assert.deepEqual(certs.getTls('shop'), { acme: false, redirect: true, hsts: true });
  assert.equal(new RunStore(pg).byNumber('shop', 1)?.command, 'python manage.py migrate');
  const autoscale = new AutoscaleStore(pg);
  assert.deepEqual(autoscale.listPolicies('shop')[0]?.cpuPct, 62.5);

  // What comes next continues the numbering: release v3, the third autoscale decision, a new log stream.
  assert.equal(
    pg.createRelease({
      app: 'shop',
      artifactSha256: 'a'.repeat(64),
      procfile: { web: 'gunicorn shop.wsgi' },
      config: { SECRET_KEY: 'three' },
      appJson: null,
      status: 'succeeded',
      description: 'Deploy 3',
      createdBy: 'admin',
      createdAt: c.now,
    }).version,
    3,
  );
  autoscale.addDecision({ ts: c.now, app: 'shop', type: 'web', from: 3, to: 2, reason: 'quiet' });
  assert.deepEqual(
    autoscale.listDecisions('shop').map((d) => d.reason),
    ['quiet', 'p95 500 ms', 'p95 400 ms'],
  );
  // The generation goes on from the SQLite one (agents ignore older ones).
  assert.equal(pg.nextGeneration(), 3);

  // Log lines and their streams: LogStore reads SQLite only so far, so these are read with SQL.
  const db = pg.database;
  const pgShop = db.prepare(`SELECT id, ts, source, fd, line FROM log_lines WHERE app = 'shop' ORDER BY id`).all() as {
    id: number;
    ts: number;
    source: string;
    fd: string;
    line: string;
  }[];
  assert.deepEqual(
    pgShop.map((l) => [l.id, l.ts, l.source, l.fd, l.line]),
    c.shopLines.map((l) => [l.id, l.ts, l.source, l.stream, l.line]),
  );
  assert.equal(existingDayPartitions(db, 'log_lines').length, 4);
  assert.deepEqual(db.prepare('SELECT lines FROM log_usage WHERE id = 1').pluck().get(), 1204);
  const nextStream = db.prepare(`INSERT INTO log_streams (agent, epoch) VALUES ('a3', 'e') RETURNING id`).pluck().get() as number;
  const maxStream = new Database(c.path, { readonly: true });
  t.after(() => maxStream.close());
  assert.equal(nextStream, (maxStream.prepare('SELECT max(id) FROM log_streams').pluck().get() as number) + 1);

  // Metrics: the same figures through the views on both sides.
  const view = (s: Store) => {
    const m = new MetricsStore({
      store: s,
      clock: { now: () => c.now, setTimeout: () => ({}), clearTimeout: () => undefined },
      logger: silent,
    });
    try {
      return m.appMetrics('shop', 3_600_000, []).traffic;
    } finally {
      m.close();
    }
  };
  const sqlite = new Store({ path: c.path, secrets: c.secrets });
  const sqliteTraffic = view(sqlite);
  sqlite.close();
  assert.ok(sqliteTraffic.requests > 0);
  assert.deepEqual(view(pg), sqliteTraffic);

  // The lease is free, its epoch kept: the first PostgreSQL leader is elected above epoch 1.
  assert.deepEqual(db.prepare('SELECT holder, epoch, expires_at FROM coordinator_lease').all(), [
    { holder: null, epoch: 1, expires_at: 0 },
  ]);
  assert.equal(db.prepare('SELECT count(*) FROM coordinators').pluck().get(), 0);
});

test('migrate refuses a missing file, a file that is not a Hangar database, an older schema and a running coordinator', async (t) => {
  const c = await filledCoordinator(t);
  const url = (await testPostgres()).createDatabase('refuse');
  const refused = (from: string, code: string, pattern: RegExp) =>
    assert.throws(
      () => migrateSqliteToPostgres({ from, to: url }),
      (err) => isHangarError(err) && err.code === code && pattern.test(err.message),
    );
  refused(join(c.dir, 'nope.db'), 'BAD_INPUT', /There is no file .*nope\.db/);
  await writeFile(join(c.dir, 'text.db'), 'hello, not a database\n'.repeat(100));
  refused(join(c.dir, 'text.db'), 'BAD_INPUT', /not a SQLite database/);
  const other = new Database(join(c.dir, 'other.db'));
  other.exec('CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)');
  other.close();
  refused(join(c.dir, 'other.db'), 'BAD_INPUT', /not a Hangar coordinator's database/);
  const old = new Database(join(c.dir, 'old.db'));
  for (const m of MIGRATIONS.slice(0, 5)) old.exec(m);
  old.pragma('user_version = 5');
  old.close();
  refused(join(c.dir, 'old.db'), 'BAD_INPUT', /start and stop this version of the coordinator on it first/);

  const lease = new LeaderLease({ path: c.path, logger: silent });
  lease.configure(
    { name: 'c2', apiUrl: 'http://c2:7080', grpcAddress: 'c2:7081' },
    { onElected: () => undefined, onLost: () => undefined },
  );
  lease.tick();
  try {
    refused(c.path, 'CONFLICT', /A coordinator \(c2\) is running on .*stop the coordinator first/);
  } finally {
    lease.close();
  }
  // Nothing reached the target: it is still empty, and the migration now goes through.
  assert.ok(migrateSqliteToPostgres({ from: c.path, to: url }).rows > 0);
});

test('migrate refuses a target that is not PostgreSQL, unreachable, holds Hangar data or other tables; the password is never shown', async (t) => {
  const c = await filledCoordinator(t);
  const server = await testPostgres();
  const refused = (to: string, code: string, pattern: RegExp) =>
    assert.throws(
      () => migrateSqliteToPostgres({ from: c.path, to }),
      (err) => isHangarError(err) && err.code === code && pattern.test(err.message) && !err.message.includes('hunter2'),
    );
  refused('mysql://root:hunter2@127.0.0.1/hangar', 'BAD_INPUT', /--to must be a PostgreSQL URL .*mysql:\/\/root:\*\*\*\*@/);
  refused(
    'postgres://hangar:hunter2@127.0.0.1:1/hangar',
    'DATABASE_UNAVAILABLE',
    /Cannot reach PostgreSQL at postgres:\/\/hangar:\*\*\*\*@127\.0\.0\.1:1\/hangar/,
  );

  const used = server.createDatabase('used');
  migrateSqliteToPostgres({ from: c.path, to: used });
  refused(used, 'CONFLICT', /already holds Hangar data \(.*apps: 2.*\); nothing was copied/);

  const foreign = server.createDatabase('foreign');
  const db = new PostgresDatabase({ url: foreign });
  db.exec('CREATE TABLE orders (id int)');
  db.close();
  refused(foreign, 'CONFLICT', /already has tables \(orders\) and is not a Hangar database/);

  assert.equal(maskDatabaseUrl('postgres://u:hunter2@h:5432/d?sslmode=require'), 'postgres://u:****@h:5432/d?sslmode=require');
  assert.equal(maskDatabaseUrl('postgres://u@h/d?password=hunter2'), 'postgres://u@h/d?password=****');
});

test('a row PostgreSQL refuses rolls the whole copy back: the target stays empty and the error names the table', async (t) => {
  const c = await filledCoordinator(t);
  const broken = join(c.dir, 'broken.db');
  await copyFile(c.path, broken);
  // SQLite keeps any value in any column; an older Hangar (or a hand edit) may have left one.
  execFileSync('/usr/bin/python3', [
    '-c',
    "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute(\"UPDATE formation SET quantity = 'many' WHERE type = 'worker'\")\nc.commit()",
    broken,
  ]);
  const url = (await testPostgres()).createDatabase('rollback');
  assert.throws(
    () => migrateSqliteToPostgres({ from: broken, to: url }),
    (err) =>
      isHangarError(err, 'INTERNAL') && /failed at table formation and was rolled back/.test(err.message) && /many/.test(err.message),
  );
  const db = new PostgresDatabase({ url });
  t.after(() => db.close());
  assert.equal(db.prepare('SELECT count(*) FROM apps').pluck().get(), 0);
  assert.equal(db.prepare('SELECT count(*) FROM log_lines').pluck().get(), 0);
  // The schema is there and empty: the fixed file migrates into the same database.
  assert.ok(migrateSqliteToPostgres({ from: c.path, to: url }).rows > 0);
});

test('hangar coordinator migrate: progress on stderr, the counts and what to do next on stdout, --json, HANGAR_DATABASE_URL; never the password', async (t) => {
  const c = await filledCoordinator(t);
  const server = await testPostgres();
  // The test server trusts the hangar role: any password is accepted, so it can be one to hide.
  const withPassword = (url: string) => url.replace('postgres://hangar@', 'postgres://hangar:hunter2@');
  const hangar = async (args: string[], env: Record<string, string> = {}) => {
    let stdout = '';
    let stderr = '';
    const code = await main(
      ['node', 'hangar', ...args],
      {
        stdout: { write: (s: string | Uint8Array) => (stdout += String(s)) },
        stderr: { write: (s: string | Uint8Array) => (stderr += String(s)) },
        env,
      },
      registerServerCommands,
    );
    assert.ok(!stdout.includes('hunter2') && !stderr.includes('hunter2'), `the password was printed:\n${stdout}\n${stderr}`);
    return { code, stdout, stderr };
  };

  const url = withPassword(server.createDatabase('cli'));
  const done = await hangar(['coordinator', 'migrate', '--from', c.path, '--to', url]);
  assert.equal(done.code, 0, done.stderr);
  assert.match(done.stderr, /^ {2}log_lines: 1204 rows$/m);
  assert.match(done.stdout, /^apps +2 +2 +keys match$/m);
  assert.match(done.stdout, /Copied \d+ rows of \d+ tables into postgres:\/\/hangar:\*\*\*\*@127\.0\.0\.1/);
  assert.match(done.stdout, new RegExp(`copy that file to the --data-dir of every coordinator`));
  assert.match(done.stdout, new RegExp(`next: hangar coordinator --data-dir ${c.dir} --database-url postgres://hangar:\\*\\*\\*\\*@`));

  const again = await hangar(['coordinator', 'migrate', '--from', c.path, '--to', url]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /error: The PostgreSQL database postgres:\/\/hangar:\*\*\*\*@.* already holds Hangar data/);

  const json = await hangar(['coordinator', 'migrate', '--from', c.path, '--json'], {
    HANGAR_DATABASE_URL: withPassword(server.createDatabase('clijson')),
  });
  assert.equal(json.code, 0, json.stderr);
  const parsed = JSON.parse(json.stdout) as {
    to: string;
    rows: number;
    tables: { table: string; sqliteRows: number; postgresRows: number }[];
  };
  assert.match(parsed.to, /^postgres:\/\/hangar:\*\*\*\*@/);
  assert.equal(parsed.tables.find((r) => r.table === 'log_lines')?.postgresRows, 1204);

  const noTo = await hangar(['coordinator', 'migrate', '--from', c.path]);
  assert.equal(noTo.code, 2);
  assert.match(noTo.stderr, /Give --to postgres:/);
  const missing = await hangar(['coordinator', 'migrate', '--from', join(c.dir, 'gone.db'), '--to', url]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /error: There is no file .*gone\.db/);
  const mysql = await hangar(['coordinator', 'migrate', '--from', c.path, '--to', 'mysql://root:hunter2@db/hangar']);
  assert.equal(mysql.code, 2);
  assert.match(mysql.stderr, /--to must be a postgres:\/\/ URL/);
});
