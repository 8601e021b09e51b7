import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { pino } from 'pino';
import { systemClock, type Clock } from '../../common/clock.js';
import { SecretBox } from '../../common/secret-box.js';
import { LeaderLease } from '../../coordinator/ha/leader-lease.js';
import { isFencedError } from '../../coordinator/ha/write-fence.js';
import { LogStore } from '../../coordinator/logs/log-store.js';
import { Store } from '../../coordinator/store/store.js';

const silent = pino({ level: 'silent' });

/** A wall clock and a monotonic clock the test moves by hand. */
function clocks() {
  const t = { wall: 1_700_000_000_000, mono: 1000 };
  const clock: Clock = { ...systemClock, now: () => t.wall };
  return { t, clock, monotonic: () => t.mono };
}

async function twoLeases(t: { after(fn: () => unknown): void }) {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-lease-'));
  const path = join(dir, 'hangar.db');
  const c = clocks();
  const events: string[] = [];
  const make = (name: string) => {
    const lease = new LeaderLease({
      path,
      leaseMs: 10_000,
      renewMs: 2000,
      marginMs: 3000,
      clock: c.clock,
      monotonic: c.monotonic,
      logger: silent,
    });
    lease.configure(
      { name, apiUrl: `http://${name}:7080`, grpcAddress: `${name}:7081` },
      { onElected: (epoch) => events.push(`${name} elected ${epoch}`), onLost: (reason) => events.push(`${name} lost: ${reason}`) },
    );
    return lease;
  };
  const a = make('a');
  const b = make('b');
  t.after(async () => {
    a.close();
    b.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { a, b, c, events, path };
}

test('one of two leases on one database leads; the other takes over only once the lease expired, under a higher epoch', async (t) => {
  const { a, b, c, events } = await twoLeases(t);
  a.tick();
  b.tick();
  assert.deepEqual(events, ['a elected 1']);
  assert.equal(a.epoch, 1);
  assert.equal(b.epoch, null);
  assert.equal(b.leader()?.holder, 'a');
  assert.equal(b.leader()?.apiUrl, 'http://a:7080');

  // a renews in time: b stays a follower however long this goes on.
  for (let i = 0; i < 5; i++) {
    c.t.wall += 2000;
    c.t.mono += 2000;
    a.tick();
    b.tick();
  }
  assert.equal(b.epoch, null);
  assert.deepEqual(
    b
      .coordinators()
      .map((r) => [r.name, r.role])
      .sort(),
    [
      ['a', 'leader'],
      ['b', 'follower'],
    ],
  );

  // a stops renewing (stalled); 10 s later by the wall clock b is elected under epoch 2.
  c.t.wall += 9999;
  b.tick();
  assert.equal(b.epoch, null, 'not before the lease expired');
  c.t.wall += 1;
  b.tick();
  assert.equal(b.epoch, 2);
  assert.equal(b.state().holder, 'b');

  // a comes back: its renewal finds the lease taken, and it steps down.
  a.tick();
  assert.equal(a.epoch, null);
  assert.deepEqual(events, ['a elected 1', 'b elected 2', 'a lost: another coordinator holds the lease now']);
});

test('the leader steps down on its own monotonic clock when the database does not renew its lease in time', async (t) => {
  const { a, c, events, path } = await twoLeases(t);
  a.tick();
  assert.equal(a.isLeader(), true);
  // 7 s (lease - margin) after the last good renewal by the monotonic clock (the wall clock is not what counts), a is out.
  c.t.mono += 6999;
  assert.equal(a.isLeader(), true);
  c.t.mono += 1;
  assert.equal(a.isLeader(), false);
  // A stall that nobody used (the lease row still has a's epoch): a late renewal lets it carry on.
  a.tick();
  assert.equal(a.epoch, 1);
  assert.equal(a.isLeader(), true);
  // A database that does not answer (another writer holds its lock past the busy timeout): a steps down.
  const blocker = new Database(path);
  t.after(() => blocker.close());
  blocker.exec('BEGIN IMMEDIATE');
  c.t.mono += 7000;
  a.tick();
  blocker.exec('ROLLBACK');
  assert.equal(a.epoch, null);
  assert.match(events.at(-1) ?? '', /^a lost: no renewal of the lease for 7\d\d\d ms/);
});

test('a released lease is taken at the next tick; a lease held under the same name is taken over at once', async (t) => {
  const { a, b, c, path } = await twoLeases(t);
  a.tick();
  a.release();
  b.tick();
  assert.equal(b.epoch, 2);
  // b's process dies without releasing; a new process under the name b (same host, same port) takes over at once.
  const again = new LeaderLease({ path, clock: c.clock, monotonic: c.monotonic, logger: silent });
  t.after(() => again.close());
  let elected = 0;
  again.configure(
    { name: 'b', apiUrl: 'http://b:7080', grpcAddress: 'b:7081' },
    { onElected: (e) => (elected = e), onLost: () => undefined },
  );
  again.tick();
  assert.equal(elected, 3);
});

test('the write fence: a stale leader writes nothing to the store or the log store once another is elected, and is told', async (t) => {
  const { a, b, c, path } = await twoLeases(t);
  a.tick();
  const secrets = new SecretBox(randomBytes(32));
  let fenced = 0;
  const store = new Store({ path, secrets, fence: { epoch: 1, onFenced: () => fenced++ } });
  const logs = new LogStore({ path, fence: { epoch: 1, onFenced: () => fenced++ } });
  t.after(() => {
    logs.close();
    store.close();
  });
  store.createApp('shop', 1);
  store.setMeta('marker', 'before');
  logs.ingest('agent-1', 'e1', [{ seq: 1, ts: 1, app: 'shop', source: 'app[web.1]', stream: 'stdout', line: 'hello' }]);
  assert.equal(fenced, 0);

  c.t.wall += 10_000;
  b.tick();
  assert.equal(b.epoch, 2);

  for (const write of [
    () => store.createApp('other', 2),
    () => store.setMeta('marker', 'after'),
    () => store.deleteApp('shop'),
    () => store.nextGeneration(),
    () => logs.ingest('agent-1', 'e1', [{ seq: 2, ts: 2, app: 'shop', source: 'app[web.1]', stream: 'stdout', line: 'stale' }]),
  ]) {
    assert.throws(write, (err: unknown) => isFencedError(err));
  }
  assert.equal(fenced, 5);
  // Reads still work, and nothing of the stale leader's landed.
  assert.deepEqual(
    store.listApps().map((app) => app.name),
    ['shop'],
  );
  assert.equal(store.getMeta('marker'), 'before');
  assert.equal(logs.acked('agent-1', 'e1'), 1);
  // Log lines are checked once a transaction (the ingest also updates log_usage): none landed.
  const reader = new Database(path, { readonly: true });
  t.after(() => reader.close());
  assert.equal(reader.prepare('SELECT count(*) FROM log_lines').pluck().get(), 1);

  // The new leader's own connection, fenced to epoch 2, writes.
  const leaderStore = new Store({ path, secrets, fence: { epoch: 2, onFenced: () => assert.fail('fenced the leader') } });
  t.after(() => leaderStore.close());
  leaderStore.createApp('other', 3);
  assert.deepEqual(
    store.listApps().map((app) => app.name),
    ['other', 'shop'],
  );
});
