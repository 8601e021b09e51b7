/**
 * The page's session: a short-lived dashboard session token kept in sessionStorage only (gone
 * with the tab; never in localStorage, never in a URL). It comes from a one-time login code in
 * the URL fragment (`#login=CODE`, from `hangar dashboard`) or from a pasted API token, which is
 * traded for a session at once and not kept.
 */
import type { TokenScopeName } from '../common/api-types.js';
import type { DashboardSessionView } from '../common/dashboard-types.js';

const KEY = 'hangar.session';

/** What the page keeps of its session. */
export interface Session {
  token: string;
  scope: TokenScopeName;
  expiresAt: string;
}

type Listener = (session: Session | null, reason: string | null) => void;
const listeners = new Set<Listener>();

/** The live session, or null. */
export function currentSession(): Session | null {
  try {
    const raw = sessionStorage.getItem(KEY);
    if (!raw) return null;
    const s = JSON.parse(raw) as Session;
    if (typeof s.token !== 'string' || Date.parse(s.expiresAt) <= Date.now()) return null;
    return s;
  } catch {
    return null;
  }
}

/** Keeps a session just opened and tells the page. */
export function saveSession(view: DashboardSessionView): Session {
  const session: Session = { token: view.token, scope: view.scope, expiresAt: view.expiresAt };
  sessionStorage.setItem(KEY, JSON.stringify(session));
  for (const l of listeners) l(session, null);
  return session;
}

/** Forgets the session (logout, or the server refused it) and tells the page why. */
export function clearSession(reason: string | null): void {
  sessionStorage.removeItem(KEY);
  for (const l of listeners) l(null, reason);
}

/** Calls `listener` on every change of session; returns the unsubscribe. */
export function onSessionChange(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** True when the scope may deploy, scale, roll back and read config values. */
export function mayDeploy(scope: TokenScopeName | undefined): boolean {
  return scope === 'deploy' || scope === 'admin';
}
