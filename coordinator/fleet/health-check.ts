/** How web instances of a release are health-checked, from its validated app.json. */
import type { AppJson } from '../../common/app-json.js';

/** The health-check path of a release: app.json `healthchecks.web.path`, else `/`. */
export function healthPathOf(appJson: AppJson | null): string {
  return appJson?.healthchecks?.web?.path ?? '/';
}

/** Default number of passing health checks in a row that make a web instance healthy. */
export const DEFAULT_HEALTH_CHECKS_IN_A_ROW = 2;

/**
 * Timing of web health checks from app.json `healthchecks.web`: `timeout` (seconds one check may
 * take; default 2) and `attempts` (passing checks in a row needed; default
 * {@link DEFAULT_HEALTH_CHECKS_IN_A_ROW}). Dokku's list form was reduced to one check on upload.
 */
export function healthCheckOf(appJson: AppJson | null): { timeoutMs: number; inARow: number } {
  const web = appJson?.healthchecks?.web;
  return {
    timeoutMs: web?.timeout === undefined ? 2000 : Math.round(web.timeout * 1000),
    inARow: web?.attempts ?? DEFAULT_HEALTH_CHECKS_IN_A_ROW,
  };
}
