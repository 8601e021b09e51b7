import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProcessGroupUsage } from '../../agent/metrics/process-group-usage.js';
import { LatencyHistogram, TrafficRecorder } from '../../agent/metrics/traffic-recorder.js';

test('latency histogram: percentiles within the bucket error', () => {
  const h = new LatencyHistogram();
  assert.equal(h.quantile(0.95), 0);
  for (let i = 1; i <= 1000; i++) h.record(i);
  for (const [q, want] of [
    [0.5, 500],
    [0.95, 950],
    [0.99, 990],
  ] as const) {
    const got = h.quantile(q);
    assert.ok(Math.abs(got - want) / want < 0.13, `q${q}: ${got} vs ${want}`);
  }
  h.reset();
  h.record(0.2);
  assert.equal(h.quantile(0.5), 1);
  h.record(10_000_000);
  assert.ok(h.quantile(1) > 100_000);
});

test('traffic recorder: per app and per instance, status classes, in flight; resets each interval', () => {
  const r = new TrafficRecorder();
  for (let i = 0; i < 10; i++) r.record({ app: 'shop', status: i < 8 ? 200 : 503, durationMs: 20, instanceKey: 'shop:web.1:v1' }, 0);
  r.record({ app: 'shop', status: 404, durationMs: 5, instanceKey: 'shop:web.2:v1' }, 0);
  r.record({ app: '', status: 404, durationMs: 1, instanceKey: null }, 0);
  const first = r.take((key) => (key === 'shop:web.1:v1' ? 2 : 0), 1000);
  assert.equal(first.apps.length, 1);
  const shop = first.apps[0];
  assert.equal(shop?.requests, 11);
  assert.equal(shop?.status2xx, 8);
  assert.equal(shop?.status4xx, 1);
  assert.equal(shop?.status5xx, 2);
  assert.equal(shop?.inFlight, 2);
  const p95 = Number(shop?.p95Ms ?? 0);
  assert.ok(p95 > 15 && p95 < 25, `p95 ${p95}`);
  assert.equal(first.backends.find((b) => b.key === 'shop:web.1:v1')?.requests, 10);
  // Next interval: nothing finished, one request still in flight.
  const second = r.take((key) => (key === 'shop:web.1:v1' ? 1 : 0), 2000);
  assert.deepEqual(
    second.apps.map((a) => [a.key, a.requests, a.inFlight]),
    [['shop', 0, 1]],
  );
});

test('process group usage: sums CPU and RSS of the group members, from a /proc tree', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'hangar-proc-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  // stat fields: pid (comm) state ppid pgrp session ... utime(14) stime(15) ...
  const proc = async (pid: number, pgrp: number, utime: number, stime: number, rssPages: number, comm = 'gunicorn: worker') => {
    await mkdir(join(root, String(pid)), { recursive: true });
    const fields = ['S', '1', String(pgrp), String(pgrp), '0', '-1', '0', '0', '0', '0', '0', String(utime), String(stime)];
    fields.push(...Array.from({ length: 40 }, () => '0'));
    await writeFile(join(root, String(pid), 'stat'), `${pid} (${comm}) ${fields.join(' ')}\n`);
    await writeFile(join(root, String(pid), 'statm'), `1000 ${rssPages} 10 1 0 100 0\n`);
  };
  await proc(100, 100, 10, 5, 1000, 'gunicorn: master [my) app]');
  await proc(101, 100, 50, 0, 2000);
  await proc(102, 100, 50, 0, 2000);
  await proc(200, 200, 0, 0, 10); // another group: not counted
  const usage = new ProcessGroupUsage({ procRoot: root, clockTicks: 100, pageSize: 4096 });
  const first = usage.sample(new Map([['shop:web.1:v1', 100]]), 0).get('shop:web.1:v1');
  assert.deepEqual(first, { cpuPct: 0, rssBytes: 5000 * 4096, processes: 3 });
  // 10 s later the workers used 100 + 50 ticks: 1.5 s of CPU over 10 s = 15 %.
  await proc(101, 100, 150, 0, 2000);
  await proc(102, 100, 100, 0, 3000);
  const second = usage.sample(new Map([['shop:web.1:v1', 100]]), 10_000).get('shop:web.1:v1');
  assert.deepEqual(second, { cpuPct: 15, rssBytes: 6000 * 4096, processes: 3 });
  // A worker died: the group is rescanned, the dead one is dropped.
  await rm(join(root, '102'), { recursive: true });
  const third = usage.sample(new Map([['shop:web.1:v1', 100]]), 20_000).get('shop:web.1:v1');
  assert.equal(third?.processes, 2);
  assert.equal(third?.rssBytes, 3000 * 4096);
});
