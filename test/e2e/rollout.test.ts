import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import type { PsRow, ReleaseView } from '../../common/api-types.js';
import { startCoordinator } from '../../coordinator/coordinator.js';
import { startAgent } from '../../agent/agent.js';
import {
  FIXTURES,
  fileLogger,
  runCli,
  shareWithApps,
  startCluster,
  tempDir,
  waitFor,
  type Cluster,
  type CliResult,
} from '../helpers/cluster.js';
import { startHttpLoad, type HttpLoad } from '../helpers/http-load.js';

const APP = 'shop';

/** A copy of the Django fixture with another Procfile. */
async function fixtureVariant(dir: string, name: string, procfile: string): Promise<string> {
  const target = join(dir, name);
  await cp(join(FIXTURES, 'django-app'), target, { recursive: true });
  await writeFile(join(target, 'Procfile'), procfile);
  return target;
}

function load(ports: number[]): HttpLoad {
  return startHttpLoad({
    ports,
    host: `${APP}.localhost`,
    clients: 4,
    postEvery: 10,
    postPath: '/notes/',
    pauseMs: 20,
    maxMs: 150_000,
  });
}

/** Stops the load a moment after the action, so old instances being stopped are covered too. */
async function assertNoFailures(what: string, l: HttpLoad): Promise<number> {
  await new Promise((r) => setTimeout(r, 2000));
  const { ok, failures } = await l.stop();
  assert.ok(ok > 0, `${what}: no request was served`);
  assert.deepEqual(failures, [], `${what}: ${failures.length} failed requests out of ${ok + failures.length}`);
  return ok;
}

async function releases(cluster: { cli: Cluster['cli'] }): Promise<ReleaseView[]> {
  const res = await cluster.cli(['releases', '-a', APP, '--json']);
  assert.equal(res.code, 0, res.stderr);
  return JSON.parse(res.stdout) as ReleaseView[];
}

async function ps(cluster: { cli: Cluster['cli'] }): Promise<PsRow[]> {
  const res = await cluster.cli(['ps', '-a', APP, '--json']);
  assert.equal(res.code, 0, res.stderr);
  return JSON.parse(res.stdout) as PsRow[];
}

function out(r: CliResult): string {
  return `${r.stdout}\n${r.stderr}`;
}

test(
  'rolling deploys, config changes and rollbacks under load drop no request; bad releases are refused',
  { timeout: 420_000 },
  async (t) => {
    const cluster = await startCluster(t, { agents: 2, coordinator: { healthTimeoutMs: 60_000, graceSeconds: 10 } });
    const ports = cluster.agents.map((a) => a.routerPort);
    const variants = await tempDir(t, 'hangar-variants-');

    assert.equal((await cluster.cli(['apps:create', APP])).code, 0);
    const set = await cluster.cli([
      'config:set',
      `DATABASE_URL=sqlite:///${join(cluster.appDir, 'shop.sqlite3')}`,
      'DJANGO_ALLOWED_HOSTS=.localhost',
      '-a',
      APP,
    ]);
    assert.equal(set.code, 0, set.stderr);
    const first = await cluster.cli(['deploy', join(FIXTURES, 'django-app'), '-a', APP], { timeoutMs: 300_000 });
    assert.equal(first.code, 0, out(first));
    const scale = await cluster.cli(['scale', 'web=3', '-a', APP]);
    assert.equal(scale.code, 0, scale.stderr);
    await waitFor('web=3 up', async () => (await ps(cluster)).filter((r) => r.state === 'up').length === 3, 90_000, 300);

    await t.test('(a) a redeploy rolls batch by batch; a second deploy and config:set meanwhile are refused', async () => {
      const l = load(ports);
      const deploying = cluster.cli(['deploy', join(FIXTURES, 'django-app'), '-a', APP], { timeoutMs: 300_000 });
      await waitFor(
        'v2 pending',
        async () => {
          const res = await request(`${cluster.coordinator.url}/v1/apps/${APP}/releases`, {
            headers: { authorization: `Bearer ${cluster.coordinator.adminToken}` },
          });
          const body = (await res.body.json()) as { releases: ReleaseView[] };
          return body.releases[0]?.name === 'v2' && body.releases[0].status === 'pending';
        },
        60_000,
        50,
      );
      // Straight to the API: the CLI's own start-up could outlast this short rollout.
      const api = (method: 'PATCH' | 'POST', path: string, body: string, type: string) =>
        request(`${cluster.coordinator.url}/v1/apps/${APP}${path}`, {
          method,
          headers: { authorization: `Bearer ${cluster.coordinator.adminToken}`, 'content-type': type },
          body,
        });
      const refusedConfig = await api('PATCH', '/config', JSON.stringify({ FOO: 'bar' }), 'application/json');
      const configBody = (await refusedConfig.body.json()) as { code: string; message: string };
      assert.equal(refusedConfig.statusCode, 409);
      assert.equal(configBody.code, 'ROLLOUT_IN_PROGRESS');
      assert.match(configBody.message, /A deploy of shop is in progress/);
      const refusedDeploy = await api('POST', '/builds', 'not even a tarball', 'application/gzip');
      const deployBody = (await refusedDeploy.body.json()) as { code: string; message: string };
      assert.equal(refusedDeploy.statusCode, 409);
      assert.equal(deployBody.code, 'ROLLOUT_IN_PROGRESS');
      assert.match(deployBody.message, /wait for it to finish/);
      const deployed = await deploying;
      assert.equal(deployed.code, 0, out(deployed));
      // web=3 with the default surge of 25%: one at a time, three batches.
      assert.equal(deployed.stdout.match(/web: starting 1 of v2/g)?.length, 3, deployed.stdout);
      assert.match(deployed.stdout, /web: draining 1 old \(v1\)/);
      assert.match(deployed.stdout, /web: 1 of v2 healthy \(3\/3; batch [\d.]+ s, app boot [\d.]+ s\)/);
      const ok = await assertNoFailures('redeploy', l);
      t.diagnostic(`redeploy: ${ok} requests served, 0 failed`);
      const rows = await ps(cluster);
      assert.deepEqual(
        rows.filter((r) => r.type === 'web').map((r) => [r.release, r.state]),
        [
          ['v2', 'up'],
          ['v2', 'up'],
          ['v2', 'up'],
        ],
      );
    });

    await t.test('(b) a config change is a rolling release too', async () => {
      const l = load(ports);
      const res = await cluster.cli(['config:set', 'FOO=bar', 'DJANGO_DEBUG=1', 'DJANGO_STATIC_ROOT=staticfiles', '-a', APP], {
        timeoutMs: 300_000,
      });
      assert.equal(res.code, 0, out(res));
      // The build ran Django's deploy checks and collectstatic with the new config.
      assert.match(res.stdout, /Django deploy checks/);
      assert.match(out(res), /warning: DEBUG is on/);
      assert.match(out(res), /security\.W\d+/);
      assert.match(out(res), /Running collectstatic --noinput[\s\S]*static files? copied/);
      const ok = await assertNoFailures('config change', l);
      t.diagnostic(`config change: ${ok} requests served, 0 failed`);
      const env = await cluster.get(cluster.agents[0]!, APP, '/env/FOO/');
      assert.deepEqual(JSON.parse(env.body), { name: 'FOO', set: true });
    });

    await t.test('(c) a rollback restores the code and config of the release before', async () => {
      const l = load(ports);
      const res = await cluster.cli(['rollback', '-a', APP], { timeoutMs: 300_000 });
      assert.equal(res.code, 0, out(res));
      assert.match(res.stdout, /Rollback to v2/);
      const ok = await assertNoFailures('rollback', l);
      t.diagnostic(`rollback: ${ok} requests served, 0 failed`);
      const env = await cluster.get(cluster.agents[0]!, APP, '/env/FOO/');
      assert.deepEqual(JSON.parse(env.body), { name: 'FOO', set: false });
    });

    await t.test('(d) a release whose web exits at once is rolled back, with its last log lines shown', async () => {
      const dir = await fixtureVariant(
        variants,
        'crashing-web',
        [
          `web: python -c "import sys; print('booting the crashing web', flush=True); print('boom: web crashed at boot', file=sys.stderr); sys.exit(3)"`,
          'release: python manage.py migrate --noinput',
          '',
        ].join('\n'),
      );
      const l = load(ports);
      const res = await cluster.cli(['deploy', dir, '-a', APP], { timeoutMs: 300_000 });
      assert.notEqual(res.code, 0, out(res));
      assert.match(res.stderr, /keeps crashing/);
      assert.match(res.stdout, /Last log lines of web\.1 \(v5\)/);
      assert.match(res.stdout, /boom: web crashed at boot/);
      assert.match(res.stdout, /Rolled back: v4 serves/);
      const ok = await assertNoFailures('crashing release', l);
      t.diagnostic(`crashing release: ${ok} requests served, 0 failed`);
      const list = await releases(cluster);
      assert.equal(list[0]?.name, 'v5');
      assert.equal(list[0]?.status, 'rolled_back');
      assert.equal(list.find((r) => r.current)?.name, 'v4');
      const rows = await ps(cluster);
      assert.ok(
        rows.every((r) => r.release === 'v4'),
        JSON.stringify(rows),
      );
    });

    await t.test('(e) a release whose release phase fails changes nothing', async () => {
      const dir = await fixtureVariant(
        variants,
        'failing-release',
        [
          'web: gunicorn mysite.wsgi --bind 0.0.0.0:$PORT --workers 2',
          `release: python -c "import sys; print('migration exploded', file=sys.stderr); sys.exit(1)"`,
          '',
        ].join('\n'),
      );
      const l = load(ports);
      const res = await cluster.cli(['deploy', dir, '-a', APP], { timeoutMs: 300_000 });
      assert.notEqual(res.code, 0, out(res));
      assert.match(out(res), /migration exploded/);
      assert.match(res.stderr, /release command failed/);
      const ok = await assertNoFailures('failing release phase', l);
      t.diagnostic(`failing release phase: ${ok} requests served, 0 failed`);
      const list = await releases(cluster);
      assert.deepEqual(
        list.map((r) => [r.name, r.status, r.createdBy]),
        [
          ['v6', 'failed', 'admin'],
          ['v5', 'rolled_back', 'admin'],
          ['v4', 'running', 'admin'],
          ['v3', 'succeeded', 'admin'],
          ['v2', 'succeeded', 'admin'],
          ['v1', 'succeeded', 'admin'],
        ],
      );
      const text = await cluster.cli(['releases', '-a', APP]);
      assert.match(text.stdout, /v5\s+Deploy \w+\s+rolled_back\s+admin/);
    });
  },
);

test(
  'a coordinator restarted in the middle of a rollout carries it on; a release never healthy is rolled back at its deadline',
  { timeout: 300_000 },
  async (t) => {
    const dir = await tempDir(t);
    const appDir = await shareWithApps(dir);
    const dataDir = join(dir, 'coordinator');
    const config = {
      dataDir,
      httpPort: 0,
      httpHost: '127.0.0.1',
      grpcPort: 0,
      grpcHost: '127.0.0.1',
      heartbeatIntervalMs: 500,
      graceSeconds: 10,
      // Short, so the never-healthy release below is given up quickly.
      healthTimeoutMs: 15_000,
    };
    let coordinator = await startCoordinator(config, { logger: fileLogger(dir, 'coordinator-1') });
    const agent = await startAgent(
      {
        coordinator: coordinator.grpcAddress,
        joinToken: coordinator.joinToken,
        dataDir: join(dir, 'agent'),
        name: 'agent-1',
        routerPort: 0,
        httpsPort: 0,
        routerHost: '127.0.0.1',
        advertise: '127.0.0.1',
      },
      { logger: fileLogger(dir, 'agent-1'), backoff: { initialMs: 200, maxMs: 2000 } },
    );
    t.after(async () => {
      await agent.close({ stopInstances: true });
      await coordinator.close();
    });
    const env = () => ({ HANGAR_URL: coordinator.url, HANGAR_TOKEN: coordinator.adminToken, HANGAR_CREDENTIALS: join(dir, 'none.json') });
    const cli = { cli: (args: string[], o: { timeoutMs?: number } = {}) => runCli(args, env(), o.timeoutMs) };

    assert.equal((await cli.cli(['apps:create', APP])).code, 0);
    const set = await cli.cli(['config:set', `DATABASE_URL=sqlite:///${join(appDir, 'shop.sqlite3')}`, '-a', APP]);
    assert.equal(set.code, 0, set.stderr);
    const first = await cli.cli(['deploy', join(FIXTURES, 'django-app'), '-a', APP], { timeoutMs: 300_000 });
    assert.equal(first.code, 0, out(first));
    assert.equal((await cli.cli(['scale', 'web=2', '-a', APP])).code, 0);
    await waitFor('web=2 up', async () => (await ps(cli)).filter((r) => r.state === 'up').length === 2, 90_000, 300);

    const l = load([agent.routerPort]);
    const deploying = cli.cli(['deploy', join(FIXTURES, 'django-app'), '-a', APP, '--timeout', '240'], { timeoutMs: 300_000 });
    await waitFor('the first v2 batch placed', async () => (await ps(cli)).some((r) => r.release === 'v2'), 120_000, 200);
    const { httpPort, grpcPort } = coordinator;
    await coordinator.close();
    await new Promise((r) => setTimeout(r, 1000));
    coordinator = await startCoordinator({ ...config, httpPort, grpcPort }, { logger: fileLogger(dir, 'coordinator-2') });

    const deployed = await deploying;
    assert.equal(deployed.code, 0, out(deployed));
    assert.match(deployed.stdout, /v2 is up: 2 instance\(s\) healthy/);
    const ok = await assertNoFailures('coordinator restart mid-rollout', l);
    t.diagnostic(`coordinator restart mid-rollout: ${ok} requests served, 0 failed`);
    const rows = await ps(cli);
    assert.deepEqual(
      rows.map((r) => [r.id, r.release, r.state]),
      [
        ['web.1', 'v2', 'up'],
        ['web.2', 'v2', 'up'],
      ],
    );
    const list = await releases(cli);
    assert.deepEqual(
      list.map((r) => [r.name, r.status]),
      [
        ['v2', 'running'],
        ['v1', 'succeeded'],
      ],
    );

    // Runs, but its health check path answers 404: never healthy, given up after 15 s.
    const unhealthy = await fixtureVariant(
      dir,
      'unhealthy',
      'web: gunicorn mysite.wsgi --bind 0.0.0.0:$PORT --workers 1 --access-logfile -\n',
    );
    await writeFile(join(unhealthy, 'app.json'), JSON.stringify({ healthchecks: { web: { path: '/missing/' } } }));
    const l2 = load([agent.routerPort]);
    const res = await cli.cli(['deploy', unhealthy, '-a', APP], { timeoutMs: 300_000 });
    assert.notEqual(res.code, 0, out(res));
    assert.match(res.stderr, /web\.1 of v3 did not become healthy within 15 s/);
    assert.match(res.stdout, /Last log lines of web\.1 \(v3\)/);
    // Django's own log line says why.
    assert.match(res.stdout, /Not Found: \/missing\//);
    assert.match(res.stdout, /Rolled back: v2 serves \(2 instance\(s\) healthy\)/);
    const ok2 = await assertNoFailures('never-healthy release', l2);
    t.diagnostic(`never-healthy release: ${ok2} requests served, 0 failed`);
    assert.equal((await releases(cli))[0]?.status, 'rolled_back');
  },
);
