import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Clock } from '../../common/clock.js';
import { SingletonFence } from '../../coordinator/fleet/singleton-fence.js';
import type { AgentRow } from '../../coordinator/store/store.js';

function agent(name: string, lastSeen: number, singletonLeaseMs = 10_000): AgentRow {
  return {
    name,
    address: '127.0.0.1',
    routerPort: 80,
    cpus: 1,
    memoryMb: 1,
    maxInstances: 10,
    version: 'x',
    lastSeen,
    createdAt: 0,
    singletonLeaseMs,
  };
}

function setup(agents: AgentRow[], connected: Set<string>) {
  let now = 100_000;
  const clock = { now: () => now } as Clock;
  const fence = new SingletonFence({ agents: () => agents, isConnected: (a) => connected.has(a), graceSeconds: 30, clock });
  return { fence, advance: (ms: number) => (now += ms) };
}

test('a singleton waits until no connected agent reports a copy', () => {
  const { fence } = setup([agent('a', 100_000), agent('b', 100_000)], new Set(['a', 'b']));
  assert.match(fence.blocker('shop', 'clock', 5) ?? '', /waiting for a to report/);
  fence.onReport('a', ['shop:clock.1:v1', 'shop:web.1:v1']);
  fence.onReport('b', ['other:clock.1:v3']);
  assert.match(fence.blocker('shop', 'clock', 5) ?? '', /waiting for clock\.1 \(v1\) on a to stop/);
  fence.onEvent('a', 'shop:clock.1:v1', 'stopping');
  assert.notEqual(fence.blocker('shop', 'clock', 5), null, 'still stopping');
  fence.onEvent('a', 'shop:clock.1:v1', 'stopped');
  assert.equal(fence.blocker('shop', 'clock', 5), null);
  assert.equal(fence.blocker('shop', 'worker', 5), null, 'only the type asked about counts');
  assert.equal(fence.blocker('other', 'web', 5), null, 'only the app asked about counts');
});

test('an agent out of touch blocks for its lease plus the stop timeout since it was last seen', () => {
  const agents = [agent('a', 100_000, 10_000), agent('b', 100_000)];
  const connected = new Set(['b']);
  const { fence, advance } = setup(agents, connected);
  fence.onReport('b', []);
  fence.onReport('a', ['shop:clock.1:v1']);
  assert.match(fence.blocker('shop', 'clock', 5) ?? '', /a is out of touch: waiting 17 s more for its lease to stop clock\.1 \(v1\)/);
  advance(16_000);
  assert.notEqual(fence.blocker('shop', 'clock', 5), null);
  advance(1_000);
  assert.equal(fence.blocker('shop', 'clock', 5), null);
  // Never heard of since the coordinator started: anything may run there until the lease passed.
  const fresh = setup([agent('c', 100_000, 10_000)], new Set());
  assert.match(fresh.fence.blocker('shop', 'clock', 0) ?? '', /any copy c may run/);
  fresh.advance(12_000);
  assert.equal(fresh.fence.blocker('shop', 'clock', 0), null);
});

test('blockerFor: only singleton types wait; stop_timeout defaults to graceSeconds', () => {
  const { fence, advance } = setup([agent('a', 100_000, 10_000)], new Set());
  const release = { app: 'shop', appJson: { formation: { worker: { quantity: 1 }, tick: { singleton: true, stop_timeout: 1 } } } };
  assert.equal(fence.blockerFor(release, 'worker'), null);
  assert.notEqual(fence.blockerFor(release, 'clock'), null, 'clock is a singleton by default');
  advance(13_000);
  assert.equal(fence.blockerFor(release, 'tick'), null, 'lease 10 s + stop_timeout 1 s + margin');
  assert.notEqual(fence.blockerFor(release, 'clock'), null, 'lease 10 s + graceSeconds 30 s');
});
