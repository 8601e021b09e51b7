/**
 * Rollout benchmark: a real `hangar deploy` of the Django test app (gunicorn, 10 web instances
 * already running) timed from the user's side — the CLI process from start to exit: upload,
 * build, release phase, rollout — on one agent (or `--agents 2`). The wall time is split into
 *
 * - build (the deploy's "Building" line → its last build line),
 * - release phase (→ its last release line: the app's migrate),
 * - app boot, per rollout batch (process start → first passing health check, as the agent timed
 *   it; the slowest of the batch),
 * - Hangar's own overhead: the rest (upload, placement, agent start-up, the health-poll cadence,
 *   routes sent and acked by every router, drain bookkeeping, the CLI's following).
 *
 * Goal: Hangar's overhead ≤ 2 s per rollout batch; printed with met / missed, a miss exits non-zero.
 *
 *   npm run build && npm run bench:rollout [-- --agents 2 --instances 10]
 */
import { spawn } from 'node:child_process';
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
import { SecretBox } from '../common/secret-box.js';
import { Store } from '../coordinator/store/store.js';
import { Goals } from './goals.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const APP = 'bench';
const HANGAR = join(ROOT, 'bin', 'hangar.js');
const OVERHEAD_GOAL_S = 2;

/** Runs `hangar ARGS` as a user would; resolves with its exit code, output and wall time in ms. */
function cli(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string; ms: number; startedAt: number }> {
  const t0 = performance.now();
  const startedAt = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [HANGAR, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out, ms: performance.now() - t0, startedAt }));
  });
}

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

    // The measured deploy: the real CLI, a changed source (a new build of the same requirements).
    await writeFile(join(source, 'BENCH_RUN'), String(Date.now()));
    const env = { HANGAR_URL: coordinator.url, HANGAR_TOKEN: coordinator.adminToken, HANGAR_CREDENTIALS: join(dir, 'none.json') };
    // The deploy's id is read from the store while it runs (the API lists no deploys), for its lines.
    const store = new Store({
      path: join(dir, 'coordinator', 'hangar.db'),
      secrets: await SecretBox.fromKeyFile(join(dir, 'coordinator', 'secret-key')),
    });
    let deployId: string | null = null;
    const watch = setInterval(() => (deployId ??= store.activeDeploys().find((d) => d.app === APP)?.id ?? null), 50);
    const run = await cli(['deploy', source, '-a', APP], env);
    clearInterval(watch);
    if (run.code !== 0) throw new Error(`hangar deploy failed:\n${run.out}`);
    const wall = run.ms / 1000;
    const id: string | null = deployId;
    const lines = id ? store.deployLines(id, 0, 100_000) : [];
    store.close();
    if (!id) throw new Error('the deploy was not seen while it ran');
    const at = (l: { ts: number } | undefined) => l?.ts ?? Number.NaN;
    const building = lines.find((l) => /^-----> Building v\d+/.test(l.line));
    const lastBuild = lines.filter((l) => l.source === 'build').at(-1);
    const lastRelease = lines.filter((l) => l.source === 'release').at(-1);
    const starting = lines.find((l) => /^-----> Starting v\d+/.test(l.line));
    const end = lines.at(-1);
    if (!building || !lastBuild || !starting || !end)
      throw new Error(`the deploy output lacks its build or rollout lines:\n${lines.map((l) => l.line).join('\n')}`);
    const build = (at(lastBuild) - at(building)) / 1000;
    const release = lastRelease ? (at(lastRelease) - at(lastBuild)) / 1000 : 0;
    const starts = lines.filter((l) => /web: starting \d+ of v\d+/.test(l.line));
    const healthy = lines.filter((l) => /web: \d+ of v\d+ healthy/.test(l.line));
    process.stdout.write(
      `\n${'batch'.padEnd(6)}${'new'.padStart(4)}${'wall s'.padStart(9)}${'boot s'.padStart(9)}${'overhead s'.padStart(12)}\n`,
    );
    let totalBoot = 0;
    starts.forEach((s, n) => {
      const next = starts[n + 1];
      const batchWall = ((next ? at(next) : at(end)) - at(s)) / 1000;
      const h = healthy[n];
      const boot = h ? Number(/app boot ([\d.]+) s/.exec(h.line)?.[1] ?? 'NaN') : Number.NaN;
      const count = Number(/starting (\d+)/.exec(s.line)?.[1] ?? '0');
      totalBoot += boot;
      process.stdout.write(
        `${String(n + 1).padEnd(6)}${String(count).padStart(4)}${batchWall.toFixed(2).padStart(9)}${boot.toFixed(2).padStart(9)}${(batchWall - boot).toFixed(2).padStart(12)}\n`,
      );
    });
    const batches = starts.length;
    const overhead = wall - build - release - totalBoot;
    process.stdout.write(
      `\nhangar deploy of ${instances} running web instances, from the user's side: ${wall.toFixed(2)} s = ` +
        `build ${build.toFixed(2)} s + release phase ${release.toFixed(2)} s + app boot ${totalBoot.toFixed(2)} s (${batches} batches) + ` +
        `Hangar overhead ${overhead.toFixed(2)} s (of which CLI start and upload → build ${((at(building) - run.startedAt) / 1000).toFixed(2)} s, ` +
        `release phase → rollout ${((at(starting) - at(lastRelease ?? lastBuild)) / 1000).toFixed(2)} s, last line → CLI exit ${((run.startedAt + run.ms - at(end)) / 1000).toFixed(2)} s)\n`,
    );
    const goals = new Goals();
    goals.check({
      name: 'Hangar overhead per rollout batch',
      value: overhead / Math.max(1, batches),
      unit: 's',
      op: '<=',
      goal: OVERHEAD_GOAL_S,
      digits: 2,
    });
    goals.finish('rollout');
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
