/**
 * Shapes of the coordinator's HTTP API (`/v1/...`, JSON, `Authorization: Bearer TOKEN`).
 * The CLI's `--json` output prints these objects as they are: they are a public contract.
 *
 * Routes:
 *   GET    /v1/health                              -> { ok: true, version }           (no token)
 *   GET    /v1/agents                              -> { agents: AgentView[] }
 *   GET    /v1/apps                                -> { apps: AppView[] }
 *   POST   /v1/apps              { name }          -> 201 { app: AppView }
 *   GET    /v1/apps/:app                           -> { app: AppView }
 *   DELETE /v1/apps/:app?confirm=NAME              -> { ok: true }
 *   GET    /v1/apps/:app/config                    -> { config: Record<string,string> }
 *   PATCH  /v1/apps/:app/config  { KEY: "v", OTHER: null }   (null unsets)
 *                                                  -> { config, release: ReleaseView | null, deploy: DeployView | null }
 *   POST   /v1/apps/:app/builds  body: application/gzip (tar.gz of the source)
 *                                                  -> 202 { deploy: DeployView }
 *   GET    /v1/apps/:app/deploys/:id?after=SEQ     -> { deploy: DeployView }  (lines with seq > after)
 *   GET    /v1/apps/:app/releases                  -> { releases: ReleaseView[] }  (newest first)
 *   POST   /v1/apps/:app/releases { rollback: N? } -> 202 { release, deploy }
 *   GET    /v1/apps/:app/ps                        -> { ps: PsRow[] }
 *   POST   /v1/apps/:app/ps/restart { target? }    -> { restarted: string[] }   (target: TYPE or TYPE.N)
 *   GET    /v1/apps/:app/formation                 -> { formation: Record<string, number> }
 *   PATCH  /v1/apps/:app/formation { formation: { web: 2 } } -> { formation }
 *   GET    /v1/tokens                              -> { tokens: TokenView[] }            (admin)
 *   POST   /v1/tokens { scope, name? }             -> 201 { token: CreatedTokenView }    (admin)
 *   DELETE /v1/tokens/:id                          -> { ok: true }                       (admin)
 *   DELETE /v1/agents/:name                        -> { ok: true, apps: string[] }       (admin)
 *
 * Scopes: a `read` token may GET (but not config values); `deploy` also deploys, changes config
 * and formation, restarts and rolls back; `admin` also creates and destroys apps, manages tokens
 * and removes agents. No token or a wrong one: 401 UNAUTHORIZED; too weak a scope: 403 FORBIDDEN.
 *
 * Errors: any 4xx/5xx has the body {@link ErrorBody}.
 */

export interface ErrorBody {
  code: string;
  message: string;
  details?: unknown;
}

export interface HealthView {
  ok: true;
  version: string;
}

export type AgentState = 'up' | 'down';

export interface AgentView {
  name: string;
  state: AgentState;
  /** Address other routers reach its instances on. */
  address: string;
  routerPort: number;
  instances: number;
  capacity: { cpus: number; memoryMb: number; maxInstances: number };
  /** ISO time of the last message from the agent. */
  lastSeen: string;
  version: string;
}

export interface AppView {
  name: string;
  /** Default domain: NAME.<coordinator --domain>; the routers match it in the Host header. */
  domain: string;
  /** Where the app answers through the routers: `http://DOMAIN` (plus the router port when not 80). */
  url: string;
  createdAt: string;
  /** Current release (`v3`), or null before the first deploy. */
  release: string | null;
  formation: Record<string, number>;
}

export type ReleaseStatus = 'pending' | 'running' | 'succeeded' | 'failed' | 'rolled_back' | 'superseded';

export interface ReleaseView {
  version: number;
  /** `v3` */
  name: string;
  status: ReleaseStatus;
  /** What made it: "Deploy 3f2a1c0", "Set SECRET_KEY", "Rollback to v2". */
  description: string;
  createdAt: string;
  createdBy: string;
  artifactSha256: string;
  /** Process types of its Procfile. */
  processTypes: string[];
  current: boolean;
}

export type PsState = 'starting' | 'up' | 'crashed' | 'stopping';

export interface PsRow {
  /** `web.1` */
  id: string;
  type: string;
  /** `v3` */
  release: string;
  agent: string;
  state: PsState;
  pid: number | null;
  port: number | null;
  restarts: number;
  /** ISO time of the last state change. */
  since: string;
}

export type DeployStatus = 'pending' | 'building' | 'releasing' | 'rolling_out' | 'succeeded' | 'failed';

export interface DeployLine {
  seq: number;
  /** ISO time */
  ts: string;
  /** build | release | hangar */
  source: string;
  stream: 'stdout' | 'stderr';
  line: string;
}

export interface DeployView {
  id: string;
  app: string;
  /** `v3` once the release exists. */
  release: string | null;
  status: DeployStatus;
  /** Why it failed (null otherwise). */
  error: string | null;
  /** Code of the failure, e.g. BUILD_FAILED, RELEASE_PHASE_FAILED, RELEASE_UNHEALTHY. */
  errorCode: string | null;
  /** Output lines with seq greater than the `after` the client asked for. */
  lines: DeployLine[];
  /** Highest seq included; pass it as `after` on the next poll. */
  next: number;
  createdAt: string;
  finishedAt: string | null;
}

/** Scope of an API token: each includes the ones before it. */
export type TokenScopeName = 'read' | 'deploy' | 'admin';

/** An API token as listed (never the token itself). */
export interface TokenView {
  id: string;
  name: string;
  scope: TokenScopeName;
  createdAt: string;
}

/** A token just created: the only time the token itself is shown. */
export interface CreatedTokenView extends TokenView {
  token: string;
}
