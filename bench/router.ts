/**
 * Router benchmark: requests/s and p50/p99 latency of GET / on the Django test app under real
 * gunicorn (its Procfile's settings: 2 sync workers, access log on), reached three ways in
 * interleaved rounds of one run:
 *
 * - `router`: the agent's router (bench/router-server.ts, a process of its own, defaults, an
 *   access entry per request through the router's access journal into the agent's log spool, as
 *   in production, the agent's half included in the router's CPU);
 * - `nginx`:  Debian's nginx as a keep-alive reverse proxy (`proxy_http_version 1.1`, an upstream
 *   with `keepalive`), an access line per request, `worker_processes` as many as the router has
 *   processes (1; `--nginx-workers auto` is Debian's default, one per core), no cap on requests per
 *   client connection (`keepalive_requests`), as the router has none;
 * - `direct`: gunicorn itself (plain HTTP: its sync workers close every connection).
 *
 * With `--https` the router and nginx are measured over HTTPS too (`router https`, `nginx https`:
 * TLS 1.3, one certificate for the domain from a throwaway CA, loaded into the router as the agent
 * loads one, SNI as a browser sends it), in the same rounds; their goals are against the same
 * plain-HTTP `direct`.
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
 * `--router-node-flags "FLAGS"` gives the router (not the baseline) extra node/V8 flags, e.g.
 * `--baseline dist --router-node-flags "--max-semi-space-size=16"` to measure a flag alone.
 * `--router-workers N` runs the router as N `node:cluster` workers sharing its port (default 1, as
 * the agent runs it); `--nginx-workers N|auto` sets nginx's `worker_processes` (default: as many as
 * the router has; `auto` is Debian's default, one per core).
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
import { TestCa } from '../test/helpers/test-certs.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DOMAIN = 'bench.localhost';
const NOBODY = 65534;

type Label = 'router' | 'baseline' | 'nginx' | 'direct' | 'router https' | 'baseline https' | 'nginx https';

interface Target {
  name: Label;
  scheme: 'http' | 'https';
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

/** The CA that signed the domain's certificate, trusted by the load generator; set with `--https`. */
let trustedCa: string | undefined;

/** A keep-alive client of `127.0.0.1:port`, over TLS (SNI `DOMAIN`, verified against {@link trustedCa}) for https. */
function clientOf(scheme: Target['scheme'], port: number, options: Client.Options = {}): Client {
  if (scheme === 'http') return new Client(`http://127.0.0.1:${port}`, options);
  return new Client(`https://127.0.0.1:${port}`, {
    ...options,
    connect: { servername: DOMAIN, ...(trustedCa === undefined ? {} : { ca: trustedCa }) },
  });
}

/** Resolves when `port` answers GET / with 200 (the child is ready), or throws after 30 s. */
async function waitReady(port: number, child: ChildProcess, what: string, scheme: Target['scheme'] = 'http'): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode})`);
    try {
      const client = clientOf(scheme, port);
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
    const client = clientOf(target.scheme, target.port, { pipelining: 1, keepAliveTimeout: 30_000 });
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

interface NginxListen {
  port: number;
  /** HTTPS port and the certificate files, with `--https`. */
  tls?: { port: number; cert: string; key: string };
}

function nginxConfig(dir: string, listen: NginxListen, upstream: number, workers: string): string {
  const tls =
    listen.tls === undefined
      ? ''
      : `
    listen 127.0.0.1:${listen.tls.port} ssl;
    ssl_certificate ${listen.tls.cert};
    ssl_certificate_key ${listen.tls.key};`;
  return `worker_processes ${workers};
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 768; }
http {
  access_log ${dir}/access.log;
  keepalive_requests 1000000000;
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
    listen 127.0.0.1:${listen.port};${tls}
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
      'router-node-flags': { type: 'string' },
      https: { type: 'boolean', default: false },
      baseline: { type: 'string' },
      'router-workers': { type: 'string', default: '1' },
      'nginx-workers': { type: 'string' },
    },
  });
  const routerWorkers = values['router-workers'];
  if (!/^[1-9]\d*$/.test(routerWorkers)) throw new Error('--router-workers takes a number of processes.');
  const nginxWorkers = values['nginx-workers'] ?? routerWorkers;
  if (!/^([1-9]\d*|auto)$/.test(nginxWorkers)) throw new Error('--nginx-workers takes a number of processes or "auto".');
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
    let cert: { certPath: string; keyPath: string } | undefined;
    if (values.https) {
      const caDir = join(dir, 'ca');
      await mkdir(caDir);
      const ca = await TestCa.create(caDir);
      cert = await ca.issue([DOMAIN]);
      trustedCa = await ca.caPem();
    }
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
    const nginxTlsPort = cert === undefined ? undefined : await freePort();
    await mkdir(nginxDir);
    const listen: NginxListen = {
      port: nginxPort,
      ...(cert === undefined || nginxTlsPort === undefined ? {} : { tls: { port: nginxTlsPort, cert: cert.certPath, key: cert.keyPath } }),
    };
    await writeFile(join(nginxDir, 'nginx.conf'), nginxConfig(nginxDir, listen, gunicornPort, nginxWorkers));
    const nginx = spawn('/usr/sbin/nginx', ['-p', nginxDir, '-c', join(nginxDir, 'nginx.conf'), '-e', join(nginxDir, 'error.log')], {
      stdio: ['ignore', 'ignore', 'inherit'],
      detached: true,
    });
    children.push(nginx);
    await waitReady(nginxPort, nginx, 'nginx');
    if (nginxTlsPort !== undefined) await waitReady(nginxTlsPort, nginx, 'nginx https', 'https');

    const profile = [
      ...(values.profile === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', values.profile]),
      ...(values['router-node-flags']?.split(/\s+/).filter((f) => f !== '') ?? []),
    ];
    /** The router (or baseline) target, and its HTTPS one with `--https`. */
    const startRouter = async (name: 'router' | 'baseline', script: string, flags: string[]): Promise<Target[]> => {
      const routerDir = join(dir, name);
      await mkdir(routerDir);
      const tlsArgs = cert === undefined ? [] : ['--cert', cert.certPath, '--key', cert.keyPath];
      const child = spawn(
        process.execPath,
        [
          ...flags,
          script,
          '--upstream',
          `127.0.0.1:${gunicornPort}`,
          '--domain',
          DOMAIN,
          '--dir',
          routerDir,
          ...tlsArgs,
          ...(routerWorkers === '1' ? [] : ['--workers', routerWorkers]),
        ],
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
      const { port, httpsPort } = JSON.parse(first) as { port: number; httpsPort?: number };
      await waitReady(port, child, name);
      const pgid = child.pid === undefined ? {} : { pgid: child.pid };
      const plain: Target = { name, scheme: 'http', port, ...pgid };
      if (cert === undefined) return [plain];
      if (httpsPort === undefined || httpsPort === 0)
        throw new Error(`${script} has no HTTPS listener; build it from a tree that has one, or run without --https.`);
      await waitReady(httpsPort, child, `${name} https`, 'https');
      return [plain, { name: `${name} https`, scheme: 'https', port: httpsPort, ...pgid }];
    };

    const nginxPgid = nginx.pid === undefined ? {} : { pgid: nginx.pid };
    const targets: Target[] = [
      ...(await startRouter('router', join(ROOT, 'dist', 'bench', 'router-server.js'), profile)),
      ...(values.baseline === undefined ? [] : await startRouter('baseline', join(values.baseline, 'bench', 'router-server.js'), [])),
      { name: 'nginx', scheme: 'http', port: nginxPort, ...nginxPgid },
      ...(nginxTlsPort === undefined ? [] : [{ name: 'nginx https', scheme: 'https', port: nginxTlsPort, ...nginxPgid } satisfies Target]),
      { name: 'direct', scheme: 'http', port: gunicornPort },
    ];
    const figures = new Map<Label, RoundFigures[]>(targets.map((t) => [t.name, []]));
    console.log(
      `router benchmark: GET / on the Django test app, ${connections} keep-alive connections, ${rounds} rounds of ${seconds} s; router ${routerWorkers} process(es), nginx worker_processes ${nginxWorkers}`,
    );
    for (let round = 1; round <= rounds; round++) {
      // Rotate the order so no target always runs first (or right after another).
      const order = targets.map((_, i) => targets[(i + round) % targets.length] as Target);
      for (const target of order) {
        await load(target, connections, 1_000);
        const f = await load(target, connections, seconds * 1_000);
        figures.get(target.name)?.push(f);
        console.log(
          `  round ${round} ${target.name.padEnd(14)} ${f.rps.toFixed(0).padStart(6)} req/s  p50 ${f.p50.toFixed(2)} ms  p99 ${f.p99.toFixed(2)} ms${Number.isNaN(f.cpuMs) ? '' : `  cpu ${f.cpuMs.toFixed(3)} ms/req`}${f.errors > 0 ? `  errors ${f.errors}` : ''}`,
        );
      }
    }
    const of = (name: Label): RoundFigures[] => figures.get(name) ?? [];
    console.log('\nmedians of the rounds:');
    for (const t of targets) {
      const fs = of(t.name);
      console.log(
        `  ${t.name.padEnd(14)} ${median(fs.map((f) => f.rps))
          .toFixed(0)
          .padStart(
            6,
          )} req/s  p50 ${median(fs.map((f) => f.p50)).toFixed(2)} ms  p99 ${median(fs.map((f) => f.p99)).toFixed(2)} ms${t.pgid === undefined ? '' : `  cpu ${median(fs.map((f) => f.cpuMs)).toFixed(3)} ms/req`}  errors ${fs.reduce((n, f) => n + f.errors, 0)}`,
      );
    }
    const ratio = (a: Label, b: Label): number[] => of(a).map((f, i) => f.rps / (of(b)[i]?.rps ?? NaN));
    const report = (label: string, rs: number[], goal: number): void => {
      const m = median(rs);
      console.log(
        `  ${label.padEnd(28)} ${m.toFixed(3)}  (rounds ${Math.min(...rs).toFixed(3)}–${Math.max(...rs).toFixed(3)})  goal ≥ ${goal.toFixed(2)}  ${m >= goal ? 'met' : 'missed'}`,
      );
    };
    console.log('\nrequests/s ratios (median of per-round ratios, range = noise):');
    report('router/nginx', ratio('router', 'nginx'), 1);
    report('router/direct', ratio('router', 'direct'), 0.9);
    if (values.baseline !== undefined) report('router/baseline', ratio('router', 'baseline'), 1);
    if (cert !== undefined) {
      report('router https/nginx https', ratio('router https', 'nginx https'), 1);
      report('router https/direct', ratio('router https', 'direct'), 0.9);
      if (values.baseline !== undefined) report('router https/baseline https', ratio('router https', 'baseline https'), 1);
    }
    const cpu = (name: Label): number => median(of(name).map((f) => f.cpuMs));
    console.log(
      `  proxy CPU per request, router/nginx: ${(cpu('router') / cpu('nginx')).toFixed(2)}${cert === undefined ? '' : `, over https ${(cpu('router https') / cpu('nginx https')).toFixed(2)}`} (less noisy on a shared machine; no goal)`,
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
