import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import type { AddonInfoView, AddonView } from '../../common/api-types.js';
import { agentProcess } from '../helpers/agent-process.js';
import { cliOk, psqlResult } from '../helpers/addon-clients.js';
import { startCluster, waitFor, type Cluster } from '../helpers/cluster.js';
import { deployFixture } from '../helpers/deploy-fixture.js';

const APP = 'shop';

async function info(cluster: Cluster): Promise<AddonInfoView> {
  return (JSON.parse(await cliOk(cluster, ['addons:info', 'postgres-1', '-a', APP, '--json'])) as { addon: AddonInfoView }).addon;
}

/** Writes notes through the app one after another; counts the ones the app said it committed (201). */
function startWriter(port: number): {
  committed: () => number;
  lastOkAt: () => number;
  lastOkSentAt: () => number;
  stop: () => Promise<void>;
} {
  let committed = 0;
  let lastOkAt = 0;
  let lastOkSentAt = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        const sentAt = Date.now();
        const res = await request(`http://127.0.0.1:${port}/notes/`, {
          method: 'POST',
          headers: { host: `${APP}.localhost`, 'content-type': 'application/x-www-form-urlencoded' },
          body: 'text=row',
          headersTimeout: 10_000,
          bodyTimeout: 10_000,
        });
        await res.body.text();
        if (res.statusCode === 201) {
          committed += 1;
          lastOkAt = Date.now();
          lastOkSentAt = sentAt;
        } else await new Promise((r) => setTimeout(r, 100));
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  })();
  return {
    committed: () => committed,
    lastOkAt: () => lastOkAt,
    lastOkSentAt: () => lastOkSentAt,
    stop: async () => {
      running = false;
      await loop;
    },
  };
}

async function notesCount(cluster: Cluster, port: number): Promise<number> {
  const res = await request(`http://127.0.0.1:${port}/notes/`, { headers: { host: `${APP}.localhost` } });
  assert.equal(res.statusCode, 200);
  return ((await res.body.json()) as { count: number }).count;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test(
  'PostgreSQL standby: automatic failover after kill -9, the old primary comes back as the standby, planned failover loses nothing',
  { timeout: 600_000 },
  async (t) => {
    const cluster = await startCluster(t, { agents: 1, coordinator: { addonFailoverAfterMs: 3000, addonLagIntervalMs: 1000 } });
    const routerPort = cluster.agents[0]?.routerPort ?? 0;
    await deployFixture(cluster, APP);

    await t.test('a standby needs a second agent: nothing is created on a single-agent cluster', async () => {
      const res = await cluster.cli(['addons:create', 'postgres', '--standby', '-a', APP]);
      assert.equal(res.code, 1, res.stderr);
      assert.match(res.stderr, /A standby must run on another agent than its primary.*Start a second agent/);
      const mode = await cluster.cli(['addons:create', 'postgres', '--standby=fast', '-a', APP]);
      assert.equal(mode.code, 2, mode.stderr);
      assert.match(mode.stderr, /--standby takes sync or async, not "fast"/);
      const list = JSON.parse(await cliOk(cluster, ['addons', '-a', APP, '--json'])) as AddonView[];
      assert.deepEqual(list, []);
    });

    // The primary's agent is a child process, to be killed with -9.
    const a2Dir = join(cluster.dir, 'agent-a2');
    // The agent process leaves its router, instances and servers running for the next one to
    // adopt: stopAll stops them by their pidfiles (process groups) before the cluster's dir goes.
    const a2 = agentProcess(cluster, { name: 'a2', dataDir: a2Dir });
    const a2Up = () =>
      waitFor('a2 to be connected', async () => {
        const agents = JSON.parse(await cliOk(cluster, ['agents', '--json'])) as { name: string; state: string }[];
        return agents.some((a) => a.name === 'a2' && a.state === 'up');
      });
    try {
      a2.start();
      await a2Up();

      await t.test('addons:create postgres --standby=sync: the primary on a2, a synchronous standby on agent-1', async () => {
        const out = await cliOk(cluster, ['addons:create', 'postgres', '--agent', 'a2', '--standby=sync', '-a', APP]);
        assert.match(out, /postgres-1 streams to its standby on agent-1/);
        const shown = await waitFor('the lag to be measured', async () => {
          const i = await info(cluster);
          return i.servers[1]?.lagBytes !== null && i.servers[1]?.lagBytes !== undefined ? i : null;
        });
        assert.deepEqual(
          shown.servers.map((s) => [s.agent, s.role, s.state]),
          [
            ['a2', 'primary', 'up'],
            ['agent-1', 'standby', 'up'],
          ],
        );
        assert.equal(typeof shown.servers[1]?.lagSeconds, 'number');
        await waitFor('synchronous replication to be in force', async () => (await info(cluster)).replication?.inForce === true);
        assert.match(await cliOk(cluster, ['addons:info', 'postgres-1', '-a', APP]), /Replication: sync, in force/);
        const url = (JSON.parse(await cliOk(cluster, ['addons', '-a', APP, '--json', '--reveal'])) as AddonView[])[0]?.url ?? '';
        assert.equal((await psqlResult(url, 'SHOW synchronous_standby_names')).out, '"hangar_standby"');
        assert.equal((await psqlResult(url, 'SHOW synchronous_commit')).out, 'on');
        const metrics = await request(`${cluster.coordinator.url}/metrics`, {
          headers: { authorization: `Bearer ${cluster.coordinator.adminToken}` },
        });
        assert.match(await metrics.body.text(), /hangar_addon_replication_lag_bytes\{app="shop",addon="postgres-1",agent="agent-1"\} \d+/);
        const config = JSON.parse(await cliOk(cluster, ['config', '-a', APP, '--json'])) as Record<string, string>;
        assert.match(config.DATABASE_URL ?? '', /^postgres:\/\//);
        // The replication password is never in the coordinator's log.
        const log = await readFile(join(cluster.dir, 'coordinator.log'), 'utf8');
        assert.doesNotMatch(log, /hangar_replicator:[0-9a-f]{48}/);
      });

      await t.test('bad input changes nothing', async () => {
        const same = await cluster.cli(['addons:standby:add', 'postgres-1', '--agent', 'a2', '-a', APP]);
        assert.equal(same.code, 1);
        assert.match(same.stderr, /has a standby already/);
        // Another app (no release: its add-ons roll nothing out) with a Redis and a PostgreSQL without a standby.
        await cliOk(cluster, ['apps:create', 'other']);
        const create = async (kind: string) => {
          const res = await request(`${cluster.coordinator.url}/v1/apps/other/addons`, {
            method: 'POST',
            headers: { authorization: `Bearer ${cluster.coordinator.adminToken}`, 'content-type': 'application/json' },
            body: JSON.stringify({ kind, agent: 'a2' }),
          });
          assert.equal(res.statusCode, 202);
          return ((await res.body.json()) as { addon: AddonView }).addon.name;
        };
        const redis = await create('redis');
        const pg = await create('postgres');
        const redisFailover = await cluster.cli(['addons:failover', redis, '-a', 'other']);
        assert.equal(redisFailover.code, 1);
        assert.match(redisFailover.stderr, /redis add-on; failover is for PostgreSQL add-ons with a standby/);
        const redisStandby = await cluster.cli(['addons:standby:add', redis, '-a', 'other']);
        assert.equal(redisStandby.code, 1);
        assert.match(redisStandby.stderr, /standbys are for PostgreSQL add-ons/);
        const sameAgent = await cluster.cli(['addons:standby:add', pg, '--agent', 'a2', '-a', 'other']);
        assert.equal(sameAgent.code, 1);
        assert.match(sameAgent.stderr, /a standby on the same agent would die with it/);
        const none = await cluster.cli(['addons:failover', pg, '-a', 'other']);
        assert.equal(none.code, 1);
        assert.match(none.stderr, new RegExp(`${pg} has no standby to fail over to; add one with \`hangar addons:standby:add ${pg}`));
        const res = await request(`${cluster.coordinator.url}/v1/apps/other/addons/${pg}/failover`, {
          method: 'POST',
          headers: { authorization: `Bearer ${cluster.coordinator.adminToken}`, 'content-type': 'application/json' },
          body: '{}',
        });
        assert.equal(res.statusCode, 400);
        assert.equal(((await res.body.json()) as { code: string }).code, 'BAD_INPUT');
        const shown = await info(cluster);
        assert.equal(shown.agent, 'a2');
        assert.equal(shown.servers.length, 2);
      });

      await t.test('kill -9 of the primary agent and its server: the sync standby is promoted with every committed row', async () => {
        const writer = startWriter(routerPort);
        await waitFor('rows written', () => writer.committed() >= 30, 60_000);
        const pid = (JSON.parse(await readFile(join(a2Dir, 'addons', 'postgres-1', 'pid.json'), 'utf8')) as { pid: number }).pid;
        const child = a2.child;
        assert.ok(child);
        const killedAt = Date.now();
        child.kill('SIGKILL');
        process.kill(-pid, 'SIGKILL');
        const before = writer.committed();
        await waitFor('the postgres server to be gone', () => !alive(pid), 10_000);
        // A write sent after the kill: one in flight at the kill may still answer 201 after it.
        await waitFor('the app to commit rows again', () => writer.lastOkSentAt() > killedAt && writer.committed() > before, 60_000, 100);
        const recoveredS = (writer.lastOkAt() - killedAt) / 1000;
        await writer.stop();
        const shown = await info(cluster);
        assert.equal(shown.agent, 'agent-1');
        assert.deepEqual(
          shown.servers.map((s) => [s.agent, s.role]),
          [
            ['agent-1', 'primary'],
            ['a2', 'fenced'],
          ],
        );
        const present = await notesCount(cluster, routerPort);
        const lost = Math.max(0, before - (present - (writer.committed() - before)));
        console.log(
          `failover after kill -9 (--standby=sync): serving again after ${recoveredS.toFixed(1)} s; rows committed before the kill: ${before}, lost: ${lost}`,
        );
        assert.equal(lost, 0, 'every row the app got a commit for is on the promoted standby');
        await waitFor('the failover line in the app log', async () =>
          /failed over to agent-1, which was in sync: no acknowledged commit is lost/.test(
            await cliOk(cluster, ['logs', '-a', APP, '--source', 'hangar', '-n', '500']),
          ),
        );
        const releases = await cliOk(cluster, ['releases', '-a', APP]);
        assert.match(releases, /Failover postgres-1 to agent-1/);
      });

      await t.test('the dead agent comes back: its old primary is a standby, not a second primary', async () => {
        a2.start();
        await a2Up();
        await waitFor(
          'a2 to be the standby',
          async () => {
            const i = await info(cluster);
            return i.servers[1]?.agent === 'a2' && i.servers[1].role === 'standby' && i.servers[1].state === 'up';
          },
          90_000,
        );
        const url = (JSON.parse(await cliOk(cluster, ['addons', '-a', APP, '--json', '--reveal'])) as AddonView[]).find(
          (a) => a.name === 'postgres-1',
        )?.url;
        assert.ok(url);
        const port = (JSON.parse(await readFile(join(a2Dir, 'addons', 'postgres-1', 'addon.json'), 'utf8')) as { port: number }).port;
        const old = new URL(url);
        old.port = String(port);
        assert.equal((await psqlResult(old.toString(), 'SELECT pg_is_in_recovery()')).out, 't');
        const write = await psqlResult(old.toString(), "INSERT INTO notes_note (text) VALUES ('x')");
        assert.notEqual(write.code, 0);
        assert.match(write.err, /read-only transaction/);
        // Async after the promotion; sync again once the new standby streams.
        await waitFor('sync to be in force again', async () => (await info(cluster)).replication?.inForce === true, 30_000);
      });

      await t.test('planned failover under a writing load loses no committed row', async () => {
        const baseline = await notesCount(cluster, routerPort);
        const writer = startWriter(routerPort);
        await waitFor('rows written', () => writer.committed() >= 20, 60_000);
        const out = await cliOk(cluster, ['addons:failover', 'postgres-1', '-a', APP]);
        assert.match(out, /has replayed everything the primary wrote/);
        assert.match(out, /postgres-1 runs on a2/);
        const at = Date.now();
        await waitFor('the app to commit rows again', () => writer.lastOkAt() > at, 60_000, 100);
        await writer.stop();
        const present = await notesCount(cluster, routerPort);
        const lost = Math.max(0, baseline + writer.committed() - present);
        console.log(`planned failover: ${writer.committed()} rows committed under load, lost: ${lost}`);
        assert.equal(lost, 0);
        const shown = await info(cluster);
        assert.deepEqual(
          shown.servers.map((s) => [s.agent, s.role]),
          [
            ['a2', 'primary'],
            ['agent-1', 'standby'],
          ],
        );
        await waitFor('agent-1 to stream from a2', async () => (await info(cluster)).servers[1]?.state === 'up', 60_000);
      });
    } finally {
      await a2.stopAll();
    }
  },
);
