/** Hash routes: `#/`, `#/apps/NAME`, `#/apps/NAME/TAB`. The fragment never reaches the server. */
import { useEffect, useState } from 'preact/hooks';

/** The tabs of an app's page. */
export const APP_TABS = ['overview', 'metrics', 'logs', 'errors'] as const;
export type AppTab = (typeof APP_TABS)[number];

export type Route = { page: 'overview' } | { page: 'app'; app: string; tab: AppTab; focus?: string };

/** Parses `location.hash`. */
export function parseRoute(hash: string): Route {
  const path = hash.replace(/^#/, '').split('?')[0] ?? '';
  const m = /^\/apps\/([a-z0-9-]+)(?:\/([a-z]+))?(?:\/(.+))?$/.exec(path);
  if (m?.[1]) {
    const tab = (APP_TABS as readonly string[]).includes(m[2] ?? '') ? (m[2] as AppTab) : 'overview';
    return m[3] ? { page: 'app', app: m[1], tab, focus: decodeURIComponent(m[3]) } : { page: 'app', app: m[1], tab };
  }
  return { page: 'overview' };
}

/** The hash of an app's tab. */
export function appHref(app: string, tab: AppTab = 'overview', focus?: string): string {
  const base = tab === 'overview' ? `#/apps/${app}` : `#/apps/${app}/${tab}`;
  return focus ? `${base}/${encodeURIComponent(focus)}` : base;
}

/** The current route, following hash changes. */
export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash));
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}
