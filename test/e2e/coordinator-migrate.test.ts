/**
 * `hangar coordinator migrate` end to end: a `hangar coordinator` process on SQLite with an app
 * deployed to an agent, stopped; the app keeps serving; the CLI copies hangar.db into a real
 * PostgreSQL; a coordinator started with `--database-url` on the same data dir (secret key, CA,
 * tokens) shows the same releases, config and logs, takes the agent back and makes the next release.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { request } from 'undici';
import { runCli, waitFor } from '../helpers/cluster.js';
import { coordinatorTest, freePort, health, stopped } from '../helpers/coordinator-process.js';
import { deployFixture } from '../helpers/deploy-fixture.js';
import { testPostgres } from '../helpers/postgres-server.js';

async function serves(port: number): Promise<boolean> {
  try {
    const res = await request(`http://127.0.0.1:${port}/`, {
      headers: { host: 'shop.localhost' },
      headersTimeout: 5000,
      bodyTimeout: 5000,
    });
    await res.body.dump();
    return res.statusCode === 200;
  } catch {
    return false;
  }
}

test(
  'a SQLite coordinator moved to PostgreSQL with hangar coordinator migrate: same releases, config and logs; the app serves throughout',
  { timeout: 420_000 },
  async (t) => {
    const ct = await coordinatorTest(t, 'hangar-migrate-e2e-');
    const { dir } = ct;
    const dataDir = join(dir, 'coordinator');
    const httpPort = await freePort();
    const grpcPort = await freePort();
    const coordinatorOptions = { dataDir, name: 'c1', httpPort, grpcPort };
    let coordinator = ct.spawn(coordinatorOptions);
    const url = coordinator.url;
    await waitFor('the SQLite coordinator to lead', async () => (await health(url))?.role === 'leader', 60_000);
    const token = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
    const joinToken = (await readFile(join(dataDir, 'join-token'), 'utf8')).trim();
    const env = { HANGAR_URL: url, HANGAR_TOKEN: token, HANGAR_CREDENTIALS: join(dir, 'no-credentials.json') };
    const cli = (args: string[], timeoutMs?: number) => runCli(args, env, timeoutMs);
    const agent = await ct.agent('a1', `127.0.0.1:${grpcPort}`, joinToken, { backoff: { initialMs: 200, maxMs: 1000 } });
    const cluster = ct.cluster(env);
    await deployFixture(cluster, 'shop', { config: { GREETING: 'moved intact' } });
    await waitFor('the app to serve', () => serves(agent.routerPort), 30_000);

    const added = await cli(['addons:create', 'redis', '-a', 'shop'], 240_000);
    assert.equal(added.code, 0, `${added.stdout}\n${added.stderr}`);

    // Every --json read command of the app, printed again by the PostgreSQL coordinator.
    const reads = [
      ['apps'],
      ['apps:info', '-a', 'shop'],
      ['releases', '-a', 'shop'],
      ['config', '-a', 'shop'],
      ['addons', '-a', 'shop'],
      ['domains', '-a', 'shop'],
    ];
    const readAll = async () => {
      const out: Record<string, unknown> = {};
      for (const args of reads) {
        const r = await cli([...args, '--json']);
        assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
        out[args.join(' ')] = JSON.parse(r.stdout) as unknown;
      }
      return out;
    };
    const readsBefore = await readAll();
    const releaseCount = (readsBefore['releases -a shop'] as unknown[]).length;
    assert.ok(releaseCount >= 2, 'a deploy and an add-on make two releases');
    const logs = await cli(['logs', '-a', 'shop', '-n', '30', '--source', 'build', '--json']);
    assert.equal(logs.code, 0, logs.stderr);
    assert.ok(logs.stdout.trim().split('\n').length > 3, logs.stdout);

    // Stopped gracefully: it gives the lease up. The app serves on from the agent's cached state.
    process.kill(-(coordinator.child.pid as number), 'SIGTERM');
    await stopped(coordinator.child);
    assert.ok(await serves(agent.routerPort), 'the app stopped serving with the coordinator down');

    const sqlitePath = join(dataDir, 'hangar.db');
    const digest = async () =>
      createHash('sha256')
        .update(await readFile(sqlitePath))
        .digest('hex');
    const before = await digest();
    const databaseUrl = (await testPostgres()).createDatabase('migrate_e2e');
    const migrated = await runCli(['coordinator', 'migrate', '--from', sqlitePath, '--to', databaseUrl], {});
    assert.equal(migrated.code, 0, `${migrated.stdout}\n${migrated.stderr}`);
    assert.match(migrated.stdout, new RegExp(`^releases +${releaseCount} +${releaseCount} +keys match$`, 'm'));
    assert.match(migrated.stdout, /next: hangar coordinator --data-dir .* --database-url postgres:/);
    assert.equal(await digest(), before, 'the migration changed the SQLite file');
    assert.ok(await serves(agent.routerPort), 'the app stopped serving during the migration');

    coordinator = ct.spawn({ ...coordinatorOptions, databaseUrl });
    await waitFor('the PostgreSQL coordinator to lead', async () => (await health(url))?.role === 'leader', 60_000);
    assert.deepEqual(await readAll(), readsBefore);
    const logsAfter = await cli(['logs', '-a', 'shop', '-n', '30', '--source', 'build', '--json']);
    assert.equal(logsAfter.stdout, logs.stdout);
    await waitFor(
      'the agent back on the PostgreSQL coordinator',
      async () => {
        const r = await cli(['agents', '--json']);
        const agents = r.code === 0 ? (JSON.parse(r.stdout) as { name: string; state: string }[]) : [];
        return agents.some((a) => a.name === 'a1' && a.state === 'up');
      },
      60_000,
    );
    assert.ok(await serves(agent.routerPort));

    // The next change is the next release, rolled out by the PostgreSQL coordinator.
    const set = await cli(['config:set', 'AFTER_MIGRATE=1', '-a', 'shop'], 240_000);
    assert.equal(set.code, 0, `${set.stdout}\n${set.stderr}`);
    const after = await cli(['releases', '-a', 'shop', '--json']);
    const versions = (JSON.parse(after.stdout) as { version: number }[]).map((r) => r.version);
    assert.equal(Math.max(...versions), releaseCount + 1, after.stdout);
    await waitFor('the app to serve the new release', () => serves(agent.routerPort), 60_000);
  },
);
