/** One app: overview (formation, processes, releases, config, add-ons, deploy), metrics, logs, errors. */
import type { AppMetricsView, AppView, PsRow, ReleaseView, TokenScopeName } from '../../common/api-types.js';
import { api, appPath } from '../api.js';
import { appState, formationText } from '../app-state.js';
import { AddonsPanel } from '../components/addons-panel.js';
import { ConfigPanel } from '../components/config-panel.js';
import { DeployDrop } from '../components/deploy-drop.js';
import { ErrorsPanel } from '../components/errors-panel.js';
import { FormationPanel } from '../components/formation-panel.js';
import { LiveLogs } from '../components/live-logs.js';
import { MetricsPanel } from '../components/metrics-panel.js';
import { Problem } from '../components/problem.js';
import { ProcessList } from '../components/process-list.js';
import { ReleasesPanel } from '../components/releases-panel.js';
import { APP_TABS, appHref, type AppTab } from '../route.js';
import { mayDeploy } from '../session.js';
import { usePoll } from '../use-poll.js';

interface AppData {
  app: AppView;
  ps: PsRow[];
  releases: ReleaseView[];
  metrics: AppMetricsView | null;
}

async function loadApp(name: string, signal: AbortSignal): Promise<AppData> {
  const [{ app }, { ps }, { releases }, metrics] = await Promise.all([
    api<{ app: AppView }>('GET', appPath(name), { signal }),
    api<{ ps: PsRow[] }>('GET', appPath(name, 'ps'), { signal }),
    api<{ releases: ReleaseView[] }>('GET', appPath(name, 'releases'), { signal }),
    api<{ metrics: AppMetricsView }>('GET', `${appPath(name, 'metrics')}?since=10m`, { signal }).then(
      (r) => r.metrics,
      () => null,
    ),
  ]);
  return { app, ps, releases, metrics };
}

const TAB_LABELS: Record<AppTab, string> = { overview: 'Overview', metrics: 'Metrics', logs: 'Logs', errors: 'Errors' };

export function AppPage({ app, tab, focus, scope }: { app: string; tab: AppTab; focus?: string | undefined; scope: TokenScopeName }) {
  const data = usePoll((signal) => loadApp(app, signal), 2000, [app]);
  const canDeploy = mayDeploy(scope);
  const d = data.data;
  const current = d?.releases.find((r) => r.current);
  return (
    <div class="page">
      <div class="bar">
        <h1>{app}</h1>
        {d && (
          <>
            <span class={`badge state-${appState(d.app, d.ps).replace(' ', '-')}`}>{appState(d.app, d.ps)}</span>
            <span>{d.app.release ?? 'no release'}</span>
            <span class="mono">{formationText(d.app.formation)}</span>
            <a href={d.app.url} rel="noreferrer" target="_blank">
              {d.app.url}
            </a>
          </>
        )}
      </div>
      <nav class="tabs" aria-label={`${app} sections`}>
        {APP_TABS.map((t) => (
          <a key={t} href={appHref(app, t)} aria-current={t === tab ? 'page' : undefined}>
            {TAB_LABELS[t]}
          </a>
        ))}
      </nav>
      <Problem error={data.error} />
      {tab === 'overview' && d && (
        <div class="grid">
          <FormationPanel
            app={app}
            formation={d.app.formation}
            types={current?.processTypes ?? []}
            canScale={canDeploy && current !== undefined}
            onChanged={data.reload}
          />
          <ConfigPanel app={app} canRead={canDeploy} />
          <ProcessList ps={d.ps} instances={d.metrics?.instances ?? []} />
          <ReleasesPanel app={app} releases={d.releases} canRollback={canDeploy} onChanged={data.reload} />
          <AddonsPanel app={app} />
          {canDeploy && <DeployDrop app={app} onChanged={data.reload} />}
        </div>
      )}
      {tab === 'metrics' && <MetricsPanel app={app} />}
      {tab === 'logs' && <LiveLogs app={app} />}
      {tab === 'errors' && <ErrorsPanel app={app} focus={focus} />}
    </div>
  );
}
