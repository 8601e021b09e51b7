/** One word for how an app is doing, from its release and process list. */
import type { AppView, PsRow } from '../common/api-types.js';

export type AppState = 'not deployed' | 'stopped' | 'up' | 'starting' | 'crashed' | 'degraded';

export function appState(app: AppView, ps: PsRow[] | null): AppState {
  if (app.release === null) return 'not deployed';
  if (!ps || ps.length === 0) return 'stopped';
  if (ps.every((p) => p.state === 'up')) return 'up';
  if (ps.some((p) => p.state === 'crashed')) return ps.some((p) => p.state === 'up') ? 'degraded' : 'crashed';
  return 'starting';
}

/** `web=2 worker=1`. */
export function formationText(formation: Record<string, number>): string {
  const parts = Object.entries(formation).map(([t, n]) => `${t}=${n}`);
  return parts.length ? parts.join(' ') : '–';
}
