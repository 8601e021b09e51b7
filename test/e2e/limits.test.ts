import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FIXTURES, startCluster, waitFor, type Cluster } from '../helpers/cluster.js';
import { deployFixture, waitForPs } from '../helpers/deploy-fixture.js';
import type { PsRow } from '../../common/api-types.js';

const MEMORY = '/sys/fs/cgroup/memory';
const MiB = 1024 * 1024;

async function hangarLines(cluster: Cluster, app: string): Promise<string[]> {
  const res = await cluster.cli(['logs', '-a', app, '-n', '1000', '--source', 'hangar', '--json']);
  assert.equal(res.code, 0, res.stderr);
  return res.stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => (JSON.parse(l) as { line: string }).line);
}

function row(rows: PsRow[], id: string): PsRow | undefined {
  return rows.find((r) => r.id === id);
}

/** The memory cgroup's processes of an instance of `app` on this host's cgroup v1. */
function cgroupProcs(app: string, key: string): number[] {
  const path = join(MEMORY, 'hangar', app, key.replace(/[^A-Za-z0-9._-]/g, '_'), 'cgroup.procs');
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map(Number);
}

test('a worker that eats past its memory limit is OOM-killed, reported (R14, R15, ps) and restarted; the others keep running', async (t) => {
  // This host has cgroup v1 (memory and cpu hierarchies mounted apart); the agent runs as root.
  assert.equal(process.getuid?.(), 0, 'the agent must run as root to make cgroups');
  assert.ok(existsSync(join(MEMORY, 'memory.limit_in_bytes')), 'cgroup v1 memory hierarchy expected at /sys/fs/cgroup/memory');
  const cluster = await startCluster(t);
  const app = `hog${process.pid}`;
  const hold = join(cluster.appDir, 'hog-hold');
  await writeFile(hold, '');
  await deployFixture(cluster, app, {
    procfile: [
      'web: gunicorn mysite.wsgi --bind 0.0.0.0:$PORT --workers 2 --access-logfile -',
      'worker: python worker.py',
      'hog: python hog.py',
      'release: python manage.py migrate --noinput',
    ].join('\n'),
    files: {
      'app.json': JSON.stringify({ formation: { hog: { memory: '96M', cpu: 0.5 }, worker: { memory: '128M' } } }),
      'hog.py': await readFile(join(FIXTURES, 'limits', 'hog.py'), 'utf8'),
    },
    config: { HOG_HOLD: hold },
  });
  const scale = await cluster.cli(['scale', 'worker=1', 'hog=1', '-a', app]);
  assert.equal(scale.code, 0, scale.stderr);
  const before = await waitForPs(cluster, app, 'worker.1 and hog.1 up', (rows) =>
    ['web.1', 'worker.1', 'hog.1'].every((id) => row(rows, id)?.state === 'up'),
  );
  const hog = row(before, 'hog.1');
  const worker = row(before, 'worker.1');
  const web = row(before, 'web.1');
  assert.ok(hog?.pid && worker?.pid && web?.pid);
  assert.equal(hog.memoryLimitBytes, 96 * MiB);
  assert.equal(hog.cpuLimit, 0.5);
  assert.equal(worker.memoryLimitBytes, 128 * MiB);
  // web sets no limit and the agent has no default: no cgroup, nothing shown.
  assert.equal(web.memoryLimitBytes, null);
  assert.equal(web.memoryBytes, null);

  // Each limited instance is in its own cgroup with its limits, moved there before its code ran
  // (the leader's pid is there), running as the app's user, not root.
  const hogKey = `${app}:hog.1:v1`;
  assert.ok(cgroupProcs(app, hogKey).includes(hog.pid));
  assert.equal(readFileSync(join(MEMORY, 'hangar', app, `${app}_hog.1_v1`, 'memory.limit_in_bytes'), 'utf8').trim(), String(96 * MiB));
  assert.equal(readFileSync(join('/sys/fs/cgroup/cpu', 'hangar', app, `${app}_hog.1_v1`, 'cpu.cfs_quota_us'), 'utf8').trim(), '50000');
  assert.ok(cgroupProcs(app, `${app}:worker.1:v1`).includes(worker.pid));
  const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${hog.pid}/status`, 'utf8'))?.[1];
  assert.notEqual(uid, '0');

  // Past the soft line (90% of 96M): R14, and ps shows the memory against the limit.
  await waitFor('an R14 line for hog.1', async () =>
    (await hangarLines(cluster, app)).some((l) => l.startsWith('hog.1 (v1): Error R14 (Memory quota exceeded)')),
  );
  const holding = await waitForPs(cluster, app, 'hog.1 memory reported', (rows) => (row(rows, 'hog.1')?.memoryBytes ?? 0) > 80 * MiB);
  assert.ok((row(holding, 'hog.1')?.memoryBytes ?? Infinity) <= 96 * MiB);
  const formatted = await cluster.cli(['ps', '-a', app]);
  assert.match(formatted.stdout, /hog\.1:\s+up .* mem \d+(\.\d)?M\/96M/);

  // Let it eat on: the kernel kills it at 96M; R15, ps says why, and it is restarted.
  await rm(hold);
  await waitForPs(cluster, app, 'hog.1 OOM-killed and restarted', (rows) => {
    const r = row(rows, 'hog.1');
    return r?.reason === 'oom' && r.restarts >= 1;
  });
  // Held again from now on, so the restarted hog stays up.
  await writeFile(hold, '');
  const lines = await hangarLines(cluster, app);
  assert.ok(
    lines.some((l) => l.startsWith('hog.1 (v1): Error R15 (Memory quota vastly exceeded)')),
    lines.join('\n'),
  );
  assert.ok(
    lines.some((l) => l === 'hog.1 (v1): Process was killed by SIGKILL (out of memory: the OOM killer ended it)'),
    lines.join('\n'),
  );
  const after = await waitForPs(cluster, app, 'hog.1 up again', (rows) => row(rows, 'hog.1')?.state === 'up');
  assert.notEqual(row(after, 'hog.1')?.pid, hog.pid);
  assert.equal(row(after, 'hog.1')?.reason, 'oom');
  assert.ok(cgroupProcs(app, hogKey).includes(row(after, 'hog.1')?.pid ?? -1));

  // Nobody else noticed.
  for (const id of ['web.1', 'worker.1']) {
    const r = row(after, id);
    assert.equal(r?.state, 'up', id);
    assert.equal(r.pid, row(before, id)?.pid, `${id} kept its process`);
    assert.equal(r.restarts, 0, id);
    assert.equal(r.reason, null, id);
  }
  assert.equal((await cluster.get(cluster.agents[0]!, app)).status, 200);

  // An agent restart adopts the limited instances in their cgroups and keeps watching them.
  const hogPid = row(after, 'hog.1')?.pid;
  await cluster.agents[0]!.close();
  await cluster.startAgent('agent-1');
  const adopted = await waitForPs(
    cluster,
    app,
    'hog.1 adopted with its memory watched',
    (rows) => row(rows, 'hog.1')?.pid === hogPid && row(rows, 'hog.1')?.state === 'up' && (row(rows, 'hog.1')?.memoryBytes ?? 0) > 0,
  );
  assert.equal(row(adopted, 'hog.1')?.memoryLimitBytes, 96 * MiB);
  assert.equal(row(adopted, 'worker.1')?.pid, worker.pid);

  // Scaled away, its cgroup goes with it.
  assert.equal((await cluster.cli(['scale', 'hog=0', '-a', app])).code, 0);
  await waitForPs(cluster, app, 'hog.1 gone', (rows) => row(rows, 'hog.1') === undefined);
  await waitFor('the cgroup of hog.1 removed', () => !existsSync(join(MEMORY, 'hangar', app, `${app}_hog.1_v1`)), 30_000);
  assert.ok(existsSync(join(MEMORY, 'hangar', app, `${app}_worker.1_v1`)), 'worker.1 keeps its cgroup');
});
