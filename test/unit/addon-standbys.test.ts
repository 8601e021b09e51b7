import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { parseFailoverAfter } from '../../cli/commands/server.js';
import type { AgentView } from '../../common/api-types.js';
import type { Clock } from '../../common/clock.js';
import { isHangarError } from '../../common/errors.js';
import { AddonStandbys, parseLsn, syncDecision } from '../../coordinator/addons/addon-standbys.js';
import { SecretBox } from '../../common/secret-box.js';
import { Store } from '../../coordinator/store/store.js';

test('WAL positions compare as numbers (hex, high/low 32 bits)', () => {
  assert.equal(parseLsn('0/0'), 0n);
  assert.equal(parseLsn('1/0'), 1n << 32n);
  assert.ok(parseLsn('0/3000148') > parseLsn('0/2FFFFFF'));
  assert.ok(parseLsn('2/0') > parseLsn('1/FFFFFFFF'));
  assert.throws(
    () => parseLsn('nope'),
    (err) => isHangarError(err, 'ADDON_FAILED'),
  );
});

test('--addon-failover-after: 30s, 2m, 1h (the one duration grammar) or seconds; anything else is bad input', () => {
  assert.equal(parseFailoverAfter('30s'), 30_000);
  assert.equal(parseFailoverAfter('2m'), 120_000);
  assert.equal(parseFailoverAfter('1h'), 3_600_000);
  assert.equal(parseFailoverAfter('45'), 45_000);
  for (const bad of ['0s', '-3s', '1x', 'soon', '30 s'])
    assert.throws(
      () => parseFailoverAfter(bad),
      (err) => isHangarError(err, 'BAD_INPUT'),
    );
});

/**
 * A store with app `shop`, agents a1 and a2, `postgres-1` primary on a1 (port 5432) and its standby on a2
 * (port 5433, up), the standby's fields overridden by `standby`. Its rows are made at 1,000,000 ms.
 */
function standbyStore(t: TestContext, standby: Partial<Parameters<Store['insertAddonStandby']>[0]>): Store {
  const store = new Store({ path: ':memory:', secrets: new SecretBox(randomBytes(32)) });
  t.after(() => store.close());
  const now = 1_000_000;
  store.createApp('shop', now);
  for (const name of ['a1', 'a2']) {
    store.upsertAgent({
      name,
      address: '127.0.0.1',
      routerPort: 80,
      cpus: 1,
      memoryMb: 1,
      maxInstances: 10,
      version: 'x',
      lastSeen: now,
      createdAt: now,
      singletonLeaseMs: 30_000,
    });
  }
  store.insertAddon({
    name: 'postgres-1',
    id: 'id-1',
    app: 'shop',
    kind: 'postgres',
    agent: 'a1',
    port: 5432,
    configVar: 'DATABASE_URL',
    desired: 'run',
    attachedUrl: null,
    deployId: null,
    state: 'up',
    pid: 10,
    restarts: 0,
    since: now,
    message: '',
    password: 'pw',
    adminPassword: 'admin',
    tls: null,
    createdAt: now,
  });
  store.insertAddonStandby({
    addon: 'postgres-1',
    agent: 'a2',
    role: 'standby',
    port: 5433,
    state: 'up',
    pid: 20,
    restarts: 0,
    since: now,
    message: '',
    replicationPassword: 'replication-secret',
    lagBytes: null,
    lagSeconds: null,
    lagAt: null,
    syncMode: 'async',
    syncActive: false,
    createdAt: now,
    ...standby,
  });
  return store;
}

test('automatic failover: only after the primary has been away the threshold; the rows swap, the old primary is fenced', async (t) => {
  const store = standbyStore(t, { lagBytes: 0, lagSeconds: 0, lagAt: 1_000_000 });
  let now = 1_000_000;
  const clock = { now: () => now } as Clock;
  const connected = new Set(['a2']);
  const jobs: string[] = [];
  const attached: string[] = [];
  const standbys = new AddonStandbys({
    store,
    hub: { isConnected: (a) => connected.has(a) },
    views: { agentViews: () => store.listAgents().map((a) => ({ name: a.name, instances: 0 }) as AgentView) },
    sync: { requestSync: () => undefined },
    runJob: (agent, fields) => {
      jobs.push(`${fields.action}@${agent}`);
      return Promise.resolve({ id: 'j', ok: true, error: '', errorCode: '', backups: [], backup: null, report: '' });
    },
    attach: (name, description) => attached.push(`${name}: ${description}`),
    issueCertificate: () => Promise.resolve({ certPem: '', keyPem: '' }),
    recordEvent: () => undefined,
    countOn: () => 0,
    failoverAfterMs: 30_000,
    clock,
    logger: pino({ level: 'silent' }),
  });
  const settle = () => new Promise((r) => setTimeout(r, 20));

  now += 29_000;
  standbys.tick();
  await settle();
  assert.equal(jobs.length, 0, 'not before the threshold');

  now += 2000;
  standbys.tick();
  await settle();
  assert.deepEqual(jobs, ['promote@a2']);
  assert.deepEqual(attached, ['postgres-1: Failover postgres-1 to a2']);
  const row = store.getAddon('postgres-1');
  assert.equal(row?.agent, 'a2');
  assert.equal(row?.port, 5433);
  const old = store.getAddonStandby('postgres-1');
  assert.equal(old?.agent, 'a1');
  assert.equal(old?.role, 'fenced');
  assert.equal(old?.port, 5432);
  assert.equal(old?.replicationPassword, 'replication-secret');
  assert.deepEqual(
    standbys.servers(store.getAddon('postgres-1') ?? assert.fail()).map((s) => [s.agent, s.role]),
    [
      ['a2', 'primary'],
      ['a1', 'fenced'],
    ],
  );

  // The former primary reporting itself as the primary (back before it got its new spec) is not a standby.
  connected.add('a1');
  const status = {
    name: 'postgres-1',
    app: 'shop',
    kind: 'postgres',
    pid: 30,
    port: 5432,
    restarts: 0,
    since: now,
    message: '',
    id: 'id-1',
  };
  standbys.onStatus('a1', { ...status, state: 'up', standbyRole: 'primary' });
  assert.equal(store.getAddonStandby('postgres-1')?.role, 'fenced');
  standbys.onStatus('a1', { ...status, state: 'up', standbyRole: 'standby' });
  assert.equal(store.getAddonStandby('postgres-1')?.role, 'standby');

  // No second failover while both agents are connected.
  now += 60_000;
  standbys.tick();
  await settle();
  assert.equal(jobs.filter((j) => j.startsWith('promote')).length, 1);
});

test('sync decision: on once the standby streams, degraded after it has been away the threshold, never for async', () => {
  const at = (o: Partial<Parameters<typeof syncDecision>[0]>) =>
    syncDecision({ mode: 'sync', active: false, streaming: false, awaySince: null, now: 100_000, degradeAfterMs: 10_000, ...o });
  assert.equal(at({ streaming: true }), 'enable');
  assert.equal(at({ streaming: true, active: true }), 'keep');
  assert.equal(at({ active: true, awaySince: 91_000 }), 'keep', 'away 9 s: still sync');
  assert.equal(at({ active: true, awaySince: 90_000 }), 'degrade', 'away 10 s: async');
  assert.equal(at({ active: false, awaySince: 0 }), 'keep', 'degraded already');
  assert.equal(at({ mode: 'async', streaming: true }), 'keep');
  assert.equal(at({ mode: 'async', active: true }), 'degrade');
});

test('sync standby: the lag checks turn sync on, degrade it while the standby is away (a hangar line), turn it on again', async (t) => {
  const store = standbyStore(t, { syncMode: 'sync' });
  let now = 1_000_000;
  const clock = { now: () => now } as Clock;
  let streaming = true;
  const jobs: string[] = [];
  const events: string[] = [];
  const standbys = new AddonStandbys({
    store,
    hub: { isConnected: () => true },
    views: { agentViews: () => store.listAgents().map((a) => ({ name: a.name, instances: 0 }) as AgentView) },
    sync: { requestSync: () => undefined },
    runJob: (agent, fields) => {
      if (fields.action !== 'replication') jobs.push(`${fields.action}@${agent}`);
      const report = JSON.stringify({
        role: 'primary',
        lsn: '0/100',
        standby: streaming ? { state: 'streaming', replayLsn: '0/100', lagBytes: 0, lagSeconds: 0 } : null,
      });
      return Promise.resolve({ id: 'j', ok: true, error: '', errorCode: '', backups: [], backup: null, report });
    },
    attach: () => undefined,
    issueCertificate: () => Promise.resolve({ certPem: '', keyPem: '' }),
    recordEvent: (_app, line) => events.push(line),
    countOn: () => 0,
    lagIntervalMs: 5000,
    syncDegradeAfterMs: 10_000,
    clock,
    logger: pino({ level: 'silent' }),
  });
  const step = async (ms: number) => {
    now += ms;
    standbys.tick();
    await new Promise((r) => setTimeout(r, 20));
  };
  const row = () => store.getAddon('postgres-1') ?? assert.fail();

  await step(5000);
  assert.deepEqual(jobs, ['sync-on@a1']);
  assert.deepEqual(standbys.replication(row()), { mode: 'sync', inForce: true });

  streaming = false;
  await step(5000); // first seen away
  await step(5000); // away 5 s
  assert.deepEqual(jobs, ['sync-on@a1'], 'not degraded before the threshold');
  assert.equal(standbys.replication(row())?.inForce, true);
  await step(5000); // away 10 s
  assert.deepEqual(jobs, ['sync-on@a1', 'sync-off@a1']);
  assert.deepEqual(standbys.replication(row()), { mode: 'sync', inForce: false });
  assert.match(events.at(-1) ?? '', /degraded to async/);
  await step(5000);
  assert.equal(jobs.length, 2, 'degraded once');

  streaming = true;
  await step(5000);
  assert.deepEqual(jobs, ['sync-on@a1', 'sync-off@a1', 'sync-on@a1']);
  assert.equal(standbys.replication(row())?.inForce, true);
  assert.match(events.at(-1) ?? '', /in force/);
});
