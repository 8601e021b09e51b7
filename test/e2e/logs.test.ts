import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import type { ErrorGroupView, LogLineView, LogStreamMessage } from '../../common/api-types.js';
import { FIXTURES, HANGAR_BIN, startCluster, waitFor, type Cluster } from '../helpers/cluster.js';

async function logs(cluster: Cluster, app: string, args: string[] = []): Promise<LogLineView[]> {
  const res = await cluster.cli(['logs', '-a', app, '--json', ...args]);
  assert.equal(res.code, 0, res.stderr);
  return res.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as LogLineView);
}

function tickNumbers(lines: readonly { line: string }[]): number[] {
  return lines.map((l) => /^tick (\d+) from worker\.1$/.exec(l.line)).flatMap((m) => (m ? [Number(m[1])] : []));
}

test('logs: worker output, router lines, lifecycle, build/release, -f and websocket live, errors', { timeout: 600_000 }, async (t) => {
  const cluster = await startCluster(t, { agents: 1 });
  const [agent] = cluster.agents;
  assert.ok(agent);
  assert.equal((await cluster.cli(['apps:create', 'shop'])).code, 0);
  const dbUrl = `sqlite:///${join(cluster.appDir, 'shop.sqlite3')}`;
  assert.equal((await cluster.cli(['config:set', `DATABASE_URL=${dbUrl}`, '-a', 'shop'])).code, 0);
  const deploy = await cluster.cli(['deploy', join(FIXTURES, 'django-app'), '-a', 'shop'], { timeoutMs: 300_000 });
  assert.equal(deploy.code, 0, `deploy failed:\n${deploy.stdout}\n${deploy.stderr}`);
  // Deploy output still streams live to `hangar deploy` and is queryable afterwards.
  assert.match(deploy.stdout + deploy.stderr, /Applying notes\.0001_initial/);
  const release = await waitFor('release phase lines in the logs', async () => {
    const lines = await logs(cluster, 'shop', ['--source', 'release', '-n', '1000']);
    return lines.some((l) => /Applying notes\.0001_initial/.test(l.line)) ? lines : null;
  });
  assert.ok(release.every((l) => l.source === 'release'));
  const build = await logs(cluster, 'shop', ['--source', 'build', '-n', '1000']);
  assert.ok(
    build.some((l) => /Fetching the source/.test(l.line)),
    `build lines: ${JSON.stringify(build.slice(0, 5))}`,
  );

  // Worker stdout and stderr, with their stream and agent.
  assert.equal((await cluster.cli(['scale', 'worker=1', '-a', 'shop'])).code, 0);
  const worker = await waitFor(
    'worker lines',
    async () => {
      const lines = await logs(cluster, 'shop', ['--source', 'worker', '-n', '1000']);
      return tickNumbers(lines).length >= 2 && lines.some((l) => l.stream === 'stderr') ? lines : null;
    },
    90_000,
  );
  const starting = worker.find((l) => l.stream === 'stderr');
  assert.match(starting?.line ?? '', /^worker worker\.1 starting \(pid \d+\)$/);
  for (const l of worker) {
    assert.deepEqual(Object.keys(l), ['ts', 'source', 'stream', 'agent', 'line']);
    assert.equal(l.source, 'worker.1');
    assert.equal(l.agent, 'agent-1');
    assert.ok(!Number.isNaN(Date.parse(l.ts)));
  }
  // Heroku's text format by default.
  const text = await cluster.cli(['logs', '-a', 'shop', '--source', 'worker.1', '-n', '3']);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z app\[worker\.1\]: /m);
  assert.equal(text.stdout.trim().split('\n').length, 3);
  // --grep
  const grep = await logs(cluster, 'shop', ['--grep', 'STARTING (pid']);
  assert.ok(grep.length >= 1 && grep.every((l) => /starting \(pid/.test(l.line)), JSON.stringify(grep));

  // Lifecycle events as source hangar.
  const hangarLines = await logs(cluster, 'shop', ['--source', 'hangar', '-n', '1000']);
  assert.ok(
    hangarLines.some((l) => /^web\.1 \(v1\): State changed from starting to up$/.test(l.line)),
    JSON.stringify(hangarLines),
  );
  assert.ok(hangarLines.some((l) => /^worker\.1 \(v1\): Starting process/.test(l.line)));

  // One router line per request.
  const before = (await logs(cluster, 'shop', ['--source', 'router', '-n', '1000'])).length;
  for (let i = 0; i < 3; i++) assert.equal((await cluster.get(agent, 'shop', `/?n=${i}`)).status, 200);
  const routerLines = await waitFor('three router lines', async () => {
    const lines = await logs(cluster, 'shop', ['--source', 'router', '-n', '1000']);
    return lines.length >= before + 3 ? lines : null;
  });
  assert.equal(routerLines.length, before + 3);
  for (let i = 0; i < 3; i++) {
    const line = routerLines.find((l) => l.line.includes(`path="/?n=${i}"`));
    assert.match(
      line?.line ?? '',
      /^at=info method=GET path="\/\?n=\d" host=shop\.localhost request_id=\S+ dyno=web\.1 service=\d+ms status=200 bytes=\d+$/,
    );
  }

  // `hangar logs -f` prints new lines live.
  const follower = spawn(process.execPath, [HANGAR_BIN, 'logs', '-a', 'shop', '-f', '-n', '0', '--source', 'worker.1'], {
    env: { ...process.env, HANGAR_URL: cluster.coordinator.url, HANGAR_TOKEN: cluster.coordinator.adminToken },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => follower.kill('SIGKILL'));
  let followed = '';
  follower.stdout.on('data', (d: Buffer) => (followed += d.toString()));
  const lastBefore = Math.max(...tickNumbers(await logs(cluster, 'shop', ['--source', 'worker.1', '-n', '1000'])));
  await waitFor('-f to print two new ticks', () => {
    const seen = tickNumbers(followed.split('\n').map((l) => ({ line: l.replace(/^\S+ app\[worker\.1\]: /, '') })));
    return seen.filter((n) => n > lastBefore).length >= 2;
  });
  follower.kill('SIGINT');

  // The websocket: the token only in the Authorization header; backfill, live marker, live lines.
  const wsUrl = `${cluster.coordinator.url.replace(/^http/, 'ws')}/v1/apps/shop/logs/stream?source=worker&n=5`;
  const refused = await new Promise<number>((resolve, reject) => {
    const anonymous = new WebSocket(wsUrl);
    anonymous.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    anonymous.on('open', () => reject(new Error('a websocket without a token was accepted')));
    anonymous.on('error', () => undefined);
  });
  assert.equal(refused, 401, 'no token, no stream');
  const ws = new WebSocket(wsUrl, { headers: { authorization: `Bearer ${cluster.coordinator.adminToken}` } });
  t.after(() => ws.terminate());
  const messages: LogStreamMessage[] = [];
  ws.on('message', (d: Buffer) => messages.push(JSON.parse(d.toString()) as LogStreamMessage));
  await waitFor('live lines on the websocket', () => {
    const liveAt = messages.findIndex((m) => 'live' in m);
    if (liveAt === -1) return false;
    const backfill = messages.slice(0, liveAt).flatMap((m) => ('lines' in m ? m.lines : []));
    const live = messages.slice(liveAt + 1).flatMap((m) => ('lines' in m ? m.lines : []));
    assert.equal(backfill.length, 5);
    return tickNumbers(live).length >= 2 && Math.min(...tickNumbers(live)) > Math.max(...tickNumbers(backfill));
  });
  ws.close();

  // A request that raises in a Django view becomes a grouped error (DEBUG off, no ADMINS).
  for (let i = 0; i < 2; i++) assert.equal((await cluster.get(agent, 'shop', '/boom/')).status, 500);
  const errors = await waitFor('the error group', async () => {
    const res = await cluster.cli(['errors', '-a', 'shop', '--json']);
    assert.equal(res.code, 0, res.stderr);
    const groups = JSON.parse(res.stdout) as ErrorGroupView[];
    return groups[0]?.count === 2 ? groups : null;
  });
  assert.equal(errors.length, 1);
  const group = errors[0];
  assert.ok(group);
  assert.equal(group.type, 'ValueError');
  assert.match(group.location, /^notes\/views\.py:\d+:boom$/);
  assert.equal(group.message, 'boom: this view always fails');
  assert.equal(group.release, 'v1');
  assert.match(group.traceback, /Traceback \(most recent call last\)[\s\S]*raise ValueError/);
  const human = await cluster.cli(['errors', '-a', 'shop']);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /ValueError at notes\/views\.py:\d+:boom\n {2}2 times/);
});
