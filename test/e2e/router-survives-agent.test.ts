import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, cp, mkdir, readFile, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import type { PsRow } from '../../common/api-types.js';
import { freePort } from '../../agent/workloads/free-port.js';
import { agentProcess } from '../helpers/agent-process.js';
import { ROOT, startCluster, waitFor } from '../helpers/cluster.js';
import { deployFixture, ps } from '../helpers/deploy-fixture.js';
import { startHttpLoad } from '../helpers/http-load.js';

const HOST = 'shop.localhost';

function kill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Gone already.
  }
}

/** A GET that sleeps `ms` in the Django view (a long request in flight across the disruption). */
async function slowRequest(port: number, ms: number, mark: string): Promise<number> {
  const res = await request(`http://127.0.0.1:${port}/slow/?ms=${ms}&mark=${mark}`, {
    headers: { host: HOST },
    headersTimeout: 60_000,
    bodyTimeout: 60_000,
  });
  await res.body.text();
  return res.statusCode;
}

test(
  'the router outlives its agent: kill -9, a graceful restart and an upgrade drop no request under load',
  { timeout: 600_000 },
  async (t) => {
    const cluster = await startCluster(t, { agents: 0 });
    const dataDir = join(cluster.dir, 'agent-a1');
    const routerPort = await freePort();
    const pidFile = join(dataDir, 'router', 'router.pid');
    const routerPid = async () => Number((await readFile(pidFile, 'utf8')).trim());

    // The upgrade: the same build copied elsewhere with the router's code changed (its version differs).
    const upgraded = join(cluster.dir, 'upgraded');
    await mkdir(upgraded);
    await cp(join(ROOT, 'dist'), join(upgraded, 'dist'), { recursive: true, filter: (src) => !src.includes(`${join('dist', 'test')}`) });
    await cp(join(ROOT, 'bin'), join(upgraded, 'bin'), { recursive: true });
    await cp(join(ROOT, 'proto'), join(upgraded, 'proto'), { recursive: true });
    await cp(join(ROOT, 'package.json'), join(upgraded, 'package.json'));
    await symlink(join(ROOT, 'node_modules'), join(upgraded, 'node_modules'));
    await appendFile(join(upgraded, 'dist', 'agent', 'router', 'router-host.js'), '\n// the next version\n');

    const agent = agentProcess(cluster, { name: 'a1', dataDir, routerPort });
    const agentUp = () =>
      waitFor(
        'the agent to be connected',
        async () => {
          const res = await cluster.cli(['agents', '--json']);
          return (JSON.parse(res.stdout) as { name: string; state: string }[]).some((a) => a.name === 'a1' && a.state === 'up');
        },
        60_000,
      );

    let pids: number[] = [];
    let load: ReturnType<typeof startHttpLoad> | null = null;
    let lastRouterPid = 0;
    try {
      agent.start();
      await agentUp();
      await deployFixture(cluster, 'shop', {
        procfile: 'web: gunicorn mysite.wsgi --bind 0.0.0.0:$PORT --workers 4 --timeout 60\nrelease: python manage.py migrate --noinput\n',
      });
      pids = (await ps(cluster, 'shop')).flatMap((r: PsRow) => (r.pid ? [r.pid] : []));
      const firstRouter = await routerPid();
      lastRouterPid = firstRouter;

      load = startHttpLoad({ ports: [routerPort], host: HOST, clients: 4, postEvery: 0, postPath: '/notes/', pauseMs: 20, maxMs: 300_000 });
      const counts: Record<string, number> = {};
      const served = async (what: string, disrupt: () => Promise<void>) => {
        assert.ok(load);
        const before = load.ok;
        const failedBefore = load.failures.length;
        await new Promise((r) => setTimeout(r, 1000));
        // A request that is in flight all through the disruption.
        const long = slowRequest(routerPort, 6000, what);
        await new Promise((r) => setTimeout(r, 500));
        await disrupt();
        assert.equal(await long, 200, `the long request across the ${what} completes`);
        await new Promise((r) => setTimeout(r, 1000));
        counts[what] = load.ok - before;
        assert.deepEqual(load.failures.slice(failedBefore), [], `no request fails across the ${what}`);
      };

      // (1) kill -9 of the agent: the router serves on; requests served meanwhile are logged later.
      await served('kill -9', async () => {
        agent.child?.kill('SIGKILL');
        await agent.exited();
        for (let i = 0; i < 3; i++) assert.equal(await slowRequest(routerPort, 1, `while-down-${i}`), 200);
        agent.start();
        await agentUp();
      });
      assert.equal(await routerPid(), firstRouter, 'the restarted agent adopted the running router');
      await waitFor(
        'access lines of requests served while the agent was down, in hangar logs',
        async () => {
          const res = await cluster.cli(['logs', '-a', 'shop', '--source', 'router', '-n', '5000']);
          return [0, 1, 2].every((i) => res.stdout.includes(`mark=while-down-${i}"`));
        },
        30_000,
      );

      // (2) A graceful restart (SIGTERM, then start again).
      await served('graceful restart', async () => {
        agent.child?.kill('SIGTERM');
        await agent.exited();
        agent.start();
        await agentUp();
      });
      assert.equal(await routerPid(), firstRouter);

      // (3) An upgrade: the agent of the new code replaces the router; the listening socket is handed over.
      await served('upgrade', async () => {
        agent.child?.kill('SIGTERM');
        await agent.exited();
        agent.start(upgraded);
        await agentUp();
        await waitFor('the new router process', async () => (await routerPid()) !== firstRouter, 30_000);
      });
      lastRouterPid = await routerPid();
      await waitFor(
        'the replaced router to exit',
        () => {
          try {
            process.kill(firstRouter, 0);
            return false;
          } catch {
            return true;
          }
        },
        40_000,
      );
      const total = await load.stop();
      console.log(
        `router-survives-agent: served ${JSON.stringify(counts)}; ${total.ok} requests in all, ${total.failures.length} failed; routers ${firstRouter} -> ${lastRouterPid}`,
      );
      assert.deepEqual(total.failures, []);
    } finally {
      await load?.stop();
      // The apps and the router outlive an agent by design: a graceful stop, then stopAll by pidfiles.
      await cluster.cli(['scale', 'web=0', '-a', 'shop'], { timeoutMs: 20_000 }).catch(() => null);
      agent.child?.kill('SIGTERM');
      await Promise.race([agent.exited(), new Promise((r) => setTimeout(r, 10_000))]);
      await agent.stopAll();
      for (const pid of pids) kill(-pid, 'SIGKILL');
      for (const pid of new Set([lastRouterPid, await routerPid().catch(() => 0)])) if (pid > 0) kill(-pid, 'SIGKILL');
    }
  },
);
