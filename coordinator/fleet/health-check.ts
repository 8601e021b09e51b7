/** How web instances of a release are health-checked, from its app.json. */

/** The health-check path of a release: app.json `healthchecks.web.path`, else `/`. */
export function healthPathOf(appJson: unknown): string {
  if (appJson && typeof appJson === 'object') {
    const hc = (appJson as { healthchecks?: { web?: { path?: unknown } } }).healthchecks;
    const path = hc?.web?.path;
    if (typeof path === 'string' && path.startsWith('/')) return path;
  }
  return '/';
}

/** Default number of passing health checks in a row that make a web instance healthy. */
export const DEFAULT_HEALTH_CHECKS_IN_A_ROW = 2;

/**
 * Timing of web health checks from app.json `healthchecks.web`: `timeout` (seconds one check may
 * take; default 2) and `attempts` (passing checks in a row needed; default
 * {@link DEFAULT_HEALTH_CHECKS_IN_A_ROW}). Dokku's list form was reduced to one check on upload.
 */
export function healthCheckOf(appJson: unknown): { timeoutMs: number; inARow: number } {
  let timeoutMs = 2000;
  let inARow = DEFAULT_HEALTH_CHECKS_IN_A_ROW;
  if (appJson && typeof appJson === 'object') {
    const web = (appJson as { healthchecks?: { web?: { timeout?: unknown; attempts?: unknown } } }).healthchecks?.web;
    if (typeof web?.timeout === 'number' && web.timeout > 0) timeoutMs = Math.min(600_000, Math.round(web.timeout * 1000));
    if (typeof web?.attempts === 'number' && Number.isInteger(web.attempts) && web.attempts >= 1) inARow = Math.min(1000, web.attempts);
  }
  return { timeoutMs, inARow };
}
