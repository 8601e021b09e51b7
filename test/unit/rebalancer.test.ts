import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Clock } from '../../common/clock.js';
import { silentLogger } from '../../common/logger.js';
import { SecretBox } from '../../common/secret-box.js';
import { Fleet } from '../../coordinator/fleet/fleet.js';
import { Rebalancer } from '../../coordinator/fleet/rebalancer.js';
import { newInstanceRow, Store } from '../../coordinator/store/store.js';

function setup(t: TestContext, placed: Record<string, string[]>) {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-rebalancer-'));
  const store = new Store({ path: join(dir, 'hangar.db'), secrets: new SecretBox(randomBytes(32)) });
  t.after(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  let now = 1_000_000;
  const clock = { now: () => now } as Clock;
  store.createApp('shop', now);
  const release = store.createRelease({
    app: 'shop',
    artifactSha256: 'a'.repeat(64),
    procfile: { web: 'gunicorn x', clock: 'python clock.py' },
    config: {},
    appJson: null,
    status: 'running',
    description: 'Deploy',
    createdBy: 'test',
    createdAt: now,
  });
  store.setCurrentRelease('shop', release.version);
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
  for (const [agent, names] of Object.entries(placed)) {
    for (const name of names) {
      const [type = '', idx = '0'] = name.split('.');
      const key = `shop:${name}:v${release.version}`;
      store.insertInstance({
        ...newInstanceRow({ key, app: 'shop', type, idx: Number(idx), release: release.version, agent }, now),
        state: 'up',
      });
    }
  }
  const fleet = new Fleet({
    store,
    hub: { connected: () => ['a1', 'a2'], isConnected: () => true, appliedGeneration: () => Number.MAX_SAFE_INTEGER },
    sync: { requestSync: () => undefined },
    clock,
    logger: silentLogger(),
    drainTimeoutMs: 10_000,
    agentDownAfterMs: 6000,
    fence: { blockerFor: () => null },
  });
  const rebalancer = new Rebalancer({ store, fleet, busy: () => false, clock, logger: silentLogger(), healthTimeoutMs: 60_000 });
  const rows = () =>
    store
      .listInstances({ app: 'shop' })
      .map((i) => `${i.type}.${i.idx}@${i.agent}:${i.desired}`)
      .sort();
  const up = (key: string) =>
    store.updateInstanceStatus(key, { state: 'up', pid: 1, port: 1, restarts: 0, since: now, message: '', logTail: '' });
  return { store, rebalancer, rows, up, advance: (ms: number) => (now += ms) };
}

test('an app left on one agent is spread again: new copy first, the old one drained once it is up', (t) => {
  const { rebalancer, rows, up, advance } = setup(t, { a1: ['web.1', 'web.2', 'clock.1'] });
  rebalancer.tick();
  assert.deepEqual(rows(), ['clock.1@a1:run', 'web.1@a1:run', 'web.2@a1:run', 'web.3@a2:run']);
  rebalancer.tick();
  assert.deepEqual(rows(), ['clock.1@a1:run', 'web.1@a1:run', 'web.2@a1:run', 'web.3@a2:run'], 'nothing goes before the new one is up');
  up('shop:web.3:v1');
  rebalancer.tick();
  assert.deepEqual(rows(), ['clock.1@a1:run', 'web.1@a1:run', 'web.2@a1:drain', 'web.3@a2:run']);
  // Spread now (1 and 1; the singleton clock never moves): nothing more to do.
  advance(5000);
  rebalancer.tick();
  assert.equal(rebalancer.moving, null);
  assert.equal(rows().filter((r) => r.endsWith(':run')).length, 3);
});

test('a settled spread is left alone, and a move whose new copy never gets up is taken back', (t) => {
  const even = setup(t, { a1: ['web.1', 'web.2'], a2: ['web.3'] });
  even.rebalancer.tick();
  assert.equal(even.rebalancer.moving, null, '2 and 1 differ by one: no restart for nothing');

  const { rebalancer, rows, advance } = setup(t, { a1: ['web.1', 'web.2'] });
  rebalancer.tick();
  assert.ok(rebalancer.moving);
  advance(61_000);
  rebalancer.tick();
  assert.deepEqual(rows(), ['web.1@a1:run', 'web.2@a1:run']);
  assert.equal(rebalancer.moving, null);
  advance(5000);
  rebalancer.tick();
  assert.equal(rebalancer.moving, null, 'left alone for a while after a failed move');
});
