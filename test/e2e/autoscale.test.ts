import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AutoscaleView } from '../../common/api-types.js';
import type { AutoscaleDecision } from '../../coordinator/autoscale/autoscale-store.js';
import { startCluster, waitFor } from '../helpers/cluster.js';
import { deployFixture, waitForPs } from '../helpers/deploy-fixture.js';

test('autoscaling on p95: web grows past its minimum under slow load and shrinks back when it stops', { timeout: 600_000 }, async (t) => {
  const decisions: AutoscaleDecision[] = [];
  const cluster = await startCluster(t, {
    agents: 1,
    coordinator: {
      metricsIntervalMs: 1000,
      autoscaleIntervalMs: 1000,
      autoscaleWindowMs: 5000,
      autoscaleSustainMs: 2000,
      autoscaleUpCooldownMs: 4000,
      autoscaleDownCooldownMs: 4000,
    },
    onAutoscaleDecision: (d) => decisions.push(d),
  });
  const [agent] = cluster.agents;
  assert.ok(agent);
  // One gunicorn worker per instance: concurrent slow requests queue up.
  await deployFixture(cluster, 'shop', { procfile: 'web: gunicorn mysite.wsgi --bind 0.0.0.0:$PORT --workers 1\n' });

  const bad = await cluster.cli(['autoscale', 'web', '--min', '3', '--max', '2', '--p95', '200', '-a', 'shop']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--min must not be above --max/);
  const set = await cluster.cli(['autoscale', 'web', '--min', '1', '--max', '3', '--p95', '200', '-a', 'shop']);
  assert.equal(set.code, 0, set.stderr);

  let loading = true;
  const worker = async () => {
    while (loading) {
      try {
        await cluster.get(agent, 'shop', '/slow/?ms=250');
      } catch {
        // A request cut by a timeout is still load; keep going.
      }
    }
  };
  const workers = Array.from({ length: 6 }, () => worker());
  t.after(async () => {
    loading = false;
    await Promise.all(workers);
  });

  const grown = await waitForPs(
    cluster,
    'shop',
    'web to grow past 1',
    (r) => r.filter((x) => x.type === 'web' && x.state === 'up').length >= 2,
    120_000,
  );
  assert.ok(grown.filter((x) => x.type === 'web').length <= 3);
  loading = false;
  await Promise.all(workers);

  await waitForPs(cluster, 'shop', 'web back to 1', (r) => r.filter((x) => x.type === 'web').length === 1, 120_000);
  const view = await waitFor('the decisions to be listed', async () => {
    const res = await cluster.cli(['autoscale', '-a', 'shop', '--json']);
    assert.equal(res.code, 0, res.stderr);
    const v = JSON.parse(res.stdout) as AutoscaleView;
    return v.decisions.length >= 2 ? v : null;
  });
  assert.deepEqual(
    view.policies.map((p) => [p.type, p.min, p.max, p.p95Ms, p.quantity]),
    [['web', 1, 3, 200, 1]],
  );
  const ups = view.decisions.filter((d) => d.to > d.from);
  const downs = view.decisions.filter((d) => d.to < d.from);
  assert.ok(ups.length >= 1 && downs.length >= 1, JSON.stringify(view.decisions));
  assert.match(ups[0]?.reason ?? '', /p95 \d+ ms vs target 200 ms/);
  assert.equal(view.decisions[0]?.to, 1, 'the newest decision brought web back to its minimum');
  // Every decision went to the hook as well.
  assert.equal(decisions.length, view.decisions.length);
  // ... and to the app's logs, as `hangar` events.
  const events = await cluster.cli(['logs', '-a', 'shop', '--source', 'hangar', '-n', '500']);
  assert.equal(events.code, 0, events.stderr);
  assert.match(events.stdout, /hangar: Autoscaling web from 1 to \d+: /);
  assert.match(events.stdout, /hangar: Autoscaling web from \d+ to 1: /);

  const human = await cluster.cli(['autoscale', '-a', 'shop']);
  assert.match(human.stdout, /web\s+1-3/);

  const off = await cluster.cli(['autoscale', 'web', '--off', '-a', 'shop']);
  assert.equal(off.code, 0, off.stderr);
  const after = JSON.parse((await cluster.cli(['autoscale', '-a', 'shop', '--json'])).stdout) as AutoscaleView;
  assert.equal(after.policies.length, 0);
});
