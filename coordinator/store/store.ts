import { appJsonSchema, type AppJson } from '../../common/app-json.js';
import { HangarError } from '../../common/errors.js';
import type { SecretBox } from '../../common/secret-box.js';
import type { AddonKind, AddonState, InstanceState } from '../../common/vocabulary.js';
import { installWriteFence } from '../ha/write-fence.js';
import { MIGRATIONS } from './migrations.js';
import { POSTGRES_MIGRATIONS } from './postgres-migrations.js';
import { PostgresDatabase } from './postgres.js';
import { SqliteDatabase, isConstraintError, isPostgresUrl, type SqlDatabase, type SqlStatement } from './sql.js';

/** An app's row. */
export interface AppRow {
  name: string;
  createdAt: number;
  currentRelease: number | null;
}

export type ReleaseStatus = 'pending' | 'running' | 'succeeded' | 'failed' | 'rolled_back';

export interface ReleaseRow {
  app: string;
  version: number;
  artifactSha256: string;
  procfile: Record<string, string>;
  config: Record<string, string>;
  /** Validated on upload (and again when read back). */
  appJson: AppJson | null;
  status: ReleaseStatus;
  description: string;
  createdBy: string;
  createdAt: number;
}

/** An app in maintenance mode (`hangar maintenance:on`). */
export interface MaintenanceRow {
  app: string;
  /** Custom page; null: the router's default one. */
  pageHtml: string | null;
  /** SHA-256 (hex) of the bypass header's value; null: no bypass. */
  bypassSha256: string | null;
  retryAfterSeconds: number;
  /** Unix ms when it was turned on. */
  since: number;
}

/**
 * `rolling_back`: the new release failed and the previous one is being restored (then `failed`).
 * `postdeploy`: the release is live and its app.json postdeploy scripts run (then `succeeded`, or
 * `failed` with the release still live).
 */
export type DeployStatus = 'pending' | 'building' | 'releasing' | 'rolling_out' | 'rolling_back' | 'postdeploy' | 'succeeded' | 'failed';

export interface DeployRow {
  id: string;
  app: string;
  release: number | null;
  previousRelease: number | null;
  status: DeployStatus;
  error: string | null;
  errorCode: string | null;
  taskAgent: string | null;
  /** Rollbacks do not run the Procfile's `release:` command (as on Heroku). */
  skipReleasePhase: boolean;
  deadline: number | null;
  createdAt: number;
  finishedAt: number | null;
}

export interface DeployLineRow {
  seq: number;
  ts: number;
  source: string;
  stream: string;
  line: string;
}

export interface AgentRow {
  name: string;
  address: string;
  routerPort: number;
  cpus: number;
  memoryMb: number;
  maxInstances: number;
  version: string;
  lastSeen: number;
  createdAt: number;
  /** How long the agent keeps its singletons running without the coordinator, ms. */
  singletonLeaseMs: number;
}

/** What the coordinator wants of an instance: run it (and route to it once up), drain it, gone. */
export type InstanceDesire = 'run' | 'drain';

export interface InstanceRow {
  key: string;
  app: string;
  type: string;
  idx: number;
  release: number;
  agent: string;
  desired: InstanceDesire;
  drainGeneration: number | null;
  drainStarted: number | null;
  state: InstanceState;
  pid: number | null;
  port: number | null;
  restarts: number;
  since: number;
  message: string;
  /** Bumped by `hangar restart`: the agent restarts the process when it changes. */
  restartNonce: number;
  createdAt: number;
  /** Last lines of its output while it is not up (crashing, unhealthy), as the agent read them. */
  logTail: string;
  /** When its process last started, as the agent reported (Unix ms). */
  startedAt: number | null;
  /** When it last passed its health check (Unix ms). */
  upAt: number | null;
}

/** What the coordinator wants of an add-on: keep it running, or keep only its data (destroyed). */
export type AddonDesire = 'run' | 'destroyed';

/** An add-on server (PostgreSQL, Redis, memcached) on an agent. */
export interface AddonRow {
  name: string;
  /** Random id: a leftover directory of an earlier add-on of the same name is never reused. */
  id: string;
  app: string;
  kind: AddonKind;
  agent: string;
  /** Chosen by the agent; null until it reported one. */
  port: number | null;
  /** The config var that holds its URL (DATABASE_URL, REDIS_URL, …). */
  configVar: string;
  desired: AddonDesire;
  /** The URL last set in the app's config (null: not attached yet, or detached). */
  attachedUrl: string | null;
  /** The deploy that set or unset the config var. */
  deployId: string | null;
  /** As last reported by the agent (or `destroyed`). */
  state: AddonState | 'destroyed';
  pid: number | null;
  restarts: number;
  since: number;
  message: string;
  /** The generated password. Kept so it can be sent again; never logged. */
  password: string;
  /** PostgreSQL: the password of the server's superuser, which only the agent uses; '' for other kinds. */
  adminPassword: string;
  /** PostgreSQL: its server certificate from the coordinator's CA (null: made before add-ons had TLS). */
  tls: { certPem: string; keyPem: string } | null;
  createdAt: number;
}

/**
 * The role of an add-on's standby server: `pending` until its primary is ready to stream to it,
 * `standby` once desired state has it copy and follow the primary, `fenced` for a former primary
 * replaced by its standby (automatic failover) until it is a standby of the new primary.
 */
export type StandbyRole = 'pending' | 'standby' | 'fenced';

/** The standby server of a PostgreSQL add-on, on another agent than its primary (the add-on's row). */
export interface AddonStandbyRow {
  addon: string;
  agent: string;
  role: StandbyRole;
  /** Chosen by the agent; null until it reported one. */
  port: number | null;
  /** As last reported by its agent. */
  state: AddonState;
  pid: number | null;
  restarts: number;
  since: number;
  message: string;
  /** The password of the replication role; never logged. */
  replicationPassword: string;
  /** Replication lag last measured on the primary (null: not streaming, or not measured yet). */
  lagBytes: number | null;
  lagSeconds: number | null;
  lagAt: number | null;
  /** 'sync': the primary waits for this standby on each commit while it streams (see addon-standbys.ts). */
  syncMode: 'sync' | 'async';
  /** Whether the primary runs with this standby synchronous now (false: async, or degraded). */
  syncActive: boolean;
  createdAt: number;
}

/** A new instance, wanted running and not yet started: what placement inserts. */
export function newInstanceRow(i: Pick<InstanceRow, 'key' | 'app' | 'type' | 'idx' | 'release' | 'agent'>, now: number): InstanceRow {
  return {
    ...i,
    desired: 'run',
    drainGeneration: null,
    drainStarted: null,
    state: 'starting',
    pid: null,
    port: null,
    restarts: 0,
    since: now,
    message: '',
    restartNonce: 0,
    createdAt: now,
    logTail: '',
    startedAt: null,
    upAt: null,
  };
}

/** Options of {@link Store}. */
export interface StoreOptions {
  /** Path of the SQLite file (`:memory:` for tests), or a `postgres://` URL. */
  path: string;
  /** Seals config values at rest (config_vars values, releases' config). */
  secrets: SecretBox;
  /**
   * The leader epoch this coordinator holds (coordinator/ha/leader-lease.ts): every write fails
   * once the lease row carries another one. Default: none (a coordinator alone on its data dir).
   */
  fence?: { epoch: number; onFenced: () => void };
}

/** Opens `location`: a `postgres://` URL on PostgreSQL, anything else as a SQLite file. */
export function openSqlDatabase(location: string, options: { busyTimeoutMs?: number } = {}): SqlDatabase {
  if (!isPostgresUrl(location)) return new SqliteDatabase(location, options);
  // A session left open inside a transaction (a stopped process) gives its locks back.
  return new PostgresDatabase({ url: location, onConnect: ["SET idle_in_transaction_session_timeout = '10s'"] });
}

/** Any number PostgreSQL's advisory locks know this schema's migrations by. */
const MIGRATION_LOCK = 7_081_001;

/**
 * Applies the migrations `db` lacks. Coordinators opening one database at once never apply a step
 * twice: on SQLite each step re-reads the version inside an IMMEDIATE transaction; on PostgreSQL
 * all steps run in one transaction holding an advisory lock.
 */
export function migrateDatabase(db: SqlDatabase): void {
  if (db instanceof SqliteDatabase) {
    const raw = db.raw;
    for (;;) {
      const version = raw.pragma('user_version', { simple: true }) as number;
      if (version >= MIGRATIONS.length) return;
      raw
        .transaction(() => {
          if ((raw.pragma('user_version', { simple: true }) as number) !== version) return;
          raw.exec(MIGRATIONS[version] as string);
          raw.pragma(`user_version = ${version + 1}`);
        })
        .immediate();
    }
  }
  db.transaction(() => {
    db.prepare('SELECT pg_advisory_xact_lock(?)').get(MIGRATION_LOCK);
    db.exec('CREATE TABLE IF NOT EXISTS hangar_schema (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)');
    db.exec('INSERT INTO hangar_schema (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING');
    const version = db.prepare('SELECT version FROM hangar_schema WHERE id = 1').pluck().get() as number;
    for (let v = version; v < POSTGRES_MIGRATIONS.length; v++) db.exec(POSTGRES_MIGRATIONS[v] as string);
    if (version < POSTGRES_MIGRATIONS.length)
      db.prepare('UPDATE hangar_schema SET version = ? WHERE id = 1').run(POSTGRES_MIGRATIONS.length);
  })();
}

/** Who an API token lets do what: each scope includes the ones before it. */
export type TokenScope = 'read' | 'deploy' | 'admin';

/** An API token as stored: its hash, never the token. */
export interface ApiTokenRow {
  id: string;
  name: string;
  scope: TokenScope;
  /** Lowercase hex SHA-256 of the token. */
  hash: string;
  createdAt: number;
  lastUsedAt: number | null;
}

type Row = Record<string, unknown>;

function maintenanceFrom(r: Row): MaintenanceRow {
  return {
    app: r.app as string,
    pageHtml: (r.page_html as string | null) ?? null,
    bypassSha256: (r.bypass_sha256 as string | null) ?? null,
    retryAfterSeconds: r.retry_after as number,
    since: r.since as number,
  };
}

function appFrom(r: Row): AppRow {
  return { name: r.name as string, createdAt: r.created_at as number, currentRelease: (r.current_release as number | null) ?? null };
}

function releaseFrom(r: Row, secrets: SecretBox): ReleaseRow {
  return {
    app: r.app as string,
    version: r.version as number,
    artifactSha256: r.artifact_sha256 as string,
    procfile: JSON.parse(r.procfile as string) as Record<string, string>,
    config: JSON.parse(secrets.open(r.config as string)) as Record<string, string>,
    appJson: r.app_json === null ? null : storedAppJson(r.app_json as string),
    status: r.status as ReleaseStatus,
    description: r.description as string,
    createdBy: r.created_by as string,
    createdAt: r.created_at as number,
  };
}

function deployFrom(r: Row): DeployRow {
  return {
    id: r.id as string,
    app: r.app as string,
    release: (r.release as number | null) ?? null,
    previousRelease: (r.previous_release as number | null) ?? null,
    status: r.status as DeployStatus,
    error: (r.error as string | null) ?? null,
    errorCode: (r.error_code as string | null) ?? null,
    taskAgent: (r.task_agent as string | null) ?? null,
    skipReleasePhase: r.skip_release_phase === 1,
    deadline: (r.deadline as number | null) ?? null,
    createdAt: r.created_at as number,
    finishedAt: (r.finished_at as number | null) ?? null,
  };
}

/** A release's app.json as stored (validated on upload); one that no longer validates reads as none. */
function storedAppJson(text: string): AppJson | null {
  const parsed = appJsonSchema.safeParse(JSON.parse(text));
  return parsed.success ? parsed.data : null;
}

function agentFrom(r: Row): AgentRow {
  return {
    name: r.name as string,
    address: r.address as string,
    routerPort: r.router_port as number,
    cpus: r.cpus as number,
    memoryMb: r.memory_mb as number,
    maxInstances: r.max_instances as number,
    version: r.version as string,
    lastSeen: r.last_seen as number,
    createdAt: r.created_at as number,
    singletonLeaseMs: r.singleton_lease_ms as number,
  };
}

function tokenFrom(r: Row): ApiTokenRow {
  return {
    id: r.id as string,
    name: r.name as string,
    scope: r.scope as TokenScope,
    hash: r.hash as string,
    createdAt: r.created_at as number,
    lastUsedAt: (r.last_used_at as number | null) ?? null,
  };
}

function instanceFrom(r: Row): InstanceRow {
  return {
    key: r.key as string,
    app: r.app as string,
    type: r.type as string,
    idx: r.idx as number,
    release: r.release as number,
    agent: r.agent as string,
    desired: r.desired as InstanceDesire,
    drainGeneration: (r.drain_generation as number | null) ?? null,
    drainStarted: (r.drain_started as number | null) ?? null,
    state: r.state as InstanceState,
    pid: (r.pid as number | null) ?? null,
    port: (r.port as number | null) ?? null,
    restarts: r.restarts as number,
    since: r.since as number,
    message: r.message as string,
    restartNonce: r.restart_nonce as number,
    createdAt: r.created_at as number,
    logTail: (r.log_tail as string | null) ?? '',
    startedAt: (r.started_at as number | null) ?? null,
    upAt: (r.up_at as number | null) ?? null,
  };
}

function addonFrom(r: Row, secrets: SecretBox): AddonRow {
  const secret = JSON.parse(secrets.open(r.secret as string)) as {
    password?: string;
    adminPassword?: string;
    tls?: { certPem: string; keyPem: string };
  };
  const attached = (r.attached_url as string | null) ?? null;
  return {
    name: r.name as string,
    id: r.id as string,
    app: r.app as string,
    kind: r.kind as AddonKind,
    agent: r.agent as string,
    port: (r.port as number | null) ?? null,
    configVar: r.config_var as string,
    desired: r.desired as AddonDesire,
    attachedUrl: attached === null ? null : secrets.open(attached),
    deployId: (r.deploy_id as string | null) ?? null,
    state: r.state as AddonRow['state'],
    pid: (r.pid as number | null) ?? null,
    restarts: r.restarts as number,
    since: r.since as number,
    message: r.message as string,
    password: secret.password ?? '',
    adminPassword: secret.adminPassword ?? '',
    tls: secret.tls ?? null,
    createdAt: r.created_at as number,
  };
}

function standbyFrom(r: Row, secrets: SecretBox): AddonStandbyRow {
  const secret = JSON.parse(secrets.open(r.secret as string)) as { replicationPassword?: string };
  return {
    addon: r.addon as string,
    agent: r.agent as string,
    role: r.role as StandbyRole,
    port: (r.port as number | null) ?? null,
    state: r.state as AddonState,
    pid: (r.pid as number | null) ?? null,
    restarts: r.restarts as number,
    since: r.since as number,
    message: r.message as string,
    replicationPassword: secret.replicationPassword ?? '',
    lagBytes: (r.lag_bytes as number | null) ?? null,
    lagSeconds: (r.lag_seconds as number | null) ?? null,
    lagAt: (r.lag_at as number | null) ?? null,
    syncMode: r.sync_mode === 'sync' ? 'sync' : 'async',
    syncActive: r.sync_active === 1,
    createdAt: r.created_at as number,
  };
}

/**
 * The coordinator's state, on SQLite or PostgreSQL (store/sql.ts). One writer (the leading
 * coordinator, fenced by its epoch), prepared statements.
 */
export class Store {
  readonly #db: SqlDatabase;
  readonly #stmts = new Map<string, SqlStatement>();
  readonly #secrets: SecretBox;
  #placementVersion = 0;

  constructor(options: StoreOptions) {
    this.#secrets = options.secrets;
    this.#db = openSqlDatabase(options.path);
    migrateDatabase(this.#db);
    if (options.fence) installWriteFence(this.#db, options.fence.epoch, options.fence.onFenced);
    this.#sealClearSecrets();
  }

  /** Encrypts config values written in clear before encryption at rest existed; idempotent. */
  #sealClearSecrets(): void {
    const box = this.#secrets;
    this.#db.transaction(() => {
      const vars = this.#db.prepare(`SELECT app, key, value FROM config_vars WHERE value NOT LIKE 'enc:v1:%'`).all() as Row[];
      const setVar = this.#db.prepare('UPDATE config_vars SET value = ? WHERE app = ? AND key = ?');
      for (const v of vars) setVar.run(box.seal(v.value as string), v.app, v.key);
      const releases = this.#db.prepare(`SELECT app, version, config FROM releases WHERE config NOT LIKE 'enc:v1:%'`).all() as Row[];
      const setRelease = this.#db.prepare('UPDATE releases SET config = ? WHERE app = ? AND version = ?');
      for (const r of releases) setRelease.run(box.seal(r.config as string), r.app, r.version);
      const addons = this.#db.prepare(`SELECT name, secret, attached_url FROM addons WHERE secret NOT LIKE 'enc:v1:%'`).all() as Row[];
      const setAddon = this.#db.prepare('UPDATE addons SET secret = ?, attached_url = ? WHERE name = ?');
      for (const a of addons) {
        const url = a.attached_url as string | null;
        setAddon.run(box.seal(a.secret as string), url === null ? null : box.seal(url), a.name);
      }
    })();
  }

  close(): void {
    this.#db.close();
  }

  /** The database handle, for the table-group stores that share this one writer (metrics-store.ts). */
  get database(): SqlDatabase {
    return this.#db;
  }

  /**
   * Bumped by every write of instance rows but an agent's own status report
   * ({@link updateInstanceStatus}): a placement, move, drain, restart, removal. While it stays the
   * same, the rows an agent last reported are as it left them (agent-reports.ts skips unchanged
   * heartbeats on it). A rolled-back write bumps it too, which is only a needless recheck.
   */
  get placementVersion(): number {
    return this.#placementVersion;
  }

  /** Runs `fn` in one transaction. */
  transaction<T>(fn: () => T): T {
    return this.#db.transaction(fn)();
  }

  #stmt(sql: string): SqlStatement {
    let stmt = this.#stmts.get(sql);
    if (!stmt) {
      stmt = this.#db.prepare(sql);
      this.#stmts.set(sql, stmt);
    }
    return stmt;
  }

  // ---------------------------------------------------------------- meta

  /** Bumps and returns the desired-state generation (monotonic across restarts). */
  nextGeneration(): number {
    const row = this.#stmt(
      `INSERT INTO meta (key, value) VALUES ('generation', '1')
       ON CONFLICT(key) DO UPDATE SET value = CAST(meta.value AS INTEGER) + 1 RETURNING value`,
    ).get() as { value: string };
    return Number(row.value);
  }

  // ---------------------------------------------------------------- apps

  createApp(name: string, now: number): AppRow {
    const existing = this.getApp(name);
    const taken = (cause?: unknown) => new HangarError('APP_EXISTS', `An app named ${name} already exists; pick another name.`, { cause });
    if (existing) throw taken();
    try {
      this.#stmt('INSERT INTO apps (name, created_at) VALUES (?, ?)').run(name, now);
    } catch (err) {
      // Created by another request since the read above.
      throw isConstraintError(err, 'unique') ? taken(err) : err;
    }
    return { name, createdAt: now, currentRelease: null };
  }

  getApp(name: string): AppRow | null {
    const r = this.#stmt('SELECT * FROM apps WHERE name = ?').get(name) as Row | undefined;
    return r ? appFrom(r) : null;
  }

  /** The app, or APP_NOT_FOUND. */
  requireApp(name: string): AppRow {
    const app = this.getApp(name);
    if (!app)
      throw new HangarError('APP_NOT_FOUND', `No app named ${name}; see \`hangar apps\` or create it with \`hangar apps:create ${name}\`.`);
    return app;
  }

  listApps(): AppRow[] {
    return (this.#stmt('SELECT * FROM apps ORDER BY name').all() as Row[]).map(appFrom);
  }

  deleteApp(name: string): void {
    this.#placementVersion++;
    this.#stmt('DELETE FROM apps WHERE name = ?').run(name);
  }

  setCurrentRelease(app: string, version: number | null): void {
    this.#stmt('UPDATE apps SET current_release = ? WHERE name = ?').run(version, app);
  }

  // ---------------------------------------------------------------- maintenance

  /** The app's maintenance mode, or null when it is off. */
  getMaintenance(app: string): MaintenanceRow | null {
    const r = this.#stmt('SELECT * FROM app_maintenance WHERE app = ?').get(app) as Row | undefined;
    return r ? maintenanceFrom(r) : null;
  }

  /** Every app in maintenance mode. */
  listMaintenance(): MaintenanceRow[] {
    return (this.#stmt('SELECT * FROM app_maintenance ORDER BY app').all() as Row[]).map(maintenanceFrom);
  }

  /** Turns maintenance mode on, or replaces its page, bypass and Retry-After. */
  setMaintenance(m: MaintenanceRow): void {
    this.#stmt(
      `INSERT INTO app_maintenance (app, page_html, bypass_sha256, retry_after, since) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT(app) DO UPDATE SET page_html = excluded.page_html, bypass_sha256 = excluded.bypass_sha256,
         retry_after = excluded.retry_after`,
    ).run(m.app, m.pageHtml, m.bypassSha256, m.retryAfterSeconds, m.since);
  }

  /** Turns maintenance mode off; false when it was not on. */
  clearMaintenance(app: string): boolean {
    return this.#stmt('DELETE FROM app_maintenance WHERE app = ?').run(app).changes > 0;
  }

  // ---------------------------------------------------------------- config

  getConfig(app: string): Record<string, string> {
    const rows = this.#stmt('SELECT key, value FROM config_vars WHERE app = ? ORDER BY key').all(app) as {
      key: string;
      value: string;
    }[];
    return Object.fromEntries(rows.map((r) => [r.key, this.#secrets.open(r.value)]));
  }

  /** Applies a patch: a string sets, null unsets. */
  patchConfig(app: string, patch: Record<string, string | null>): void {
    const set = this.#stmt(
      'INSERT INTO config_vars (app, key, value) VALUES (?, ?, ?) ON CONFLICT(app, key) DO UPDATE SET value = excluded.value',
    );
    const unset = this.#stmt('DELETE FROM config_vars WHERE app = ? AND key = ?');
    for (const [key, value] of Object.entries(patch)) {
      if (value === null) unset.run(app, key);
      else set.run(app, key, this.#secrets.seal(value));
    }
  }

  // ---------------------------------------------------------------- formation

  getFormation(app: string): Record<string, number> {
    const rows = this.#stmt('SELECT type, quantity FROM formation WHERE app = ? ORDER BY type').all(app) as {
      type: string;
      quantity: number;
    }[];
    return Object.fromEntries(rows.map((r) => [r.type, r.quantity]));
  }

  setFormation(app: string, formation: Record<string, number>): void {
    const stmt = this.#stmt(
      'INSERT INTO formation (app, type, quantity) VALUES (?, ?, ?) ON CONFLICT(app, type) DO UPDATE SET quantity = excluded.quantity',
    );
    for (const [type, quantity] of Object.entries(formation)) stmt.run(app, type, quantity);
  }

  // ---------------------------------------------------------------- artifacts

  putArtifact(sha256: string, size: number, now: number): void {
    this.#stmt('INSERT INTO artifacts (sha256, size, created_at) VALUES (?, ?, ?) ON CONFLICT (sha256) DO NOTHING').run(sha256, size, now);
  }

  hasArtifact(sha256: string): boolean {
    return this.#stmt('SELECT 1 FROM artifacts WHERE sha256 = ?').get(sha256) !== undefined;
  }

  // ---------------------------------------------------------------- releases

  createRelease(r: Omit<ReleaseRow, 'version'>): ReleaseRow {
    const row = this.#stmt('SELECT COALESCE(MAX(version), 0) + 1 AS v FROM releases WHERE app = ?').get(r.app) as { v: number };
    const release: ReleaseRow = { ...r, version: row.v };
    this.#stmt(
      `INSERT INTO releases (app, version, artifact_sha256, procfile, config, app_json, status, description, created_by, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      r.app,
      release.version,
      r.artifactSha256,
      JSON.stringify(r.procfile),
      this.#secrets.seal(JSON.stringify(r.config)),
      r.appJson === null || r.appJson === undefined ? null : JSON.stringify(r.appJson),
      r.status,
      r.description,
      r.createdBy,
      r.createdAt,
    );
    return release;
  }

  getRelease(app: string, version: number): ReleaseRow | null {
    const r = this.#stmt('SELECT * FROM releases WHERE app = ? AND version = ?').get(app, version) as Row | undefined;
    return r ? releaseFrom(r, this.#secrets) : null;
  }

  listReleases(app: string): ReleaseRow[] {
    return (this.#stmt('SELECT * FROM releases WHERE app = ? ORDER BY version DESC').all(app) as Row[]).map((r) =>
      releaseFrom(r, this.#secrets),
    );
  }

  setReleaseStatus(app: string, version: number, status: ReleaseStatus): void {
    this.#stmt('UPDATE releases SET status = ? WHERE app = ? AND version = ?').run(status, app, version);
  }

  // ---------------------------------------------------------------- deploys

  createDeploy(d: DeployRow): void {
    this.#stmt(
      `INSERT INTO deploys (id, app, release, previous_release, status, error, error_code, task_agent, skip_release_phase, deadline, created_at, finished_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      d.id,
      d.app,
      d.release,
      d.previousRelease,
      d.status,
      d.error,
      d.errorCode,
      d.taskAgent,
      d.skipReleasePhase ? 1 : 0,
      d.deadline,
      d.createdAt,
      d.finishedAt,
    );
  }

  getDeploy(id: string): DeployRow | null {
    const r = this.#stmt('SELECT * FROM deploys WHERE id = ?').get(id) as Row | undefined;
    return r ? deployFrom(r) : null;
  }

  /** Deploys not yet finished, oldest first. */
  activeDeploys(): DeployRow[] {
    return (this.#stmt("SELECT * FROM deploys WHERE status NOT IN ('succeeded', 'failed') ORDER BY created_at").all() as Row[]).map(
      deployFrom,
    );
  }

  updateDeploy(
    id: string,
    patch: Partial<
      Pick<DeployRow, 'status' | 'error' | 'errorCode' | 'taskAgent' | 'deadline' | 'finishedAt' | 'release' | 'previousRelease'>
    >,
  ): void {
    const columns: Record<string, string> = {
      status: 'status',
      error: 'error',
      errorCode: 'error_code',
      taskAgent: 'task_agent',
      deadline: 'deadline',
      finishedAt: 'finished_at',
      release: 'release',
      previousRelease: 'previous_release',
    };
    const keys = Object.keys(patch).filter((k) => k in columns);
    if (keys.length === 0) return;
    const sql = `UPDATE deploys SET ${keys.map((k) => `${columns[k]} = @${k}`).join(', ')} WHERE id = @id`;
    this.#stmt(sql).run({ ...patch, id });
  }

  appendDeployLine(deployId: string, line: Omit<DeployLineRow, 'seq'>): number {
    const row = this.#stmt(
      `INSERT INTO deploy_lines (deploy_id, seq, ts, source, stream, line)
       VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM deploy_lines WHERE deploy_id = ?), ?, ?, ?, ?) RETURNING seq`,
    ).get(deployId, deployId, line.ts, line.source, line.stream, line.line) as { seq: number };
    return row.seq;
  }

  deployLines(deployId: string, after: number, limit = 5000): DeployLineRow[] {
    return this.#stmt('SELECT seq, ts, source, stream, line FROM deploy_lines WHERE deploy_id = ? AND seq > ? ORDER BY seq LIMIT ?').all(
      deployId,
      after,
      limit,
    ) as DeployLineRow[];
  }

  // ---------------------------------------------------------------- agents

  upsertAgent(a: AgentRow): void {
    this.#stmt(
      `INSERT INTO agents (name, address, router_port, cpus, memory_mb, max_instances, version, last_seen, created_at, singleton_lease_ms)
       VALUES (@name, @address, @routerPort, @cpus, @memoryMb, @maxInstances, @version, @lastSeen, @createdAt, @singletonLeaseMs)
       ON CONFLICT(name) DO UPDATE SET address = excluded.address, router_port = excluded.router_port, cpus = excluded.cpus,
         memory_mb = excluded.memory_mb, max_instances = excluded.max_instances, version = excluded.version,
         last_seen = excluded.last_seen, singleton_lease_ms = excluded.singleton_lease_ms`,
    ).run(a);
  }

  /** Records when each agent was last heard from, all in one transaction. */
  touchAgents(seen: Iterable<readonly [name: string, lastSeen: number]>): void {
    const touch = this.#stmt('UPDATE agents SET last_seen = ? WHERE name = ?');
    this.transaction(() => {
      for (const [name, lastSeen] of seen) touch.run(lastSeen, name);
    });
  }

  listAgents(): AgentRow[] {
    return (this.#stmt('SELECT * FROM agents ORDER BY name').all() as Row[]).map(agentFrom);
  }

  getAgent(name: string): AgentRow | null {
    const r = this.#stmt('SELECT * FROM agents WHERE name = ?').get(name) as Row | undefined;
    return r ? agentFrom(r) : null;
  }

  /** Forgets an agent: its credential, its row and its placements. Returns the apps it ran. */
  removeAgent(name: string): string[] {
    this.#placementVersion++;
    const apps = (this.#stmt('SELECT DISTINCT app FROM instances WHERE agent = ?').all(name) as { app: string }[]).map((r) => r.app);
    this.#stmt('DELETE FROM instances WHERE agent = ?').run(name);
    this.#stmt('DELETE FROM agent_credentials WHERE agent = ?').run(name);
    this.#stmt('DELETE FROM agents WHERE name = ?').run(name);
    return apps;
  }

  /** Sets the hash of an agent's credential (replacing any earlier one). */
  setAgentCredential(agent: string, hash: string, now: number): void {
    this.#stmt(
      'INSERT INTO agent_credentials (agent, hash, created_at) VALUES (?, ?, ?) ON CONFLICT(agent) DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at',
    ).run(agent, hash, now);
  }

  /** The hash of an agent's credential, or null when it has none (never joined, or removed). */
  getAgentCredentialHash(agent: string): string | null {
    const r = this.#stmt('SELECT hash FROM agent_credentials WHERE agent = ?').get(agent) as { hash: string } | undefined;
    return r?.hash ?? null;
  }

  // ---------------------------------------------------------------- API tokens

  insertToken(t: ApiTokenRow): void {
    this.#stmt(
      'INSERT INTO api_tokens (id, name, scope, hash, created_at, last_used_at) VALUES (@id, @name, @scope, @hash, @createdAt, @lastUsedAt)',
    ).run(t);
  }

  /** The token with this hash, or null. */
  findTokenByHash(hash: string): ApiTokenRow | null {
    const r = this.#stmt('SELECT * FROM api_tokens WHERE hash = ?').get(hash) as Row | undefined;
    return r ? tokenFrom(r) : null;
  }

  listTokens(): ApiTokenRow[] {
    return (this.#stmt('SELECT * FROM api_tokens ORDER BY created_at, id').all() as Row[]).map(tokenFrom);
  }

  /** Deletes a token; false when there was none with this id. */
  deleteToken(id: string): boolean {
    return this.#stmt('DELETE FROM api_tokens WHERE id = ?').run(id).changes > 0;
  }

  /** Reads a meta value. */
  getMeta(key: string): string | null {
    const r = this.#stmt('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined;
    return r?.value ?? null;
  }

  setMeta(key: string, value: string): void {
    this.#stmt('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  // ---------------------------------------------------------------- instances

  insertInstance(i: InstanceRow): void {
    this.#placementVersion++;
    this.#stmt(
      `INSERT INTO instances (key, app, type, idx, release, agent, desired, drain_generation, drain_started, state, pid, port, restarts, since, message, restart_nonce, created_at, log_tail, started_at, up_at)
       VALUES (@key, @app, @type, @idx, @release, @agent, @desired, @drainGeneration, @drainStarted, @state, @pid, @port, @restarts, @since, @message, @restartNonce, @createdAt, @logTail, @startedAt, @upAt)`,
    ).run(i);
  }

  getInstance(key: string): InstanceRow | null {
    const r = this.#stmt('SELECT * FROM instances WHERE key = ?').get(key) as Row | undefined;
    return r ? instanceFrom(r) : null;
  }

  listInstances(filter: { app?: string; agent?: string } = {}): InstanceRow[] {
    if (filter.app !== undefined) {
      return (this.#stmt('SELECT * FROM instances WHERE app = ? ORDER BY type, idx, release').all(filter.app) as Row[]).map(instanceFrom);
    }
    if (filter.agent !== undefined) {
      return (this.#stmt('SELECT * FROM instances WHERE agent = ? ORDER BY app, type, idx').all(filter.agent) as Row[]).map(instanceFrom);
    }
    return (this.#stmt('SELECT * FROM instances ORDER BY app, type, idx').all() as Row[]).map(instanceFrom);
  }

  /**
   * Web instances a router may send requests to: up, wanted running, with a port and not held out
   * of routes (see route-table.ts, which applies the same test), in app and index order.
   */
  listRoutableInstances(): InstanceRow[] {
    return (
      this.#stmt(
        "SELECT * FROM instances WHERE type = 'web' AND desired = 'run' AND state = 'up' AND port IS NOT NULL AND drain_generation IS NULL ORDER BY app, type, idx",
      ).all() as Row[]
    ).map(instanceFrom);
  }

  /** How many instances are placed on each agent (draining ones included), by agent name. */
  countInstancesByAgent(): Map<string, number> {
    const rows = this.#stmt('SELECT agent, COUNT(*) AS n FROM instances GROUP BY agent').all() as { agent: string; n: number }[];
    return new Map(rows.map((r) => [r.agent, r.n]));
  }

  /**
   * Apps with a current release whose every instance is of that release, wanted running and up
   * (nothing starting, crashing or draining).
   */
  settledApps(): Set<string> {
    const rows = this.#stmt(
      `SELECT a.name FROM apps a WHERE a.current_release IS NOT NULL AND NOT EXISTS (
         SELECT 1 FROM instances i WHERE i.app = a.name AND (i.desired != 'run' OR i.state != 'up' OR i.release != a.current_release))`,
    ).all() as { name: string }[];
    return new Set(rows.map((r) => r.name));
  }

  /** How many instances of each process type of `app` each agent holds: type → agent → count. */
  countAppInstancesByKind(app: string): Map<string, Map<string, number>> {
    const rows = this.#stmt('SELECT type, agent, COUNT(*) AS n FROM instances WHERE app = ? GROUP BY type, agent').all(app) as {
      type: string;
      agent: string;
      n: number;
    }[];
    const kinds = new Map<string, Map<string, number>>();
    for (const r of rows) {
      const counts = kinds.get(r.type) ?? new Map<string, number>();
      counts.set(r.agent, r.n);
      kinds.set(r.type, counts);
    }
    return kinds;
  }

  /** Instances being drained (the periodic drain check reads only these). */
  listDraining(): InstanceRow[] {
    return (this.#stmt("SELECT * FROM instances WHERE desired = 'drain'").all() as Row[]).map(instanceFrom);
  }

  /** Records what an agent reports; returns the row before the update (null when unknown). */
  updateInstanceStatus(
    key: string,
    s: {
      state: InstanceState;
      pid: number | null;
      port: number | null;
      restarts: number;
      since: number;
      message: string;
      logTail?: string;
    },
    /** The row as just read by the caller (saves reading it again). */
    current?: InstanceRow,
  ): InstanceRow | null {
    const before = current ?? this.getInstance(key);
    if (!before) return null;
    // Boot timing: the last start of its process, and when it then passed its health check.
    const startedAt = s.state === 'starting' && s.pid !== null ? s.since : before.startedAt;
    const upAt = s.state === 'up' ? (before.state === 'up' ? (before.upAt ?? s.since) : s.since) : before.upAt;
    this.#stmt(
      'UPDATE instances SET state = ?, pid = ?, port = ?, restarts = ?, since = ?, message = ?, log_tail = ?, started_at = ?, up_at = ? WHERE key = ?',
    ).run(s.state, s.pid, s.port, s.restarts, s.since, s.message, s.logTail ?? before.logTail, startedAt, upAt, key);
    return before;
  }

  markDraining(key: string, generation: number, now: number): void {
    this.#placementVersion++;
    this.#stmt("UPDATE instances SET desired = 'drain', drain_generation = ?, drain_started = ? WHERE key = ?").run(generation, now, key);
  }

  /**
   * Holds a running instance out of the routers (a rolling restart), or lets it back in with
   * `null`: its drain generation is set while it stays wanted running.
   */
  holdFromRoutes(key: string, generation: number | null, now: number): void {
    this.#placementVersion++;
    this.#stmt("UPDATE instances SET drain_generation = ?, drain_started = ? WHERE key = ? AND desired = 'run'").run(
      generation,
      generation === null ? null : now,
      key,
    );
  }

  bumpRestart(key: string): void {
    this.#placementVersion++;
    this.#stmt('UPDATE instances SET restart_nonce = restart_nonce + 1 WHERE key = ?').run(key);
  }

  /** Places an instance on another agent (its old agent is down): it starts afresh there, same name. */
  moveInstance(key: string, agent: string, now: number, message: string): void {
    this.#placementVersion++;
    this.#stmt(
      "UPDATE instances SET agent = ?, state = 'starting', pid = NULL, port = NULL, restarts = 0, since = ?, message = ? WHERE key = ?",
    ).run(agent, now, message, key);
  }

  deleteInstance(key: string): void {
    this.#placementVersion++;
    this.#stmt('DELETE FROM instances WHERE key = ?').run(key);
  }

  // ---------------------------------------------------------------- add-ons

  /** @throws HangarError `ADDON_EXISTS` when an add-on has this name (names are fleet-wide). */
  insertAddon(a: AddonRow): void {
    try {
      this.#insertAddon(a);
    } catch (err) {
      if (!isConstraintError(err, 'unique')) throw err;
      throw new HangarError('ADDON_EXISTS', `An add-on named ${a.name} already exists (names are fleet-wide); pick another with --name.`, {
        cause: err,
      });
    }
  }

  #insertAddon(a: AddonRow): void {
    this.#stmt(
      `INSERT INTO addons (name, id, app, kind, agent, port, config_var, desired, attached_url, deploy_id, state, pid, restarts, since, message, secret, created_at)
       VALUES (@name, @id, @app, @kind, @agent, @port, @configVar, @desired, @attachedUrl, @deployId, @state, @pid, @restarts, @since, @message, @secret, @createdAt)`,
    ).run({
      name: a.name,
      id: a.id,
      app: a.app,
      kind: a.kind,
      agent: a.agent,
      port: a.port,
      configVar: a.configVar,
      desired: a.desired,
      attachedUrl: a.attachedUrl === null ? null : this.#secrets.seal(a.attachedUrl),
      deployId: a.deployId,
      state: a.state,
      pid: a.pid,
      restarts: a.restarts,
      since: a.since,
      message: a.message,
      secret: this.#secrets.seal(
        JSON.stringify({ password: a.password, adminPassword: a.adminPassword, ...(a.tls ? { tls: a.tls } : {}) }),
      ),
      createdAt: a.createdAt,
    });
  }

  getAddon(name: string): AddonRow | null {
    const r = this.#stmt('SELECT * FROM addons WHERE name = ?').get(name) as Row | undefined;
    return r ? addonFrom(r, this.#secrets) : null;
  }

  /** Add-ons, oldest first; destroyed ones (data kept) included. */
  listAddons(filter: { app?: string } = {}): AddonRow[] {
    if (filter.app !== undefined) {
      return (this.#stmt('SELECT * FROM addons WHERE app = ? ORDER BY created_at, name').all(filter.app) as Row[]).map((r) =>
        addonFrom(r, this.#secrets),
      );
    }
    return (this.#stmt('SELECT * FROM addons ORDER BY created_at, name').all() as Row[]).map((r) => addonFrom(r, this.#secrets));
  }

  updateAddon(
    name: string,
    patch: Partial<
      Pick<
        AddonRow,
        'agent' | 'port' | 'desired' | 'attachedUrl' | 'deployId' | 'state' | 'pid' | 'restarts' | 'since' | 'message' | 'configVar'
      >
    >,
  ): void {
    const columns: Record<string, string> = {
      agent: 'agent',
      port: 'port',
      desired: 'desired',
      attachedUrl: 'attached_url',
      deployId: 'deploy_id',
      state: 'state',
      pid: 'pid',
      restarts: 'restarts',
      since: 'since',
      message: 'message',
      configVar: 'config_var',
    };
    const keys = Object.keys(patch).filter((k) => k in columns);
    if (keys.length === 0) return;
    // The attached URL holds the add-on's password: sealed like config values.
    if (typeof patch.attachedUrl === 'string') patch = { ...patch, attachedUrl: this.#secrets.seal(patch.attachedUrl) };
    this.#stmt(`UPDATE addons SET ${keys.map((k) => `${columns[k]} = @${k}`).join(', ')} WHERE name = @name`).run({ ...patch, name });
  }

  deleteAddon(name: string): void {
    this.#stmt('DELETE FROM addon_standbys WHERE addon = ?').run(name);
    this.#stmt('DELETE FROM addons WHERE name = ?').run(name);
  }

  /** Replaces an add-on's server certificate (sealed with its passwords). */
  setAddonTls(name: string, tls: { certPem: string; keyPem: string }): void {
    const row = this.getAddon(name);
    if (!row) return;
    this.#stmt('UPDATE addons SET secret = ? WHERE name = ?').run(
      this.#secrets.seal(JSON.stringify({ password: row.password, adminPassword: row.adminPassword, tls })),
      name,
    );
  }

  // ---------------------------------------------------------------- add-on standbys

  insertAddonStandby(s: AddonStandbyRow): void {
    this.#stmt(
      `INSERT INTO addon_standbys (addon, agent, role, port, state, pid, restarts, since, message, secret, lag_bytes, lag_seconds, lag_at, sync_mode, sync_active, created_at)
       VALUES (@addon, @agent, @role, @port, @state, @pid, @restarts, @since, @message, @secret, @lagBytes, @lagSeconds, @lagAt, @syncMode, @syncActive, @createdAt)`,
    ).run({
      addon: s.addon,
      agent: s.agent,
      role: s.role,
      port: s.port,
      state: s.state,
      pid: s.pid,
      restarts: s.restarts,
      since: s.since,
      message: s.message,
      secret: this.#secrets.seal(JSON.stringify({ replicationPassword: s.replicationPassword })),
      lagBytes: s.lagBytes,
      lagSeconds: s.lagSeconds,
      lagAt: s.lagAt,
      syncMode: s.syncMode,
      syncActive: s.syncActive ? 1 : 0,
      createdAt: s.createdAt,
    });
  }

  getAddonStandby(addon: string): AddonStandbyRow | null {
    const r = this.#stmt('SELECT * FROM addon_standbys WHERE addon = ?').get(addon) as Row | undefined;
    return r ? standbyFrom(r, this.#secrets) : null;
  }

  listAddonStandbys(): AddonStandbyRow[] {
    return (this.#stmt('SELECT * FROM addon_standbys ORDER BY created_at, addon').all() as Row[]).map((r) => standbyFrom(r, this.#secrets));
  }

  updateAddonStandby(
    addon: string,
    patch: Partial<
      Pick<
        AddonStandbyRow,
        'agent' | 'role' | 'port' | 'state' | 'pid' | 'restarts' | 'since' | 'message' | 'lagBytes' | 'lagSeconds' | 'lagAt' | 'syncActive'
      >
    >,
  ): void {
    const columns: Record<string, string> = {
      agent: 'agent',
      role: 'role',
      port: 'port',
      state: 'state',
      pid: 'pid',
      restarts: 'restarts',
      since: 'since',
      message: 'message',
      lagBytes: 'lag_bytes',
      lagSeconds: 'lag_seconds',
      lagAt: 'lag_at',
      syncActive: 'sync_active',
    };
    const keys = Object.keys(patch).filter((k) => k in columns);
    if (keys.length === 0) return;
    this.#stmt(`UPDATE addon_standbys SET ${keys.map((k) => `${columns[k]} = @${k}`).join(', ')} WHERE addon = @addon`).run({
      ...patch,
      ...(patch.syncActive === undefined ? {} : { syncActive: patch.syncActive ? 1 : 0 }),
      addon,
    });
  }

  deleteAddonStandby(addon: string): void {
    this.#stmt('DELETE FROM addon_standbys WHERE addon = ?').run(addon);
  }
}
