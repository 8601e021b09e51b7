import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AgentView } from '../../common/api-types.js';
import { startCluster, waitFor } from '../helpers/cluster.js';
import { deployFixture, ps, waitForPs } from '../helpers/deploy-fixture.js';

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

test('a down agent: shown down, its instances come up elsewhere, and it stops its copies when back', { timeout: 600_000 }, async (t) => {
  const cluster = await startCluster(t, { agents: 2, coordinator: { agentDownAfterMs: 3000 } });
  await deployFixture(cluster, 'shop');
  const scale = await cluster.cli(['scale', 'web=2', 'worker=1', '-a', 'shop']);
  assert.equal(scale.code, 0, scale.stderr);
  const before = await waitForPs(cluster, 'shop', 'web=2 worker=1 up', (r) => r.length === 3 && r.every((x) => x.state === 'up'));

  // The agent running the singleton worker.1 goes away without stopping its instances (as a crash would).
  const worker = before.find((r) => r.id === 'worker.1');
  assert.ok(worker?.pid);
  const victimName = worker.agent;
  const survivorName = victimName === 'agent-1' ? 'agent-2' : 'agent-1';
  const victim = cluster.agents.find((a) => a.name === victimName);
  assert.ok(victim);
  const stale = before.filter((r) => r.agent === victimName).map((r) => ({ id: r.id, pid: r.pid as number }));
  // Safety net: whatever happens below, the victim's processes do not outlive the test.
  t.after(() => {
    for (const s of stale) {
      try {
        process.kill(-s.pid, 'SIGKILL');
      } catch {
        // Already gone: what the test expects.
      }
    }
  });
  await victim.close();
  assert.ok(
    stale.every((s) => groupAlive(s.pid)),
    'the instances keep running while their agent is away',
  );

  await waitFor(
    `${victimName} shown down`,
    async () => {
      const agents = JSON.parse((await cluster.cli(['agents', '--json'])).stdout) as AgentView[];
      return agents.find((a) => a.name === victimName)?.state === 'down';
    },
    30_000,
  );
  const moved = await waitForPs(
    cluster,
    'shop',
    `every instance up on ${survivorName}`,
    (r) => r.length === 3 && r.every((x) => x.state === 'up' && x.agent === survivorName),
  );
  assert.deepEqual(moved.map((r) => r.id).sort(), ['web.1', 'web.2', 'worker.1']);
  const survivor = cluster.agents.find((a) => a.name === survivorName);
  assert.ok(survivor);
  for (let i = 0; i < 4; i++) assert.equal((await cluster.get(survivor, 'shop')).status, 200);

  // The agent comes back (same data dir): it adopts its old instances, then stops them, because the
  // coordinator no longer lists them for it. worker.1 never runs twice once it is back.
  await cluster.startAgent(victimName);
  await waitFor('the stale copies to stop', () => stale.every((s) => !groupAlive(s.pid)), 60_000);
  const after = await ps(cluster, 'shop');
  assert.equal(after.filter((r) => r.id === 'worker.1').length, 1);
  assert.equal(after.find((r) => r.id === 'worker.1')?.agent, survivorName);
  const agents = JSON.parse((await cluster.cli(['agents', '--json'])).stdout) as AgentView[];
  assert.equal(agents.find((a) => a.name === victimName)?.state, 'up');
});
