/**
 * The coordinator's stores behave the same on SQLite and PostgreSQL: one set of tests, run once per
 * engine, on every public method of the Store and of the table-group stores built on it (the log
 * and metrics stores have their own tests). Each test gets a fresh database: a SQLite file in a
 * temp dir, or a new database on the test PostgreSQL.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { AppJson } from '../../common/app-json.js';
import { systemClock, type Clock } from '../../common/clock.js';
import { isHangarError } from '../../common/errors.js';
import { SecretBox } from '../../common/secret-box.js';
import { AutoscaleStore } from '../../coordinator/autoscale/autoscale-store.js';
import { BackupStore, type BackupRow, type ScheduleRow } from '../../coordinator/addons/backup-store.js';
import { CertStore, type CertRow } from '../../coordinator/certs/cert-store.js';
import { CronScheduler } from '../../coordinator/cron/cron-scheduler.js';
import { LeaderLease } from '../../coordinator/ha/leader-lease.js';
import { RunStore, type RunRow } from '../../coordinator/runs/run-store.js';
import { Runs } from '../../coordinator/runs/runs.js';
import { isConstraintError, type SqlEngine } from '../../coordinator/store/sql.js';
import {
  newInstanceRow,
  Store,
  type AddonRow,
  type AddonStandbyRow,
  type AgentRow,
  type DeployRow,
  type ReleaseRow,
} from '../../coordinator/store/store.js';
import { testPostgres } from '../helpers/postgres-server.js';

const silent = pino({ level: 'silent' });
const T0 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

interface Ctx {
  after(fn: () => unknown): void;
}

/** A fresh database of `engine`: its location (file or URL), removed or left to the test server after the test. */
async function freshLocation(engine: SqlEngine, t: Ctx): Promise<string> {
  if (engine === 'postgres') return (await testPostgres()).createDatabase('conf');
  const dir = await mkdtemp(join(tmpdir(), 'hangar-conf-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return join(dir, 'hangar.db');
}

/** A Store on a fresh database; closed after the test. `open` opens another one on the same database. */
async function freshStore(engine: SqlEngine, t: Ctx) {
  const location = await freshLocation(engine, t);
  const secrets = new SecretBox(randomBytes(32));
  const open = (): Store => {
    const s = new Store({ path: location, secrets });
    t.after(() => s.close());
    return s;
  };
  return { store: open(), open, location, secrets };
}

function release(app: string, patch: Partial<Omit<ReleaseRow, 'version'>> = {}): Omit<ReleaseRow, 'version'> {
  return {
    app,
    artifactSha256: 'a'.repeat(64),
    procfile: { web: 'gunicorn shop.wsgi' },
    config: { SECRET_KEY: 'clear-secret-value' },
    appJson: null,
    status: 'succeeded',
    description: 'Deploy abc123',
    createdBy: 'admin',
    createdAt: T0,
    ...patch,
  };
}

function agent(name: string, patch: Partial<AgentRow> = {}): AgentRow {
  return {
    name,
    address: '127.0.0.1',
    routerPort: 8080,
    cpus: 4,
    memoryMb: 2048,
    maxInstances: 10,
    version: '1.2.3',
    lastSeen: T0,
    createdAt: T0,
    singletonLeaseMs: 30_000,
    ...patch,
  };
}

function deploy(id: string, patch: Partial<DeployRow> = {}): DeployRow {
  return {
    id,
    app: 'shop',
    release: null,
    previousRelease: null,
    status: 'pending',
    error: null,
    errorCode: null,
    taskAgent: null,
    skipReleasePhase: false,
    deadline: null,
    createdAt: T0,
    finishedAt: null,
    ...patch,
  };
}

function addon(name: string, patch: Partial<AddonRow> = {}): AddonRow {
  return {
    name,
    id: `id-${name}`,
    app: 'shop',
    kind: 'postgres',
    agent: 'a',
    port: null,
    configVar: 'DATABASE_URL',
    desired: 'run',
    attachedUrl: null,
    deployId: null,
    state: 'provisioning',
    pid: null,
    restarts: 0,
    since: T0,
    message: '',
    password: 'addon-password-1',
    adminPassword: 'admin-password-1',
    tls: null,
    createdAt: T0,
    ...patch,
  };
}

function standby(addonName: string, patch: Partial<AddonStandbyRow> = {}): AddonStandbyRow {
  return {
    addon: addonName,
    agent: 'b',
    role: 'pending',
    port: null,
    state: 'provisioning',
    pid: null,
    restarts: 0,
    since: T0,
    message: '',
    replicationPassword: 'replication-password-1',
    lagBytes: null,
    lagSeconds: null,
    lagAt: null,
    syncMode: 'async',
    syncActive: false,
    createdAt: T0,
    ...patch,
  };
}

function runRow(id: string, patch: Partial<Omit<RunRow, 'number'>> = {}): Omit<RunRow, 'number'> {
  return {
    id,
    app: 'shop',
    command: 'python manage.py migrate',
    release: 1,
    agent: 'a',
    tty: false,
    attached: false,
    cols: 80,
    rows: 24,
    term: 'xterm',
    timeoutSeconds: 0,
    createdBy: 'admin',
    cronJob: null,
    status: 'pending',
    desired: 'run',
    pid: null,
    exitCode: null,
    signal: null,
    message: '',
    createdAt: T0,
    startedAt: null,
    endedAt: null,
    ...patch,
  };
}

function backup(id: string, patch: Partial<BackupRow> = {}): BackupRow {
  return {
    id,
    addon: 'shop-db',
    app: 'shop',
    kind: 'postgres',
    name: `b-${id}`,
    agent: 'a',
    size: 5_000_000_000,
    sha256: 'b'.repeat(64),
    copies: [],
    copyError: '',
    origin: 'manual',
    verifyState: 'unverified',
    verifyMessage: '',
    verifiedAt: null,
    createdAt: T0,
    ...patch,
  };
}

/** The raw column values of a query (to look at what is at rest). */
function column(store: Store, sql: string): unknown[] {
  return store.database.prepare(sql).pluck().all();
}

const conflict = (err: unknown): boolean => isHangarError(err, 'CONFLICT') && isConstraintError(err, 'unique');

for (const engine of ['sqlite', 'postgres'] as const) {
  describe(`store conformance on ${engine}`, () => {
    test('meta and the generation: values read back, the generation counts on across reopening', async (t) => {
      const { store, open } = await freshStore(engine, t);
      assert.equal(store.getMeta('cluster'), null);
      store.setMeta('cluster', 'one');
      store.setMeta('cluster', 'two');
      assert.equal(store.getMeta('cluster'), 'two');
      assert.deepEqual([store.nextGeneration(), store.nextGeneration(), store.nextGeneration()], [1, 2, 3]);
      store.close();
      const again = open();
      assert.equal(again.nextGeneration(), 4);
      assert.equal(again.getMeta('cluster'), 'two');
      assert.equal(again.getMeta('generation'), '4');
    });

    test('apps: create, read, list in name order, current release, duplicate is APP_EXISTS, delete cascades', async (t) => {
      const { store } = await freshStore(engine, t);
      assert.deepEqual(store.createApp('zoo', T0), { name: 'zoo', createdAt: T0, currentRelease: null });
      store.createApp('api', T0 + 1);
      store.createApp('shop-2', T0 + 2);
      assert.deepEqual(
        store.listApps().map((a) => a.name),
        ['api', 'shop-2', 'zoo'],
      );
      assert.deepEqual(store.getApp('api'), { name: 'api', createdAt: T0 + 1, currentRelease: null });
      assert.equal(store.getApp('nope'), null);
      assert.throws(
        () => store.requireApp('nope'),
        (err) => isHangarError(err, 'APP_NOT_FOUND'),
      );
      assert.throws(
        () => store.createApp('zoo', T0),
        (err) => isHangarError(err, 'APP_EXISTS'),
      );
      store.createRelease(release('zoo'));
      store.setCurrentRelease('zoo', 1);
      assert.equal(store.requireApp('zoo').currentRelease, 1);
      store.setCurrentRelease('zoo', null);
      assert.equal(store.requireApp('zoo').currentRelease, null);
      store.patchConfig('zoo', { A: '1' });
      store.setFormation('zoo', { web: 2 });
      store.deleteApp('zoo');
      assert.equal(store.getApp('zoo'), null);
      assert.deepEqual(column(store, "SELECT count(*) FROM config_vars WHERE app = 'zoo'"), [0]);
      assert.deepEqual(column(store, "SELECT count(*) FROM releases WHERE app = 'zoo'"), [0]);
      assert.deepEqual(store.getFormation('zoo'), {});
    });

    test('maintenance: on with nulls, replaced (since kept), listed by app, off once', async (t) => {
      const { store } = await freshStore(engine, t);
      store.createApp('shop', T0);
      store.createApp('blog', T0);
      assert.equal(store.getMaintenance('shop'), null);
      store.setMaintenance({ app: 'shop', pageHtml: null, bypassSha256: null, retryAfterSeconds: 60, since: T0 });
      assert.deepEqual(store.getMaintenance('shop'), { app: 'shop', pageHtml: null, bypassSha256: null, retryAfterSeconds: 60, since: T0 });
      store.setMaintenance({
        app: 'shop',
        pageHtml: '<p>back soon</p>',
        bypassSha256: 'c'.repeat(64),
        retryAfterSeconds: 120,
        since: T0 + 5,
      });
      assert.deepEqual(store.getMaintenance('shop'), {
        app: 'shop',
        pageHtml: '<p>back soon</p>',
        bypassSha256: 'c'.repeat(64),
        retryAfterSeconds: 120,
        since: T0,
      });
      store.setMaintenance({ app: 'blog', pageHtml: null, bypassSha256: null, retryAfterSeconds: 30, since: T0 });
      assert.deepEqual(
        store.listMaintenance().map((m) => m.app),
        ['blog', 'shop'],
      );
      assert.equal(store.clearMaintenance('shop'), true);
      assert.equal(store.clearMaintenance('shop'), false);
      assert.equal(store.getMaintenance('shop'), null);
    });

    test('config: set, replace and unset in key order; values sealed at rest', async (t) => {
      const { store } = await freshStore(engine, t);
      store.createApp('shop', T0);
      assert.deepEqual(store.getConfig('shop'), {});
      store.patchConfig('shop', { ZED: 'last', DATABASE_URL: 'postgres://u:very-secret@h/db', EMPTY: '' });
      store.patchConfig('shop', { ZED: 'changed', EMPTY: null, GONE: null });
      const config = store.getConfig('shop');
      assert.deepEqual(Object.keys(config), ['DATABASE_URL', 'ZED']);
      assert.deepEqual(config, { DATABASE_URL: 'postgres://u:very-secret@h/db', ZED: 'changed' });
      const raw = column(store, 'SELECT value FROM config_vars') as string[];
      assert.equal(raw.length, 2);
      assert.ok(raw.every((v) => SecretBox.isSealed(v) && !v.includes('secret') && !v.includes('changed')));
    });

    test('formation and artifacts: upserts read back, an artifact put twice is one', async (t) => {
      const { store } = await freshStore(engine, t);
      store.createApp('shop', T0);
      store.setFormation('shop', { web: 2, worker: 1 });
      store.setFormation('shop', { worker: 0, clock: 1 });
      assert.deepEqual(store.getFormation('shop'), { clock: 1, web: 2, worker: 0 });
      assert.deepEqual(Object.keys(store.getFormation('shop')), ['clock', 'web', 'worker']);
      assert.equal(store.hasArtifact('f'.repeat(64)), false);
      store.putArtifact('f'.repeat(64), 12_345_678_901, T0);
      store.putArtifact('f'.repeat(64), 1, T0 + 1);
      assert.equal(store.hasArtifact('f'.repeat(64)), true);
      assert.deepEqual(column(store, 'SELECT size FROM artifacts'), [12_345_678_901]);
    });

    test('releases: numbered per app, newest first, app.json and config read back, config sealed, status set', async (t) => {
      const { store } = await freshStore(engine, t);
      store.createApp('shop', T0);
      store.createApp('blog', T0);
      const appJson = { scripts: { postdeploy: 'python manage.py check' } } as AppJson;
      assert.equal(store.createRelease(release('shop')).version, 1);
      assert.equal(store.createRelease(release('blog')).version, 1);
      const v2 = store.createRelease(release('shop', { appJson, config: {}, status: 'pending', createdAt: T0 + 10 }));
      assert.equal(v2.version, 2);
      assert.deepEqual(
        store.listReleases('shop').map((r) => r.version),
        [2, 1],
      );
      const got = store.getRelease('shop', 2);
      assert.deepEqual(got?.appJson?.scripts, { postdeploy: 'python manage.py check' });
      assert.deepEqual(got?.config, {});
      assert.equal(got?.createdAt, T0 + 10);
      assert.deepEqual(store.getRelease('shop', 1), { ...release('shop'), version: 1 });
      assert.equal(store.getRelease('shop', 3), null);
      store.setReleaseStatus('shop', 2, 'failed');
      assert.equal(store.getRelease('shop', 2)?.status, 'failed');
      const raw = column(store, 'SELECT config FROM releases') as string[];
      assert.ok(raw.every((c) => SecretBox.isSealed(c) && !c.includes('clear-secret-value')));
      assert.throws(
        () => store.createRelease(release('nope')),
        (err) => isConstraintError(err, 'foreign_key'),
      );
    });

    test('deploys: flags and nulls read back, active ones oldest first, patches, lines numbered per deploy', async (t) => {
      const { store } = await freshStore(engine, t);
      store.createApp('shop', T0);
      store.createDeploy(deploy('d2', { createdAt: T0 + 2, skipReleasePhase: true, deadline: T0 + 60_000 }));
      store.createDeploy(deploy('d1', { createdAt: T0 + 1 }));
      store.createDeploy(deploy('d3', { createdAt: T0 + 3, status: 'succeeded', finishedAt: T0 + 4 }));
      assert.deepEqual(store.getDeploy('d1'), deploy('d1', { createdAt: T0 + 1 }));
      assert.equal(store.getDeploy('d2')?.skipReleasePhase, true);
      assert.equal(store.getDeploy('d2')?.deadline, T0 + 60_000);
      assert.equal(store.getDeploy('nope'), null);
      assert.deepEqual(
        store.activeDeploys().map((d) => d.id),
        ['d1', 'd2'],
      );
      store.updateDeploy('d1', { status: 'failed', error: 'the build failed', errorCode: 'BUILD_FAILED', finishedAt: T0 + 9, release: 1 });
      store.updateDeploy('d1', {});
      const d1 = store.getDeploy('d1');
      assert.deepEqual(
        [d1?.status, d1?.error, d1?.errorCode, d1?.finishedAt, d1?.release],
        ['failed', 'the build failed', 'BUILD_FAILED', T0 + 9, 1],
      );
      store.updateDeploy('d2', { taskAgent: 'a', deadline: null });
      assert.deepEqual([store.getDeploy('d2')?.taskAgent, store.getDeploy('d2')?.deadline], ['a', null]);
      assert.deepEqual(
        store.activeDeploys().map((d) => d.id),
        ['d2'],
      );
      const line = (text: string) => ({ ts: T0, source: 'build', stream: 'stdout', line: text });
      assert.deepEqual(
        ['one', 'two', 'three'].map((l) => store.appendDeployLine('d1', line(l))),
        [1, 2, 3],
      );
      assert.equal(store.appendDeployLine('d2', line('other')), 1);
      assert.deepEqual(
        store.deployLines('d1', 1).map((l) => [l.seq, l.line]),
        [
          [2, 'two'],
          [3, 'three'],
        ],
      );
      assert.deepEqual(store.deployLines('d1', 0, 1), [{ seq: 1, ts: T0, source: 'build', stream: 'stdout', line: 'one' }]);
      assert.throws(
        () => store.createDeploy(deploy('d1')),
        (err) => conflict(err),
      );
    });

    test('agents: upsert, touch, list by name, credentials, removal takes its placements', async (t) => {
      const { store } = await freshStore(engine, t);
      store.createApp('shop', T0);
      store.createApp('blog', T0);
      store.upsertAgent(agent('b'));
      store.upsertAgent(agent('a', { createdAt: T0 - 1 }));
      store.upsertAgent(agent('b', { address: '10.0.0.2', cpus: 8, version: '1.2.4', singletonLeaseMs: 5000, createdAt: T0 + 99 }));
      assert.deepEqual(
        store.listAgents().map((a) => a.name),
        ['a', 'b'],
      );
      assert.deepEqual(store.getAgent('b'), agent('b', { address: '10.0.0.2', cpus: 8, version: '1.2.4', singletonLeaseMs: 5000 }));
      assert.equal(store.getAgent('c'), null);
      store.touchAgents([
        ['a', T0 + 10],
        ['b', T0 + 20],
      ]);
      assert.deepEqual(
        store.listAgents().map((a) => a.lastSeen),
        [T0 + 10, T0 + 20],
      );
      assert.equal(store.getAgentCredentialHash('b'), null);
      store.setAgentCredential('b', 'h1', T0);
      store.setAgentCredential('b', 'h2', T0 + 1);
      assert.equal(store.getAgentCredentialHash('b'), 'h2');
      for (const [key, app] of [
        ['shop:web.1:v1', 'shop'],
        ['shop:web.2:v1', 'shop'],
        ['blog:web.1:v1', 'blog'],
      ] as const) {
        store.insertInstance(newInstanceRow({ key, app, type: 'web', idx: Number(key[key.indexOf('.') + 1]), release: 1, agent: 'b' }, T0));
      }
      assert.deepEqual(store.removeAgent('b').sort(), ['blog', 'shop']);
      assert.equal(store.getAgent('b'), null);
      assert.equal(store.getAgentCredentialHash('b'), null);
      assert.deepEqual(store.listInstances(), []);
      assert.deepEqual(store.removeAgent('b'), []);
    });

    test('API tokens: insert, find by hash, list oldest first, delete once, a duplicate hash is CONFLICT', async (t) => {
      const { store } = await freshStore(engine, t);
      store.insertToken({ id: 't2', name: 'ci', scope: 'deploy', hash: 'h2', createdAt: T0, lastUsedAt: null });
      store.insertToken({ id: 't1', name: 'admin', scope: 'admin', hash: 'h1', createdAt: T0, lastUsedAt: T0 + 5 });
      store.insertToken({ id: 't0', name: 'read', scope: 'read', hash: 'h0', createdAt: T0 + 1, lastUsedAt: null });
      assert.deepEqual(store.findTokenByHash('h2'), { id: 't2', name: 'ci', scope: 'deploy', hash: 'h2', createdAt: T0, lastUsedAt: null });
      assert.equal(store.findTokenByHash('h1')?.lastUsedAt, T0 + 5);
      assert.equal(store.findTokenByHash('nope'), null);
      assert.deepEqual(
        store.listTokens().map((r) => r.id),
        ['t1', 't2', 't0'],
      );
      assert.throws(
        () => store.insertToken({ id: 't3', name: 'x', scope: 'read', hash: 'h2', createdAt: T0, lastUsedAt: null }),
        (err) => conflict(err),
      );
      assert.equal(store.deleteToken('t2'), true);
      assert.equal(store.deleteToken('t2'), false);
      assert.equal(store.findTokenByHash('h2'), null);
    });

    test('instances: every query and update reads back the same', async (t) => {
      const { store } = await freshStore(engine, t);
      store.createApp('shop', T0);
      store.createApp('blog', T0);
      store.createRelease(release('shop'));
      store.createRelease(release('shop'));
      store.createRelease(release('blog'));
      store.setCurrentRelease('shop', 2);
      store.setCurrentRelease('blog', 1);
      const put = (key: string, app: string, type: string, idx: number, rel: number, on: string) =>
        store.insertInstance(newInstanceRow({ key, app, type, idx, release: rel, agent: on }, T0));
      put('shop:web.2:v2', 'shop', 'web', 2, 2, 'b');
      put('shop:web.1:v2', 'shop', 'web', 1, 2, 'a');
      put('shop:web.1:v1', 'shop', 'web', 1, 1, 'a');
      put('shop:worker.1:v2', 'shop', 'worker', 1, 2, 'b');
      put('blog:web.1:v1', 'blog', 'web', 1, 1, 'b');
      assert.deepEqual(
        store.getInstance('shop:web.1:v2'),
        newInstanceRow({ key: 'shop:web.1:v2', app: 'shop', type: 'web', idx: 1, release: 2, agent: 'a' }, T0),
      );
      assert.equal(store.getInstance('nope'), null);
      assert.deepEqual(
        store.listInstances({ app: 'shop' }).map((i) => i.key),
        ['shop:web.1:v1', 'shop:web.1:v2', 'shop:web.2:v2', 'shop:worker.1:v2'],
      );
      assert.deepEqual(
        store.listInstances({ agent: 'b' }).map((i) => i.key),
        ['blog:web.1:v1', 'shop:web.2:v2', 'shop:worker.1:v2'],
      );
      assert.deepEqual(store.listInstances().length, 5);
      assert.deepEqual([...store.countInstancesByAgent()].sort(), [
        ['a', 2],
        ['b', 3],
      ]);
      const kinds = store.countAppInstancesByKind('shop');
      assert.deepEqual([...(kinds.get('web') ?? [])].sort(), [
        ['a', 2],
        ['b', 1],
      ]);
      assert.deepEqual([...(kinds.get('worker') ?? [])], [['b', 1]]);

      // Status reports: boot timing from the first start and the first time up.
      const up = { pid: 42, port: 9001, restarts: 0, message: '' };
      assert.equal(store.updateInstanceStatus('nope', { state: 'up', ...up, since: T0 }), null);
      store.updateInstanceStatus('shop:web.1:v2', { state: 'starting', ...up, since: T0 + 1, logTail: 'booting' });
      const before = store.updateInstanceStatus('shop:web.1:v2', { state: 'up', ...up, since: T0 + 2 });
      assert.equal(before?.state, 'starting');
      store.updateInstanceStatus('shop:web.1:v2', { state: 'up', ...up, since: T0 + 3 });
      const i = store.getInstance('shop:web.1:v2');
      assert.deepEqual([i?.state, i?.pid, i?.port, i?.startedAt, i?.upAt, i?.logTail], ['up', 42, 9001, T0 + 1, T0 + 2, 'booting']);
      for (const key of ['shop:web.2:v2', 'shop:worker.1:v2', 'blog:web.1:v1']) {
        store.updateInstanceStatus(key, { state: 'up', ...up, since: T0 });
      }
      assert.deepEqual(
        store.listRoutableInstances().map((r) => r.key),
        ['blog:web.1:v1', 'shop:web.1:v2', 'shop:web.2:v2'],
      );
      // shop still has v1's instance starting: not settled; blog is.
      assert.deepEqual([...store.settledApps()], ['blog']);
      store.markDraining('shop:web.1:v1', 7, T0 + 50);
      assert.deepEqual(
        store.listDraining().map((d) => [d.key, d.desired, d.drainGeneration, d.drainStarted]),
        [['shop:web.1:v1', 'drain', 7, T0 + 50]],
      );
      store.deleteInstance('shop:web.1:v1');
      assert.deepEqual([...store.settledApps()].sort(), ['blog', 'shop']);

      store.holdFromRoutes('shop:web.2:v2', 8, T0 + 60);
      assert.deepEqual(
        store.listRoutableInstances().map((r) => r.key),
        ['blog:web.1:v1', 'shop:web.1:v2'],
      );
      store.holdFromRoutes('shop:web.2:v2', null, T0 + 70);
      const held = store.getInstance('shop:web.2:v2');
      assert.deepEqual([held?.drainGeneration, held?.drainStarted], [null, null]);
      store.bumpRestart('shop:web.2:v2');
      store.bumpRestart('shop:web.2:v2');
      assert.equal(store.getInstance('shop:web.2:v2')?.restartNonce, 2);
      store.moveInstance('shop:web.2:v2', 'a', T0 + 80, 'agent b is down');
      const moved = store.getInstance('shop:web.2:v2');
      assert.deepEqual(
        [moved?.agent, moved?.state, moved?.pid, moved?.port, moved?.restarts, moved?.since, moved?.message],
        ['a', 'starting', null, null, 0, T0 + 80, 'agent b is down'],
      );
      assert.throws(
        () => put('shop:web.2:v2', 'shop', 'web', 2, 2, 'b'),
        (err) => conflict(err),
      );
      assert.throws(
        () => put('ghost:web.1:v1', 'ghost', 'web', 1, 1, 'b'),
        (err) => isConstraintError(err, 'foreign_key'),
      );
    });

    test('add-ons and standbys: secrets sealed and read back, lists oldest first, patches, delete takes the standby', async (t) => {
      const { store } = await freshStore(engine, t);
      store.createApp('shop', T0);
      store.createApp('blog', T0);
      store.insertAddon(addon('shop-redis', { kind: 'redis', configVar: 'REDIS_URL', createdAt: T0 + 1 }));
      store.insertAddon(addon('shop-db'));
      store.insertAddon(addon('blog-db', { app: 'blog', createdAt: T0 + 2 }));
      assert.deepEqual(store.getAddon('shop-db'), addon('shop-db'));
      assert.equal(store.getAddon('nope'), null);
      assert.deepEqual(
        store.listAddons().map((a) => a.name),
        ['shop-db', 'shop-redis', 'blog-db'],
      );
      assert.deepEqual(
        store.listAddons({ app: 'shop' }).map((a) => a.name),
        ['shop-db', 'shop-redis'],
      );
      const url = 'postgres://shop:addon-password-1@10.0.0.1:5432/shop';
      store.updateAddon('shop-db', { attachedUrl: url, port: 5432, state: 'up', pid: 99, deployId: 'd1', restarts: 1, message: 'ok' });
      store.updateAddon('shop-db', {});
      const db = store.getAddon('shop-db');
      assert.deepEqual([db?.attachedUrl, db?.port, db?.state, db?.pid, db?.deployId, db?.restarts], [url, 5432, 'up', 99, 'd1', 1]);
      store.setAddonTls('shop-db', { certPem: 'CERT', keyPem: 'KEY' });
      assert.deepEqual(store.getAddon('shop-db')?.tls, { certPem: 'CERT', keyPem: 'KEY' });
      assert.equal(store.getAddon('shop-db')?.password, 'addon-password-1');
      const raw = column(store, "SELECT secret || ' ' || COALESCE(attached_url, '') FROM addons") as string[];
      assert.ok(
        raw.every((r) => !r.includes('password-1') && !r.includes('KEY')),
        raw.join('\n'),
      );
      store.updateAddon('shop-db', { attachedUrl: null });
      assert.equal(store.getAddon('shop-db')?.attachedUrl, null);
      assert.throws(
        () => store.insertAddon(addon('shop-db')),
        (err) => isHangarError(err, 'ADDON_EXISTS'),
      );

      store.insertAddonStandby(standby('shop-db', { createdAt: T0 + 5 }));
      store.insertAddonStandby(standby('blog-db', { syncMode: 'sync', syncActive: true, createdAt: T0 + 1 }));
      assert.deepEqual(store.getAddonStandby('shop-db'), standby('shop-db', { createdAt: T0 + 5 }));
      assert.equal(store.getAddonStandby('shop-redis'), null);
      assert.deepEqual(
        store.listAddonStandbys().map((s) => [s.addon, s.syncMode, s.syncActive]),
        [
          ['blog-db', 'sync', true],
          ['shop-db', 'async', false],
        ],
      );
      store.updateAddonStandby('shop-db', { role: 'standby', lagBytes: 3_000_000_000, lagSeconds: 1.25, lagAt: T0 + 6, syncActive: true });
      store.updateAddonStandby('shop-db', {});
      const s = store.getAddonStandby('shop-db');
      assert.deepEqual([s?.role, s?.lagBytes, s?.lagSeconds, s?.lagAt, s?.syncActive], ['standby', 3_000_000_000, 1.25, T0 + 6, true]);
      store.updateAddonStandby('shop-db', { lagBytes: null, lagSeconds: null, syncActive: false });
      assert.deepEqual([store.getAddonStandby('shop-db')?.lagSeconds, store.getAddonStandby('shop-db')?.syncActive], [null, false]);
      store.deleteAddonStandby('blog-db');
      assert.equal(store.getAddonStandby('blog-db'), null);
      store.deleteAddon('shop-db');
      assert.equal(store.getAddon('shop-db'), null);
      assert.equal(store.getAddonStandby('shop-db'), null);
      assert.throws(
        () => store.insertAddonStandby(standby('ghost')),
        (err) => isConstraintError(err, 'foreign_key'),
      );
    });

    test('transactions: an error rolls everything back; a failed nested one only its own part', async (t) => {
      const { store } = await freshStore(engine, t);
      assert.throws(
        () =>
          store.transaction(() => {
            store.createApp('gone', T0);
            store.patchConfig('gone', { A: '1' });
            throw new Error('boom');
          }),
        /boom/,
      );
      assert.equal(store.getApp('gone'), null);
      assert.throws(
        () =>
          store.transaction(() => {
            store.createApp('gone', T0);
            store.insertToken({ id: 't1', name: 'a', scope: 'read', hash: 'h', createdAt: T0, lastUsedAt: null });
            store.insertToken({ id: 't2', name: 'b', scope: 'read', hash: 'h', createdAt: T0, lastUsedAt: null });
          }),
        (err) => conflict(err),
      );
      assert.equal(store.getApp('gone'), null);
      assert.deepEqual(store.listTokens(), []);
      store.transaction(() => {
        store.createApp('kept', T0);
        assert.throws(() =>
          store.transaction(() => {
            store.createApp('inner', T0);
            throw new Error('inner');
          }),
        );
        store.setMeta('after', 'yes');
      });
      assert.deepEqual(
        store.listApps().map((a) => a.name),
        ['kept'],
      );
      assert.equal(store.getMeta('after'), 'yes');
      assert.equal(
        store.transaction(() => 42),
        42,
      );
    });

    test('domains, certificates, TLS settings and the ACME account', async (t) => {
      const { store, secrets } = await freshStore(engine, t);
      store.createApp('shop', T0);
      store.createApp('blog', T0);
      const certs = new CertStore(store, secrets);
      assert.deepEqual(certs.insertDomain('www.shop.test', 'shop', T0 + 2), {
        hostname: 'www.shop.test',
        app: 'shop',
        createdAt: T0 + 2,
        acmeState: 'none',
        acmeError: null,
        acmeAttempts: 0,
        acmeNextAt: null,
      });
      certs.insertDomain('shop.test', 'shop', T0 + 2);
      certs.insertDomain('blog.test', 'blog', T0 + 1);
      assert.deepEqual(certs.getDomain('www.shop.test'), certs.listDomains('shop')[1]);
      assert.equal(certs.getDomain('nope.test'), null);
      assert.deepEqual(
        certs.listDomains('shop').map((d) => d.hostname),
        ['shop.test', 'www.shop.test'],
      );
      assert.deepEqual(
        certs.listDomains().map((d) => d.hostname),
        ['blog.test', 'shop.test', 'www.shop.test'],
      );
      assert.throws(
        () => certs.insertDomain('shop.test', 'blog', T0),
        (err) => isHangarError(err, 'DOMAIN_TAKEN'),
      );
      certs.updateAcme('shop.test', { acmeState: 'failed', acmeError: 'DNS not pointed here', acmeAttempts: 2, acmeNextAt: T0 + 600_000 });
      assert.deepEqual(certs.getDomain('shop.test'), {
        hostname: 'shop.test',
        app: 'shop',
        createdAt: T0 + 2,
        acmeState: 'failed',
        acmeError: 'DNS not pointed here',
        acmeAttempts: 2,
        acmeNextAt: T0 + 600_000,
      });
      certs.updateAcme('shop.test', { acmeState: 'issued', acmeError: null, acmeAttempts: 0, acmeNextAt: null });
      assert.deepEqual([certs.getDomain('shop.test')?.acmeError, certs.getDomain('shop.test')?.acmeNextAt], [null, null]);
      assert.equal(certs.deleteDomain('shop.test', 'blog'), false);
      assert.equal(certs.deleteDomain('shop.test', 'shop'), true);
      assert.equal(certs.getDomain('shop.test'), null);

      const cert = (id: string, patch: Partial<CertRow> = {}): CertRow => ({
        id,
        app: 'shop',
        source: 'acme',
        names: ['www.shop.test'],
        certPem: '-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n',
        keyPem: '-----BEGIN PRIVATE KEY-----\nsecret-key-bytes\n-----END PRIVATE KEY-----\n',
        notBefore: T0,
        notAfter: T0 + 90 * 86_400_000,
        issuer: 'Pebble',
        fingerprint: 'AA:BB',
        createdAt: T0,
        ...patch,
      });
      certs.insertCert(cert('c1'));
      certs.insertCert(cert('c2', { createdAt: T0 + 5 }));
      certs.insertCert(cert('c3', { source: 'uploaded', names: ['www.shop.test', '*.shop.test'], createdAt: T0 + 5 }));
      certs.insertCert(cert('c4', { app: 'blog', names: ['blog.test'], createdAt: T0 + 9 }));
      assert.deepEqual(
        certs.listCerts('shop').map((c) => c.id),
        ['c2', 'c3', 'c1'],
      );
      assert.deepEqual(
        certs.listCerts().map((c) => c.id),
        ['c4', 'c2', 'c3', 'c1'],
      );
      assert.deepEqual(certs.listCerts('shop')[2], cert('c1'));
      const keys = column(store, 'SELECT key_pem FROM certificates') as string[];
      assert.ok(keys.every((k) => SecretBox.isSealed(k) && !k.includes('secret-key-bytes')));
      certs.deleteReplacedAcmeCerts('shop', 'www.shop.test', 'c2');
      assert.deepEqual(
        certs.listCerts('shop').map((c) => c.id),
        ['c2', 'c3'],
      );
      assert.throws(
        () => certs.insertCert(cert('c2')),
        (err) => conflict(err),
      );

      assert.deepEqual(certs.getTls('shop'), { acme: false, redirect: true, hsts: false });
      assert.deepEqual(certs.setTls('shop', { acme: true }), { acme: true, redirect: true, hsts: false });
      assert.deepEqual(certs.setTls('shop', { redirect: false, hsts: true }), { acme: true, redirect: false, hsts: true });
      assert.deepEqual(certs.getTls('shop'), { acme: true, redirect: false, hsts: true });
      certs.setTls('blog', { hsts: true });
      assert.deepEqual(
        [...certs.allTls()].sort(([a], [b]) => a.localeCompare(b)),
        [
          ['blog', { acme: false, redirect: true, hsts: true }],
          ['shop', { acme: true, redirect: false, hsts: true }],
        ],
      );
      certs.transaction(() => certs.setTls('blog', { acme: true }));
      assert.equal(certs.getTls('blog').acme, true);

      const directory = 'https://acme.test/dir';
      assert.equal(certs.getAcmeAccount(directory), null);
      certs.setAcmeAccount(directory, { keyPem: 'ACCOUNT-KEY', url: 'https://acme.test/acct/1' });
      certs.setAcmeAccount(directory, { keyPem: 'ACCOUNT-KEY-2', url: 'https://acme.test/acct/2' });
      assert.deepEqual(certs.getAcmeAccount(directory), { keyPem: 'ACCOUNT-KEY-2', url: 'https://acme.test/acct/2' });
      assert.equal(certs.getAcmeAccount('https://other.test/dir'), null);
      assert.ok(!(column(store, 'SELECT value FROM meta') as string[]).some((v) => v.includes('ACCOUNT-KEY')));
    });

    test('runs: numbered per app, flags and nulls read back, lists newest first, moves by the table', async (t) => {
      const { store } = await freshStore(engine, t);
      store.createApp('shop', T0);
      store.createApp('blog', T0);
      const runs = new RunStore(store);
      const r1 = runs.insert(runRow('r1', { tty: true, attached: true, createdAt: T0 + 1 }));
      const r2 = runs.insert(runRow('r2', { cronJob: 'nightly', createdBy: 'cron', agent: 'b', createdAt: T0 + 2 }));
      runs.insert(runRow('r3', { app: 'blog', createdAt: T0 }));
      runs.insert(runRow('r4', { cronJob: 'nightly', createdBy: 'cron', status: 'exited', exitCode: 0, createdAt: T0 + 3 }));
      assert.deepEqual([r1.number, r2.number], [1, 2]);
      assert.deepEqual(runs.get('r1'), { ...runRow('r1', { tty: true, attached: true, createdAt: T0 + 1 }), number: 1 });
      assert.equal(runs.get('nope'), null);
      assert.equal(runs.byNumber('blog', 1)?.id, 'r3');
      assert.equal(runs.byNumber('blog', 2), null);
      assert.deepEqual(
        runs.list('shop').map((r) => r.number),
        [3, 2, 1],
      );
      assert.deepEqual(
        runs.list('shop', 2).map((r) => r.number),
        [3, 2],
      );
      assert.equal(runs.lastOfJob('shop', 'nightly')?.id, 'r4');
      assert.equal(runs.lastOfJob('shop', 'weekly'), null);
      assert.deepEqual(
        runs.active().map((r) => r.id),
        ['r3', 'r1', 'r2'],
      );
      assert.equal(runs.activeOn('a'), 2);
      const moved = runs.move('r1', 'starting', { startedAt: T0 + 10 });
      assert.equal(moved.status, 'starting');
      runs.move('r1', 'running', { pid: 123 });
      runs.move('r1', 'exited', { exitCode: 137, signal: 'SIGKILL', message: 'killed', endedAt: T0 + 20 });
      const done = runs.get('r1');
      assert.deepEqual(
        [done?.status, done?.pid, done?.exitCode, done?.signal, done?.message, done?.startedAt, done?.endedAt],
        ['exited', 123, 137, 'SIGKILL', 'killed', T0 + 10, T0 + 20],
      );
      assert.throws(() => runs.move('r1', 'running'), /Illegal run transition/);
      assert.throws(
        () => runs.move('nope', 'running'),
        (err) => isHangarError(err, 'RUN_NOT_FOUND'),
      );
      assert.equal(runs.activeOn('a'), 1);
      runs.requestStop('r2');
      assert.equal(runs.get('r2')?.desired, 'stop');
      assert.throws(
        () => runs.insert(runRow('r2')),
        (err) => conflict(err),
      );
      assert.equal(runs.list('shop').length, 3, 'the failed insert left nothing');
    });

    test('autoscale: policies upserted with nulls and fractions, listed by app and type; decisions newest first', async (t) => {
      const { store } = await freshStore(engine, t);
      store.createApp('shop', T0);
      store.createApp('blog', T0);
      const autoscale = new AutoscaleStore(store);
      autoscale.setPolicy({ app: 'shop', type: 'worker', min: 1, max: 3, p95Ms: null, cpuPct: 62.5 }, T0);
      autoscale.setPolicy({ app: 'shop', type: 'web', min: 1, max: 4, p95Ms: 300, cpuPct: null }, T0);
      autoscale.setPolicy({ app: 'blog', type: 'web', min: 2, max: 2, p95Ms: null, cpuPct: null }, T0);
      autoscale.setPolicy({ app: 'shop', type: 'web', min: 2, max: 8, p95Ms: 250, cpuPct: 80 }, T0 + 1);
      assert.deepEqual(autoscale.listPolicies('shop'), [
        { app: 'shop', type: 'web', min: 2, max: 8, p95Ms: 250, cpuPct: 80 },
        { app: 'shop', type: 'worker', min: 1, max: 3, p95Ms: null, cpuPct: 62.5 },
      ]);
      assert.deepEqual(
        autoscale.listPolicies().map((p) => `${p.app}/${p.type}`),
        ['blog/web', 'shop/web', 'shop/worker'],
      );
      assert.equal(autoscale.deletePolicy('shop', 'worker'), true);
      assert.equal(autoscale.deletePolicy('shop', 'worker'), false);
      for (let i = 1; i <= 4; i++) autoscale.addDecision({ ts: T0 + i, app: 'shop', type: 'web', from: i, to: i + 1, reason: `p95 ${i}` });
      autoscale.addDecision({ ts: T0, app: 'blog', type: 'web', from: 2, to: 2, reason: 'held' });
      assert.deepEqual(autoscale.listDecisions('shop', 2), [
        { ts: T0 + 4, app: 'shop', type: 'web', from: 4, to: 5, reason: 'p95 4' },
        { ts: T0 + 3, app: 'shop', type: 'web', from: 3, to: 4, reason: 'p95 3' },
      ]);
      assert.equal(autoscale.listDecisions('shop').length, 4);
      assert.deepEqual(autoscale.listDecisions('none'), []);
    });

    test('backups and schedules: copies as JSON, newest first, patches, a name twice per add-on is CONFLICT', async (t) => {
      const { store } = await freshStore(engine, t);
      store.createApp('shop', T0);
      const backups = new BackupStore(store);
      backups.insert(backup('k1', { name: 'b20260101-000000' }));
      backups.insert(backup('k2', { name: 'b20260102-000000', createdAt: T0 + 86_400_000, origin: 'scheduled' }));
      backups.insert(backup('k3', { addon: 'shop-redis', kind: 'redis', name: 'b20260101-000000' }));
      assert.deepEqual(backups.get('k1'), backup('k1', { name: 'b20260101-000000' }));
      assert.equal(backups.get('nope'), null);
      assert.deepEqual(
        backups.ofAddon('shop-db').map((b) => b.id),
        ['k2', 'k1'],
      );
      assert.deepEqual(
        backups
          .named('shop', 'b20260101-000000')
          .map((b) => b.id)
          .sort(),
        ['k1', 'k3'],
      );
      backups.update('k1', {
        copies: [{ agent: 'b' }, { path: '/backups' }],
        verifyState: 'verified',
        verifiedAt: T0 + 5,
        verifyMessage: 'restored',
      });
      backups.update('k1', {});
      const k1 = backups.get('k1');
      assert.deepEqual(
        [k1?.copies, k1?.verifyState, k1?.verifiedAt, k1?.verifyMessage, k1?.size],
        [[{ agent: 'b' }, { path: '/backups' }], 'verified', T0 + 5, 'restored', 5_000_000_000],
      );
      assert.throws(
        () => backups.insert(backup('k4', { name: 'b20260101-000000' })),
        (err) => conflict(err),
      );
      backups.delete('k1');
      assert.equal(backups.get('k1'), null);

      const schedule = (addonName: string, patch: Partial<ScheduleRow> = {}): ScheduleRow => ({
        addon: addonName,
        app: 'shop',
        at: '03:00',
        keep: 7,
        dir: null,
        enabled: true,
        nextAt: T0 + 3 * 3_600_000,
        lastAt: null,
        lastError: '',
        ...patch,
      });
      assert.equal(backups.schedule('shop-db'), null);
      backups.putSchedule(schedule('shop-redis'));
      backups.putSchedule(schedule('shop-db'));
      backups.putSchedule(
        schedule('shop-db', { at: '04:30', keep: 3, dir: '/srv/backups', enabled: false, lastAt: T0, lastError: 'disk full' }),
      );
      assert.deepEqual(
        backups.schedule('shop-db'),
        schedule('shop-db', { at: '04:30', keep: 3, dir: '/srv/backups', enabled: false, lastAt: T0, lastError: 'disk full' }),
      );
      assert.deepEqual(backups.schedule('shop-redis'), schedule('shop-redis'));
      assert.deepEqual(
        backups.schedules().map((s) => s.addon),
        ['shop-db', 'shop-redis'],
      );
      backups.deleteSchedule('shop-db');
      assert.deepEqual(
        backups.schedules().map((s) => s.addon),
        ['shop-redis'],
      );
    });

    test("cron: a job's last handled firing is kept in the database; a restarted scheduler fires what became due once", async (t) => {
      const { store, open } = await freshStore(engine, t);
      const now = { t: T0 + 30_000 };
      const clock: Clock = { ...systemClock, now: () => now.t };
      store.createApp('shop', T0);
      store.upsertAgent(agent('a'));
      const appJson = { cron: [{ name: 'tick', command: 'python manage.py tick', schedule: '*/5 * * * *' }] } as AppJson;
      store.createRelease(release('shop', { appJson }));
      store.setCurrentRelease('shop', 1);
      const scheduler = (s: Store) => {
        const events: string[] = [];
        const runs = new Runs({
          store: s,
          hub: { isConnected: () => true, sendRunInput: () => true },
          sync: { requestSync: () => undefined },
          clock,
          logger: silent,
          recordEvent: (_app, line) => events.push(line),
        });
        const cron = new CronScheduler({ store: s, runs, clock, logger: silent, recordEvent: (_app, line) => events.push(line) });
        t.after(() => cron.close());
        return { cron, runs, events };
      };
      const first = scheduler(store);
      first.cron.tick();
      assert.deepEqual(first.runs.store.list('shop'), [], 'a new job counts from now');
      assert.deepEqual(
        first.cron.jobs('shop').map((j) => [j.job.name, j.nextAt, j.lastRun]),
        [['tick', T0 + 5 * 60_000, null]],
      );
      assert.deepEqual(column(store, 'SELECT last_due FROM cron_state'), [T0 + 30_000]);

      // Restarted 6 minutes later (one firing due, 1 minute late): fired once, on the new store.
      store.close();
      now.t = T0 + 6 * 60_000;
      const second = scheduler(open());
      second.cron.tick();
      second.cron.tick();
      const fired = second.runs.store.list('shop');
      assert.deepEqual(
        fired.map((r) => [r.number, r.cronJob, r.createdBy, r.command]),
        [[1, 'tick', 'cron', 'python manage.py tick']],
      );
      assert.equal(second.cron.jobs('shop')[0]?.lastRun?.id, fired[0]?.id);
      assert.equal(second.cron.jobs('shop')[0]?.nextAt, T0 + 10 * 60_000);
      assert.ok(
        second.events.some((e) => e.includes('missed its firing at 2026-01-01T00:05Z')),
        second.events.join('\n'),
      );
      assert.equal(second.cron.runNow('shop', 'tick', 'admin').number, 2);
      assert.throws(
        () => second.cron.runNow('shop', 'nope', 'admin'),
        (err) => isHangarError(err, 'NOT_FOUND'),
      );
    });

    test('leader lease: one of two leads, the other takes over a released lease under a higher epoch; exclusive() runs once', async (t) => {
      const location = await freshLocation(engine, t);
      const wall = { t: T0 };
      const clock: Clock = { ...systemClock, now: () => wall.t };
      const mono = { t: 1000 };
      const events: string[] = [];
      const make = (name: string) => {
        const lease = new LeaderLease({
          path: location,
          leaseMs: 10_000,
          renewMs: 2000,
          marginMs: 3000,
          clock,
          monotonic: () => mono.t,
          logger: silent,
        });
        t.after(() => lease.close());
        lease.configure(
          { name, apiUrl: `http://${name}:7080`, grpcAddress: `${name}:7081` },
          { onElected: (epoch) => events.push(`${name} elected ${epoch}`), onLost: (reason) => events.push(`${name} lost: ${reason}`) },
        );
        return lease;
      };
      const a = make('a');
      const b = make('b');
      assert.equal(await a.exclusive(() => Promise.resolve('made once')), 'made once');
      await assert.rejects(
        a.exclusive(() => Promise.reject(new Error('set-up failed'))),
        /set-up failed/,
      );
      assert.equal(b.leader(), null);
      a.tick();
      b.tick();
      assert.deepEqual(events, ['a elected 1']);
      assert.deepEqual(b.state(), { holder: 'a', epoch: 1, expiresAt: T0 + 10_000, apiUrl: 'http://a:7080', grpcAddress: 'a:7081' });
      assert.equal(b.leader()?.holder, 'a');
      wall.t += 2000;
      mono.t += 2000;
      a.tick();
      b.tick();
      assert.equal(b.state().expiresAt, T0 + 12_000);
      assert.deepEqual(
        b.coordinators().map((r) => [r.name, r.role, r.lastSeen]),
        [
          ['a', 'leader', T0 + 2000],
          ['b', 'follower', T0 + 2000],
        ],
        'same last_seen: by name',
      );
      a.release();
      assert.equal(b.leader(), null);
      b.tick();
      assert.deepEqual(events, ['a elected 1', 'b elected 2']);
      assert.equal(b.epoch, 2);
      assert.equal(a.isLeader(), false);
      assert.equal(b.isLeader(), true);
    });
  });
}
