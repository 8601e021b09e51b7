import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FIXTURES, startCluster, waitFor } from '../helpers/cluster.js';
import { waitForPs } from '../helpers/deploy-fixture.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

test('deploy, route, scale, self-heal and scale to zero on a two-agent fleet', { timeout: 600_000 }, async (t) => {
  const cluster = await startCluster(t, { agents: 2 });
  const [a1, a2] = cluster.agents;
  assert.ok(a1 && a2);

  const agents = await cluster.cli(['agents', '--json']);
  assert.equal(agents.code, 0, agents.stderr);
  const agentRows = JSON.parse(agents.stdout) as { name: string; state: string }[];
  assert.deepEqual(agentRows.map((a) => [a.name, a.state]).sort(), [
    ['agent-1', 'up'],
    ['agent-2', 'up'],
  ]);

  assert.equal((await cluster.cli(['apps:create', 'shop'])).code, 0);
  // Config before the first deploy; the SQLite file is shared by both agents on this one host.
  const dbUrl = `sqlite:///${join(cluster.appDir, 'shop.sqlite3')}`;
  const set = await cluster.cli(['config:set', `DATABASE_URL=${dbUrl}`, 'DJANGO_ALLOWED_HOSTS=.localhost', '-a', 'shop']);
  assert.equal(set.code, 0, set.stderr);

  const deploy = await cluster.cli(['deploy', join(FIXTURES, 'django-app'), '-a', 'shop'], { timeoutMs: 300_000 });
  assert.equal(deploy.code, 0, `deploy failed:\n${deploy.stdout}\n${deploy.stderr}`);
  const deployOutput = deploy.stdout + deploy.stderr;
  assert.match(deployOutput, /Installing requirements|virtualenv/i, 'build output is shown');
  assert.match(deployOutput, /Applying notes\.0001_initial/, 'the release phase migrated');

  // First deploy: web=1, worker=0.
  let rows = await waitForPs(cluster, 'shop', 'web.1 up', (r) => r.length === 1 && r[0]?.state === 'up');
  assert.equal(rows[0]?.id, 'web.1');
  assert.equal(rows[0]?.type, 'web');
  assert.equal(rows[0]?.release, 'v1');

  // Reachable through both agents' routers, whichever agent runs it.
  for (const agent of [a1, a2]) {
    const res = await waitFor(
      'the router to serve shop',
      async () => {
        const r = await cluster.get(agent, 'shop');
        return r.status === 200 ? r : null;
      },
      30_000,
    );
    const body = JSON.parse(res.body) as { instance: string; release: string; app: string };
    assert.equal(body.instance, 'web.1');
    assert.equal(body.release, 'v1');
    assert.equal(body.app, 'shop');
  }
  // The migration ran against the configured database: the app can write to it.
  const note = await cluster.get(a1, 'shop', '/notes/');
  assert.equal(note.status, 200, note.body);

  // Scale: web=3 worker=2 spread over both agents.
  const scale = await cluster.cli(['scale', 'web=3', 'worker=2', '-a', 'shop']);
  assert.equal(scale.code, 0, scale.stderr);
  rows = await waitForPs(
    cluster,
    'shop',
    '3 web and 2 worker up',
    (r) =>
      r.filter((x) => x.type === 'web' && x.state === 'up').length === 3 &&
      r.filter((x) => x.type === 'worker' && x.state === 'up').length === 2 &&
      r.length === 5,
  );
  assert.deepEqual(new Set(rows.filter((r) => r.type === 'web').map((r) => r.agent)), new Set(['agent-1', 'agent-2']));
  assert.deepEqual(new Set(rows.filter((r) => r.type === 'worker').map((r) => r.agent)), new Set(['agent-1', 'agent-2']));
  assert.deepEqual(
    rows
      .filter((r) => r.type === 'web')
      .map((r) => r.id)
      .sort(),
    ['web.1', 'web.2', 'web.3'],
  );

  // Requests through one router reach instances on both agents.
  const seen = new Set<string>();
  await waitFor(
    'requests to reach all three web instances',
    async () => {
      for (let i = 0; i < 12; i++) {
        const r = await cluster.get(i % 2 ? a1 : a2, 'shop');
        assert.equal(r.status, 200);
        seen.add((JSON.parse(r.body) as { instance: string }).instance);
      }
      return seen.size === 3;
    },
    30_000,
  );

  // The worker really runs: its output lands in its instance's files.
  const worker = rows.find((r) => r.id === 'worker.1');
  assert.ok(worker);
  const workerLog = join(cluster.dir, `agent-${worker.agent}`, 'instances', 'shop_worker.1_v1', 'stdout.log');
  await waitFor('worker output', async () => (await readFile(workerLog, 'utf8')).trim().length > 0, 20_000);

  // kill -9 of a web process: the agent brings it back.
  const victim = rows.find((r) => r.id === 'web.2');
  assert.ok(victim?.pid);
  process.kill(victim.pid, 'SIGKILL');
  rows = await waitForPs(cluster, 'shop', 'web.2 restarted', (r) => {
    const w = r.find((x) => x.id === 'web.2');
    return Boolean(w && w.state === 'up' && w.pid !== victim.pid && w.restarts >= 1);
  });
  const web2 = rows.find((r) => r.id === 'web.2');
  assert.ok(web2?.pid && alive(web2.pid));

  // Scale to zero: nothing is left running, process groups included.
  const pgids = rows.map((r) => r.pid).filter((p): p is number => p !== null);
  assert.equal(pgids.length, 5);
  const zero = await cluster.cli(['scale', 'web=0', 'worker=0', '-a', 'shop']);
  assert.equal(zero.code, 0, zero.stderr);
  await waitForPs(cluster, 'shop', 'no instances', (r) => r.length === 0);
  await waitFor('every process group to be gone', () => pgids.every((p) => !groupAlive(p)), 30_000);
  const after = await cluster.get(a1, 'shop');
  assert.equal(after.status, 503, 'no web instance: the router says so');
});
