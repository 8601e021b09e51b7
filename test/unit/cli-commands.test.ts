import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { gunzipSync } from 'node:zlib';
import type { AppView, DeployLine, DeployView, PsRow, ReleaseView } from '../../common/api-types.js';
import type { Clock } from '../../common/clock.js';
import { main } from '../../cli/main.js';

const TOKEN = 'tok-cli-never-printed-42';
const NOW = Date.parse('2026-01-02T03:10:05.000Z');

interface Recorded {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

type Handler = (req: Recorded) => { status?: number; json: unknown } | undefined;

/** A loopback coordinator: `handler` answers, anything it does not is a 404 error body. */
async function fakeCoordinator(t: TestContext, handler: Handler): Promise<{ url: string; requests: Recorded[] }> {
  const requests: Recorded[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const recorded = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) };
      requests.push(recorded);
      const reply = handler(recorded) ?? { status: 404, json: { code: 'NOT_FOUND', message: `no route ${req.method} ${req.url}` } };
      res.writeHead(reply.status ?? 200, { 'content-type': 'application/json' }).end(JSON.stringify(reply.json));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

/** A clock whose timers fire at once and move time forward, so deploy polling runs instantly. */
function fastClock(): Clock {
  let now = NOW;
  return {
    now: () => now,
    setTimeout: (fn, ms) => {
      now += ms;
      setImmediate(fn);
      return {};
    },
    clearTimeout: () => undefined,
  };
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(args: string[], env: Record<string, string | undefined>, cwd?: string): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const code = await main(['node', 'hangar', ...args], {
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
    env,
    cwd,
    clock: fastClock(),
  });
  assert.ok(!stdout.includes(TOKEN) && !stderr.includes(TOKEN), 'the token never appears in output');
  return { code, stdout, stderr };
}

const app: AppView = {
  name: 'shop',
  domain: 'shop.localhost',
  url: 'http://shop.localhost',
  createdAt: '2026-01-02T03:04:05.000Z',
  release: 'v3',
  formation: { web: 2 },
  maintenance: false,
};
const release = (version: number, extra: Partial<ReleaseView> = {}): ReleaseView => ({
  version,
  name: `v${version}`,
  status: 'succeeded',
  description: `Deploy ${version}`,
  createdAt: '2026-01-02T03:04:05.000Z',
  createdBy: 'admin',
  artifactSha256: 'ab'.repeat(32),
  processTypes: ['web'],
  current: false,
  ...extra,
});
const line = (seq: number, text: string, source = 'build'): DeployLine => ({
  seq,
  ts: '2026-01-02T03:04:05.000Z',
  source,
  stream: 'stdout',
  line: text,
});
const deployView = (extra: Partial<DeployView>): DeployView => ({
  id: 'd1',
  app: 'shop',
  release: 'v4',
  status: 'building',
  error: null,
  errorCode: null,
  lines: [],
  next: 0,
  createdAt: '2026-01-02T03:04:05.000Z',
  finishedAt: null,
  ...extra,
});

/**
 * Answers a deploy's polls from a script: the POST gets step 0, each poll the next step (lines with
 * seq > after), staying on the last one.
 */
function scriptedDeploy(steps: Partial<DeployView>[]): (req: Recorded) => DeployView {
  let step = 0;
  return (req) => {
    const after = Number(new URL(req.url, 'http://x').searchParams.get('after') ?? 0);
    const view = deployView(steps[Math.min(step, steps.length - 1)] ?? {});
    step++;
    // Lines at or below `after` are sent too: the CLI must not print them twice.
    return { ...view, lines: view.lines.filter((l) => l.seq > after - 1) };
  };
}

const env = (url: string, extra: Record<string, string> = {}) => ({ HANGAR_URL: url, HANGAR_TOKEN: TOKEN, HOME: '/nonexistent', ...extra });

test('bad input exits 2 with a sentence and sends no request', async (t) => {
  const server = await fakeCoordinator(t, () => ({ json: {} }));
  const cases: [string[], RegExp][] = [
    [['scale', 'web=x', '-a', 'shop'], /error: "web=x": the count must be a whole number/],
    [['scale', 'web=-1', '-a', 'shop'], /error: "web=-1"/],
    [['scale', '-a', 'shop'], /error: missing required argument/],
    [['config:set', 'FOO', '-a', 'shop'], /error: "FOO" has no "="/],
    [['config:unset', 'FOO=1', '-a', 'shop'], /error: "FOO=1" is not a valid key/],
    [['config:get', 'bad-key', '-a', 'shop'], /error: "bad-key" is not a valid key/],
    [['config', '--json', '--shell', '-a', 'shop'], /error: option '--json' cannot be used with option '--shell'/],
    [['rollback', 'vx', '-a', 'shop'], /error: "vx" is not a release/],
    [['restart', 'web.x', '-a', 'shop'], /error: "web.x" is neither/],
    [['ps'], /error: No app given: pass -a APP or set HANGAR_APP/],
    [['apps:destroy', 'shop'], /error: This destroys shop .*hangar apps:destroy shop --confirm shop/],
    [['apps:destroy', 'shop', '--confirm', 'shap'], /does not match/],
    [['deploy', '--timeout', '-1', '-a', 'shop'], /error: option '--timeout <seconds>' argument '-1' is invalid/],
    [['deploy', '/nonexistent/dir', '-a', 'shop'], /error: Cannot read \/nonexistent\/dir/],
    [['apps', 'extra'], /error: too many arguments/],
    [['nope'], /error: unknown command 'nope'/],
  ];
  for (const [args, message] of cases) {
    const result = await run(args, env(server.url));
    assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, message, args.join(' '));
    assert.equal(result.stdout, '', args.join(' '));
  }
  assert.equal(server.requests.length, 0);
});

test('--help and --version exit 0', async () => {
  const help = await run(['--help'], {});
  assert.equal(help.code, 0);
  for (const command of [
    'agents',
    'apps:create',
    'apps:destroy',
    'apps:info',
    'config:set',
    'deploy',
    'rollback',
    'scale',
    'restart',
    'login',
    'whoami',
    'dashboard',
  ]) {
    assert.match(help.stdout, new RegExp(`\\b${command}\\b`));
  }
  assert.equal((await run(['--version'], {})).code, 0);
});

test('no credentials: exit 1 and a sentence saying how to log in', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-cli-cmd-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const result = await run(['apps'], { HANGAR_CREDENTIALS: join(dir, 'none.json') });
  assert.equal(result.code, 1);
  assert.match(result.stderr, /^error: Not logged in .*hangar login --url URL --token TOKEN.*HANGAR_URL and HANGAR_TOKEN.*hangar dev/);
});

test('an unreachable coordinator: exit 1, says what to run', async () => {
  const result = await run(['apps'], env('http://127.0.0.1:1'));
  assert.equal(result.code, 1);
  assert.match(result.stderr, /^error: Cannot reach the coordinator at http:\/\/127\.0\.0\.1:1: .*hangar coordinator/);
});

test('server errors print the server message and exit 1', async (t) => {
  const server = await fakeCoordinator(t, (req) =>
    req.method === 'POST'
      ? { status: 409, json: { code: 'APP_EXISTS', message: 'An app named shop exists; pick another name' } }
      : undefined,
  );
  const result = await run(['apps:create', 'shop'], env(server.url));
  assert.deepEqual(result, { code: 1, stdout: '', stderr: 'error: An app named shop exists; pick another name\n' });
});

test('--json prints the API objects exactly; human output is a table', async (t) => {
  const rows: PsRow[] = [
    {
      id: 'web.2',
      type: 'web',
      release: 'v3',
      agent: 'agent-a',
      state: 'up',
      pid: 1235,
      port: 5001,
      restarts: 0,
      since: '2026-01-02T03:08:05.000Z',
      reason: null,
      memoryBytes: null,
      memoryLimitBytes: null,
      cpuLimit: null,
    },
    {
      id: 'web.1',
      type: 'web',
      release: 'v3',
      agent: 'agent-a',
      state: 'up',
      pid: 1234,
      port: 5000,
      restarts: 0,
      since: '2026-01-02T03:08:05.000Z',
      reason: null,
      memoryBytes: null,
      memoryLimitBytes: null,
      cpuLimit: null,
    },
  ];
  const server = await fakeCoordinator(t, (req) => {
    if (req.url === '/v1/apps/shop/ps') return { json: { ps: rows } };
    if (req.url === '/v1/apps') return { json: { apps: [app] } };
    if (req.url === '/v1/apps/shop') return { json: { app } };
    return undefined;
  });
  const json = await run(['ps', '-a', 'shop', '--json'], env(server.url));
  assert.equal(json.code, 0);
  assert.deepEqual(JSON.parse(json.stdout), rows);

  const human = await run(['ps'], env(server.url, { HANGAR_APP: 'shop' }));
  assert.equal(human.code, 0);
  assert.equal(
    human.stdout,
    '=== web (2)\nweb.1:  up  v3  agent-a  pid 1234  port 5000  restarts 0  since 2m ago\nweb.2:  up  v3  agent-a  pid 1235  port 5001  restarts 0  since 2m ago\n',
  );

  assert.deepEqual(JSON.parse((await run(['apps', '--json'], env(server.url))).stdout), [app]);
  assert.deepEqual(JSON.parse((await run(['apps:info', '-a', 'shop', '--json'], env(server.url))).stdout), app);
  assert.match((await run(['apps'], env(server.url))).stdout, /shop\s+v3\s+web=2\s+shop\.localhost\s+6m ago/);
});

test('scale PATCHes the formation and says what it did', async (t) => {
  const server = await fakeCoordinator(t, (req) =>
    req.method === 'PATCH' && req.url === '/v1/apps/shop/formation' ? { json: { formation: { web: 2, worker: 1 } } } : undefined,
  );
  const result = await run(['scale', 'web=2', 'worker=1', '-a', 'shop'], env(server.url));
  assert.deepEqual(result, { code: 0, stdout: 'Scaling web to 2, worker to 1... done\n', stderr: '' });
  assert.deepEqual(JSON.parse(server.requests[0]?.body.toString() ?? ''), { formation: { web: 2, worker: 1 } });
});

test('config --shell prints quoted lines; config:get prints the value', async (t) => {
  const server = await fakeCoordinator(t, (req) =>
    req.url === '/v1/apps/shop/config' ? { json: { config: { B: "it's", A: 'x y' } } } : undefined,
  );
  assert.equal((await run(['config', '--shell', '-a', 'shop'], env(server.url))).stdout, "A='x y'\nB='it'\\''s'\n");
  assert.deepEqual(JSON.parse((await run(['config', '--json', '-a', 'shop'], env(server.url))).stdout), { B: "it's", A: 'x y' });
  assert.equal((await run(['config:get', 'B', '-a', 'shop'], env(server.url))).stdout, "it's\n");
  const missing = await run(['config:get', 'C', '-a', 'shop'], env(server.url));
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /C is not set on shop/);
});

test('deploy packs, uploads gzip, prints the output as it comes and the URL, exit 0', async (t) => {
  const src = await mkdtemp(join(tmpdir(), 'hangar-cli-deploy-'));
  t.after(() => rm(src, { recursive: true, force: true }));
  await writeFile(join(src, 'manage.py'), 'print("hi")\n');
  const poll = scriptedDeploy([
    { status: 'building', lines: [line(1, '-----> Building v4', 'hangar')], next: 1 },
    { status: 'releasing', lines: [line(1, '-----> Building v4', 'hangar'), line(2, 'Collecting django')], next: 2 },
    { status: 'succeeded', lines: [line(3, '-----> Running release phase', 'hangar')], next: 3 },
  ]);
  const server = await fakeCoordinator(t, (req) => {
    if (req.url === '/v1/apps/shop') return { json: { app } };
    if (req.method === 'POST' && req.url === '/v1/apps/shop/builds') return { status: 202, json: { deploy: poll(req) } };
    if (req.url.startsWith('/v1/apps/shop/deploys/d1')) return { json: { deploy: poll(req) } };
    return undefined;
  });
  const result = await run(['deploy', '.', '-a', 'shop'], env(server.url), src);
  assert.equal(result.stderr, '');
  assert.equal(result.code, 0);
  assert.equal(
    result.stdout.replace(/^-----> Uploading \d+ B\n/, ''),
    '-----> Building v4\nCollecting django\n-----> Running release phase\n-----> v4 deployed: http://shop.localhost\n',
  );
  const upload = server.requests.find((r) => r.method === 'POST');
  assert.equal(upload?.headers['content-type'], 'application/gzip');
  assert.ok(gunzipSync(upload?.body ?? Buffer.alloc(0)).includes('manage.py'));
  const afters = server.requests.filter((r) => r.url.includes('/deploys/')).map((r) => r.url.replace(/.*after=/, ''));
  assert.deepEqual(afters, ['1', '2']);
});

test('a failed deploy prints its error and exits 1', async (t) => {
  const src = await mkdtemp(join(tmpdir(), 'hangar-cli-deploy-'));
  t.after(() => rm(src, { recursive: true, force: true }));
  await writeFile(join(src, 'manage.py'), '');
  const poll = scriptedDeploy([
    { status: 'rolling_out', lines: [line(1, '-----> Starting web.1', 'hangar')], next: 1 },
    {
      status: 'failed',
      error: 'web.1 did not become healthy within 60 s; see `hangar logs -a shop`',
      errorCode: 'RELEASE_UNHEALTHY',
      next: 1,
    },
  ]);
  const server = await fakeCoordinator(t, (req) => {
    if (req.url === '/v1/apps/shop') return { json: { app } };
    if (req.method === 'POST') return { status: 202, json: { deploy: poll(req) } };
    if (req.url.startsWith('/v1/apps/shop/deploys/d1')) return { json: { deploy: poll(req) } };
    return undefined;
  });
  const result = await run(['deploy', src, '-a', 'shop'], env(server.url));
  assert.equal(result.code, 1);
  assert.match(result.stdout, /-----> Starting web.1\n$/);
  assert.equal(result.stderr, 'error: web.1 did not become healthy within 60 s; see `hangar logs -a shop`\n');
});

test('deploy gives up after --timeout, saying the deploy goes on and how to check', async (t) => {
  const src = await mkdtemp(join(tmpdir(), 'hangar-cli-deploy-'));
  t.after(() => rm(src, { recursive: true, force: true }));
  await writeFile(join(src, 'manage.py'), '');
  const poll = scriptedDeploy([{ status: 'building' }]);
  const server = await fakeCoordinator(t, (req) => {
    if (req.url === '/v1/apps/shop') return { json: { app } };
    if (req.method === 'POST') return { status: 202, json: { deploy: poll(req) } };
    if (req.url.startsWith('/v1/apps/shop/deploys/d1')) return { json: { deploy: poll(req) } };
    return undefined;
  });
  const result = await run(['deploy', src, '-a', 'shop', '--timeout', '3'], env(server.url));
  assert.equal(result.code, 1);
  assert.match(result.stderr, /^error: Gave up waiting after 3 s, but deploy d1 goes on; check it with `hangar releases -a shop`/);
  // 3 s at one poll every 300 ms of (fake) time.
  const polls = server.requests.filter((r) => r.url.includes('/deploys/')).length;
  assert.ok(polls >= 9 && polls <= 11, `${polls} polls`);
});

test('config:set prints the new release and follows its deploy', async (t) => {
  const poll = scriptedDeploy([
    { status: 'rolling_out', lines: [line(1, '-----> Restarting web', 'hangar')], next: 1 },
    { status: 'succeeded', next: 1 },
  ]);
  const server = await fakeCoordinator(t, (req) => {
    if (req.method === 'PATCH' && req.url === '/v1/apps/shop/config') {
      return { json: { config: { SECRET_KEY: 's3', DEBUG: '' }, release: release(4), deploy: poll(req) } };
    }
    if (req.url.startsWith('/v1/apps/shop/deploys/d1')) return { json: { deploy: poll(req) } };
    if (req.url === '/v1/apps/shop') return { json: { app } };
    return undefined;
  });
  const result = await run(['config:set', 'SECRET_KEY=s3', 'DEBUG=', '-a', 'shop'], env(server.url));
  assert.equal(result.stderr, '');
  assert.equal(result.code, 0);
  assert.equal(
    result.stdout,
    'Setting SECRET_KEY, DEBUG and restarting shop... done, v4\n-----> Restarting web\n-----> v4 deployed: http://shop.localhost\n',
  );
  assert.deepEqual(JSON.parse(server.requests[0]?.body.toString() ?? ''), { SECRET_KEY: 's3', DEBUG: '' });
});

test('rollback vN posts the version and follows the deploy', async (t) => {
  const poll = scriptedDeploy([{ status: 'succeeded', release: 'v5', next: 0 }]);
  const server = await fakeCoordinator(t, (req) => {
    if (req.method === 'POST' && req.url === '/v1/apps/shop/releases') {
      return { status: 202, json: { release: release(5, { description: 'Rollback to v2' }), deploy: poll(req) } };
    }
    if (req.url === '/v1/apps/shop') return { json: { app } };
    return undefined;
  });
  const result = await run(['rollback', 'v2', '-a', 'shop'], env(server.url));
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, 'Rolling back shop to v2... done, v5 (Rollback to v2)\n-----> v5 deployed: http://shop.localhost\n');
  assert.deepEqual(JSON.parse(server.requests[0]?.body.toString() ?? ''), { rollback: 2 });
});

test('login checks the token, saves credentials 0600 that later commands use; logout removes them', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-cli-login-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const server = await fakeCoordinator(t, (req) => {
    if (req.headers.authorization !== `Bearer ${TOKEN}`) return { status: 401, json: { code: 'UNAUTHORIZED', message: 'Invalid token' } };
    if (req.url === '/v1/apps') return { json: { apps: [app] } };
    if (req.url === '/v1/health') return { json: { ok: true, version: '0.1.0' } };
    return undefined;
  });
  const fileEnv = { XDG_CONFIG_HOME: dir };
  const path = join(dir, 'hangar', 'credentials.json');

  const refused = await run(['login', '--url', server.url, '--token', 'wrong-token'], fileEnv);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /refused the token/);
  assert.ok(!refused.stderr.includes('wrong-token'));
  await assert.rejects(stat(path), { code: 'ENOENT' });

  const login = await run(['login', '--url', `${server.url}/`, '--token', TOKEN], fileEnv);
  assert.equal(login.code, 0, login.stderr);
  assert.equal(login.stdout, `Logged in to ${server.url}; credentials saved in ${path}\n`);
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.equal((await stat(join(dir, 'hangar'))).mode & 0o777, 0o700);

  assert.deepEqual(JSON.parse((await run(['apps', '--json'], fileEnv)).stdout), [app]);
  const whoami = await run(['whoami'], fileEnv);
  assert.equal(whoami.stdout, `Logged in to ${server.url} (coordinator 0.1.0); credentials from ${path}\n`);

  // The environment wins over the file.
  const viaEnv = await run(['apps'], { ...fileEnv, HANGAR_URL: 'http://127.0.0.1:1', HANGAR_TOKEN: 'x' });
  assert.match(viaEnv.stderr, /127\.0\.0\.1:1/);

  assert.equal((await run(['logout'], fileEnv)).stdout, `Logged out: removed ${path}\n`);
  await assert.rejects(stat(path), { code: 'ENOENT' });
  assert.equal((await run(['apps'], fileEnv)).code, 1);
});

test('login refuses a bad URL with exit 2 before any request', async () => {
  const result = await run(['login', '--url', 'localhost:7080', '--token', TOKEN], { HANGAR_CREDENTIALS: '/nonexistent/c.json' });
  assert.equal(result.code, 2);
  assert.match(result.stderr, /error: .*http:\/\//);
});

test('addons:create takes --standby before or after the kind; without a kind it says which there are', async (t) => {
  const server = await fakeCoordinator(t, (req) =>
    req.method === 'POST' && req.url === '/v1/apps/shop/addons'
      ? { status: 409, json: { code: 'CONFLICT', message: 'stop here' } }
      : undefined,
  );
  for (const args of [
    ['addons:create', '--standby', 'postgres', '-a', 'shop'],
    ['addons:create', 'postgres', '--standby', '-a', 'shop'],
  ]) {
    const result = await run(args, env(server.url));
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /stop here/);
  }
  const sync = await run(['addons:create', 'postgres', '--standby=sync', '-a', 'shop'], env(server.url));
  assert.equal(sync.code, 1, sync.stderr);
  assert.deepEqual(
    server.requests.map((r) => JSON.parse(r.body.toString()) as unknown),
    [
      { kind: 'postgres', standby: true },
      { kind: 'postgres', standby: true },
      { kind: 'postgres', standby: true, sync: true },
    ],
  );
  const none = await run(['addons:create', '-a', 'shop'], env(server.url));
  assert.equal(none.code, 2);
  assert.match(none.stderr, /say which add-on: postgres, redis or memcached/);
  const wrongMode = await run(['addons:create', '--standby', 'fast', '-a', 'shop'], env(server.url));
  assert.equal(wrongMode.code, 2);
  assert.match(wrongMode.stderr, /--standby takes sync or async, not "fast"/);
  assert.equal(server.requests.length, 3);
});
