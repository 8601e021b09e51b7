import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Clock } from '../../common/clock.js';
import { SecretBox } from '../../common/secret-box.js';
import { AgentReports } from '../../coordinator/fleet/agent-reports.js';
import { newInstanceRow, Store } from '../../coordinator/store/store.js';
import type { InstanceStatus__Output } from '../../proto/loader.js';

const WEB = 'shop:web.1:v1';
const WORKER = 'shop:worker.1:v1';

function setup(t: TestContext) {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-agent-reports-'));
  const store = new Store({ path: join(dir, 'hangar.db'), secrets: new SecretBox(randomBytes(32)) });
  t.after(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const now = 1_000_000;
  const clock = { now: () => now } as Clock;
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
  store.insertInstance(newInstanceRow({ key: WEB, app: 'shop', type: 'web', idx: 1, release: 1, agent: 'a1' }, now));
  store.insertInstance(newInstanceRow({ key: WORKER, app: 'shop', type: 'worker', idx: 1, release: 1, agent: 'a1' }, now));
  const syncs: (string | undefined)[] = [];
  const reports = new AgentReports({ store, clock, sync: { requestSync: (agent?: string) => void syncs.push(agent) } });
  return { store, reports, syncs };
}

function status(key: string, state: string, fields: Partial<InstanceStatus__Output> = {}): InstanceStatus__Output {
  return {
    key,
    state,
    pid: state === 'up' ? 100 : 0,
    port: key === WEB && state === 'up' ? 5000 : 0,
    restarts: 0,
    since: 2_000_000,
    message: '',
    logTail: '',
    memoryBytes: 0,
    memoryLimitBytes: 0,
    reason: '',
    cpuLimit: 0,
    ...fields,
  };
}

test('a repeated heartbeat leaves the rows as the first one wrote them and changes no routes', (t) => {
  const { store, reports, syncs } = setup(t);
  const beat = [status(WEB, 'up'), status(WORKER, 'up')];
  reports.onHeartbeat('a1', beat);
  assert.equal(store.getInstance(WEB)?.state, 'up');
  assert.equal(store.getInstance(WEB)?.port, 5000);
  assert.equal(syncs.length, 1, 'the web instance came up: routes changed');
  reports.onHeartbeat('a1', beat);
  reports.onHeartbeat('a1', [status(WEB, 'up'), status(WORKER, 'up')]);
  assert.equal(syncs.length, 1);
  assert.equal(store.getInstance(WORKER)?.state, 'up');
});

test('a heartbeat after an instance event is recorded again, even when it repeats the one before', (t) => {
  const { store, reports } = setup(t);
  const beat = [status(WEB, 'up'), status(WORKER, 'up')];
  reports.onHeartbeat('a1', beat);
  reports.applyStatuses('a1', [status(WORKER, 'crashed', { restarts: 1, since: 2_000_500 })]);
  assert.equal(store.getInstance(WORKER)?.state, 'crashed');
  reports.onHeartbeat('a1', beat);
  assert.equal(store.getInstance(WORKER)?.state, 'up');
  assert.equal(store.getInstance(WORKER)?.restarts, 0);
});

test('a heartbeat repeating itself is recorded again after a placement changed the rows', (t) => {
  const { store, reports, syncs } = setup(t);
  const beat = [status(WEB, 'up'), status(WORKER, 'up')];
  reports.onHeartbeat('a1', beat);
  // The worker placed afresh under the same key on the same agent: the row starts over.
  store.deleteInstance(WORKER);
  store.insertInstance(newInstanceRow({ key: WORKER, app: 'shop', type: 'worker', idx: 1, release: 1, agent: 'a1' }, 3_000_000));
  assert.equal(store.getInstance(WORKER)?.state, 'starting');
  reports.onHeartbeat('a1', beat);
  assert.equal(store.getInstance(WORKER)?.state, 'up');
  // The web instance moved to a2, which starts it: a1's heartbeat no longer speaks for it.
  store.moveInstance(WEB, 'a2', 3_000_000, 'moved');
  const before = syncs.length;
  reports.onHeartbeat('a1', beat);
  assert.equal(store.getInstance(WEB)?.state, 'starting');
  assert.equal(store.getInstance(WEB)?.agent, 'a2');
  assert.equal(syncs.length, before);
});

test('memory against limits is kept from every heartbeat, repeated or not', (t) => {
  const { reports } = setup(t);
  const beat = [status(WEB, 'up', { memoryBytes: 10, memoryLimitBytes: 100 }), status(WORKER, 'up')];
  reports.onHeartbeat('a1', beat);
  reports.onHeartbeat('a1', [status(WEB, 'up', { memoryBytes: 20, memoryLimitBytes: 100 }), status(WORKER, 'up')]);
  assert.deepEqual(reports.limitsOf(WEB), { memoryBytes: 20, memoryLimitBytes: 100, cpuLimit: null, reason: null });
  assert.equal(reports.limitsOf(WORKER), null);
});
