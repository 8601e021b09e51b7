/**
 * The coordinator's schema, as numbered migrations applied in order inside one transaction each.
 * Never edit a migration that has shipped: add the next one.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: foundation
  `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
  CREATE TABLE apps (
    name TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    current_release INTEGER
  );
  CREATE TABLE config_vars (
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (app, key)
  );
  CREATE TABLE formation (
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    type TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    PRIMARY KEY (app, type)
  );
  CREATE TABLE artifacts (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE releases (
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    artifact_sha256 TEXT NOT NULL,
    procfile TEXT NOT NULL,
    config TEXT NOT NULL,
    app_json TEXT,
    status TEXT NOT NULL,
    description TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (app, version)
  );
  CREATE TABLE deploys (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    release INTEGER,
    previous_release INTEGER,
    status TEXT NOT NULL,
    error TEXT,
    error_code TEXT,
    task_agent TEXT,
    skip_release_phase INTEGER NOT NULL DEFAULT 0,
    deadline INTEGER,
    created_at INTEGER NOT NULL,
    finished_at INTEGER
  );
  CREATE INDEX deploys_app ON deploys(app, created_at);
  CREATE TABLE deploy_lines (
    deploy_id TEXT NOT NULL REFERENCES deploys(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    source TEXT NOT NULL,
    stream TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (deploy_id, seq)
  );
  CREATE TABLE agents (
    name TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    router_port INTEGER NOT NULL,
    cpus INTEGER NOT NULL,
    memory_mb INTEGER NOT NULL,
    max_instances INTEGER NOT NULL,
    version TEXT NOT NULL,
    last_seen INTEGER NOT NULL,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE instances (
    key TEXT PRIMARY KEY,
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    type TEXT NOT NULL,
    idx INTEGER NOT NULL,
    release INTEGER NOT NULL,
    agent TEXT NOT NULL,
    desired TEXT NOT NULL,
    drain_generation INTEGER,
    drain_started INTEGER,
    state TEXT NOT NULL,
    pid INTEGER,
    port INTEGER,
    restarts INTEGER NOT NULL DEFAULT 0,
    since INTEGER NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    restart_nonce INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
  );
  CREATE INDEX instances_agent ON instances(agent);
  CREATE INDEX instances_app ON instances(app, type, release);
  `,
  // rolling rollouts: the last log lines of an instance that is not up, and its boot timing
  `
  ALTER TABLE instances ADD COLUMN log_tail TEXT NOT NULL DEFAULT '';
  ALTER TABLE instances ADD COLUMN started_at INTEGER;
  ALTER TABLE instances ADD COLUMN up_at INTEGER;
  `,
  // add-ons: PostgreSQL, Redis and memcached servers run by agents. `secret` is the only column
  // holding secrets (JSON {"password": ...}), so encrypting it at rest touches one place.
  `
  CREATE TABLE addons (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    agent TEXT NOT NULL,
    port INTEGER,
    config_var TEXT NOT NULL,
    desired TEXT NOT NULL,
    attached_url TEXT,
    deploy_id TEXT,
    state TEXT NOT NULL,
    pid INTEGER,
    restarts INTEGER NOT NULL DEFAULT 0,
    since INTEGER NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    secret TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  CREATE INDEX addons_app ON addons(app);
  CREATE INDEX addons_agent ON addons(agent);
  `,
  // metrics and autoscaling (issue 6): raw samples (~1 h), 1-minute rollups (30 days), policies, decisions
  `
  CREATE TABLE metric_samples (
    ts INTEGER NOT NULL,
    agent TEXT NOT NULL,
    scope TEXT NOT NULL,
    app TEXT NOT NULL,
    subject TEXT NOT NULL,
    data TEXT NOT NULL
  );
  CREATE INDEX metric_samples_app ON metric_samples (app, ts);
  CREATE INDEX metric_samples_agent ON metric_samples (agent, ts);
  CREATE INDEX metric_samples_ts ON metric_samples (ts);
  CREATE TABLE metric_rollups (
    minute INTEGER NOT NULL,
    agent TEXT NOT NULL,
    scope TEXT NOT NULL,
    app TEXT NOT NULL,
    subject TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (scope, subject, agent, minute)
  );
  CREATE INDEX metric_rollups_app ON metric_rollups (app, minute);
  CREATE INDEX metric_rollups_agent ON metric_rollups (agent, minute);
  CREATE INDEX metric_rollups_minute ON metric_rollups (minute);
  CREATE TABLE autoscale_policies (
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    type TEXT NOT NULL,
    min INTEGER NOT NULL,
    max INTEGER NOT NULL,
    p95_ms INTEGER,
    cpu_pct REAL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (app, type)
  );
  CREATE TABLE autoscale_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    type TEXT NOT NULL,
    from_quantity INTEGER NOT NULL,
    to_quantity INTEGER NOT NULL,
    reason TEXT NOT NULL
  );
  CREATE INDEX autoscale_decisions_app ON autoscale_decisions (app, id);
  `,
  // logs: lines per agent log epoch (deduped by seq against log_streams.acked_seq), grouped Python errors
  `
  CREATE TABLE log_streams (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    epoch TEXT NOT NULL,
    acked_seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (agent, epoch)
  );
  CREATE TABLE log_lines (
    id INTEGER PRIMARY KEY,
    stream_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    app TEXT NOT NULL,
    source TEXT NOT NULL,
    fd TEXT NOT NULL,
    line TEXT NOT NULL
  );
  CREATE INDEX log_lines_app ON log_lines(app, id);
  CREATE INDEX log_lines_app_source ON log_lines(app, source, id);
  CREATE TABLE log_errors (
    app TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    type TEXT NOT NULL,
    location TEXT NOT NULL,
    message TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    release TEXT NOT NULL,
    traceback TEXT NOT NULL,
    PRIMARY KEY (app, fingerprint)
  );
  `,
  // security: API tokens (hashed) and per-agent credentials (hashed)
  `
  CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER
  );
  CREATE TABLE agent_credentials (
    agent TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  `,
  // log retention by size counts log lines only (not metrics sharing the file): a running total
  // kept in the same transactions as the inserts and deletes, seeded here from existing lines.
  // The per-line formula is LogStore's lineBytes(); change both or neither.
  `
  CREATE TABLE log_usage (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    bytes INTEGER NOT NULL,
    lines INTEGER NOT NULL
  );
  INSERT INTO log_usage (id, bytes, lines)
    SELECT 1, coalesce(sum(length(CAST(line AS BLOB)) + length(CAST(app AS BLOB)) + length(CAST(source AS BLOB)) + 48), 0), count(*)
    FROM log_lines;
  `,
  // one-off runs (`hangar run`, console, cron firings): who ran what, where, and how it ended
  `
  CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    command TEXT NOT NULL,
    release INTEGER NOT NULL,
    agent TEXT NOT NULL,
    tty INTEGER NOT NULL,
    attached INTEGER NOT NULL,
    cols INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    term TEXT NOT NULL,
    timeout_seconds INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    cron_job TEXT,
    status TEXT NOT NULL,
    desired TEXT NOT NULL,
    pid INTEGER,
    exit_code INTEGER,
    signal TEXT,
    message TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    UNIQUE (app, number)
  );
  CREATE INDEX runs_by_status ON runs (status);
  `,
  // maintenance mode: a row while an app is in it (page_html null = the default page; the bypass
  // header's value is kept as its SHA-256 only)
  `
  CREATE TABLE app_maintenance (
    app TEXT PRIMARY KEY REFERENCES apps(name) ON DELETE CASCADE,
    page_html TEXT,
    bypass_sha256 TEXT,
    retry_after INTEGER NOT NULL,
    since INTEGER NOT NULL
  );
  `,
  // singletons: how long each agent keeps its singleton instances without the coordinator (its
  // `--singleton-lease`), so a restarted coordinator still waits that long before replacing them.
  `
  ALTER TABLE agents ADD COLUMN singleton_lease_ms INTEGER NOT NULL DEFAULT 30000;
  `,
  // domains and certificates: an app's custom domains (fleet-wide unique), its certificates
  // (uploaded or issued by ACME; keys sealed like config values), its TLS settings, and the ACME
  // state of each domain (retries with backoff).
  `
  CREATE TABLE domains (
    hostname TEXT PRIMARY KEY,
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    acme_state TEXT NOT NULL DEFAULT 'none',
    acme_error TEXT,
    acme_attempts INTEGER NOT NULL DEFAULT 0,
    acme_next_at INTEGER
  );
  CREATE INDEX domains_app ON domains (app);
  CREATE TABLE certificates (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    source TEXT NOT NULL,
    names TEXT NOT NULL,
    cert_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    issuer TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  CREATE INDEX certificates_app ON certificates (app);
  CREATE TABLE app_tls (
    app TEXT PRIMARY KEY REFERENCES apps(name) ON DELETE CASCADE,
    acme INTEGER NOT NULL DEFAULT 0,
    redirect INTEGER NOT NULL DEFAULT 1,
    hsts INTEGER NOT NULL DEFAULT 0
  );
  `,
  // cron: the last firing time each job's schedule was handled at (ran, skipped or missed)
  `
  CREATE TABLE cron_state (
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    job TEXT NOT NULL,
    last_due INTEGER NOT NULL,
    PRIMARY KEY (app, job)
  );
  CREATE INDEX runs_by_cron_job ON runs (app, cron_job, number);
  `,
  // add-on backups: each one kept where it was made and copied off its host (other agents, a
  // directory), its SHA-256 and its verification; per add-on schedules
  `
  CREATE TABLE addon_backups (
    id TEXT PRIMARY KEY,
    addon TEXT NOT NULL,
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    agent TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    copies TEXT NOT NULL,
    copy_error TEXT NOT NULL,
    origin TEXT NOT NULL,
    verify_state TEXT NOT NULL,
    verify_message TEXT NOT NULL,
    verified_at INTEGER,
    created_at INTEGER NOT NULL,
    UNIQUE (addon, name)
  );
  CREATE INDEX addon_backups_app ON addon_backups (app, created_at);
  CREATE TABLE addon_backup_schedules (
    addon TEXT PRIMARY KEY,
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    at TEXT NOT NULL,
    keep INTEGER NOT NULL,
    dir TEXT,
    enabled INTEGER NOT NULL,
    next_at INTEGER NOT NULL,
    last_at INTEGER,
    last_error TEXT NOT NULL
  );
  `,
  // Leader election between coordinators sharing this database (coordinator/ha/leader-lease.ts):
  // one lease row whose epoch fences every write of a stale leader, and who is out there.
  `
  CREATE TABLE coordinator_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT,
    epoch INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    api_url TEXT,
    grpc_address TEXT
  );
  INSERT INTO coordinator_lease (id, holder, epoch, expires_at) VALUES (1, NULL, 0, 0);
  CREATE TABLE coordinators (
    name TEXT PRIMARY KEY,
    api_url TEXT NOT NULL,
    grpc_address TEXT NOT NULL,
    role TEXT NOT NULL,
    last_seen INTEGER NOT NULL
  );
  `,
  // PostgreSQL standbys: one streaming replica per add-on on another agent (the add-on's own row
  // is its primary), its replication password sealed, the lag last measured
  `
  CREATE TABLE addon_standbys (
    addon TEXT PRIMARY KEY REFERENCES addons(name) ON DELETE CASCADE,
    agent TEXT NOT NULL,
    role TEXT NOT NULL,
    port INTEGER,
    state TEXT NOT NULL,
    pid INTEGER,
    restarts INTEGER NOT NULL,
    since INTEGER NOT NULL,
    message TEXT NOT NULL,
    secret TEXT NOT NULL,
    lag_bytes INTEGER,
    lag_seconds REAL,
    lag_at INTEGER,
    created_at INTEGER NOT NULL
  );
  `,
  // Synchronous replication per standby ('sync' | 'async'), and whether the primary waits for it
  // now (sync_active: 1) or was degraded to async while the standby was away (0)
  `
  ALTER TABLE addon_standbys ADD COLUMN sync_mode TEXT NOT NULL DEFAULT 'async';
  ALTER TABLE addon_standbys ADD COLUMN sync_active INTEGER NOT NULL DEFAULT 0;
  `,
  // What coordinators on one database share (the CA, the tokens, sealed) and build artifacts in
  // chunks: the same tables as PostgreSQL's step 3 (used there; SQLite coordinators share a data dir)
  `
  CREATE TABLE shared_files (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE artifact_chunks (
    sha256 TEXT NOT NULL,
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (sha256, idx)
  );
  `,
];
