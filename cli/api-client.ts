/**
 * A small typed client of the coordinator's HTTP API (see `common/api-types.ts`): one method per
 * route, over undici. This is the programmatic API the `hangar` user commands are a thin layer
 * over; scripts and tests can use it directly.
 *
 * Every failure is a {@link HangarError}: a non-2xx answer carries the server's `{ code, message }`,
 * a coordinator that cannot be reached is `UNREACHABLE`. The token never appears in any of them.
 */
import { Agent, request, type Dispatcher } from 'undici';
import { WebSocket } from 'ws';
import type {
  MaintenanceView,
  AddonBackupView,
  AddonInfoView,
  AddonKind,
  AddonScheduleView,
  AddonView,
  AgentMetricsView,
  AgentView,
  AppMetricsView,
  AppView,
  AutoscaleView,
  CertView,
  CreatedTokenView,
  DnsRecordView,
  DomainView,
  CronJobView,
  DeployView,
  ErrorBody,
  ErrorGroupView,
  HealthView,
  LogLineView,
  LogStreamMessage,
  PsRow,
  ReleaseView,
  RunRequest,
  RunStreamControl,
  RunStreamMessage,
  RunView,
  TlsSettingsView,
  TokenScopeName,
  TokenView,
  CoordinatorsView,
} from '../common/api-types.js';
import type { DashboardLoginLinkView, WhoamiView } from '../common/dashboard-types.js';
import { HangarError, isHangarError, type ErrorCode } from '../common/errors.js';

/** A coordinator URL as the client keeps it: no spaces, no trailing slash. */
function baseUrl(url: string): string {
  return url.trim().replace(/\/+$/, '');
}

/** Options of {@link ApiClient}. */
export interface ApiClientOptions {
  /**
   * Base URL of the coordinator's HTTP API: `http://host:7080` (a trailing slash is ignored), or
   * several comma-separated (coordinators sharing a data dir): the leader is found through
   * `GET /v1/health` on first use, and asked again once when a follower answers `NOT_LEADER`.
   */
  url: string;
  /** Admin token, sent as `Authorization: Bearer TOKEN`. */
  token: string;
  /**
   * How long to wait for the answer's headers, in ms. Default: 60 000. Uploads are not limited
   * by it until the body has been sent.
   */
  timeoutMs?: number;
  /** The undici dispatcher to use. Default: a private `Agent` that {@link ApiClient.close} closes. */
  dispatcher?: Dispatcher;
}

/** Answer of `PATCH /v1/apps/:app/config`. */
export interface ConfigUpdate {
  config: Record<string, string>;
  /** The release the change made, or null when the app has no release yet. */
  release: ReleaseView | null;
  /** The rollout of that release, or null when nothing runs. */
  deploy: DeployView | null;
}

/** Filters of `GET /v1/apps/:app/logs` and the log stream. */
export interface LogsQuery {
  /** Most lines (the newest). Default 100. */
  n?: number;
  /** `web`, `web.1`, `router`, `build`, `release`, `hangar`. */
  source?: string;
  /** `10m`, `2h`, `1d` or an ISO time. */
  since?: string;
  /** Only lines at or before this: `10m` (ago), `2h`, `1d` or an ISO time. Not for the live stream. */
  until?: string;
  grep?: string;
}

/** Where {@link ApiClient.attachRun} hands what the run sends. */
export interface RunHandlers {
  onOpen?: () => void;
  onOutput: (stream: 'stdout' | 'stderr', data: Buffer) => void;
  onMessage: (message: RunStreamMessage) => void;
}

/** An attached run's connection. */
export interface RunConnection {
  /** Resolves when the connection closes; rejects when it could not be opened. */
  done: Promise<void>;
  input(data: Buffer): void;
  control(message: RunStreamControl): void;
  close(): void;
}

/** Answer of `POST /v1/apps/:app/releases` (rollback). */
export interface RollbackResult {
  release: ReleaseView;
  deploy: DeployView;
}

type Method = 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';

interface CallOptions {
  query?: Record<string, string | number | undefined>;
  json?: unknown;
  raw?: { body: Uint8Array; contentType: string };
  /** Overrides the client's answer timeout for this call, ms. */
  timeoutMs?: number;
}

/** Answer of `DELETE /v1/apps/:app/addons/:name`. */
export interface AddonDestroyResult {
  addon: AddonView;
  /** The rollout of the release that unset the config var, or null. */
  deploy: DeployView | null;
}

/** How long backup and restore calls may take, ms (they run on the agent while the call waits). */
const ADDON_JOB_TIMEOUT_MS = 3 * 3600_000;

/** Error codes of a connection that never got an answer. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'EPIPE',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

/** Body of `PUT /v1/apps/:app/maintenance`. */
export type MaintenanceChange =
  { enabled: true; page?: string; defaultPage?: true; bypass?: boolean; retryAfter?: number } | { enabled: false };

/** Client of one coordinator. Call {@link ApiClient.close} when done (idempotent). */
export class ApiClient {
  /** Every coordinator given, in order. */
  readonly #urls: string[];
  #url: string;
  /** The leader was found (or there is only one coordinator to ask). */
  #leaderKnown: boolean;
  readonly #token: string;
  readonly #timeoutMs: number;
  readonly #dispatcher: Dispatcher;
  readonly #ownsDispatcher: boolean;
  #closed: Promise<void> | undefined;

  constructor(options: ApiClientOptions) {
    this.#urls = options.url
      .split(',')
      .map(baseUrl)
      .filter((u) => u !== '');
    this.#url = this.#urls[0] ?? '';
    this.#leaderKnown = this.#urls.length <= 1;
    this.#token = options.token;
    this.#timeoutMs = options.timeoutMs ?? 60_000;
    this.#ownsDispatcher = options.dispatcher === undefined;
    this.#dispatcher = options.dispatcher ?? new Agent({ keepAliveTimeout: 4_000 });
  }

  /** The base URL of the coordinator asked (the leader once found), safe to print. */
  get url(): string {
    return this.#url;
  }

  /** `GET /v1/coordinators`: the leader, its epoch and lease, and the followers. */
  async coordinators(): Promise<CoordinatorsView> {
    const body = await this.#call('GET', '/v1/coordinators');
    expectRecord(body, 'leader');
    expectArray(body, 'followers');
    return body as unknown as CoordinatorsView;
  }

  /**
   * With several coordinators: asks each `GET /v1/health` in turn and keeps the leader (or the
   * one a follower names) for the rest of this client's life.
   */
  async #findLeader(): Promise<void> {
    if (this.#leaderKnown) return;
    let lastError: unknown = null;
    let answered = false;
    for (const base of this.#urls) {
      try {
        const response = await request(`${base}/v1/health`, {
          dispatcher: this.#dispatcher,
          headersTimeout: Math.min(this.#timeoutMs, 5000),
          bodyTimeout: Math.min(this.#timeoutMs, 5000),
        });
        const health = parseJson(await response.body.text());
        if (response.statusCode !== 200 || !isRecord(health)) continue;
        answered = true;
        // A coordinator without a role is one from before several could share a data dir: it leads.
        if (health.role === 'follower') {
          const leader = isRecord(health.leader) && typeof health.leader.url === 'string' ? health.leader.url : null;
          if (!leader) continue;
          this.#url = baseUrl(leader);
        } else {
          this.#url = base;
        }
        this.#leaderKnown = true;
        return;
      } catch (err) {
        lastError = err;
      }
    }
    // Some answered, none leads: an election is on (NOT_LEADER), not an outage.
    if (lastError && !answered) {
      const reason = lastError instanceof Error ? lastError.message : 'no answer';
      throw new HangarError(
        'UNREACHABLE',
        `Cannot reach any of the coordinators ${this.#urls.join(', ')} (last: ${reason}); is \`hangar coordinator\` running on them?`,
        { cause: lastError },
      );
    }
    throw new HangarError(
      'NOT_LEADER',
      `None of the coordinators in HANGAR_URL (${this.#urls.join(', ')}) leads right now (an election takes a few seconds); try again.`,
    );
  }

  /** `GET /v1/health` (no token needed). */
  async health(): Promise<HealthView> {
    const body = await this.#call('GET', '/v1/health');
    expectObject(body, 'ok');
    return body as unknown as HealthView;
  }

  /** `GET /v1/agents`. */
  async listAgents(): Promise<AgentView[]> {
    return expectArray<AgentView>(await this.#call('GET', '/v1/agents'), 'agents');
  }

  /** `DELETE /v1/agents/:name`: revokes the agent's credential and moves its instances elsewhere. */
  async removeAgent(name: string): Promise<string[]> {
    return expectArray<string>(await this.#call('DELETE', `/v1/agents/${encodeURIComponent(name)}`), 'apps');
  }

  /** `GET /v1/tokens`. */
  async listTokens(): Promise<TokenView[]> {
    return expectArray<TokenView>(await this.#call('GET', '/v1/tokens'), 'tokens');
  }

  /** `POST /v1/tokens`: the answer holds the token itself, shown this once. */
  async createToken(scope: TokenScopeName, name?: string): Promise<CreatedTokenView> {
    return expectRecord<CreatedTokenView>(await this.#call('POST', '/v1/tokens', { json: { scope, ...(name ? { name } : {}) } }), 'token');
  }

  /** `DELETE /v1/tokens/:id`. */
  async revokeToken(id: string): Promise<void> {
    await this.#call('DELETE', `/v1/tokens/${encodeURIComponent(id)}`);
  }

  /** `POST /v1/dashboard/login-links`: a one-time dashboard login code (single use, about a minute). */
  async createDashboardLoginLink(): Promise<DashboardLoginLinkView> {
    return expectRecord<DashboardLoginLinkView>(await this.#call('POST', '/v1/dashboard/login-links'), 'link');
  }

  /** `GET /v1/whoami`: the token's name and scope. */
  async whoami(): Promise<WhoamiView> {
    return expectRecord<WhoamiView>(await this.#call('GET', '/v1/whoami'), 'whoami');
  }

  /** `GET /v1/apps`. */
  async listApps(): Promise<AppView[]> {
    return expectArray<AppView>(await this.#call('GET', '/v1/apps'), 'apps');
  }

  /** `POST /v1/apps`: creates an app (APP_EXISTS when the name is taken). */
  async createApp(name: string): Promise<AppView> {
    return expectRecord<AppView>(await this.#call('POST', '/v1/apps', { json: { name } }), 'app');
  }

  /** `GET /v1/apps/:app`. */
  async getApp(app: string): Promise<AppView> {
    return expectRecord<AppView>(await this.#call('GET', appPath(app)), 'app');
  }

  /** `GET /v1/apps/:app/maintenance`: whether the app is in maintenance mode, and how. */
  async getMaintenance(app: string): Promise<MaintenanceView> {
    return expectRecord<MaintenanceView>(await this.#call('GET', appPath(app, 'maintenance')), 'maintenance');
  }

  /**
   * `PUT /v1/apps/:app/maintenance`: turns maintenance mode on (with a custom page, a new bypass
   * header value, a Retry-After) or off. The bypass value comes back only here, once.
   */
  async setMaintenance(
    app: string,
    change: MaintenanceChange,
  ): Promise<{ maintenance: MaintenanceView; bypassHeader: { name: string; value: string } | null }> {
    const body = await this.#call('PUT', appPath(app, 'maintenance'), { json: change });
    return {
      maintenance: expectRecord<MaintenanceView>(body, 'maintenance'),
      bypassHeader: expectNullableRecord<{ name: string; value: string }>(body, 'bypassHeader'),
    };
  }

  /** `DELETE /v1/apps/:app?confirm=NAME`: destroys the app, its releases, config and processes. */
  async destroyApp(app: string, confirm: string): Promise<void> {
    await this.#call('DELETE', appPath(app), { query: { confirm } });
  }

  /** `GET /v1/apps/:app/config`. */
  async getConfig(app: string): Promise<Record<string, string>> {
    return expectRecord<Record<string, string>>(await this.#call('GET', appPath(app, 'config')), 'config');
  }

  /** `PATCH /v1/apps/:app/config`: sets keys to strings, unsets keys given `null`. */
  async updateConfig(app: string, changes: Record<string, string | null>): Promise<ConfigUpdate> {
    const body = await this.#call('PATCH', appPath(app, 'config'), { json: changes });
    return {
      config: expectRecord<Record<string, string>>(body, 'config'),
      release: expectNullableRecord<ReleaseView>(body, 'release'),
      deploy: expectNullableRecord<DeployView>(body, 'deploy'),
    };
  }

  /** `POST /v1/apps/:app/builds`: uploads a gzipped tar of the source and starts a deploy. */
  async createBuild(app: string, archive: Uint8Array): Promise<DeployView> {
    const body = await this.#call('POST', appPath(app, 'builds'), {
      raw: { body: archive, contentType: 'application/gzip' },
    });
    return expectRecord<DeployView>(body, 'deploy');
  }

  /** `GET /v1/apps/:app/deploys/:id?after=SEQ`: the deploy, with its output lines after `after`. */
  async getDeploy(app: string, id: string, after = 0): Promise<DeployView> {
    const body = await this.#call('GET', appPath(app, 'deploys', id), { query: { after } });
    return expectRecord<DeployView>(body, 'deploy');
  }

  /** `GET /v1/apps/:app/releases`, newest first. */
  async listReleases(app: string): Promise<ReleaseView[]> {
    return expectArray<ReleaseView>(await this.#call('GET', appPath(app, 'releases')), 'releases');
  }

  /**
   * `POST /v1/apps/:app/releases { rollback }`: a new release with the artifact and config of
   * release `version`, or of the previous release when `version` is omitted.
   */
  async rollback(app: string, version?: number): Promise<RollbackResult> {
    const body = await this.#call('POST', appPath(app, 'releases'), {
      json: version === undefined ? {} : { rollback: version },
    });
    expectRecord(body, 'release');
    expectRecord(body, 'deploy');
    return body as unknown as RollbackResult;
  }

  /** `GET /v1/apps/:app/ps`. */
  async listPs(app: string): Promise<PsRow[]> {
    return expectArray<PsRow>(await this.#call('GET', appPath(app, 'ps')), 'ps');
  }

  /** `POST /v1/apps/:app/ps/restart`: restarts a type (`web`), one instance (`web.1`) or all. */
  async restart(app: string, target?: string): Promise<string[]> {
    const body = await this.#call('POST', appPath(app, 'ps', 'restart'), {
      json: target === undefined ? {} : { target },
    });
    return expectArray<string>(body, 'restarted');
  }

  /**
   * `POST /v1/apps/:app/ps/restart` as a rolling restart: the instances it restarts and the
   * restart to follow with {@link getRestart} (null from a coordinator without rolling restarts).
   */
  async restartRolling(app: string, target?: string): Promise<{ restarted: string[]; restart: DeployView | null }> {
    const body = await this.#call('POST', appPath(app, 'ps', 'restart'), {
      json: target === undefined ? {} : { target },
    });
    const restarted = expectArray<string>(body, 'restarted');
    const restart = typeof body === 'object' && body !== null && 'restart' in body ? expectRecord<DeployView>(body, 'restart') : null;
    return { restarted, restart };
  }

  /** `GET /v1/apps/:app/restarts/:id?after=N`: a rolling restart's progress (shaped like a deploy). */
  async getRestart(app: string, id: string, after = 0): Promise<DeployView> {
    const body = await this.#call('GET', appPath(app, 'restarts', id), { query: { after } });
    return expectRecord<DeployView>(body, 'restart');
  }

  /** `GET /v1/apps/:app/formation`. */
  async getFormation(app: string): Promise<Record<string, number>> {
    return expectRecord<Record<string, number>>(await this.#call('GET', appPath(app, 'formation')), 'formation');
  }

  /** `PATCH /v1/apps/:app/formation`: sets instance counts of the given types; returns the whole formation. */
  async scale(app: string, formation: Record<string, number>): Promise<Record<string, number>> {
    const body = await this.#call('PATCH', appPath(app, 'formation'), { json: { formation } });
    return expectRecord<Record<string, number>>(body, 'formation');
  }

  /** `GET /v1/apps/:app/addons`: passwords in URLs masked unless `reveal`. */
  async listAddons(app: string, options: { reveal?: boolean } = {}): Promise<AddonView[]> {
    const query = options.reveal ? { reveal: 'true' } : {};
    return expectArray<AddonView>(await this.#call('GET', appPath(app, 'addons'), { query }), 'addons');
  }

  /** `GET /v1/apps/:app/addons/:name`. */
  async getAddon(app: string, name: string, options: { reveal?: boolean } = {}): Promise<AddonView> {
    const query = options.reveal ? { reveal: 'true' } : {};
    return expectRecord<AddonView>(await this.#call('GET', appPath(app, 'addons', name), { query }), 'addon');
  }

  /** `POST /v1/apps/:app/addons`: provisions an add-on; its URL is set in config once it is up. */
  async createAddon(
    app: string,
    input: { kind: AddonKind; agent?: string; name?: string; standby?: boolean; sync?: boolean },
  ): Promise<AddonView> {
    return expectRecord<AddonView>(await this.#call('POST', appPath(app, 'addons'), { json: input }), 'addon');
  }

  /** `DELETE /v1/apps/:app/addons/:name?confirm=NAME&purge=true`: stops it and unsets its config var. */
  async destroyAddon(app: string, name: string, options: { confirm: string; purge?: boolean }): Promise<AddonDestroyResult> {
    const body = await this.#call('DELETE', appPath(app, 'addons', name), {
      query: { confirm: options.confirm, purge: options.purge ? 'true' : undefined },
      timeoutMs: ADDON_JOB_TIMEOUT_MS,
    });
    return { addon: expectRecord<AddonView>(body, 'addon'), deploy: expectNullableRecord<DeployView>(body, 'deploy') };
  }

  /** `GET /v1/apps/:app/addons/:name/info`: servers, schedule, backups. */
  async addonInfo(app: string, name: string): Promise<AddonInfoView> {
    return expectRecord<AddonInfoView>(await this.#call('GET', appPath(app, 'addons', name, 'info')), 'addon');
  }

  /** `POST /v1/apps/:app/addons/:name/standby`: a streaming standby on another agent (PostgreSQL). */
  async addAddonStandby(app: string, name: string, input: { agent?: string; sync?: boolean }): Promise<AddonInfoView> {
    return expectRecord<AddonInfoView>(await this.#call('POST', appPath(app, 'addons', name, 'standby'), { json: input }), 'addon');
  }

  /** `POST /v1/apps/:app/addons/:name/failover`: a planned failover to the standby; resolves once done. */
  async failoverAddon(app: string, name: string): Promise<{ addon: AddonInfoView; steps: string[] }> {
    const body = await this.#call('POST', appPath(app, 'addons', name, 'failover'), { json: {}, timeoutMs: ADDON_JOB_TIMEOUT_MS });
    return { addon: expectRecord<AddonInfoView>(body, 'addon'), steps: expectArray<string>(body, 'steps') };
  }

  /** `GET /v1/apps/:app/addons/:name/backups`, newest first. */
  async listAddonBackups(app: string, name: string): Promise<AddonBackupView[]> {
    return expectArray<AddonBackupView>(await this.#call('GET', appPath(app, 'addons', name, 'backups')), 'backups');
  }

  /** `POST /v1/apps/:app/addons/:name/backups`: makes a backup now and copies it off its host (waits for it). */
  async createAddonBackup(
    app: string,
    name: string,
    options: { dir?: string } = {},
  ): Promise<{ backup: AddonBackupView; backups: AddonBackupView[] }> {
    const body = await this.#call('POST', appPath(app, 'addons', name, 'backups'), { json: options, timeoutMs: ADDON_JOB_TIMEOUT_MS });
    return { backup: expectRecord<AddonBackupView>(body, 'backup'), backups: expectArray<AddonBackupView>(body, 'backups') };
  }

  /** `POST /v1/apps/:app/addons/:name/backups/:backup/verify`: a verification restore now (waits for it). */
  async verifyAddonBackup(app: string, name: string, backup: string): Promise<AddonBackupView> {
    const body = await this.#call('POST', appPath(app, 'addons', name, 'backups', backup, 'verify'), {
      json: {},
      timeoutMs: ADDON_JOB_TIMEOUT_MS,
    });
    return expectRecord<AddonBackupView>(body, 'backup');
  }

  /** `POST /v1/apps/:app/addons/:name/backups/:backup/restore` (waits for it). */
  async restoreAddonBackup(
    app: string,
    name: string,
    backup: string,
    options: { toNew?: boolean; confirm?: string } = {},
  ): Promise<{ addon: AddonView; safety: AddonBackupView | null }> {
    const body = await this.#call('POST', appPath(app, 'addons', name, 'backups', backup, 'restore'), {
      json: options,
      timeoutMs: ADDON_JOB_TIMEOUT_MS,
    });
    return { addon: expectRecord<AddonView>(body, 'addon'), safety: expectNullableRecord<AddonBackupView>(body, 'safety') };
  }

  /** `PUT /v1/apps/:app/addons/:name/backup-schedule`. */
  async scheduleAddonBackups(
    app: string,
    name: string,
    input: { at: string; keep: number; dir?: string | null; enabled?: boolean },
  ): Promise<AddonScheduleView> {
    return expectRecord<AddonScheduleView>(
      await this.#call('PUT', appPath(app, 'addons', name, 'backup-schedule'), { json: input }),
      'schedule',
    );
  }

  /** `GET /v1/apps/:app/domains`: the default domain first, each with its DNS check and certificate. */
  async listDomains(app: string): Promise<DomainView[]> {
    return expectArray<DomainView>(await this.#call('GET', appPath(app, 'domains')), 'domains');
  }

  /** `POST /v1/apps/:app/domains`: adds a custom domain; answers with the DNS records to create. */
  async addDomain(app: string, hostname: string): Promise<{ domain: DomainView; dns: DnsRecordView[] } & DomainRelease> {
    const body = await this.#call('POST', appPath(app, 'domains'), { json: { hostname } });
    return { domain: expectRecord<DomainView>(body, 'domain'), dns: expectArray<DnsRecordView>(body, 'dns'), ...domainReleaseOf(body) };
  }

  /** `DELETE /v1/apps/:app/domains/:hostname`; the release it made, if any. */
  async removeDomain(app: string, hostname: string): Promise<DomainRelease> {
    return domainReleaseOf(await this.#call('DELETE', appPath(app, 'domains', hostname)));
  }

  /** `GET /v1/apps/:app/certs`: certificates (newest first) and TLS settings. */
  async listCerts(app: string): Promise<{ certs: CertView[]; tls: TlsSettingsView }> {
    const body = await this.#call('GET', appPath(app, 'certs'));
    return { certs: expectArray<CertView>(body, 'certs'), tls: expectRecord<TlsSettingsView>(body, 'tls') };
  }

  /** `POST /v1/apps/:app/certs`: uploads a certificate (chain) and its key, PEM. */
  async addCert(app: string, cert: string, key: string): Promise<CertView> {
    return expectRecord<CertView>(await this.#call('POST', appPath(app, 'certs'), { json: { cert, key } }), 'cert');
  }

  /** `PATCH /v1/apps/:app/tls`: ACME, the HTTP→HTTPS redirect, HSTS. */
  async setTls(app: string, patch: Partial<TlsSettingsView>): Promise<TlsSettingsView> {
    return expectRecord<TlsSettingsView>(await this.#call('PATCH', appPath(app, 'tls'), { json: patch }), 'tls');
  }

  /** `GET /v1/apps/:app/metrics?since=1h`. */
  async appMetrics(app: string, since?: string): Promise<AppMetricsView> {
    return expectRecord<AppMetricsView>(await this.#call('GET', appPath(app, 'metrics'), { query: { since } }), 'metrics');
  }

  /** `GET /v1/agents/:agent/metrics?since=1h`. */
  async agentMetrics(agent: string, since?: string): Promise<AgentMetricsView> {
    const body = await this.#call('GET', `/v1/agents/${encodeURIComponent(agent)}/metrics`, { query: { since } });
    return expectRecord<AgentMetricsView>(body, 'metrics');
  }

  /** `GET /v1/apps/:app/autoscale`: policies and recent decisions. */
  async getAutoscale(app: string): Promise<AutoscaleView> {
    return expectRecord<AutoscaleView>(await this.#call('GET', appPath(app, 'autoscale')), 'autoscale');
  }

  /** `PUT /v1/apps/:app/autoscale/:type`: sets the type's policy. */
  async setAutoscale(
    app: string,
    type: string,
    policy: { min: number; max: number; p95Ms?: number | null; cpuPct?: number | null },
  ): Promise<AutoscaleView> {
    return expectRecord<AutoscaleView>(await this.#call('PUT', appPath(app, 'autoscale', type), { json: policy }), 'autoscale');
  }

  /** `DELETE /v1/apps/:app/autoscale/:type`: turns autoscaling of the type off. */
  async removeAutoscale(app: string, type: string): Promise<AutoscaleView> {
    return expectRecord<AutoscaleView>(await this.#call('DELETE', appPath(app, 'autoscale', type)), 'autoscale');
  }

  /** `GET /v1/apps/:app/logs`: the newest lines matching the filters, oldest first (every page). */
  async logs(app: string, query: LogsQuery = {}): Promise<LogLineView[]> {
    const out: LogLineView[] = [];
    await this.eachLogPage(app, query, (lines) => {
      for (const l of lines) out.push(l);
    });
    return out;
  }

  /**
   * `GET /v1/apps/:app/logs`, page after page (`n` may be more than one page holds): `onPage` gets
   * each page's lines, oldest first, before the next is asked for.
   */
  async eachLogPage(app: string, query: LogsQuery, onPage: (lines: LogLineView[]) => void | Promise<void>): Promise<void> {
    let cursor: string | null = null;
    do {
      const body = await this.#call('GET', appPath(app, 'logs'), { query: { ...query, ...(cursor === null ? {} : { cursor }) } });
      await onPage(expectArray<LogLineView>(body, 'lines'));
      const next = body.next;
      cursor = typeof next === 'string' && next !== '' ? next : null;
    } while (cursor !== null);
  }

  /** `GET /v1/apps/:app/errors`: grouped Python exceptions, last seen first. */
  async errors(app: string): Promise<ErrorGroupView[]> {
    return expectArray<ErrorGroupView>(await this.#call('GET', appPath(app, 'errors')), 'errors');
  }

  /**
   * Follows the websocket `/v1/apps/:app/logs/stream`: backfill, `{live: true}`, then live lines
   * and `{missed: N}` notices, each handed to `onMessage`. Resolves when the stream ends (the
   * coordinator stopped or `signal` aborted); rejects when it cannot be opened.
   */
  async streamLogs(app: string, query: LogsQuery, onMessage: (message: LogStreamMessage) => void, signal?: AbortSignal): Promise<void> {
    await this.#findLeader();
    const url = new URL(`${this.url.replace(/^http/, 'ws')}${appPath(app, 'logs', 'stream')}`);
    for (const [key, value] of Object.entries(query)) if (value !== undefined) url.searchParams.set(key, String(value));
    return new Promise((resolve, reject) => {
      // The token goes in the Authorization header, never in the URL.
      const ws = new WebSocket(url, { headers: { authorization: `Bearer ${this.#token}` }, handshakeTimeout: this.#timeoutMs });
      let opened = false;
      const onAbort = () => ws.close(1000);
      signal?.addEventListener('abort', onAbort, { once: true });
      ws.on('open', () => (opened = true));
      ws.on('message', (data: Buffer) => {
        try {
          onMessage(JSON.parse(data.toString('utf8')) as LogStreamMessage);
        } catch {
          // Not a message of ours: ignored.
        }
      });
      ws.on('unexpected-response', (_req, res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => reject(this.#responseError(res.statusCode ?? 500, parseJson(text), 'GET', appPath(app, 'logs', 'stream'))));
      });
      ws.on('error', (err) => {
        if (!opened) reject(this.#networkError(err));
      });
      ws.on('close', () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }

  /** `POST /v1/apps/:app/runs`: records a one-off run (a detached one starts at once). */
  async createRun(app: string, input: RunRequest): Promise<RunView> {
    return expectRecord<RunView>(await this.#call('POST', appPath(app, 'runs'), { json: input }), 'run');
  }

  /** `GET /v1/apps/:app/runs`: newest first. */
  async listRuns(app: string): Promise<RunView[]> {
    return expectArray<RunView>(await this.#call('GET', appPath(app, 'runs')), 'runs');
  }

  /** `GET /v1/apps/:app/runs/:name` (`run.3`). */
  async getRun(app: string, name: string): Promise<RunView> {
    return expectRecord<RunView>(await this.#call('GET', appPath(app, 'runs', name)), 'run');
  }

  /** `GET /v1/apps/:app/cron`: the current release's jobs. */
  async listCron(app: string): Promise<CronJobView[]> {
    return expectArray<CronJobView>(await this.#call('GET', appPath(app, 'cron')), 'jobs');
  }

  /** `POST /v1/apps/:app/cron/:name/run`: fires a job now (a detached run). */
  async runCronJob(app: string, name: string): Promise<RunView> {
    return expectRecord<RunView>(await this.#call('POST', appPath(app, 'cron', name, 'run')), 'run');
  }

  /** `POST /v1/apps/:app/runs/:name/stop`. */
  async stopRun(app: string, name: string): Promise<RunView> {
    return expectRecord<RunView>(await this.#call('POST', appPath(app, 'runs', name, 'stop')), 'run');
  }

  /**
   * Attaches to a pending run over the websocket `/v1/apps/:app/runs/:name/attach`: the run starts
   * on its agent now. Output and messages go to the handlers; the returned connection sends input
   * and controls. `done` resolves when the coordinator closes it (after the run's exit) or rejects
   * when it cannot be opened.
   */
  attachRun(app: string, name: string, handlers: RunHandlers): RunConnection {
    const path = appPath(app, 'runs', name, 'attach');
    const ws = new WebSocket(`${this.url.replace(/^http/, 'ws')}${path}`, {
      headers: { authorization: `Bearer ${this.#token}` },
      handshakeTimeout: this.#timeoutMs,
    });
    const done = new Promise<void>((resolve, reject) => {
      let opened = false;
      ws.on('open', () => {
        opened = true;
        handlers.onOpen?.();
      });
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (isBinary) {
          if (data.length > 1) handlers.onOutput(data[0] === 2 ? 'stderr' : 'stdout', data.subarray(1));
          return;
        }
        try {
          handlers.onMessage(JSON.parse(data.toString('utf8')) as RunStreamMessage);
        } catch {
          // Not a message of ours: ignored.
        }
      });
      ws.on('unexpected-response', (_req, res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => reject(this.#responseError(res.statusCode ?? 500, parseJson(text), 'GET', path)));
      });
      ws.on('error', (err) => {
        if (!opened) reject(this.#networkError(err));
      });
      ws.on('close', () => resolve());
    });
    return {
      done,
      input: (data) => {
        if (ws.readyState === WebSocket.OPEN) ws.send(data, { binary: true });
      },
      control: (message) => {
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
      },
      close: () => ws.close(1000),
    };
  }

  /** Closes the connections this client opened. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= this.#ownsDispatcher ? this.#dispatcher.close() : Promise.resolve();
    return this.#closed;
  }

  async #call(method: Method, path: string, options: CallOptions = {}): Promise<Record<string, unknown>> {
    if (path !== '/v1/health') await this.#findLeader();
    try {
      return await this.#callOnce(method, path, options);
    } catch (err) {
      if (this.#urls.length <= 1) throw err;
      if (isHangarError(err, 'UNREACHABLE')) {
        // The leader went away: the next call looks for the new one. A read, or a request the
        // dead one never took (connection refused), is asked of the new leader at once.
        this.#leaderKnown = false;
        if (method !== 'GET' && errorCode(err.cause) !== 'ECONNREFUSED') throw err;
        await this.#findLeader();
        return this.#callOnce(method, path, options);
      }
      // A follower (or a leader that just lost the lease) answered: ask the one it names, once.
      if (!isHangarError(err, 'NOT_LEADER')) throw err;
      const named = isRecord(err.details) && typeof err.details.leader === 'string' ? err.details.leader : null;
      if (named && baseUrl(named) !== this.#url) this.#url = baseUrl(named);
      else {
        this.#leaderKnown = false;
        await this.#findLeader();
      }
      return this.#callOnce(method, path, options);
    }
  }

  async #callOnce(method: Method, path: string, options: CallOptions): Promise<Record<string, unknown>> {
    const url = new URL(`${this.url}${path}`);
    for (const [key, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined) url.searchParams.set(key, String(value));
    }
    const headers: Record<string, string> = {
      accept: 'application/json',
      authorization: `Bearer ${this.#token}`,
    };
    let body: Uint8Array | string | undefined;
    if (options.raw) {
      headers['content-type'] = options.raw.contentType;
      body = options.raw.body;
    } else if (options.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(options.json);
    }

    let response: Dispatcher.ResponseData;
    try {
      response = await request(url, {
        method,
        headers,
        body,
        dispatcher: this.#dispatcher,
        headersTimeout: options.timeoutMs ?? this.#timeoutMs,
        bodyTimeout: options.timeoutMs ?? this.#timeoutMs,
      });
    } catch (err) {
      throw this.#networkError(err);
    }

    let text: string;
    try {
      text = await response.body.text();
    } catch (err) {
      throw this.#networkError(err);
    }
    const json = parseJson(text);

    if (response.statusCode >= 200 && response.statusCode < 300) {
      if (!isRecord(json)) {
        throw new HangarError(
          'INTERNAL',
          `${method} ${path} answered ${response.statusCode} without a JSON object; check that ${this.url} is a Hangar coordinator`,
        );
      }
      return json;
    }
    throw this.#responseError(response.statusCode, json, method, path);
  }

  #networkError(err: unknown): HangarError {
    if (err instanceof HangarError) return err;
    const code = errorCode(err);
    const reason = err instanceof Error ? err.message : String(err);
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
      return new HangarError(
        'UNREACHABLE',
        `The coordinator at ${this.url} did not answer within ${Math.round(this.#timeoutMs / 1000)} s; check its logs, then try again`,
        { cause: err },
      );
    }
    if (code !== undefined && NETWORK_CODES.has(code)) {
      return new HangarError(
        'UNREACHABLE',
        `Cannot reach the coordinator at ${this.url}: ${reason}; is \`hangar coordinator\` (or \`hangar dev\`) running?`,
        { cause: err },
      );
    }
    return new HangarError('INTERNAL', `Request to the coordinator at ${this.url} failed: ${reason}`, { cause: err });
  }

  #responseError(status: number, json: unknown, method: Method, path: string): HangarError {
    if (isErrorBody(json)) {
      // The server's code is kept as sent: it comes from the same table in common/errors.ts.
      return new HangarError(json.code as ErrorCode, json.message, { details: json.details });
    }
    const code: ErrorCode =
      status === 401 ? 'UNAUTHORIZED' : status === 404 ? 'NOT_FOUND' : status === 413 ? 'PAYLOAD_TOO_LARGE' : 'INTERNAL';
    return new HangarError(
      code,
      `${method} ${path} answered HTTP ${status} without a Hangar error body; check that ${this.url} is the coordinator's HTTP API`,
    );
  }
}

function appPath(app: string, ...rest: string[]): string {
  return ['/v1/apps', app, ...rest].map((part, i) => (i === 0 ? part : encodeURIComponent(part))).join('/');
}

function parseJson(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isErrorBody(value: unknown): value is ErrorBody {
  return isRecord(value) && typeof value.code === 'string' && value.code !== '' && typeof value.message === 'string';
}

function errorCode(err: unknown): string | undefined {
  // undici wraps some socket errors; the errno code may be on the error or on its cause.
  for (let e: unknown = err, depth = 0; isRecord(e) && depth < 4; e = e.cause, depth++) {
    if (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) return e.code;
  }
  return isRecord(err) && typeof err.code === 'string' ? err.code : undefined;
}

function badShape(key: string, expected: string): HangarError {
  return new HangarError('INTERNAL', `The coordinator's answer has no ${expected} "${key}"; are the CLI and coordinator the same version?`);
}

function expectObject(body: Record<string, unknown>, key: string): void {
  if (!(key in body)) throw badShape(key, 'field');
}

function expectArray<T>(body: Record<string, unknown>, key: string): T[] {
  const value = body[key];
  if (!Array.isArray(value)) throw badShape(key, 'list');
  return value as T[];
}

function expectRecord<T>(body: Record<string, unknown>, key: string): T {
  const value = body[key];
  if (!isRecord(value)) throw badShape(key, 'object');
  return value as T;
}

function expectNullableRecord<T>(body: Record<string, unknown>, key: string): T | null {
  const value = body[key];
  if (value === null || value === undefined) return null;
  if (!isRecord(value)) throw badShape(key, 'object or null');
  return value as T;
}

/** The release a domain change made so the processes see it (null from an older coordinator too). */
export interface DomainRelease {
  release: ReleaseView | null;
  deploy: DeployView | null;
}

function domainReleaseOf(body: Record<string, unknown>): DomainRelease {
  return { release: expectNullableRecord<ReleaseView>(body, 'release'), deploy: expectNullableRecord<DeployView>(body, 'deploy') };
}
