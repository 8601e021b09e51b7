import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Clock } from '../../common/clock.js';
import { parseInstanceKey } from '../../common/vocabulary.js';
import { parseDuration as parseSince } from '../../common/duration.js';
import { MetricsStore } from '../../coordinator/metrics/metrics-store.js';
import { Store } from '../../coordinator/store/store.js';
import type { MetricsReport__Output, TrafficStats__Output } from '../../proto/loader.js';
import { randomBytes } from 'node:crypto';
import { SecretBox } from '../../common/secret-box.js';
import { isFencedError } from '../../coordinator/ha/write-fence.js';
import { existingDayPartitions } from '../../coordinator/store/postgres-partitions.js';
import { testPostgres } from '../helpers/postgres-server.js';

function traffic(key: string, requests: number, p95Ms: number, s5 = 0): TrafficStats__Output {
  return {
    key,
    requests,
    p50Ms: p95Ms / 2,
    p95Ms,
    p99Ms: p95Ms * 1.5,
    status2xx: requests - s5,
    status3xx: 0,
    status4xx: 0,
    status5xx: s5,
    inFlight: 1,
  };
}

function report(ts: number, cpu: number, requests: number, p95: number): MetricsReport__Output {
  return {
    ts,
    intervalMs: 10_000,
    host: { cpu_pct: cpu, mem_used_bytes: 1e9, mem_total_bytes: 4e9 },
    instances: [{ key: 'shop:web.1:v2', cpuPct: cpu, rssBytes: 50e6, processes: 3 }],
    apps: [traffic('shop', requests, p95, 1)],
    backends: [traffic('shop:web.1:v2', requests, p95, 1)],
  };
}

test('parsers', () => {
  assert.deepEqual(parseInstanceKey('shop:web.2:v13'), { app: 'shop', type: 'web', idx: 2, release: 13 });
  assert.equal(parseInstanceKey('nonsense'), null);
  assert.equal(parseSince('15m'), 900_000);
  assert.equal(parseSince('2d'), 172_800_000);
  assert.equal(parseSince('1 hour'), null);
});

/** A Store in a temp data dir (SQLite) or on a fresh PostgreSQL database. */
async function openStore(t: TestContext, engine: 'sqlite' | 'postgres'): Promise<Store> {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-metrics-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = engine === 'sqlite' ? join(dir, 'hangar.db') : (await testPostgres()).createDatabase('metrics');
  const store = new Store({ path, secrets: new SecretBox(randomBytes(32)) });
  t.after(() => store.close());
  return store;
}

for (const engine of ['sqlite', 'postgres'] as const)
  test(`metrics store on ${engine}: windows over raw samples, weighted percentiles, minute rollups, retention`, async (t) => {
    let now = 1_700_000_000_000 - (1_700_000_000_000 % 60_000);
    const clock: Clock = { now: () => now, setTimeout: () => ({}), clearTimeout: () => undefined };
    const store = await openStore(t, engine);
    store.createApp('shop', now);
    const metrics = new MetricsStore({ store, clock, logger: pino({ level: 'silent' }), rawRetentionMs: 3_600_000 });
    let seen = 0;
    metrics.onReport(() => seen++);

    // Two routers report the same app: 100 requests at p95 100 ms and 300 at p95 200 ms.
    now += 10_000;
    metrics.ingest('a1', report(now, 10, 100, 100));
    metrics.ingest('a2', { ...report(now, 30, 300, 200), instances: [] });
    assert.equal(seen, 2);
    assert.equal(metrics.latest().get('a1')?.host.cpu_pct, 10);
    const m = metrics.appMetrics('shop', 600_000, []);
    assert.equal(m.traffic.requests, 400);
    assert.equal(m.traffic.p95Ms, 175);
    assert.equal(m.traffic.rps, 40);
    assert.equal(m.traffic.status['5xx'], 2);
    assert.equal(m.traffic.inFlight, 2);
    const web1 = m.instances.find((i) => i.id === 'web.1');
    assert.ok(web1);
    assert.equal(web1.release, 'v2');
    assert.equal(web1.agent, 'a1');
    assert.equal(web1.rssBytes, 50e6);
    assert.equal(web1.traffic?.requests, 400);

    const window = metrics.windowStats('shop', now - 60_000);
    assert.equal(window.traffic.p95, 175);
    assert.equal(window.cpuByType.get('web')?.cpuPct, 10);

    // The next minute: the first one is rolled up on flush.
    now += 60_000;
    metrics.ingest('a1', report(now, 50, 10, 100));
    metrics.flush();
    const rollups = store.database.prepare("SELECT * FROM metric_rollups WHERE scope = 'app'").all() as { data: string; agent: string }[];
    assert.equal(rollups.length, 2);
    const a1 = JSON.parse(rollups.find((r) => r.agent === 'a1')?.data ?? '{}') as { requests: number; p95: number };
    assert.equal(a1.requests, 100);
    assert.equal(a1.p95, 100);
    // A long window reads the rollups; the agent view averages host figures.
    const day = metrics.appMetrics('shop', 86_400_000, []);
    assert.equal(day.traffic.requests, 400);
    assert.ok(day.series.length >= 1);
    const agent = metrics.agentMetrics('a1', 600_000, 'up');
    assert.equal(agent.mean.cpu_pct, 30);
    assert.equal(agent.host.cpu_pct, 50);

    // Retention: raw samples older than an hour go, rollups stay.
    now += 2 * 3_600_000;
    metrics.maintain(now);
    assert.equal((store.database.prepare('SELECT COUNT(*) AS n FROM metric_samples').get() as { n: number }).n, 0);
    assert.ok((store.database.prepare('SELECT COUNT(*) AS n FROM metric_rollups').get() as { n: number }).n > 0);
    metrics.close();
  });

test('metrics store on PostgreSQL: days made ahead, old days of raw samples dropped as leader, refused when not', async (t) => {
  const DAY = 86_400_000;
  const start = Date.UTC(2026, 11, 1, 12);
  let now = start;
  const clock: Clock = { now: () => now, setTimeout: () => ({}), clearTimeout: () => undefined };
  const store = await openStore(t, 'postgres');
  const db = store.database;
  const days = (table: 'metric_samples' | 'metric_rollups') =>
    existingDayPartitions(db, table).map((p) => new Date(p.start).toISOString().slice(0, 10));
  let fenced = 0;
  db.prepare('UPDATE coordinator_lease SET epoch = 3 WHERE id = 1').run();
  const metrics = new MetricsStore({ store, clock, logger: pino({ level: 'silent' }), fence: { epoch: 3, onFenced: () => fenced++ } });
  t.after(() => metrics.close());
  metrics.start();
  assert.deepEqual(days('metric_samples'), ['2026-12-01', '2026-12-02'], 'today and tomorrow, ahead of any sample');
  // A report from an agent whose clock is two days behind: its day is made for it.
  metrics.ingest('a1', report(start - 2 * DAY, 10, 10, 10));
  metrics.ingest('a1', report(start, 10, 10, 10));
  metrics.flush(true);
  assert.deepEqual(days('metric_samples'), ['2026-11-29', '2026-12-01', '2026-12-02']);
  assert.equal(db.prepare('SELECT count(*) FROM metric_samples').pluck().get(), 8, 'host, instance, app and backend of two reports');

  now = start + 3 * DAY;
  metrics.maintain(now);
  assert.deepEqual(days('metric_samples'), ['2026-12-04', '2026-12-05'], 'whole days before the raw retention dropped');
  assert.ok(days('metric_rollups').includes('2026-11-29'), 'rollups are kept 30 days');
  assert.equal(db.prepare('SELECT count(*) FROM metric_samples').pluck().get(), 0);

  // Another coordinator took the lease over: no partition is dropped, and this one steps down.
  metrics.ingest('a1', report(now, 10, 10, 10));
  metrics.flush(true);
  db.prepare('UPDATE coordinator_lease SET epoch = 4 WHERE id = 1').run();
  assert.throws(
    () => metrics.maintain(now + 3 * DAY),
    (err) => isFencedError(err) && (err as { code?: string }).code === 'NOT_LEADER',
  );
  assert.equal(fenced, 1);
  assert.deepEqual(days('metric_samples').slice(0, 2), ['2026-12-04', '2026-12-05'], 'the old days are still there');
});
