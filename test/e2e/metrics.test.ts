import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import type { AgentMetricsView, AgentView, AppMetricsView } from '../../common/api-types.js';
import { startCluster, waitFor } from '../helpers/cluster.js';
import { deployFixture } from '../helpers/deploy-fixture.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition; throws on a line that is neither a comment nor a sample. */
function parsePrometheus(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1] as string] = l[2] as string;
    const value = Number(m[3]);
    assert.ok(!Number.isNaN(value), `bad value in ${line}`);
    samples.push({ name: m[1] as string, labels, value });
  }
  return samples;
}

test('metrics: router traffic and instance CPU/RSS reach hangar metrics and /metrics', { timeout: 600_000 }, async (t) => {
  const cluster = await startCluster(t, { agents: 1, coordinator: { metricsIntervalMs: 1000 } });
  const [agent] = cluster.agents;
  assert.ok(agent);
  await deployFixture(cluster, 'shop');

  // Load through the router: fast pages and some slower ones, and a few 404s from Django.
  await waitFor('the router to serve shop', async () => (await cluster.get(agent, 'shop')).status === 200, 30_000);
  const load = async () => {
    for (let i = 0; i < 30; i++) await cluster.get(agent, 'shop', i % 3 === 0 ? '/slow/?ms=40' : '/');
    await cluster.get(agent, 'shop', '/no-such-page/');
  };
  await Promise.all([load(), load(), load()]);

  const metrics = await waitFor(
    'metrics with traffic and instance usage',
    async () => {
      const res = await cluster.cli(['metrics', '-a', 'shop', '--since', '10m', '--json']);
      assert.equal(res.code, 0, res.stderr);
      const m = JSON.parse(res.stdout) as AppMetricsView;
      const web1 = m.instances.find((i) => i.id === 'web.1');
      // The three 404s are the last requests of each loader: wait until their report is in too.
      const traffic = m.traffic.requests >= 90 && m.traffic.status['4xx'] >= 3;
      return traffic && web1 && web1.rssBytes > 0 && web1.cpuPct > 0 && web1.processes >= 3 ? m : null;
    },
    30_000,
    500,
  );
  assert.equal(metrics.app, 'shop');
  assert.ok(metrics.traffic.rps > 0, `rps ${metrics.traffic.rps}`);
  assert.ok(metrics.traffic.p95Ms >= metrics.traffic.p50Ms && metrics.traffic.p95Ms > 0, `p95 ${metrics.traffic.p95Ms}`);
  assert.ok(metrics.traffic.status['2xx'] >= 90);
  assert.ok(metrics.traffic.status['4xx'] >= 3);
  const web = metrics.types.find((x) => x.type === 'web');
  assert.ok(web && web.instances === 1 && web.traffic && web.traffic.rps > 0);
  const web1 = metrics.instances.find((i) => i.id === 'web.1');
  assert.ok(web1);
  assert.equal(web1.agent, 'agent-1');
  assert.ok(web1.processes >= 3, `gunicorn master + 2 workers, got ${web1.processes}`);
  assert.ok(web1.traffic && web1.traffic.requests >= 90 && web1.traffic.p95Ms > 0);

  // The human table names the instance.
  const human = await cluster.cli(['metrics', '-a', 'shop']);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /web\.1/);
  assert.match(human.stdout, /P95/);

  // Host figures, per agent.
  const agentRes = await cluster.cli(['metrics', '--agent', 'agent-1', '--json']);
  assert.equal(agentRes.code, 0, agentRes.stderr);
  const host = JSON.parse(agentRes.stdout) as AgentMetricsView;
  assert.ok((host.host.mem_total_bytes ?? 0) > 0);
  assert.ok((host.host.disk_total_bytes ?? 0) > 0);
  assert.equal(typeof host.host.cpu_pct, 'number');
  assert.ok(host.instances.some((i) => i.app === 'shop' && i.id === 'web.1' && i.rssBytes > 0));
  const agents = JSON.parse((await cluster.cli(['agents', '--json'])).stdout) as AgentView[];
  assert.equal(typeof agents[0]?.cpuPct, 'number');
  assert.ok((agents[0]?.memoryUsedMb ?? 0) > 0);

  // Prometheus: needs the admin token, then parses with per-app and per-instance series.
  const denied = await request(`${cluster.coordinator.url}/metrics`);
  assert.equal(denied.statusCode, 401);
  await denied.body.dump();
  const res = await request(`${cluster.coordinator.url}/metrics`, {
    headers: { authorization: `Bearer ${cluster.coordinator.adminToken}` },
  });
  assert.equal(res.statusCode, 200);
  assert.match(String(res.headers['content-type']), /text\/plain/);
  const samples = parsePrometheus(await res.body.text());
  const find = (name: string, labels: Record<string, string>) =>
    samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  const ok = find('hangar_http_requests_total', { app: 'shop', agent: 'agent-1', status_class: '2xx' });
  assert.equal(ok.length, 1);
  assert.ok((ok[0]?.value ?? 0) >= 90);
  assert.equal(find('hangar_http_request_duration_seconds', { app: 'shop', quantile: '0.95' }).length <= 1, true);
  const rss = find('hangar_instance_memory_rss_bytes', { app: 'shop', type: 'web', instance: 'web.1', agent: 'agent-1' });
  assert.equal(rss.length, 1);
  assert.ok((rss[0]?.value ?? 0) > 0);
  assert.equal(find('hangar_instance_cpu_percent', { app: 'shop', type: 'web', instance: 'web.1' }).length, 1);
  assert.equal(find('hangar_agent_up', { agent: 'agent-1' })[0]?.value, 1);
  assert.equal(find('hangar_host_memory_total_bytes', { agent: 'agent-1' }).length, 1);
  assert.ok(find('hangar_instance_http_requests_total', { app: 'shop', instance: 'web.1', status_class: '2xx' }).length >= 1);

  // Bad input is a 4xx with a code.
  const bad = await cluster.cli(['metrics', '-a', 'shop', '--since', 'forever']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--since/);
});
