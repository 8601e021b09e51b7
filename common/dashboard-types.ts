/**
 * Shapes of the dashboard's login routes and `whoami` (see `coordinator/dashboard/dashboard-routes.ts`),
 * beside the rest of the API's in `api-types.ts`.
 */
import type { TokenScopeName } from './api-types.js';

/** `POST /v1/dashboard/login-links` -> `{ link }`: a one-time login code. */
export interface DashboardLoginLinkView {
  /** `hgr_login_...`: good for one exchange until `expiresAt`. */
  code: string;
  /** `/#login=CODE`: append it to the coordinator's URL (the fragment never reaches a server). */
  path: string;
  /** ISO time. */
  expiresAt: string;
}

/** `POST /v1/dashboard/login` and `/v1/dashboard/sessions` -> `{ session }`. */
export interface DashboardSessionView {
  /** `hgr_sess_...`: a bearer token with the scope of the API token it came from. */
  token: string;
  scope: TokenScopeName;
  /** ISO time it ends at the latest. */
  expiresAt: string;
  /** It ends after this many seconds without a request. */
  idleSeconds: number;
}

/** `GET /v1/whoami` -> `{ whoami }`. */
export interface WhoamiView {
  /** The API token's name (a session carries the name of the token it came from). */
  name: string;
  scope: TokenScopeName;
  /** Whether the caller used a dashboard session token. */
  session: boolean;
}
