/**
 * Rollout benchmark: rolls a new release of 10 web instances (the Django test app under
 * gunicorn) on one agent (or `--agents 2`) and prints, per batch, the wall time, the app's own
 * boot (process start → first passing health check, as the agent timed it) and the control
 * plane's overhead = wall time − app boot (placement, agent start-up, health-check cadence,
 * routes sent and acked by every router, drain bookkeeping). Goal: overhead ≤ 2 s per batch.
 *
 *   npm run build && npm run bench:rollout [-- --agents 2 --instances 10]
 */
import { chmod, cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { startAgent, type RunningAgent } from '../agent/agent.js';
import { ApiClient } from '../cli/api-client.js';
import { createSourceArchive } from '../cli/source-archive.js';
import type { DeployLine, DeployView } from '../common/api-types.js';
import { startCoordinator } from '../coordinator/coordinator.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const APP = 'bench';

async function follow(client: ApiClient, first: DeployView, timeoutMs: number): Promise<{ deploy: DeployView; lines: DeployLine[] }> {
  const lines: DeployLine[] = [...first.lines];
  let deploy = first;
  const deadline = Date.now() + timeoutMs;
  while (deploy.status !== 'succeeded' && deploy.status !== 'failed') {
    if (Date.now() > deadline) throw new Error(`deploy ${deploy.id} did not finish in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
    deploy = await client.getDeploy(APP, deploy.id, lines.at(-1)?.seq ?? 0);
    lines.push(...deploy.lines);
  }
  if (deploy.status === 'failed') throw new Error(`deploy failed: ${deploy.error}\n${lines.map((l) => l.line).join('\n')}`);
  return { deploy, lines };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { agents: { type: 'string', default: '1' }, instances: { type: 'string', default: '10' } },
  });
  const agentCount = Math.max(1, Number(values.agents));
  const instances = Math.max(1, Number(values.instances));
  const dir = await mkdtemp(join(tmpdir(), 'hangar-bench-rollout-'));
  // As root, apps run as the `hangar` user: it must reach the agents' data dirs below this one.
  await chmod(dir, 0o711);
  const appFiles = join(dir, 'app-files');
  await mkdir(appFiles, { mode: 0o1777 });
  await chmod(appFiles, 0o1777);
  const logger = pino({ level: 'info' }, createWriteStream(join(dir, 'bench.log')));
  const coordinator = await startCoordinator(
    {
      dataDir: join(dir, 'coordinator'),
      httpPort: 0,
      httpHost: '127.0.0.1',
      grpcPort: 0,
      grpcHost: '127.0.0.1',
      heartbeatIntervalMs: 1000,
      healthTimeoutMs: 180_000,
      graceSeconds: 10,
    },
    { logger },
  );
  const agents: RunningAgent[] = [];
  const client = new ApiClient({ url: coordinator.url, token: coordinator.adminToken });
  try {
    for (let i = 1; i <= agentCount; i++) {
      agents.push(
        await startAgent(
          {
            coordinator: coordinator.grpcAddress,
            joinToken: coordinator.joinToken,
            dataDir: join(dir, `agent-${i}`),
            name: `agent-${i}`,
            routerPort: 0,
            httpsPort: 0,
            routerHost: '127.0.0.1',
            advertise: '127.0.0.1',
          },
          { logger },
        ),
      );
    }
    // The test app with one gunicorn worker per instance, so 10 instances fit a small machine.
    const source = join(dir, 'app');
    await cp(join(ROOT, 'test', 'fixtures', 'django-app'), source, { recursive: true });
    await writeFile(join(source, 'Procfile'), 'web: gunicorn mysite.wsgi --bind 0.0.0.0:$PORT --workers 1\n');
    await client.createApp(APP);
    await client.updateConfig(APP, { DATABASE_URL: `sqlite:///${join(appFiles, 'bench.sqlite3')}` });
    const archive = await createSourceArchive(source);
    process.stdout.write(`Rollout benchmark: ${instances} web instances on ${agentCount} agent(s)\n`);
    await follow(client, await client.createBuild(APP, archive.data), 600_000);
    await client.scale(APP, { web: instances });
    const upDeadline = Date.now() + 300_000;
    while ((await client.listPs(APP)).filter((r) => r.state === 'up').length < instances) {
      if (Date.now() > upDeadline) throw new Error(`web=${instances} did not come up`);
      await new Promise((r) => setTimeout(r, 200));
    }

    // The measured rollout: a config change makes a new release of the same build.
    const update = await client.updateConfig(APP, { BENCH_RUN: String(Date.now()) });
    if (!update.deploy) throw new Error('the config change made no deploy');
    const { deploy, lines } = await follow(client, update.deploy, 900_000);
    const ts = (l: DeployLine) => Date.parse(l.ts);
    const start = lines.find((l) => /^-----> Starting v\d+/.test(l.line));
    const end = Date.parse(deploy.finishedAt ?? '');
    if (!start || !Number.isFinite(end)) throw new Error('no rollout start or end in the deploy output');
    const starts = lines.filter((l) => /web: starting \d+ of v\d+/.test(l.line));
    const healthy = lines.filter((l) => /web: \d+ of v\d+ healthy/.test(l.line));
    process.stdout.write(
      `\n${'batch'.padEnd(6)}${'new'.padStart(4)}${'wall s'.padStart(9)}${'boot s'.padStart(9)}${'overhead s'.padStart(12)}\n`,
    );
    let totalBoot = 0;
    let totalOverhead = 0;
    starts.forEach((s, n) => {
      const next = starts[n + 1];
      const wall = ((next ? ts(next) : end) - ts(s)) / 1000;
      const h = healthy[n];
      const boot = h ? Number(/app boot ([\d.]+) s/.exec(h.line)?.[1] ?? 'NaN') : Number.NaN;
      const count = Number(/starting (\d+)/.exec(s.line)?.[1] ?? '0');
      totalBoot += boot;
      totalOverhead += wall - boot;
      process.stdout.write(
        `${String(n + 1).padEnd(6)}${String(count).padStart(4)}${wall.toFixed(2).padStart(9)}${boot.toFixed(2).padStart(9)}${(wall - boot).toFixed(2).padStart(12)}\n`,
      );
    });
    const total = (end - ts(start)) / 1000;
    const batches = starts.length;
    process.stdout.write(
      `\nrollout of ${instances} web instances: ${total.toFixed(2)} s in ${batches} batches` +
        ` (app boot ${totalBoot.toFixed(2)} s, control plane ${(total - totalBoot).toFixed(2)} s)\n` +
        `control-plane overhead: ${(totalOverhead / batches).toFixed(2)} s per batch on average (goal ≤ 2 s)\n`,
    );
  } finally {
    await client.close();
    await Promise.all(agents.map((a) => a.close({ stopInstances: true })));
    await coordinator.close();
    await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
