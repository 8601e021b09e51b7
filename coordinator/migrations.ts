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
];
