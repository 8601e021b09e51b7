import type { AppRoutes } from '../../proto/loader.js';
import type { AgentRow, AppRow, InstanceRow } from '../store/store.js';

/** The app's default domain: `APP.<coordinator domain>`. */
export function defaultDomain(app: string, domain: string): string {
  return `${app}.${domain}`;
}

/**
 * Every domain `app` answers at, default first: what its routes match and what its processes get
 * as `HANGAR_DOMAINS`.
 */
export function appDomains(app: AppRow, domain: string): string[] {
  return [defaultDomain(app.name, domain)];
}

/**
 * The routes every agent's router gets: per app, its domain and the healthy web instances
 * (address:port, fleet-wide). An instance is routable only once it is up and wanted running, and
 * not held out (a drain generation on a running instance: a rolling restart is about to restart it).
 */
export function routeTable(
  apps: readonly AppRow[],
  agents: readonly AgentRow[],
  instances: readonly InstanceRow[],
  domain: string,
): AppRoutes[] {
  const byName = new Map(agents.map((a) => [a.name, a]));
  const web = new Map<string, InstanceRow[]>();
  for (const i of instances) {
    if (i.type !== 'web' || i.desired !== 'run' || i.state !== 'up' || !i.port || i.drainGeneration !== null) continue;
    const list = web.get(i.app);
    if (list) list.push(i);
    else web.set(i.app, [i]);
  }
  return apps.map((app) => ({
    app: app.name,
    domains: appDomains(app, domain),
    backends: (web.get(app.name) ?? []).flatMap((i) => {
      const agent = byName.get(i.agent);
      return agent ? [{ instanceKey: i.key, host: agent.address, port: i.port ?? 0 }] : [];
    }),
  }));
}
