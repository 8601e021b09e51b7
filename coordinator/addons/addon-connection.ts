/** How an app reaches an add-on: its config var, database name and connection URL. */
import type { AddonKind } from '../../common/vocabulary.js';
import type { AddonRow } from '../store/store.js';

/** The kinds of add-on, with the config var of the first one of a kind (Heroku's names). */
export const ADDON_CONFIG_VARS: Record<AddonKind, string> = {
  postgres: 'DATABASE_URL',
  redis: 'REDIS_URL',
  memcached: 'MEMCACHED_URL',
};

/** memcached's memory limit, MB. */
export const MEMCACHED_MB = 64;

/** The PostgreSQL database and user of an app: its name with `_` for `-`. */
export function databaseNameOf(app: string): string {
  return app.replace(/-/g, '_');
}

/**
 * The config var of a new add-on: Heroku's name for its kind (DATABASE_URL, REDIS_URL,
 * MEMCACHED_URL) unless another live add-on of the app holds it; then NAME_URL from its name
 * (`postgres-2` → `POSTGRES_2_URL`).
 */
export function configVarFor(kind: AddonKind, name: string, appAddons: readonly Pick<AddonRow, 'desired' | 'configVar'>[]): string {
  const primary = ADDON_CONFIG_VARS[kind];
  const taken = appAddons.some((a) => a.desired === 'run' && a.configVar === primary);
  return taken ? `${name.toUpperCase().replace(/-/g, '_')}_URL` : primary;
}

/** The connection URL of an add-on on `host`; `password` replaced by `****` when `mask`. */
export function addonUrl(row: Pick<AddonRow, 'kind' | 'app' | 'port' | 'password'>, host: string, mask: boolean): string | null {
  if (row.port === null) return null;
  const password = mask ? '****' : row.password;
  const at = host.includes(':') ? `[${host}]:${row.port}` : `${host}:${row.port}`;
  switch (row.kind) {
    case 'postgres': {
      const db = databaseNameOf(row.app);
      return `postgres://${db}:${password}@${at}/${db}`;
    }
    case 'redis':
      // An explicit `default` user: redis-cli 7 refuses `redis://:PASSWORD@` (an empty user name).
      return `redis://default:${password}@${at}/0`;
    case 'memcached':
      return `memcached://${at}`;
  }
}
