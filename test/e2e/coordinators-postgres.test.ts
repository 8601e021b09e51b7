/**
 * Three `hangar coordinator` processes on one PostgreSQL database, each with its own data dir
 * holding only a copy of the first one's `secret-key`: the CA, tokens and artifacts come from the
 * database. An agent given all three addresses and an app under load through its router: `kill -9`
 * of the leader in the middle of a rolling deploy (web=2), a follower leads and the deploy
 * completes (or the CLI asks for a retry that succeeds); a second agent joins through a follower's
 * address and runs an instance of an artifact uploaded to the dead coordinator; `SIGSTOP` of the
 * new leader past its lease, then `SIGCONT`: it steps down and its write is fenced. No request fails
 * through the router and no instance is started twice.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { copyFile, cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { request } from 'undici';
import { type RunningAgent } from '../../agent/agent.js';
import type { CoordinatorsView, ReleaseView } from '../../common/api-types.js';
import { FIXTURES, runCli, waitFor } from '../helpers/cluster.js';
import {
  agentUp,
  coordinators,
  freePort,
  getJson,
  health,
  coordinatorTest,
  stopped,
  type CoordinatorProcess,
} from '../helpers/coordinator-process.js';
import { deployFixture, waitForPs } from '../helpers/deploy-fixture.js';
import { startHttpLoad } from '../helpers/http-load.js';
import { testPostgres } from '../helpers/postgres-server.js';

test(
  'three coordinators on PostgreSQL, each its own data dir: kill -9 of the leader mid-deploy, a join through a follower, SIGSTOP fenced',
  { timeout: 300_000 },
  async (t) => {
    const ct = await coordinatorTest(t, 'hangar-pg-ha-');
    const { dir, cleanups } = ct;
    const databaseUrl = (await testPostgres()).createDatabase('ha');
    const began = Date.now();
    const phase = (what: string) => t.diagnostic(`${what} at ${((Date.now() - began) / 1000).toFixed(1)} s`);

    const dataDirs = ['c1', 'c2', 'c3'].map((n) => join(dir, n));
    const ports: [number, number][] = [];
    for (let i = 0; i < 3; i++) ports.push([await freePort(), await freePort()]);
    const start = (i: number): CoordinatorProcess => {
      const [httpPort, grpcPort] = ports[i] as [number, number];
      return ct.spawn({ dataDir: dataDirs[i] as string, name: `c${i + 1}`, httpPort, grpcPort, databaseUrl });
    };
    const all = [start(0)];
    await waitFor('c1 to lead', async () => (await health(all[0]!.url))?.role === 'leader', 60_000);

    // A coordinator whose secret-key is not the first one's refuses to start, and says what to copy.
    const strangerDir = join(dir, 'c4');
    const stranger = ct.spawn({
      dataDir: strangerDir,
      name: 'c4',
      httpPort: await freePort(),
      grpcPort: await freePort(),
      databaseUrl,
    });
    await waitFor('c4 to exit', () => stranger.child.exitCode !== null || stranger.child.signalCode !== null, 30_000);
    assert.notEqual(stranger.child.exitCode, 0);
    assert.match(
      await readFile(stranger.log, 'utf8'),
      new RegExp(`copy secret-key from the first coordinator to ${strangerDir}/secret-key`),
    );

    for (const d of dataDirs.slice(1)) {
      await mkdir(d, { mode: 0o700 });
      await copyFile(join(dataDirs[0] as string, 'secret-key'), join(d, 'secret-key'));
    }
    all.push(start(1), start(2));
    for (const c of all.slice(1)) await waitFor(`${c.name} to follow`, async () => (await health(c.url))?.role === 'follower', 60_000);
    // Same CA and tokens everywhere; a server certificate of each coordinator's own.
    const file = (d: string, f: string) => readFile(join(d, f), 'utf8');
    for (const d of dataDirs.slice(1)) {
      for (const f of ['admin-token', 'join-token', 'tls/ca.crt']) assert.equal(await file(d, f), await file(dataDirs[0] as string, f), f);
      assert.notEqual(await file(d, 'tls/server.crt'), await file(dataDirs[0] as string, 'tls/server.crt'));
    }
    phase('three coordinators up');

    const token = (await file(dataDirs[0] as string, 'admin-token')).trim();
    const joinToken = (await file(dataDirs[0] as string, 'join-token')).trim();
    const env = {
      HANGAR_URL: all.map((c) => c.url).join(','),
      HANGAR_TOKEN: token,
      HANGAR_CREDENTIALS: join(dir, 'no-credentials.json'),
    };
    const cli = (args: string[], timeoutMs?: number) => runCli(args, env, timeoutMs);
    const status = await cli(['coordinator', 'status', '--json']);
    assert.equal(status.code, 0, status.stderr);
    const view = JSON.parse(status.stdout) as CoordinatorsView;
    assert.equal(view.leader.name, 'c1');
    assert.equal(view.leader.address, all[0]!.grpcAddress);
    assert.deepEqual(view.followers.map((f) => f.name).sort(), ['c2', 'c3']);

    const agents: RunningAgent[] = [];
    const joinAgent = async (name: string, coordinator: string) => {
      const agent = await ct.agent(name, coordinator, joinToken);
      agents.push(agent);
      return agent;
    };
    const a1 = await joinAgent('a1', all.map((c) => c.grpcAddress).join(','));
    const cluster = ct.cluster(env);
    await deployFixture(cluster, 'shop');
    assert.equal((await cli(['scale', 'web=2', '-a', 'shop'])).code, 0);
    await waitForPs(cluster, 'shop', 'web=2 up', (rows) => rows.filter((r) => r.type === 'web' && r.state === 'up').length === 2);
    phase('deployed, web=2');

    const load = startHttpLoad({
      ports: [a1.routerPort],
      host: 'shop.localhost',
      clients: 2,
      postEvery: 0,
      postPath: '/',
      pauseMs: 20,
      maxMs: 240_000,
    });
    cleanups.push(() => load.stop());
    await waitFor('requests served', () => load.ok > 20, 30_000);

    // A second release, uploaded to c1; c1 is killed once its rollout has begun.
    const source = join(dir, 'shop-v2');
    await cp(join(FIXTURES, 'django-app'), source, { recursive: true });
    await writeFile(join(source, 'RELEASE'), 'second\n');
    const releases = async (url: string) => (await getJson<{ releases: ReleaseView[] }>(url, '/v1/apps/shop/releases', token))?.releases;
    const before = (await releases(all[0]!.url))?.length ?? 0;
    const deploying = cli(['deploy', source, '-a', 'shop'], 240_000);
    await waitFor(
      'the second release to begin rolling out',
      async () => ((await releases(all[0]!.url))?.length ?? 0) > before,
      60_000,
      100,
    );
    process.kill(-(all[0]!.child.pid as number), 'SIGKILL');
    const killedAt = Date.now();
    await stopped(all[0]!.child);
    phase('c1 killed mid-deploy');
    const afterKill = await waitFor(
      'c2 or c3 to lead',
      async () => {
        for (const c of all.slice(1)) {
          const v = await coordinators(c.url, token);
          if (v && v.leader.name !== 'c1') return { leader: c, view: v };
        }
        return null;
      },
      60_000,
      100,
    );
    t.diagnostic(`failover after kill -9: ${((Date.now() - killedAt) / 1000).toFixed(1)} s to a new leader serving the API (goal <= 15 s)`);
    assert.ok(afterKill.view.leader.epoch > view.leader.epoch);
    const leader = afterKill.leader;
    const follower = all.slice(1).find((c) => c !== leader) as CoordinatorProcess;
    phase(`${leader.name} leads`);
    const deployed = await deploying;
    if (deployed.code !== 0) {
      t.diagnostic(`the deploy across the failover said: ${deployed.stderr.trim()}`);
      assert.match(deployed.stderr, /again|retry/i, 'a failed deploy must say to retry');
      const retried = await cli(['deploy', source, '-a', 'shop'], 240_000);
      assert.equal(retried.code, 0, `${retried.stdout}\n${retried.stderr}`);
    }
    const current = (await releases(leader.url))?.find((r) => r.current);
    assert.ok(current);
    assert.ok(current.version > before, 'the second release is current');
    await waitForPs(
      cluster,
      'shop',
      'web=2 of the new release up',
      (rows) => rows.filter((r) => r.type === 'web' && r.state === 'up' && r.release === current.name).length === 2,
    );
    phase('rollout done on the new leader');

    // An agent joins through a follower (which points it at the leader) and runs an instance: the
    // leader serves it the artifact from the database when the upload went to c1.
    const uploadedToLeader = existsSync(join(dir, leader.name, 'artifacts', `${current.artifactSha256}.tar.gz`));
    const a2 = await joinAgent('a2', follower.grpcAddress);
    await waitFor('a2 up on the leader', () => agentUp(leader.url, token, 'a2'), 60_000);
    assert.equal((await cli(['scale', 'web=4', '-a', 'shop'])).code, 0);
    await waitForPs(cluster, 'shop', 'a web instance up on a2', (rows) =>
      rows.some((r) => r.type === 'web' && r.agent === 'a2' && r.state === 'up' && r.release === current.name),
    );
    t.diagnostic(
      `the artifact a2 runs was ${uploadedToLeader ? 'uploaded to the leader (a retried deploy)' : 'restored from the database'}`,
    );
    assert.ok(existsSync(join(dir, leader.name, 'artifacts', `${current.artifactSha256}.tar.gz`)));
    assert.ok(a2.routerPort > 0);
    phase('a2 joined through a follower');

    // The new leader stopped past its lease: the follower leads; the stale one's write is fenced.
    const configBefore = await getJson<{ config: Record<string, string> }>(leader.url, '/v1/apps/shop/config', token);
    assert.ok(configBefore);
    process.kill(-(leader.child.pid as number), 'SIGSTOP');
    const stoppedAt = Date.now();
    const staleWrite = request(`${leader.url}/v1/apps/shop/config`, {
      method: 'PATCH',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ STALE_WRITE: '1' }),
      headersTimeout: 60_000,
    }).then(
      async (res) => ({ status: res.statusCode, body: await res.body.text() }),
      (err: Error) => ({ status: 0, body: err.message }),
    );
    const afterStop = await waitFor('the follower to lead', () => coordinators(follower.url, token), 60_000, 100);
    assert.equal(afterStop.leader.name, follower.name);
    assert.ok(afterStop.leader.epoch > afterKill.view.leader.epoch);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, 7000 - (Date.now() - stoppedAt))));
    process.kill(-(leader.child.pid as number), 'SIGCONT');
    const answer = await staleWrite;
    assert.ok(answer.status === 503 || answer.status === 0, `the stale leader answered a write with ${answer.status}: ${answer.body}`);
    await waitFor(`${leader.name} to follow again`, async () => (await health(leader.url))?.role === 'follower', 30_000);
    assert.match(await readFile(leader.log, 'utf8'), /stepped down as leader/);
    const configAfter = await getJson<{ config: Record<string, string> }>(follower.url, '/v1/apps/shop/config', token);
    assert.deepEqual(configAfter, configBefore, 'the stale write landed');
    await waitFor(
      'both agents on the new leader',
      async () => (await agentUp(follower.url, token, 'a1')) && agentUp(follower.url, token, 'a2'),
    );
    phase('stale leader stepped down');

    // A graceful stop of the leader hands over to the one that was stopped.
    process.kill(-(follower.child.pid as number), 'SIGTERM');
    const termAt = Date.now();
    const graceful = await waitFor('the stepped-down one to lead', () => coordinators(leader.url, token), 30_000, 50);
    t.diagnostic(
      `failover after a graceful stop: ${((Date.now() - termAt) / 1000).toFixed(1)} s to a new leader serving the API (goal <= 2 s)`,
    );
    assert.equal(graceful.leader.name, leader.name);
    await stopped(follower.child);
    assert.equal(follower.child.exitCode, 0);
    await waitFor('a1 on the last leader', () => agentUp(leader.url, token, 'a1'));

    const { ok, failures } = await load.stop();
    assert.ok(ok > 0);
    assert.deepEqual(failures, [], `${failures.length} requests failed through the router`);
    assert.equal(agents.length, 2);

    // Neither failover started anything twice: every instance key was started exactly once.
    const starts = new Map<string, number>();
    for (const name of ['a1', 'a2']) {
      for (const line of (await readFile(join(dir, `agent-${name}.log`), 'utf8')).split('\n')) {
        if (!line.includes('"instance started"')) continue;
        const key = `${name}/${(JSON.parse(line) as { instance: string }).instance}`;
        starts.set(key, (starts.get(key) ?? 0) + 1);
      }
    }
    assert.ok(starts.size >= 4, `instances started: ${[...starts.keys()].join(', ')}`);
    assert.deepEqual(
      [...starts].filter(([, n]) => n > 1),
      [],
      'an instance was started more than once',
    );
  },
);
