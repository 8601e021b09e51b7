/**
 * Router benchmark: requests/s and p50/p99 latency of GET / on the Django test app under real
 * gunicorn (its Procfile's settings: 2 sync workers, access log on), reached three ways in
 * interleaved rounds of one run:
 *
 * - `router`: the agent's router (bench/router-server.ts, a process of its own, defaults, an
 *   access line per request into the agent's log spool);
 * - `nginx`:  Debian's nginx as a keep-alive reverse proxy (`proxy_http_version 1.1`, an upstream
 *   with `keepalive`), Debian's default `worker_processes auto`, an access line per request;
 * - `direct`: gunicorn itself.
 *
 * Each proxy's CPU time per request (its process group, from /proc) is printed too: on a shared
 * machine it is steadier than requests/s.
 *
 * Goals: router ≥ nginx and router ≥ 0.9 × direct in requests/s, per round; the medians of the
 * per-round ratios are compared, and their spread printed as the noise.
 *
 * The load generator is a small loop over undici's `Client` (one keep-alive connection per
 * client, one request at a time, like a browser): undici is already a dependency, and it is the
 * same HTTP client the router uses upstream; autocannon and wrk are not installed here. It runs
 * in this process, the router and nginx in their own, gunicorn in its own.
 *
 *   npm run bench:router [-- --rounds 5 --seconds 5 --connections 16 --profile DIR]
 *
 * `--baseline DIST` adds a fourth target, `baseline`: the router-server.js of another build (e.g.
 * `git archive main` compiled in /tmp) in the same interleaved rounds, for before/after figures.
 * `--profile DIR` runs the router with `--cpu-prof` and leaves its .cpuprofile in DIR.
 * `--https` is reserved for the router's HTTPS listener (added separately): the scheme is one
 * field of each target below, so adding it means a TLS port in router-server.ts and nginx.conf.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Client } from 'undici';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DOMAIN = 'bench.localhost';
const NOBODY = 65534;

interface Target {
  name: 'router' | 'baseline' | 'nginx' | 'direct';
  scheme: 'http';
  port: number;
  /** Process group of the proxy, whose CPU time per request is measured; none for direct. */
  pgid?: number;
}

interface RoundFigures {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  /** CPU ms (user + system) the proxy's processes spent per request; NaN for direct. */
  cpuMs: number;
}

const TICKS_PER_SECOND = 100;

/** CPU time of every process in group `pgid` so far, in ms (from /proc, clock ticks of 10 ms). */
async function groupCpuMs(pgid: number): Promise<number> {
  let ticks = 0;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // Fields after the command name (which may hold spaces) start at index 2 of `state`.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(rest[2]) !== pgid) continue;
    ticks += Number(rest[11]) + Number(rest[12]);
  }
  return (ticks * 1000) / TICKS_PER_SECOND;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves when `port` answers GET / with 200 (the child is ready), or throws after 30 s. */
async function waitReady(port: number, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode})`);
    try {
      const client = new Client(`http://127.0.0.1:${port}`);
      const res = await client.request({ method: 'GET', path: '/', headers: { host: DOMAIN } });
      await res.body.text();
      await client.close();
      if (res.statusCode === 200) return;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`${what} did not answer on port ${port} within 30 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Stops a child and its process group: SIGTERM, then SIGKILL after 5 s. */
async function stop(child: ChildProcess | undefined): Promise<void> {
  if (child?.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  try {
    process.kill(-child.pid, 'SIGTERM');
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }, 5_000);
  await exited;
  clearTimeout(timer);
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** `connections` loops, each GETs / on its own keep-alive connection for `ms`; latency per request. */
async function load(target: Target, connections: number, ms: number): Promise<RoundFigures> {
  const latencies: number[] = [];
  let errors = 0;
  const start = performance.now();
  const end = start + ms;
  const loop = async (): Promise<void> => {
    const client = new Client(`${target.scheme}://127.0.0.1:${target.port}`, { pipelining: 1, keepAliveTimeout: 30_000 });
    try {
      while (performance.now() < end) {
        const t0 = performance.now();
        try {
          const res = await client.request({ method: 'GET', path: '/', headers: { host: DOMAIN } });
          await res.body.dump();
          if (res.statusCode === 200) latencies.push(performance.now() - t0);
          else errors++;
        } catch {
          errors++;
        }
      }
    } finally {
      await client.close().catch(() => undefined);
    }
  };
  const cpuBefore = target.pgid === undefined ? NaN : await groupCpuMs(target.pgid);
  await Promise.all(Array.from({ length: connections }, loop));
  const elapsed = (performance.now() - start) / 1000;
  const cpuMs = target.pgid === undefined ? NaN : ((await groupCpuMs(target.pgid)) - cpuBefore) / Math.max(1, latencies.length);
  const sorted = Float64Array.from(latencies).sort();
  return { rps: latencies.length / elapsed, p50: percentile(sorted, 50), p99: percentile(sorted, 99), errors, cpuMs };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

function nginxConfig(dir: string, port: number, upstream: number): string {
  return `worker_processes auto;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 768; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream app {
    server 127.0.0.1:${upstream};
    keepalive 32;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Request-Id $request_id;
    }
  }
}
`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '5' },
      seconds: { type: 'string', default: '5' },
      connections: { type: 'string', default: '16' },
      profile: { type: 'string' },
      https: { type: 'boolean', default: false },
      baseline: { type: 'string' },
    },
  });
  if (values.https) {
    throw new Error('--https needs the router HTTPS listener, which this build does not have yet; run without --https.');
  }
  const rounds = Math.max(1, Number(values.rounds));
  const seconds = Math.max(1, Number(values.seconds));
  const connections = Math.max(1, Number(values.connections));
  const dir = await mkdtemp(join(tmpdir(), 'hangar-bench-router-'));
  await chmod(dir, 0o755);
  const appDir = join(dir, 'app');
  await cp(join(ROOT, 'test', 'fixtures', 'django-app'), appDir, { recursive: true });
  const asNobody = process.getuid?.() === 0 ? { uid: NOBODY, gid: NOBODY } : {};
  await chmod(appDir, 0o777);
  const children: ChildProcess[] = [];
  try {
    // gunicorn as the Procfile starts it, as an unprivileged user.
    const gunicornPort = await freePort();
    const gunicorn = spawn('gunicorn', ['mysite.wsgi', '--bind', `127.0.0.1:${gunicornPort}`, '--workers', '2', '--access-logfile', '-'], {
      cwd: appDir,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', SECRET_KEY: 'bench-secret-key-'.repeat(4), PYTHONUNBUFFERED: '1' },
      stdio: ['ignore', 'ignore', 'ignore'],
      detached: true,
      ...asNobody,
    });
    children.push(gunicorn);
    await waitReady(gunicornPort, gunicorn, 'gunicorn');

    const nginxDir = join(dir, 'nginx');
    const nginxPort = await freePort();
    await mkdir(nginxDir);
    await writeFile(join(nginxDir, 'nginx.conf'), nginxConfig(nginxDir, nginxPort, gunicornPort));
    const nginx = spawn('/usr/sbin/nginx', ['-p', nginxDir, '-c', join(nginxDir, 'nginx.conf'), '-e', join(nginxDir, 'error.log')], {
      stdio: ['ignore', 'ignore', 'inherit'],
      detached: true,
    });
    children.push(nginx);
    await waitReady(nginxPort, nginx, 'nginx');

    const profile = values.profile === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', values.profile];
    const startRouter = async (name: 'router' | 'baseline', script: string, flags: string[]): Promise<Target> => {
      const routerDir = join(dir, name);
      await mkdir(routerDir);
      const child = spawn(
        process.execPath,
        [...flags, script, '--upstream', `127.0.0.1:${gunicornPort}`, '--domain', DOMAIN, '--dir', routerDir],
        {
          stdio: ['ignore', 'pipe', 'inherit'],
          detached: true,
        },
      );
      children.push(child);
      const first = await new Promise<string>((resolve, reject) => {
        const rl = createInterface({ input: child.stdout as NodeJS.ReadableStream });
        rl.once('line', (line) => {
          rl.close();
          resolve(line);
        });
        child.once('exit', (code) => reject(new Error(`${script} exited with ${code}`)));
      });
      const port = (JSON.parse(first) as { port: number }).port;
      await waitReady(port, child, name);
      return { name, scheme: 'http', port, ...(child.pid === undefined ? {} : { pgid: child.pid }) };
    };

    const targets: Target[] = [
      await startRouter('router', join(ROOT, 'dist', 'bench', 'router-server.js'), profile),
      ...(values.baseline === undefined ? [] : [await startRouter('baseline', join(values.baseline, 'bench', 'router-server.js'), [])]),
      { name: 'nginx', scheme: 'http', port: nginxPort, ...(nginx.pid === undefined ? {} : { pgid: nginx.pid }) },
      { name: 'direct', scheme: 'http', port: gunicornPort },
    ];
    const figures = new Map<Target['name'], RoundFigures[]>(targets.map((t) => [t.name, []]));
    console.log(`router benchmark: GET / on the Django test app, ${connections} keep-alive connections, ${rounds} rounds of ${seconds} s`);
    for (let round = 1; round <= rounds; round++) {
      // Rotate the order so no target always runs first (or right after another).
      const order = targets.map((_, i) => targets[(i + round) % targets.length] as Target);
      for (const target of order) {
        await load(target, connections, 1_000);
        const f = await load(target, connections, seconds * 1_000);
        figures.get(target.name)?.push(f);
        console.log(
          `  round ${round} ${target.name.padEnd(8)} ${f.rps.toFixed(0).padStart(6)} req/s  p50 ${f.p50.toFixed(2)} ms  p99 ${f.p99.toFixed(2)} ms${Number.isNaN(f.cpuMs) ? '' : `  cpu ${f.cpuMs.toFixed(3)} ms/req`}${f.errors > 0 ? `  errors ${f.errors}` : ''}`,
        );
      }
    }
    const of = (name: Target['name']): RoundFigures[] => figures.get(name) ?? [];
    console.log('\nmedians of the rounds:');
    for (const t of targets) {
      const fs = of(t.name);
      console.log(
        `  ${t.name.padEnd(8)} ${median(fs.map((f) => f.rps))
          .toFixed(0)
          .padStart(
            6,
          )} req/s  p50 ${median(fs.map((f) => f.p50)).toFixed(2)} ms  p99 ${median(fs.map((f) => f.p99)).toFixed(2)} ms${t.pgid === undefined ? '' : `  cpu ${median(fs.map((f) => f.cpuMs)).toFixed(3)} ms/req`}  errors ${fs.reduce((n, f) => n + f.errors, 0)}`,
      );
    }
    const ratio = (a: Target['name'], b: Target['name']): number[] => of(a).map((f, i) => f.rps / (of(b)[i]?.rps ?? NaN));
    const report = (label: string, rs: number[], goal: number): void => {
      const m = median(rs);
      console.log(
        `  ${label.padEnd(16)} ${m.toFixed(3)}  (rounds ${Math.min(...rs).toFixed(3)}–${Math.max(...rs).toFixed(3)})  goal ≥ ${goal.toFixed(2)}  ${m >= goal ? 'met' : 'missed'}`,
      );
    };
    console.log('\nrequests/s ratios (median of per-round ratios, range = noise):');
    report('router/nginx', ratio('router', 'nginx'), 1);
    report('router/direct', ratio('router', 'direct'), 0.9);
    if (values.baseline !== undefined) report('router/baseline', ratio('router', 'baseline'), 1);
    const cpu = (name: Target['name']): number => median(of(name).map((f) => f.cpuMs));
    console.log(
      `  proxy CPU per request, router/nginx: ${(cpu('router') / cpu('nginx')).toFixed(2)} (less noisy on a shared machine; no goal)`,
    );
    const spooled = await readFile(join(dir, 'router', 'router.log'), 'utf8').catch(() => '');
    if (spooled.includes('"level":50')) console.log('\nthe router logged errors: see its log');
  } finally {
    for (const child of children.reverse()) await stop(child);
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
});
