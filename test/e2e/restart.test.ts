import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { request } from 'undici';
import { FIXTURES, startCluster, type CliResult } from '../helpers/cluster.js';
import { ps, waitForPs } from '../helpers/deploy-fixture.js';
import { startHttpLoad } from '../helpers/http-load.js';

const APP = 'shop';

function out(r: CliResult): string {
  return `${r.stdout}\n${r.stderr}`;
}

test(
  'hangar restart is rolling and health-gated: no request fails under load; one instance or one type',
  { timeout: 420_000 },
  async (t) => {
    const cluster = await startCluster(t, { agents: 1, coordinator: { healthTimeoutMs: 60_000, graceSeconds: 10 } });
    assert.equal((await cluster.cli(['apps:create', APP])).code, 0);
    const set = await cluster.cli([
      'config:set',
      `DATABASE_URL=sqlite:///${join(cluster.appDir, 'shop.sqlite3')}`,
      'DJANGO_ALLOWED_HOSTS=.localhost',
      '-a',
      APP,
    ]);
    assert.equal(set.code, 0, set.stderr);
    const deploy = await cluster.cli(['deploy', join(FIXTURES, 'django-app'), '-a', APP], { timeoutMs: 300_000 });
    assert.equal(deploy.code, 0, out(deploy));
    // The SECRET_KEY apps:create made passes Django's own deploy check.
    assert.doesNotMatch(out(deploy), /security\.W009/);
    const config = await request(`${cluster.coordinator.url}/v1/apps/${APP}/config`, {
      headers: { authorization: `Bearer ${cluster.coordinator.adminToken}` },
    });
    const key = ((await config.body.json()) as { config: Record<string, string> }).config.SECRET_KEY ?? '';
    assert.ok(key.length >= 50 && new Set(key).size >= 5, `SECRET_KEY of ${key.length} characters`);

    assert.equal((await cluster.cli(['scale', 'web=2', 'worker=1', '-a', APP])).code, 0);
    let rows = await waitForPs(cluster, APP, 'web=2 worker=1 up', (r) => r.length === 3 && r.every((x) => x.state === 'up'));

    await t.test('restart of everything under load: one at a time, 0 failed requests, exit 0 when healthy', async () => {
      const before = new Map(rows.map((r) => [r.id, r.pid]));
      const load = startHttpLoad({
        ports: cluster.agents.map((a) => a.routerPort),
        host: `${APP}.localhost`,
        clients: 4,
        postEvery: 10,
        postPath: '/notes/',
        pauseMs: 20,
        maxMs: 150_000,
      });
      const res = await cluster.cli(['restart', '-a', APP], { timeoutMs: 200_000 });
      await new Promise((r) => setTimeout(r, 2000));
      const { ok, failures } = await load.stop();
      assert.equal(res.code, 0, out(res));
      assert.match(res.stdout, /Restarting all processes of shop one at a time/);
      assert.match(res.stdout, /web\.1: draining from the routers/);
      assert.match(res.stdout, /web\.2: up again \(\d\/3\)/);
      assert.match(res.stdout, /shop restarted \(v\d+\)/);
      assert.ok(ok > 0, 'no request was served');
      assert.deepEqual(failures, [], `${failures.length} failed requests out of ${ok + failures.length}`);
      t.diagnostic(`restart: ${ok} requests served, 0 failed`);
      rows = await ps(cluster, APP);
      for (const r of rows) {
        assert.equal(r.state, 'up', r.id);
        assert.notEqual(r.pid, before.get(r.id), `${r.id} has a new process`);
      }
    });

    await t.test('restart web.2 restarts only web.2; restart worker only the workers', async () => {
      const before = new Map(rows.map((r) => [r.id, r.pid]));
      const one = await cluster.cli(['restart', 'web.2', '-a', APP], { timeoutMs: 120_000 });
      assert.equal(one.code, 0, out(one));
      assert.doesNotMatch(one.stdout, /web\.1: restarting/);
      rows = await ps(cluster, APP);
      assert.equal(rows.find((r) => r.id === 'web.1')?.pid, before.get('web.1'));
      assert.equal(rows.find((r) => r.id === 'worker.1')?.pid, before.get('worker.1'));
      assert.notEqual(rows.find((r) => r.id === 'web.2')?.pid, before.get('web.2'));

      const workers = await cluster.cli(['restart', 'worker', '-a', APP], { timeoutMs: 120_000 });
      assert.equal(workers.code, 0, out(workers));
      const after = await ps(cluster, APP);
      assert.notEqual(after.find((r) => r.id === 'worker.1')?.pid, before.get('worker.1'));
      assert.equal(after.find((r) => r.id === 'web.1')?.pid, before.get('web.1'));
    });

    await t.test('restart of a lone web instance under load: a stand-in serves meanwhile, 0 failed requests', async () => {
      assert.equal((await cluster.cli(['scale', 'web=1', 'worker=0', '-a', APP])).code, 0);
      rows = await waitForPs(cluster, APP, 'web=1 alone', (r) => r.length === 1 && r[0]?.id === 'web.1' && r[0].state === 'up');
      const pid = rows[0]?.pid;
      const load = startHttpLoad({
        ports: cluster.agents.map((a) => a.routerPort),
        host: `${APP}.localhost`,
        clients: 4,
        postEvery: 0,
        postPath: '/',
        pauseMs: 20,
        maxMs: 150_000,
      });
      const res = await cluster.cli(['restart', 'web', '-a', APP], { timeoutMs: 200_000 });
      await new Promise((r) => setTimeout(r, 1000));
      const { ok, failures } = await load.stop();
      assert.equal(res.code, 0, out(res));
      assert.match(res.stdout, /web\.1 is the only web instance: starting web\.2 beside it while it restarts/);
      assert.match(res.stdout, /web\.2: draining \(the stand-in is no longer needed\)/);
      assert.ok(ok > 0, 'no request was served');
      assert.deepEqual(failures, [], `${failures.length} failed requests out of ${ok + failures.length}`);
      t.diagnostic(`lone web restart: ${ok} requests served, 0 failed`);
      const after = await waitForPs(
        cluster,
        APP,
        'web.1 alone again',
        (r) => r.length === 1 && r[0]?.id === 'web.1' && r[0].state === 'up',
      );
      assert.notEqual(after[0]?.pid, pid, 'web.1 has a new process');
    });
  },
);
