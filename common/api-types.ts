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
 *   POST   /v1/apps/:app/ps/restart { target? }    -> { restarted: string[], restart: DeployView }   (target: TYPE or TYPE.N;
 *                                                     a rolling restart, one instance at a time, health-gated)
 *   GET    /v1/apps/:app/restarts/:id?after=SEQ    -> { restart: DeployView }  (its progress, shaped like a deploy)
 *   GET    /v1/apps/:app/formation                 -> { formation: Record<string, number> }
 *   PATCH  /v1/apps/:app/formation { formation: { web: 2 } } -> { formation }
 *   GET    /v1/apps/:app/maintenance               -> { maintenance: MaintenanceView }
 *   PUT    /v1/apps/:app/maintenance { enabled: true, page?: HTML, bypass?: true, retryAfter?: S }
 *                                                  -> { maintenance, bypassHeader?: { name, value } }  (the value is shown once)
 *   PUT    /v1/apps/:app/maintenance { enabled: false } -> { maintenance }
 *   GET    /v1/apps/:app/addons?reveal=true        -> { addons: AddonView[] }   (passwords masked unless reveal)
 *   POST   /v1/apps/:app/addons { kind, agent?, name? } -> 202 { addon: AddonView }
 *   GET    /v1/apps/:app/addons/:name?reveal=true  -> { addon: AddonView }
 *   DELETE /v1/apps/:app/addons/:name?confirm=NAME&purge=true -> { addon: AddonView, deploy: DeployView | null }
 *   GET    /v1/apps/:app/addons/:name/backups      -> { backups: AddonBackupView[] }   (PostgreSQL)
 *   POST   /v1/apps/:app/addons/:name/backups      -> 201 { backup: AddonBackupView, backups: AddonBackupView[] }
 *   POST   /v1/apps/:app/addons/:name/backups { dir? } -> 201 { backup, backups }  (PostgreSQL, Redis; copied off the host)
 *   POST   /v1/apps/:app/addons/:name/backups/:backup/verify -> { backup }   (a verification restore now)
 *   POST   /v1/apps/:app/addons/:name/backups/:backup/restore { toNew?, confirm? } -> { ok: true, addon, backup, safety, backups }
 *   PUT    /v1/apps/:app/addons/:name/backup-schedule { at, keep, dir?, enabled? } -> { schedule }
 *   GET    /v1/apps/:app/addons/:name/info         -> { addon: AddonInfoView }
 *   POST   /v1/apps/:app/addons/:name/standby { agent? } -> 202 { addon: AddonInfoView }  (PostgreSQL: a streaming
 *                                                  standby on another agent; 409 CONFLICT without one)
 *   POST   /v1/apps/:app/addons/:name/failover     -> { addon: AddonInfoView, steps: string[] }  (planned, no data lost)
 *   GET    /v1/apps/:app/metrics?since=1h           -> { metrics: AppMetricsView }
 *   GET    /v1/agents/:agent/metrics?since=1h       -> { metrics: AgentMetricsView }
 *   GET    /v1/apps/:app/autoscale                  -> { autoscale: AutoscaleView }
 *   PUT    /v1/apps/:app/autoscale/:type { min, max, p95Ms?, cpuPct? } -> { autoscale: AutoscaleView }
 *   DELETE /v1/apps/:app/autoscale/:type            -> { autoscale: AutoscaleView }
 *   GET    /metrics   Prometheus text format (admin token as `Authorization: Bearer`)
 *   GET    /v1/apps/:app/logs?n=&source=&since=&until=&grep=&cursor=  -> { lines: LogLineView[], next: string | null }
 *                                                  (the newest n, oldest first, ≤ 50,000 a page; `next`: send the
 *                                                  same filters with cursor=next for the following page)
 *   WS     /v1/apps/:app/logs/stream?n=&source=&since=&grep=   (Authorization header, no token in the URL)
 *                                                  server sends JSON text frames: {@link LogStreamMessage}
 *   GET    /v1/apps/:app/errors                    -> { errors: ErrorGroupView[] }  (last seen first)
 *   GET    /v1/apps/:app/domains                   -> { domains: DomainView[] }   (the default domain first)
 *   POST   /v1/apps/:app/domains { hostname }      -> 201 { domain: DomainView, dns: DnsRecordView[], release: ReleaseView | null,
 *                                                  deploy: DeployView | null }   (409 DOMAIN_TAKEN; release: the release of the
 *                                                  same build and config that gives the processes the new HANGAR_DOMAINS)
 *   DELETE /v1/apps/:app/domains/:hostname         -> { ok: true, release: ReleaseView | null, deploy: DeployView | null }
 *   GET    /v1/apps/:app/certs                     -> { certs: CertView[], tls: TlsSettingsView }
 *   POST   /v1/apps/:app/certs { cert, key }       -> 201 { cert: CertView }   (PEM; 422 CERT_INVALID)
 *   PATCH  /v1/apps/:app/tls { acme?, redirect?, hsts? } -> { tls: TlsSettingsView }
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

import type { AddonKind, AddonState as ServerAddonState, InstanceState } from './vocabulary.js';

export interface ErrorBody {
  code: string;
  message: string;
  details?: unknown;
}

export interface HealthView {
  ok: true;
  version: string;
  /** `leader`: this coordinator answers the API; `follower`: it answers only this and names the leader. Absent before 0.x HA. */
  role?: CoordinatorRole;
  /** This coordinator's name. */
  name?: string;
  /** The leader's epoch (on the leader). */
  epoch?: number;
  /** Unix ms the leader's lease runs to, as last renewed (on the leader). */
  leaseExpiresAt?: number | null;
  /** The leader as the lease row names it (null: none right now, an election is under way). */
  leader?: LeaderView | null;
  /** Other coordinators seen lately (on the leader). */
  followers?: CoordinatorView[];
}

export type CoordinatorRole = 'leader' | 'follower';

/** The leading coordinator (`hangar coordinator status`). */
export interface LeaderView {
  name: string;
  /** `HOST:PORT` agents dial. */
  address: string;
  /** Its HTTP API. */
  url: string;
  /** The fencing token: bumped by every election. 0: a coordinator alone, without a lease. */
  epoch: number;
  /** Unix ms (null: no lease). */
  leaseExpiresAt: number | null;
}

/** Another coordinator of the same database. */
export interface CoordinatorView {
  name: string;
  address: string;
  url: string;
  role: CoordinatorRole;
  /** Unix ms of its last tick of the election. */
  lastSeen: number;
}

/** Answer of `GET /v1/coordinators` (`hangar coordinator status --json`). */
export interface CoordinatorsView {
  leader: LeaderView;
  followers: CoordinatorView[];
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
  /** Host CPU busy, % of all cores, from the last metrics report (null before one arrived). */
  cpuPct: number | null;
  /** Host memory in use, MB, from the last metrics report (null before one arrived). */
  memoryUsedMb: number | null;
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
  /** True while the app is in maintenance mode (`hangar maintenance:on`). */
  maintenance: boolean;
}

/** Maintenance mode of an app: while on, the routers answer every request with a 503 page. */
export interface MaintenanceView {
  app: string;
  enabled: boolean;
  /** When it was turned on (ISO 8601); null when off. */
  since: string | null;
  /** `default` (the router's page) or `custom` (from `maintenance:on --page FILE`); null when off. */
  page: 'default' | 'custom' | null;
  /** Name of the header whose secret value reaches the app anyway; null when no bypass is set. */
  bypassHeader: string | null;
  /** Seconds sent in `Retry-After`; null when off. */
  retryAfter: number | null;
}

/** Header admins send, with the value `maintenance:on --bypass-header` printed, to reach an app in maintenance. */
export const MAINTENANCE_BYPASS_HEADER = 'x-hangar-maintenance-bypass';

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

/** An instance's state in `hangar ps` (one of the fleet's instance states). */
export type PsState = InstanceState;

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
  /**
   * Why its last run ended when that was not a plain exit: `oom` (the kernel's OOM killer ended
   * it for going over its memory limit; Heroku's R15). Null otherwise.
   */
  reason: 'oom' | null;
  /** Memory charged to its cgroup at its agent's last report, bytes; null when it has no memory limit. */
  memoryBytes: number | null;
  /** Its memory limit (app.json `formation.TYPE.memory` or the agent's `--default-memory`), bytes; null: none. */
  memoryLimitBytes: number | null;
  /** Its CPU limit in cores (`formation.TYPE.cpu` or `--default-cpu`); null: none. */
  cpuLimit: number | null;
}

/**
 * `rolling_back`: the new release did not get healthy; the previous one is being restored (then `failed`).
 * `postdeploy`: the release is live and its app.json postdeploy scripts run (then `succeeded`, or
 * `failed` with the release still live).
 */
export type DeployStatus = 'pending' | 'building' | 'releasing' | 'rolling_out' | 'rolling_back' | 'postdeploy' | 'succeeded' | 'failed';

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

export type { AddonKind };

/**
 * `provisioning` (data dir being made), `starting` (started, not yet answering its protocol),
 * `up`, `crashed` (exited; restarting with backoff), `stopping`, `failed` (could not be
 * provisioned, e.g. the server's Debian package is missing: see `message`), `destroyed` (stopped,
 * data kept on the agent).
 */
export type AddonState = ServerAddonState | 'destroyed';

export interface AddonView {
  /** `postgres-1`; unique across the fleet. */
  name: string;
  kind: AddonKind;
  app: string;
  /** The agent that runs it. */
  agent: string;
  state: AddonState;
  /** The app's config var that holds the URL: DATABASE_URL, REDIS_URL, MEMCACHED_URL, or NAME_URL for a second one. */
  configVar: string;
  /** `postgres://USER:PASSWORD@HOST:PORT/DB` (password `****` unless revealed); null until the port is known. */
  url: string | null;
  port: number | null;
  /** True once the URL is in the app's config. */
  attached: boolean;
  /** The deploy that set (or unset) the config var, or null. */
  deploy: string | null;
  restarts: number;
  /** One sentence about the state (why it failed, when it restarts). */
  message: string;
  /** ISO time of the last state change. */
  since: string;
  createdAt: string;
}

export interface AddonBackupView {
  /** `b20260102-030405` */
  name: string;
  size: number;
  /** ISO time. */
  createdAt: string;
  /** The add-on it was made of. */
  addon: string;
  /** `postgres` (pg_dump -Fc) or `redis` (RDB). */
  kind: AddonKind;
  /** SHA-256 of the file, hex: every copy is checked against it. */
  sha256: string;
  /** `manual` (addons:backup), `scheduled`, or `safety` (taken before a restore into the add-on). */
  origin: 'manual' | 'scheduled' | 'safety';
  /** Where it is stored: the agent that made it (`original: true`), then its copies on other agents or in a directory. */
  stored: { agent?: string; path?: string; original: boolean }[];
  /** True when at least one copy is off the host that made it. */
  offHost: boolean;
  /** Why it is not off the host (or not everywhere asked), or null. */
  copyError: string | null;
  /** `verified`: a restore into a scratch server matched the dump; `failed`: it did not (or a copy is corrupt). */
  verified: 'unverified' | 'verified' | 'failed';
  /** What the verification found or why it failed. */
  verifyMessage: string;
  verifiedAt: string | null;
}

/** An add-on's backup schedule: daily at `at` (UTC), the newest `keep` scheduled backups kept. */
export interface AddonScheduleView {
  at: string;
  keep: number;
  /** A directory on the coordinator's host that gets a copy of each backup too, or null. */
  dir: string | null;
  enabled: boolean;
  nextAt: string | null;
  lastAt: string | null;
  /** The last scheduled backup's failure, or null. */
  lastError: string | null;
}

/** `GET /v1/apps/:app/addons/:name/info`: the add-on, its servers and its backups. */
export interface AddonInfoView extends AddonView {
  /**
   * The servers of the add-on: its primary, then its standby (PostgreSQL), `fenced` while a
   * former primary waits to become the standby; the standby's replication lag (null: not
   * streaming or not measured yet; always null for the primary).
   */
  servers: {
    agent: string;
    role: 'primary' | 'standby' | 'fenced';
    state: AddonState;
    lagBytes: number | null;
    lagSeconds: number | null;
  }[];
  /**
   * PostgreSQL with a standby: `sync` when it was made with `--standby=sync`; `inForce` whether
   * the primary waits for the standby on each commit now (false with `sync`: degraded to async
   * while the standby is away or not streaming yet). Null without a standby.
   */
  replication: { mode: 'sync' | 'async'; inForce: boolean } | null;
  schedule: AddonScheduleView | null;
  lastBackup: AddonBackupView | null;
  /** The newest backup whose verification restore ran, and how it went. */
  lastVerifiedRestore: { backup: string; at: string; ok: boolean; message: string } | null;
  backups: AddonBackupView[];
}

/** Requests through the routers over a window. */
export interface TrafficView {
  requests: number;
  /** Requests per second over the window. */
  rps: number;
  /** Latency percentiles, ms (request-weighted over the routers' intervals). */
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  status: { '2xx': number; '3xx': number; '4xx': number; '5xx': number };
  /** In flight at the last report. */
  inFlight: number;
}

/** One instance's figures over the window. */
export interface InstanceMetricsView {
  /** `web.1` */
  id: string;
  type: string;
  /** `v3` */
  release: string;
  agent: string;
  /** Mean CPU over the window, % of one core. */
  cpuPct: number;
  /** Resident memory of its process group at the last report, bytes. */
  rssBytes: number;
  processes: number;
  /** Requests routed to it (web), or null. */
  traffic: TrafficView | null;
}

/** One process type's figures (sum of its instances). */
export interface TypeMetricsView {
  type: string;
  instances: number;
  cpuPct: number;
  rssBytes: number;
  traffic: TrafficView | null;
}

/** A point of a per-minute series. */
export interface MetricsPoint {
  /** ISO start of the minute. */
  ts: string;
  rps: number;
  p95Ms: number;
  status5xx: number;
  /** Sum over the app's instances, % of one core. */
  cpuPct: number;
  rssBytes: number;
}

export interface AppMetricsView {
  app: string;
  /** ISO start and end of the window. */
  since: string;
  until: string;
  /** All of the app's traffic (every router). */
  traffic: TrafficView;
  types: TypeMetricsView[];
  instances: InstanceMetricsView[];
  /** Per-minute points (completed minutes). */
  series: MetricsPoint[];
}

export interface AgentMetricsView {
  agent: string;
  state: AgentState;
  since: string;
  until: string;
  /** ISO time of the last report, or null. */
  reportedAt: string | null;
  /** Last host figures (cpu_pct, load1, mem_used_bytes, disk_used_bytes, net_rx_bps...). */
  host: Record<string, number>;
  /** Mean of each host figure over the window. */
  mean: Record<string, number>;
  instances: (InstanceMetricsView & { app: string })[];
  /** Per-minute host CPU % and memory used. */
  series: { ts: string; cpuPct: number; memoryUsedBytes: number }[];
}

export interface AutoscalePolicyView {
  type: string;
  min: number;
  max: number;
  /** Target p95 latency, ms (web), or null. */
  p95Ms: number | null;
  /** Target mean CPU per instance, % of one core, or null. */
  cpuPct: number | null;
  /** Current quantity. */
  quantity: number;
}

export interface AutoscaleDecisionView {
  ts: string;
  type: string;
  from: number;
  to: number;
  reason: string;
}

export interface AutoscaleView {
  app: string;
  policies: AutoscalePolicyView[];
  /** Newest first. */
  decisions: AutoscaleDecisionView[];
}

/** One log line: `hangar logs --json` prints exactly these fields, one object a line. */
export interface LogLineView {
  /** ISO time the agent read the line. */
  ts: string;
  /** `web.1`, `worker.2`, `router`, `build`, `release`, `hangar`, an add-on. */
  source: string;
  stream: 'stdout' | 'stderr';
  /** Agent that captured it. */
  agent: string;
  line: string;
}

/**
 * A frame of the live log websocket: lines (the backfill first, then live ones), `live` once the
 * backfill is done, or `missed` when the client was too slow and that many lines were skipped.
 */
export type LogStreamMessage = { lines: LogLineView[] } | { live: true } | { missed: number };

/** Python exceptions of one type at one place in the app's code (`hangar errors --json`). */
export interface ErrorGroupView {
  /** Exception type, e.g. `ValueError` or `django.db.utils.OperationalError`. */
  type: string;
  /** `file:line:function` of the innermost frame of the app's own code. */
  location: string;
  /** Message of the last occurrence. */
  message: string;
  count: number;
  firstSeen: string;
  lastSeen: string;
  /** Release of the last occurrence (`v3`). */
  release: string;
  /** Traceback of the last occurrence. */
  traceback: string;
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

/** A one-off run's status (`hangar runs`). */
export type RunStatusName = 'pending' | 'starting' | 'running' | 'exited' | 'failed';

/** A row of `hangar runs --json` (`GET /v1/apps/APP/runs`). */
export interface RunView {
  /** `run.3`: also its log source. */
  name: string;
  id: string;
  command: string;
  /** `v3` */
  release: string;
  agent: string;
  status: RunStatusName;
  /** True while `hangar run` (not `--detached`) streams it. */
  attached: boolean;
  tty: boolean;
  /** Name of the token that started it; `cron` for a cron firing. */
  createdBy: string;
  /** The cron job that fired it, or null. */
  cronJob: string | null;
  pid: number | null;
  /** Once exited: its exit code (128 + N when killed by signal N). */
  exitCode: number | null;
  signal: string | null;
  /** Why it failed or was stopped; empty otherwise. */
  message: string;
  /** ISO times. */
  createdAt: string;
  startedAt: string | null;
  endedAt: string | null;
  /** endedAt - startedAt, ms; null while it runs. */
  durationMs: number | null;
  /** 0: no limit. */
  timeoutSeconds: number;
}

/** Body of `POST /v1/apps/APP/runs`. */
export interface RunRequest {
  /** The command line, run by `/bin/sh -c` in the release's folder; with `console`, leave it out. */
  command?: string;
  /** `hangar console`: app.json's `hangar.console`, else `python manage.py shell`. */
  console?: boolean;
  /** `hangar run --detached`: output only to the logs; else the CLI attaches to it. */
  detached?: boolean;
  /** A pseudo-terminal (the CLI's stdin is a terminal). Default false. */
  tty?: boolean;
  cols?: number;
  rows?: number;
  /** The terminal type (the CLI's TERM). */
  term?: string;
  /** Release number; default the current one. */
  release?: number;
  /** Agent name; default the scheduler's choice. */
  agent?: string;
  /** Seconds; default none for attached runs, 24 h detached. */
  timeoutSeconds?: number;
}

/**
 * What the run websocket (`/v1/apps/APP/runs/N/attach`) sends as text frames; binary frames are
 * output, their first byte the stream (1 stdout, 2 stderr).
 */
export type RunStreamMessage =
  | { status: 'running'; pid: number }
  | { exit: { code: number; signal: string | null; message: string } }
  | { error: { code: string; message: string } };

/** What a client sends as text frames; binary frames are stdin. */
export type RunStreamControl =
  { resize: { cols: number; rows: number } } | { eof: true } | { signal: 'SIGINT' | 'SIGTERM' | 'SIGHUP' | 'SIGQUIT' };
/** A DNS record that points a custom domain at the routers. */
export interface DnsRecordView {
  type: 'A' | 'CNAME';
  name: string;
  value: string;
}

/**
 * Where a domain's name resolves, as the coordinator sees it: `ok` (to an agent's address),
 * `elsewhere` (to addresses of no agent), `unresolved` (no record, or no answer in time).
 */
export type DnsCheck = 'ok' | 'elsewhere' | 'unresolved';

/**
 * A domain's certificate: `none` (plain HTTP only), `pending`/`issuing` (ACME ordering one),
 * `valid`, `expiring` (within 30 days), `failed` (ACME failed, no valid certificate; see `lastError`).
 */
export type CertState = 'none' | 'pending' | 'issuing' | 'valid' | 'expiring' | 'failed';

export interface DomainView {
  hostname: string;
  /** `default`: APP.<coordinator domain>, always there; `custom`: added with `domains:add`. */
  kind: 'default' | 'custom';
  dns: { check: DnsCheck; addresses: string[] };
  certificate: {
    state: CertState;
    /** The certificate served for it (id from `hangar certs`), or null. */
    id: string | null;
    source: 'uploaded' | 'acme' | null;
    /** ISO time the served certificate expires, or null. */
    expiresAt: string | null;
    /** The last ACME failure for this domain, or null. */
    lastError: string | null;
    /** ISO time of the next ACME attempt, or null. */
    nextAttemptAt: string | null;
  };
  createdAt: string | null;
}

export interface CertView {
  id: string;
  source: 'uploaded' | 'acme';
  /** DNS names in the certificate (wildcards included). */
  names: string[];
  /** The app's domains it covers. */
  domains: string[];
  issuer: string;
  fingerprint: string;
  /** ISO times. */
  notBefore: string;
  notAfter: string;
  /** `valid`, `expiring` (within 30 days) or `expired`. */
  state: 'valid' | 'expiring' | 'expired';
  createdAt: string;
}

export interface TlsSettingsView {
  /** ACME (`certs:auto:enable`) gets and renews the certificates of the custom domains. */
  acme: boolean;
  /** Plain HTTP to a domain with a certificate gets a 308 to HTTPS (default true). */
  redirect: boolean;
  /** HTTPS responses carry `Strict-Transport-Security: max-age=31536000` (default false). */
  hsts: boolean;
}

/** A row of `hangar cron --json` (`GET /v1/apps/APP/cron`): a job of the current release's app.json. */
export interface CronJobView {
  name: string;
  command: string;
  schedule: string;
  /** IANA time zone of the schedule. */
  timezone: string;
  concurrency: 'forbid' | 'allow';
  /** Seconds a firing may run. */
  timeoutSeconds: number;
  /** ISO time of the next firing; null when the schedule never fires again. */
  nextRunAt: string | null;
  /** Its newest run (a firing or `cron:run`), or null. */
  lastRun: RunView | null;
}
