import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { rawTarGz, type RawTarEntry } from '../helpers/raw-tar.js';
import { startCluster } from '../helpers/cluster.js';

interface Answer {
  status: number;
  text: string;
}

async function send(
  url: string,
  token: string,
  method: string,
  path: string,
  body?: string | Buffer,
  contentType?: string,
): Promise<Answer> {
  const res = await request(`${url}${path}`, {
    method: method as 'GET',
    headers: { authorization: `Bearer ${token}`, ...(contentType ? { 'content-type': contentType } : {}) },
    body,
    headersTimeout: 30_000,
    bodyTimeout: 30_000,
  }).catch((err: unknown) => {
    throw new Error(`${method} ${path.slice(0, 80)} (${contentType}, ${body?.length ?? 0} bytes): ${(err as Error).message}`);
  });
  return { status: res.statusCode, text: await res.body.text() };
}

const ODD_NAMES = [
  'ü',
  '%C3%BC',
  '..',
  '%2e%2e',
  '%2F',
  'a%2Fb',
  '..%2F..%2Fetc%2Fpasswd',
  'x'.repeat(3000),
  '%00',
  '%20',
  'UPPER',
  '-dash',
  '%F0%9F%92%A5',
  '%',
  "'%3B--",
  '',
];

const WRONG_BODIES: [string, string][] = [
  ['{"name": ', 'application/json'],
  ['{"formation": {"web": "two"}}', 'application/json'],
  ['[]', 'application/json'],
  ['5', 'application/json'],
  ['"text"', 'application/json'],
  ['{"name": 5, "scope": [], "rollback": "v1", "target": {}}', 'application/json'],
  ['{"A": {"nested": true}}', 'application/json'],
  [`${'['.repeat(5000)}${']'.repeat(5000)}`, 'application/json'],
  ['name=x', 'application/x-www-form-urlencoded'],
  ['\u0000\u0001\u0002', 'text/plain'],
  ['not gzip at all', 'application/gzip'],
];

test('fuzz: odd names, malformed and huge bodies and wrong types at every route get only 4xx', { timeout: 300_000 }, async (t) => {
  const cluster = await startCluster(t, { agents: 0, coordinator: { maxUploadBytes: 1024 * 1024 } });
  const { url, adminToken: token } = cluster.coordinator;
  assert.equal((await send(url, token, 'POST', '/v1/apps', JSON.stringify({ name: 'fuzz' }), 'application/json')).status, 201);

  const check = (what: string, answer: Answer) => {
    assert.ok(answer.status >= 400 && answer.status < 500, `${what}: ${answer.status} ${answer.text.slice(0, 200)}`);
    const body = JSON.parse(answer.text) as { code?: unknown; message?: unknown };
    assert.equal(typeof body.code, 'string', what);
    assert.equal(typeof body.message, 'string', what);
  };
  // Every route the coordinator registered (its own table, so a new route is fuzzed the day it is
  // added), but the public ones (health and the dashboard's page) and HEAD twins of GETs.
  const routes = cluster.coordinator.routes.filter((r) => r.scope !== 'none' && r.method !== 'HEAD').map((r) => [r.method, r.url] as const);
  assert.ok(routes.length >= 30, `only ${routes.length} routes`);
  let requests = 0;
  for (const [method, template] of routes) {
    if (template.includes(':')) {
      for (const name of ODD_NAMES) {
        const path = template.replace(/:[a-zA-Z]+/g, name);
        const body = method === 'GET' || method === 'DELETE' ? undefined : '{}';
        check(`${method} ${path.slice(0, 80)}`, await send(url, token, method, path, body, body ? 'application/json' : undefined));
        requests++;
      }
    }
    if (method === 'GET' || method === 'DELETE') continue;
    const path = template
      .replace(':app', 'fuzz')
      .replace(':id', 'tok_nope')
      .replace(/:[a-zA-Z]+/g, 'nope');
    for (const [body, type] of WRONG_BODIES) {
      check(`${method} ${path} ${body.slice(0, 30)}`, await send(url, token, method, path, body, type));
      requests++;
    }
    // Huge: over the JSON limit (1 MiB) and over the upload limit set above.
    const huge = JSON.stringify({ name: 'x'.repeat(2 * 1024 * 1024) });
    check(`${method} ${path} huge json`, await send(url, token, method, path, huge, 'application/json'));
    check(`${method} ${path} huge upload`, await send(url, token, method, path, randomBytes(2 * 1024 * 1024), 'application/gzip'));
    requests += 2;
  }
  assert.ok(requests > 300, `${requests} requests`);

  // Still serving, nothing was created by any of it, and no request failed inside.
  assert.equal((await send(url, token, 'GET', '/v1/health')).status, 200);
  const apps = JSON.parse((await send(url, token, 'GET', '/v1/apps')).text) as { apps: { name: string }[] };
  assert.deepEqual(
    apps.apps.map((a) => a.name),
    ['fuzz'],
  );
  const log = await readFile(join(cluster.dir, 'coordinator.log'), 'utf8');
  assert.ok(!log.includes('"level":50'), 'no request failed with an internal error');
});

test('uploads with ../, absolute paths, escaping links or devices are refused and write nothing', { timeout: 120_000 }, async (t) => {
  const cluster = await startCluster(t, { agents: 0 });
  const { url, adminToken: token } = cluster.coordinator;
  assert.equal((await send(url, token, 'POST', '/v1/apps', JSON.stringify({ name: 'shop' }), 'application/json')).status, 201);
  const artifactDir = join(cluster.dir, 'coordinator', 'artifacts');
  const before = await readdir(artifactDir);
  const marker = `hangar-escape-${randomBytes(6).toString('hex')}`;
  const good: RawTarEntry[] = [
    { name: 'Procfile', type: '0', content: 'web: gunicorn mysite.wsgi\n' },
    { name: 'manage.py', type: '0', content: 'print(1)\n' },
  ];
  const hostile: [string, RawTarEntry[]][] = [
    ['a ../ path', [{ name: `../${marker}`, type: '0', content: 'x' }]],
    ['a nested ../ path', [{ name: `app/../../${marker}`, type: '0', content: 'x' }]],
    ['an absolute path', [{ name: `/tmp/${marker}`, type: '0', content: 'x' }]],
    ['a symlink to /', [{ name: 'root', type: '2', linkname: '/' }]],
    ['a symlink upwards', [{ name: 'up', type: '2', linkname: '../../..' }]],
    [
      'a file through an escaping link',
      [
        { name: 'tmp', type: '2', linkname: '/tmp' },
        { name: `tmp/${marker}`, type: '0', content: 'x' },
      ],
    ],
    ['a hard link to /etc/passwd', [{ name: 'passwd', type: '1', linkname: '/etc/passwd' }]],
    ['a device', [{ name: 'null', type: '3' }]],
  ];
  for (const [what, entries] of hostile) {
    const answer = await send(url, token, 'POST', '/v1/apps/shop/builds', rawTarGz([...good, ...entries]), 'application/gzip');
    assert.ok(answer.status >= 400 && answer.status < 500, `${what}: ${answer.status} ${answer.text}`);
    assert.equal((JSON.parse(answer.text) as { code: string }).code, 'BAD_INPUT', what);
  }
  assert.deepEqual(await readdir(artifactDir), before, 'no artifact and no partial upload is kept');
  assert.ok(!existsSync(`/tmp/${marker}`));
  assert.ok(!existsSync(join(cluster.dir, marker)));
  assert.ok(!existsSync(join(cluster.dir, 'coordinator', marker)));
  const releases = JSON.parse((await send(url, token, 'GET', '/v1/apps/shop/releases')).text) as { releases: unknown[] };
  assert.deepEqual(releases.releases, []);

  // The same files without the hostile entries are accepted (the test is not refusing everything).
  // Without agents it cannot build, and says so (503 NO_AGENTS) instead of BAD_INPUT.
  const fine = await send(url, token, 'POST', '/v1/apps/shop/builds', rawTarGz(good), 'application/gzip');
  assert.ok(fine.status === 202 || (JSON.parse(fine.text) as { code: string }).code === 'NO_AGENTS', fine.text);
});
