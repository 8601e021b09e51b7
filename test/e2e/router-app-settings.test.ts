/**
 * The router's per-app settings end to end, against real gunicorn serving the Django fixture:
 * maintenance mode driven by the CLI (page, Retry-After, bypass header), app.json limits (413,
 * 504, a bad value failing the build) and client headers a non-proxy must not be believed on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { startCluster, waitFor, type Cluster } from '../helpers/cluster.js';
import { deployFixture } from '../helpers/deploy-fixture.js';
import type { RunningAgent } from '../../agent/agent.js';
import type { AppView, MaintenanceView } from '../../common/api-types.js';

const APP = 'shop';

async function fetchThrough(
  agent: RunningAgent,
  path: string,
  o: { method?: 'GET' | 'POST'; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const res = await request(`http://127.0.0.1:${agent.routerPort}${path}`, {
    method: o.method ?? 'GET',
    headers: { host: `${APP}.localhost`, ...o.headers },
    body: o.body ?? null,
    headersTimeout: 20_000,
    bodyTimeout: 20_000,
  });
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
}

async function cliOk(cluster: Cluster, args: string[]): Promise<string> {
  const res = await cluster.cli(args);
  assert.equal(res.code, 0, `hangar ${args.join(' ')}:\n${res.stdout}\n${res.stderr}`);
  return res.stdout;
}

test('router app settings: maintenance mode, max_body, upstream_timeout, untrusted forwarding headers', { timeout: 600_000 }, async (t) => {
  const cluster = await startCluster(t);
  const agent = cluster.agents[0] as RunningAgent;
  await deployFixture(cluster, APP, {
    appJson: { hangar: { max_body: '2K', upstream_timeout: 1, drain_seconds: 5 } },
    // Django would take X-Forwarded-Host as the host if the router let a client's through.
    settings: 'USE_X_FORWARDED_HOST = True',
  });
  assert.equal((await fetchThrough(agent, '/')).status, 200);

  // max_body: a declared body over 2 KiB never reaches Django; a small one does.
  const big = await fetchThrough(agent, '/notes/', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ text: 'x'.repeat(4096) }),
  });
  assert.equal(big.status, 413, big.body);
  assert.match(big.body, /max_body/);
  const small = await fetchThrough(agent, '/notes/', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ text: 'hello' }),
  });
  assert.equal(small.status, 201, small.body);

  // upstream_timeout: 1 s, so a 3 s view gets the router's 504 page.
  const slow = await fetchThrough(agent, '/slow/?ms=3000');
  assert.equal(slow.status, 504, slow.body);
  assert.match(slow.body, /did not respond within 1 s/);

  // Headers from a client that is no trusted proxy are not believed.
  const meta = await fetchThrough(agent, '/meta/', {
    headers: { 'x-forwarded-host': 'evil.example', 'x-real-ip': '6.6.6.6', forwarded: 'for=6.6.6.6;host=evil.example' },
  });
  assert.equal(meta.status, 200, meta.body);
  const seen = JSON.parse(meta.body) as Record<string, string | null>;
  assert.equal(seen.host, `${APP}.localhost`);
  assert.equal(seen.x_forwarded_host, null);
  assert.equal(seen.x_real_ip, '127.0.0.1');
  assert.equal(seen.forwarded, 'for=127.0.0.1;proto=http');
  assert.equal(seen.x_forwarded_for, '127.0.0.1');

  // Maintenance mode with a custom page and a bypass header.
  const page = join(cluster.dir, 'maintenance.html');
  await writeFile(page, '<html><body><h1>Upgrading the shop, back at 6</h1></body></html>\n');
  const on = await cliOk(cluster, ['maintenance:on', '-a', APP, '--page', page, '--bypass-header', '--retry-after', '600']);
  const bypass = /x-hangar-maintenance-bypass: (\S+)/.exec(on)?.[1];
  assert.ok(bypass !== undefined, on);
  const closed = await waitFor('the router to answer with the maintenance page', async () => {
    const r = await fetchThrough(agent, '/');
    return r.status === 503 ? r : null;
  });
  assert.match(closed.body, /Upgrading the shop/);
  assert.equal(closed.headers['retry-after'], '600');
  const admin = await fetchThrough(agent, '/', { headers: { 'x-hangar-maintenance-bypass': bypass } });
  assert.equal(admin.status, 200, admin.body);
  assert.equal((await fetchThrough(agent, '/', { headers: { 'x-hangar-maintenance-bypass': 'wrong' } })).status, 503);

  const shown = JSON.parse(await cliOk(cluster, ['maintenance', '-a', APP, '--json'])) as MaintenanceView;
  assert.equal(shown.enabled, true);
  assert.equal(shown.page, 'custom');
  assert.equal(shown.retryAfter, 600);
  assert.equal(shown.bypassHeader, 'x-hangar-maintenance-bypass');
  assert.ok(!JSON.stringify(shown).includes(bypass), 'the bypass secret is never shown again');
  assert.equal((JSON.parse(await cliOk(cluster, ['apps:info', '-a', APP, '--json'])) as AppView).maintenance, true);

  // Bad input: a sentence and a non-zero exit; nothing changes.
  const missing = await cluster.cli(['maintenance:on', '-a', APP, '--page', join(cluster.dir, 'nope.html')]);
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /cannot read the page .*nope\.html/);
  const badRetry = await cluster.cli(['maintenance:on', '-a', APP, '--retry-after', 'soon']);
  assert.notEqual(badRetry.code, 0);
  assert.match(badRetry.stderr, /--retry-after takes whole seconds/);
  const made = await cluster.cli(['tokens:create', '--scope', 'read', '--name', 'viewer', '--json']);
  const readToken = (JSON.parse(made.stdout) as { token: string }).token;
  const denied = await cluster.cli(['maintenance:off', '-a', APP], { env: { HANGAR_TOKEN: readToken } });
  assert.notEqual(denied.code, 0);
  assert.match(denied.stderr, /scope/);
  assert.equal((await fetchThrough(agent, '/')).status, 503);

  // Bad API input: a 400 with {code, message}, and nothing changes.
  for (const body of [
    { enabled: 'yes' },
    { enabled: true, retryAfter: -1 },
    { enabled: true, page: 'x'.repeat(70_000) },
    { enabled: false, page: '<p>' },
  ]) {
    const res = await request(`${cluster.coordinator.url}/v1/apps/${APP}/maintenance`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${cluster.coordinator.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const answer = (await res.body.json()) as { code: string; message: string };
    assert.equal(res.statusCode, 400, JSON.stringify(body));
    assert.equal(answer.code, 'BAD_INPUT');
    assert.ok(answer.message.length > 0);
  }
  assert.equal((JSON.parse(await cliOk(cluster, ['maintenance', '-a', APP, '--json'])) as MaintenanceView).retryAfter, 600);

  await cliOk(cluster, ['maintenance:off', '-a', APP]);
  await waitFor('the app to be served again', async () => (await fetchThrough(agent, '/')).status === 200);
  assert.equal((JSON.parse(await cliOk(cluster, ['maintenance', '-a', APP, '--json'])) as MaintenanceView).enabled, false);

  // A bad app.json limit fails the build with a sentence; the running release keeps serving.
  const source = join(cluster.dir, `${APP}-source`);
  await writeFile(join(source, 'app.json'), JSON.stringify({ hangar: { max_body: 'lots', drain_seconds: -1 } }));
  const bad = await cluster.cli(['deploy', source, '-a', APP], { timeoutMs: 120_000 });
  assert.notEqual(bad.code, 0, bad.stdout);
  assert.match(`${bad.stdout}${bad.stderr}`, /hangar\.max_body: write a size/);
  assert.match(`${bad.stdout}${bad.stderr}`, /hangar\.drain_seconds/);
  assert.equal((await fetchThrough(agent, '/')).status, 200);
});
