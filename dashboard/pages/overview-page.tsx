/** Every app (state, release, formation, traffic) and every agent (CPU, memory, instances). */
import type { AgentMetricsView, AgentView, AppMetricsView, AppView, PsRow } from '../../common/api-types.js';
import { api, appPath } from '../api.js';
import { appState, formationText } from '../app-state.js';
import { Problem } from '../components/problem.js';
import { Sparkline } from '../components/sparkline.js';
import { TimeAgo } from '../components/time-ago.js';
import { formatBytes, formatMs, formatPercent, formatRate } from '../format.js';
import { appHref } from '../route.js';
import { usePoll } from '../use-poll.js';

interface AppRowData {
  app: AppView;
  ps: PsRow[] | null;
  metrics: AppMetricsView | null;
}

async function loadApps(signal: AbortSignal): Promise<AppRowData[]> {
  const { apps } = await api<{ apps: AppView[] }>('GET', '/v1/apps', { signal });
  return Promise.all(
    apps.map(async (app) => {
      const [ps, metrics] = await Promise.all([
        api<{ ps: PsRow[] }>('GET', appPath(app.name, 'ps'), { signal }).then(
          (r) => r.ps,
          () => null,
        ),
        app.release === null
          ? Promise.resolve(null)
          : api<{ metrics: AppMetricsView }>('GET', `${appPath(app.name, 'metrics')}?since=1h`, { signal }).then(
              (r) => r.metrics,
              () => null,
            ),
      ]);
      return { app, ps, metrics };
    }),
  );
}

interface AgentRowData {
  agent: AgentView;
  /** Last host figures (disk), or null before a report. */
  host: Record<string, number> | null;
}

async function loadAgents(signal: AbortSignal): Promise<AgentRowData[]> {
  const { agents } = await api<{ agents: AgentView[] }>('GET', '/v1/agents', { signal });
  return Promise.all(
    agents.map(async (agent) => ({
      agent,
      host: await api<{ metrics: AgentMetricsView }>('GET', `/v1/agents/${encodeURIComponent(agent.name)}/metrics?since=5m`, {
        signal,
      }).then(
        (r) => (r.metrics.reportedAt ? r.metrics.host : null),
        () => null,
      ),
    })),
  );
}

/** `12 GB / 40 GB`. */
function disk(host: Record<string, number> | null): string {
  const used = host?.disk_used_bytes;
  const total = host?.disk_total_bytes;
  return used === undefined || total === undefined ? '–' : `${formatBytes(used)} / ${formatBytes(total)}`;
}

export function OverviewPage() {
  const apps = usePoll(loadApps, 3000, []);
  const agents = usePoll(loadAgents, 5000, []);
  return (
    <div class="page">
      <section aria-labelledby="apps-h">
        <h1 id="apps-h">Apps</h1>
        <Problem error={apps.error} />
        {apps.data === null ? (
          <p class="muted">Loading…</p>
        ) : apps.data.length === 0 ? (
          <p class="muted">
            No apps yet: <code>hangar apps:create NAME</code>, then <code>hangar deploy -a NAME</code>.
          </p>
        ) : (
          <div class="scroll">
            <table class="apps">
              <thead>
                <tr>
                  <th scope="col">App</th>
                  <th scope="col">State</th>
                  <th scope="col">Release</th>
                  <th scope="col">Formation</th>
                  <th scope="col">Requests</th>
                  <th scope="col">p95</th>
                  <th scope="col">Last hour</th>
                </tr>
              </thead>
              <tbody>
                {apps.data.map(({ app, ps, metrics }) => {
                  const state = appState(app, ps);
                  return (
                    <tr key={app.name} data-app={app.name}>
                      <th scope="row">
                        <a href={appHref(app.name)}>{app.name}</a>
                      </th>
                      <td>
                        <span class={`badge state-${state.replace(' ', '-')}`}>{state}</span>
                      </td>
                      <td>{app.release ?? '–'}</td>
                      <td class="mono">{formationText(app.formation)}</td>
                      <td>{metrics ? formatRate(metrics.traffic.rps) : '–'}</td>
                      <td>{metrics && metrics.traffic.requests > 0 ? formatMs(metrics.traffic.p95Ms) : '–'}</td>
                      <td>
                        <Sparkline
                          values={(metrics?.series ?? []).map((p) => p.p95Ms)}
                          label={`p95 latency of ${app.name} over the last hour`}
                        />
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        )}
      </section>
      <section aria-labelledby="agents-h">
        <h2 id="agents-h">Agents</h2>
        <Problem error={agents.error} />
        {agents.data && (
          <div class="scroll">
            <table class="agents">
              <thead>
                <tr>
                  <th scope="col">Agent</th>
                  <th scope="col">State</th>
                  <th scope="col">Address</th>
                  <th scope="col">CPU</th>
                  <th scope="col">Memory</th>
                  <th scope="col">Disk</th>
                  <th scope="col">Instances</th>
                  <th scope="col">Last seen</th>
                </tr>
              </thead>
              <tbody>
                {agents.data.map(({ agent: a, host }) => (
                  <tr key={a.name} data-agent={a.name}>
                    <th scope="row">{a.name}</th>
                    <td>
                      <span class={`badge state-${a.state}`}>{a.state}</span>
                    </td>
                    <td class="mono">{a.address}</td>
                    <td>{formatPercent(a.cpuPct)}</td>
                    <td>
                      {a.memoryUsedMb === null ? '–' : `${a.memoryUsedMb.toLocaleString()} MB`} / {a.capacity.memoryMb.toLocaleString()} MB
                    </td>
                    <td>{disk(host)}</td>
                    <td>
                      {a.instances} / {a.capacity.maxInstances}
                    </td>
                    <td>
                      <TimeAgo iso={a.lastSeen} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>
    </div>
  );
}
