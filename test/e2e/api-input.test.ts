import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { request } from 'undici';
import { startCoordinator } from '../../coordinator/coordinator.js';
import { FIXTURES, fileLogger, runCli, startCluster, tempDir, waitFor } from '../helpers/cluster.js';

interface Reply {
  status: number;
  body: { code?: string; message?: string } & Record<string, unknown>;
}

function api(url: string, token: string) {
  return async (
    method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<Reply> => {
    const res = await request(`${url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body !== undefined && typeof body !== 'string' ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.body.text();
    return { status: res.statusCode, body: text ? (JSON.parse(text) as Reply['body']) : {} };
  };
}

test('bad input gets a 4xx with {code, message} and the coordinator keeps serving', { timeout: 300_000 }, async (t) => {
  const cluster = await startCluster(t, { agents: 1 });
  const call = api(cluster.coordinator.url, cluster.coordinator.adminToken);
  const expectError = async (reply: Promise<Reply>, status: number, code: string) => {
    const r = await reply;
    assert.equal(r.status, status, JSON.stringify(r.body));
    assert.equal(r.body.code, code, JSON.stringify(r.body));
    assert.equal(typeof r.body.message, 'string');
    assert.ok((r.body.message ?? '').length > 10, 'the message says something');
  };

  // No token, wrong token.
  const anonymous = await request(`${cluster.coordinator.url}/v1/apps`);
  assert.equal(anonymous.statusCode, 401);
  assert.equal(((await anonymous.body.json()) as { code: string }).code, 'UNAUTHORIZED');
  await expectError(api(cluster.coordinator.url, 'wrong-token')('GET', '/v1/apps'), 401, 'UNAUTHORIZED');

  // Names.
  await expectError(call('POST', '/v1/apps', { name: 'a/b' }), 400, 'BAD_INPUT');
  await expectError(call('POST', '/v1/apps', { name: 'UPPER' }), 400, 'BAD_INPUT');
  await expectError(call('POST', '/v1/apps', { name: 'ok', extra: 1 }), 400, 'BAD_INPUT');
  await expectError(call('POST', '/v1/apps', '{"name": ', { 'content-type': 'application/json' }), 400, 'BAD_INPUT');
  await expectError(call('POST', '/v1/apps', 'name=x'), 415, 'UNSUPPORTED_MEDIA_TYPE');
  await expectError(call('POST', '/v1/apps', '{"name":"x"}', { 'content-type': 'application/json' }), 400, 'BAD_INPUT');
  await expectError(call('GET', '/v1/apps/a%2Fb/ps'), 400, 'BAD_INPUT');
  await expectError(call('GET', '/v1/apps/nope/ps'), 404, 'APP_NOT_FOUND');
  await expectError(call('PATCH', '/v1/apps/nope/formation', { formation: { web: 1 } }), 404, 'APP_NOT_FOUND');
  await expectError(call('GET', '/v1/nothing-here'), 404, 'NOT_FOUND');

  const created = await call('POST', '/v1/apps', { name: 'shop' });
  assert.equal(created.status, 201);
  await expectError(call('POST', '/v1/apps', { name: 'shop' }), 409, 'APP_EXISTS');
  assert.ok(((await call('GET', '/v1/apps/shop/config')).body.config as Record<string, string>).SECRET_KEY, 'a SECRET_KEY is generated');

  // Scaling before any release, then with bad counts and types after one.
  await expectError(call('PATCH', '/v1/apps/shop/formation', { formation: { web: 1 } }), 409, 'NO_RELEASE');
  const deploy = await cluster.cli(['deploy', join(FIXTURES, 'django-app'), '-a', 'shop'], { timeoutMs: 240_000 });
  assert.equal(deploy.code, 0, deploy.stderr);
  await expectError(call('PATCH', '/v1/apps/shop/formation', { formation: { web: -1 } }), 400, 'BAD_INPUT');
  await expectError(call('PATCH', '/v1/apps/shop/formation', { formation: { web: 1.5 } }), 400, 'BAD_INPUT');
  await expectError(call('PATCH', '/v1/apps/shop/formation', { formation: { 'we/b': 1 } }), 400, 'BAD_INPUT');
  await expectError(call('PATCH', '/v1/apps/shop/formation', { formation: { nope: 1 } }), 422, 'UNKNOWN_PROCESS_TYPE');
  await expectError(call('PATCH', '/v1/apps/shop/formation', { formation: {} }), 400, 'BAD_INPUT');
  await expectError(call('PATCH', '/v1/apps/shop/formation', { formation: { web: 101 } }), 400, 'BAD_INPUT');

  // Config keys and upload bodies.
  await expectError(call('PATCH', '/v1/apps/shop/config', { 'BAD-KEY': 'x' }), 400, 'BAD_INPUT');
  await expectError(call('PATCH', '/v1/apps/shop/config', { GOOD: 5 }), 400, 'BAD_INPUT');
  await expectError(call('POST', '/v1/apps/shop/builds', 'not a tarball', { 'content-type': 'application/gzip' }), 400, 'BAD_INPUT');
  await expectError(call('POST', '/v1/apps/shop/builds', 'text', { 'content-type': 'text/plain' }), 415, 'UNSUPPORTED_MEDIA_TYPE');
  await expectError(call('DELETE', '/v1/apps/shop'), 400, 'BAD_INPUT');
  await expectError(call('POST', '/v1/apps/shop/ps/restart', { target: 'nope' }), 404, 'INSTANCE_NOT_FOUND');

  // The CLI says the same in a sentence, with a non-zero exit and nothing sent for bad syntax.
  const badScale = await cluster.cli(['scale', 'web=-1', '-a', 'shop']);
  assert.equal(badScale.code, 2);
  assert.match(badScale.stderr, /web/);
  const unknownType = await cluster.cli(['scale', 'nope=1', '-a', 'shop']);
  assert.equal(unknownType.code, 1);
  assert.match(unknownType.stderr, /No process type nope/);
  const unknownApp = await cluster.cli(['ps', '-a', 'ghost']);
  assert.equal(unknownApp.code, 1);
  assert.match(unknownApp.stderr, /No app named ghost/);

  // Still serving, and the app still runs.
  const health = await request(`${cluster.coordinator.url}/v1/health`);
  assert.equal(health.statusCode, 200);
  await health.body.dump();
  const agent = cluster.agents[0];
  assert.ok(agent);
  const res = await waitFor('shop to answer', async () => ((await cluster.get(agent, 'shop')).status === 200 ? true : null), 30_000);
  assert.equal(res, true);
});

test('apps, config, releases and formation survive a coordinator restart', { timeout: 120_000 }, async (t) => {
  const dir = await tempDir(t);
  const config = { dataDir: join(dir, 'c'), httpPort: 0, httpHost: '127.0.0.1', grpcPort: 0, grpcHost: '127.0.0.1' };
  const first = await startCoordinator(config, { logger: fileLogger(dir, 'c1') });
  const env = { HANGAR_URL: first.url, HANGAR_TOKEN: first.adminToken, HANGAR_CREDENTIALS: join(dir, 'none.json') };
  assert.equal((await runCli(['apps:create', 'blog'], env)).code, 0);
  assert.equal((await runCli(['config:set', 'FOO=bar', '-a', 'blog'], env)).code, 0);
  const token = first.adminToken;
  const join1 = first.joinToken;
  await first.close();

  const second = await startCoordinator(config, { logger: fileLogger(dir, 'c2') });
  t.after(() => second.close());
  assert.equal(second.adminToken, token, 'tokens are kept');
  assert.equal(second.joinToken, join1);
  const env2 = { ...env, HANGAR_URL: second.url };
  const apps = await runCli(['apps', '--json'], env2);
  assert.equal(apps.code, 0, apps.stderr);
  assert.deepEqual(
    (JSON.parse(apps.stdout) as { name: string }[]).map((a) => a.name),
    ['blog'],
  );
  const foo = await runCli(['config:get', 'FOO', '-a', 'blog'], env2);
  assert.equal(foo.stdout.trim(), 'bar');
});
