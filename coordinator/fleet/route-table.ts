import type { AppRoutes } from '../../proto/loader.js';
import type { RouterLimits } from '../../common/app-json.js';
import type { MaintenanceRow } from '../store/store.js';
import type { AgentRow, AppRow, InstanceRow } from '../store/store.js';

/** The app's default domain: `APP.<coordinator domain>`. */
export function defaultDomain(app: string, domain: string): string {
  return `${app}.${domain}`;
}

/**
 * Every domain of an app, the default one first, then its custom domains (`hangar domains:add`) in
 * the order they were added: what every router serves it at, and the one list anything else that
 * needs the app's host names (Django's ALLOWED_HOSTS, certificates) reads.
 */
export function appDomains(app: string, domain: string, custom: readonly string[] = []): string[] {
  return [defaultDomain(app, domain), ...custom];
}

/** Per app: its custom domains and its HTTPS settings, for {@link routeTable}. */
export interface RouteExtras {
  /** Custom domains by app. */
  customDomains: ReadonlyMap<string, readonly string[]>;
  /** Per app: redirect plain HTTP to HTTPS (default on), send HSTS (default off). */
  https: ReadonlyMap<string, { redirect: boolean; hsts: boolean }>;
}

const NO_EXTRAS: RouteExtras = { customDomains: new Map(), https: new Map() };

/**
 * The routes every agent's router gets: per app, its domains and the healthy web instances
 * (address:port, fleet-wide). An instance is routable only once it is up and wanted running, and
 * not held out (a drain generation on a running instance: a rolling restart is about to restart it).
 */
export function routeTable(
  apps: readonly AppRow[],
  agents: readonly AgentRow[],
  instances: readonly InstanceRow[],
  domain: string,
  /** Per app: its maintenance mode (null: off) and the router limits of its current release. */
  settingsOf: (app: string) => { maintenance: MaintenanceRow | null; limits: RouterLimits } = () => ({
    maintenance: null,
    limits: { maxBodyBytes: 0, upstreamTimeoutMs: 0, drainSeconds: 30 },
  }),
  extras: RouteExtras = NO_EXTRAS,
): AppRoutes[] {
  const byName = new Map(agents.map((a) => [a.name, a]));
  const web = new Map<string, InstanceRow[]>();
  for (const i of instances) {
    if (i.type !== 'web' || i.desired !== 'run' || i.state !== 'up' || !i.port || i.drainGeneration !== null) continue;
    const list = web.get(i.app);
    if (list) list.push(i);
    else web.set(i.app, [i]);
  }
  return apps.map((app) => {
    const { maintenance, limits } = settingsOf(app.name);
    return {
      app: app.name,
      domains: appDomains(app.name, domain, extras.customDomains.get(app.name)),
      backends: (web.get(app.name) ?? []).flatMap((i) => {
        const agent = byName.get(i.agent);
        return agent ? [{ instanceKey: i.key, host: agent.address, port: i.port ?? 0 }] : [];
      }),
      ...(maintenance === null
        ? {}
        : {
            maintenance: {
              pageHtml: maintenance.pageHtml ?? '',
              bypassSha256: maintenance.bypassSha256 ?? '',
              retryAfterSeconds: maintenance.retryAfterSeconds,
            },
          }),
      maxBodyBytes: limits.maxBodyBytes,
      upstreamTimeoutMs: limits.upstreamTimeoutMs,
      httpsRedirect: extras.https.get(app.name)?.redirect ?? true,
      hsts: extras.https.get(app.name)?.hsts ?? false,
    };
  });
}
