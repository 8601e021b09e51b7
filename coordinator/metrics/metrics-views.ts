/** The metrics views of the API: an app's (types, instances, series) and an agent's. */
import type { AgentMetricsView, AppMetricsView, InstanceMetricsView, MetricsPoint, TypeMetricsView } from '../../common/api-types.js';
import { instanceName, parseInstanceKey } from '../../common/vocabulary.js';
import type { InstanceRow } from '../store/store.js';
import { MINUTE, type LatestReport, type MetricRow, type TrafficSample, type UsageSample } from './metric-samples.js';
import { TrafficSum, UsageSum } from './metric-sums.js';

/** `GET /v1/apps/:app/metrics` from the window's rows. `instances`: the app's current instances (ps). */
export function appMetricsView(
  app: string,
  since: number,
  now: number,
  rows: readonly MetricRow[],
  instances: readonly InstanceRow[],
  agentOf: (key: string) => string | null,
): AppMetricsView {
  const appTraffic = new TrafficSum();
  const backend = new Map<string, TrafficSum>();
  const usage = new Map<string, UsageSum>();
  const series = new Map<number, { traffic: TrafficSum; cpu: Map<string, UsageSum> }>();
  for (const r of rows) {
    const minute = Math.floor(r.ts / MINUTE) * MINUTE;
    let point = series.get(minute);
    if (!point) series.set(minute, (point = { traffic: new TrafficSum(), cpu: new Map() }));
    if (r.scope === 'app') {
      const t = JSON.parse(r.data) as TrafficSample;
      appTraffic.add(t, r.ts, r.agent);
      point.traffic.add(t, r.ts, r.agent);
    } else if (r.scope === 'backend') {
      let b = backend.get(r.subject);
      if (!b) backend.set(r.subject, (b = new TrafficSum()));
      b.add(JSON.parse(r.data) as TrafficSample, r.ts, r.agent);
    } else if (r.scope === 'instance') {
      const u = JSON.parse(r.data) as UsageSample;
      let s = usage.get(r.subject);
      if (!s) usage.set(r.subject, (s = new UsageSum()));
      s.add(u, r.ts);
      let c = point.cpu.get(r.subject);
      if (!c) point.cpu.set(r.subject, (c = new UsageSum()));
      c.add(u, r.ts);
    }
  }
  const instanceViews: InstanceMetricsView[] = [];
  const keys = new Set([...instances.map((i) => i.key), ...usage.keys()]);
  const rowOf = new Map(instances.map((i) => [i.key, i]));
  for (const key of keys) {
    const parts = parseInstanceKey(key);
    const row = rowOf.get(key);
    if (!parts || (!row && !usage.has(key))) continue;
    // Instances that no longer run are listed only while they have samples in the window.
    const u = usage.get(key);
    const b = backend.get(key);
    instanceViews.push({
      id: instanceName(parts),
      type: parts.type,
      release: `v${parts.release}`,
      agent: row?.agent ?? agentOf(key) ?? '',
      cpuPct: u?.cpuPct ?? 0,
      rssBytes: u?.rssBytes ?? 0,
      processes: u?.processes ?? 0,
      traffic: b ? b.view() : null,
    });
  }
  instanceViews.sort(
    (a, b) => a.type.localeCompare(b.type) || a.id.localeCompare(b.id, 'en', { numeric: true }) || a.release.localeCompare(b.release),
  );
  const types = new Map<string, TypeMetricsView>();
  for (const v of instanceViews) {
    if (!rowOf.has(`${app}:${v.id}:${v.release}`)) continue;
    const t = types.get(v.type) ?? { type: v.type, instances: 0, cpuPct: 0, rssBytes: 0, traffic: null };
    t.instances++;
    t.cpuPct = Math.round((t.cpuPct + v.cpuPct) * 10) / 10;
    t.rssBytes += v.rssBytes;
    types.set(v.type, t);
  }
  const web = types.get('web');
  if (web) web.traffic = appTraffic.view();
  const points: MetricsPoint[] = [...series]
    .sort(([a], [b]) => a - b)
    .map(([minute, p]) => {
      const view = p.traffic.view();
      let cpu = 0;
      let rss = 0;
      for (const u of p.cpu.values()) {
        cpu += u.cpuPct;
        rss += u.meanRss;
      }
      return {
        ts: new Date(minute).toISOString(),
        rps: view.rps,
        p95Ms: view.p95Ms,
        status5xx: view.status['5xx'],
        cpuPct: Math.round(cpu * 10) / 10,
        rssBytes: rss,
      };
    });
  return {
    app,
    since: new Date(since).toISOString(),
    until: new Date(now).toISOString(),
    traffic: appTraffic.view(),
    types: [...types.values()],
    instances: instanceViews,
    series: points,
  };
}

/** `GET /v1/agents/:agent/metrics` from the window's rows and the agent's last report. */
export function agentMetricsView(
  agent: string,
  state: 'up' | 'down',
  since: number,
  now: number,
  rows: readonly MetricRow[],
  latest: LatestReport | undefined,
): AgentMetricsView {
  const sums = new Map<string, { total: number; n: number }>();
  const usage = new Map<string, UsageSum>();
  const series = new Map<number, { cpu: number; mem: number; n: number }>();
  for (const r of rows) {
    if (r.scope === 'host') {
      const host = JSON.parse(r.data) as Record<string, number>;
      for (const [k, v] of Object.entries(host)) {
        const s = sums.get(k) ?? { total: 0, n: 0 };
        s.total += v;
        s.n++;
        sums.set(k, s);
      }
      const minute = Math.floor(r.ts / MINUTE) * MINUTE;
      const p = series.get(minute) ?? { cpu: 0, mem: 0, n: 0 };
      p.cpu += host.cpu_pct ?? 0;
      p.mem += host.mem_used_bytes ?? 0;
      p.n++;
      series.set(minute, p);
    } else if (r.scope === 'instance') {
      let u = usage.get(r.subject);
      if (!u) usage.set(r.subject, (u = new UsageSum()));
      u.add(JSON.parse(r.data) as UsageSample, r.ts);
    }
  }
  return {
    agent,
    state,
    since: new Date(since).toISOString(),
    until: new Date(now).toISOString(),
    reportedAt: latest ? new Date(latest.ts).toISOString() : null,
    host: latest?.host ?? {},
    mean: Object.fromEntries([...sums].map(([k, s]) => [k, Math.round((s.total / s.n) * 10) / 10])),
    instances: [...usage].flatMap(([key, u]) => {
      const parts = parseInstanceKey(key);
      if (!parts || (latest && !latest.instances.has(key))) return [];
      return [
        {
          app: parts.app,
          id: instanceName(parts),
          type: parts.type,
          release: `v${parts.release}`,
          agent,
          cpuPct: u.cpuPct,
          rssBytes: u.rssBytes,
          processes: u.processes,
          traffic: null,
        },
      ];
    }),
    series: [...series]
      .sort(([a], [b]) => a - b)
      .map(([minute, p]) => ({
        ts: new Date(minute).toISOString(),
        cpuPct: Math.round((p.cpu / p.n) * 10) / 10,
        memoryUsedBytes: Math.round(p.mem / p.n),
      })),
  };
}
