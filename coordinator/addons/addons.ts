/**
 * Add-ons as desired state: the coordinator decides which agent runs each PostgreSQL, Redis or
 * memcached server, generates its password, sends it in that agent's desired state, records the
 * state the agent reports, and once the server is up puts its URL in the app's config (the same
 * path as `config:set`: a new release that rolls out). Destroying one stops it and unsets the var;
 * its data stays on the agent unless purged. One-shot jobs on agents (backups, restores, purges)
 * go through {@link Addons.runJob}; backups themselves are `addon-backups.ts`.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { AddonView } from '../../common/api-types.js';
import type { Clock } from '../../common/clock.js';
import { HangarError, isHangarError, type ErrorCode } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { ADDON_STATES, isOneOf, type AddonKind, type AddonState } from '../../common/vocabulary.js';
import type { AddonJob, AddonJobResult__Output, AddonStatus__Output } from '../../proto/loader.js';
import type { AgentHub } from '../fleet/agent-hub.js';
import type { DesiredStateSync } from '../fleet/desired-state-sync.js';
import type { Fleet } from '../fleet/fleet.js';
import type { FleetViews } from '../fleet/fleet-views.js';
import { addonUrl, configVarFor } from './addon-connection.js';
import { ADDON_TRANSITIONS } from './addon-phase.js';
import type { Releases } from '../releases/releases.js';
import type { Rollouts } from '../releases/rollout.js';
import type { AddonRow, Store } from '../store/store.js';
import { assertTransition } from '../store/transition-table.js';

/** Options of {@link Addons}. */
export interface AddonsOptions {
  store: Store;
  fleet: Pick<Fleet, 'isUp'>;
  views: Pick<FleetViews, 'agentViews'>;
  sync: Pick<DesiredStateSync, 'requestSync'>;
  rollouts: Pick<Rollouts, 'assertIdle'>;
  releases: Pick<Releases, 'changeConfig'>;
  hub: AgentHub;
  clock: Clock;
  logger: Logger;
  /** Longest wait for an agent to answer an add-on job (backup, restore, purge), ms. Default 30 minutes. */
  jobTimeoutMs?: number;
  /** A status an agent reports for an add-on whose primary runs elsewhere (its standby's). */
  onStandbyStatus?: (agent: string, status: AddonStatus__Output) => void;
  /** Issues a server certificate from the coordinator's CA for these names (PostgreSQL's TLS). */
  issueCertificate: (names: readonly string[]) => Promise<{ certPem: string; keyPem: string }>;
}

/** What `addons:create` asks for. */
export interface NewAddon {
  kind: AddonKind;
  /** Run it on this agent. Default: the least loaded agent that is up. */
  agent?: string | undefined;
  /** Default: KIND-N, the first free N. */
  name?: string | undefined;
}

interface PendingJob {
  agent: string;
  resolve: (result: AddonJobResult__Output) => void;
  reject: (err: unknown) => void;
  timer: NodeJS.Timeout;
}

/** The add-ons of the fleet: desired state, attachment to the app's config, jobs. */
export class Addons {
  readonly #o: AddonsOptions;
  readonly #logger: Logger;
  readonly #jobs = new Map<string, PendingJob>();
  /** Add-ons whose attachment is waiting (e.g. for a deploy to finish), to log it once. */
  readonly #waiting = new Set<string>();
  /** The description of the release of an attachment that waits, when not `Attach …` (a failover). */
  readonly #reasons = new Map<string, string>();

  constructor(options: AddonsOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'addons' });
  }

  /** Rejects pending jobs. */
  close(): void {
    for (const [id, job] of this.#jobs) {
      clearTimeout(job.timer);
      job.reject(new HangarError('UNREACHABLE', 'The coordinator is shutting down; check the job on the agent later.'));
      this.#jobs.delete(id);
    }
  }

  // ---------------------------------------------------------------- create / destroy

  /**
   * Records a new add-on and sends it to its agent. The URL is set in config once it is up. A
   * PostgreSQL add-on gets a server certificate for its agent's address and name, and a
   * superuser password of its own (the app's role is not a superuser).
   */
  async create(app: string, input: NewAddon): Promise<AddonRow> {
    const store = this.#o.store;
    store.requireApp(app);
    const picked = this.#pickAgent(input.agent);
    const address = store.getAgent(picked)?.address;
    const tls =
      input.kind === 'postgres' ? await this.#o.issueCertificate([picked, ...(address ? [address] : []), 'localhost', '127.0.0.1']) : null;
    const now = this.#o.clock.now();
    const row = store.transaction(() => {
      store.requireApp(app);
      const all = store.listAddons();
      const name = input.name ?? this.#freeName(input.kind, all);
      if (all.some((a) => a.name === name)) {
        throw new HangarError('ADDON_EXISTS', `An add-on named ${name} already exists (names are fleet-wide); pick another with --name.`);
      }
      const agent = picked;
      const row: AddonRow = {
        name,
        id: randomUUID(),
        app,
        kind: input.kind,
        agent,
        port: null,
        configVar: configVarFor(
          input.kind,
          name,
          all.filter((a) => a.app === app),
        ),
        desired: 'run',
        attachedUrl: null,
        deployId: null,
        state: 'provisioning',
        pid: null,
        restarts: 0,
        since: now,
        message: 'waiting for the agent',
        password: randomBytes(24).toString('hex'),
        adminPassword: input.kind === 'postgres' ? randomBytes(24).toString('hex') : '',
        tls,
        createdAt: now,
      };
      store.insertAddon(row);
      return row;
    });
    this.#logger.info({ app, addon: row.name, kind: row.kind, agent: row.agent }, 'add-on created');
    this.#o.sync.requestSync();
    return row;
  }

  /**
   * Stops an add-on and unsets its config var (a new release, when the app has one). Its data
   * stays on the agent (the name stays taken) unless `purge`, which deletes it and frees the name.
   */
  async destroy(app: string, name: string, options: { confirm: string | undefined; purge: boolean }): Promise<AddonRow> {
    const store = this.#o.store;
    const row = this.require(app, name);
    if (options.confirm !== name) {
      throw new HangarError(
        'BAD_INPUT',
        `This stops ${name} and unsets ${row.configVar} on ${app}${options.purge ? ' and deletes its data' : ''}; confirm with --confirm ${name}.`,
      );
    }
    if (row.desired === 'destroyed' && !options.purge) {
      throw new HangarError(
        'BAD_INPUT',
        `${name} is already destroyed; its data is kept on ${row.agent}. Delete it with \`hangar addons:destroy ${name} -a ${app} --confirm ${name} --purge\`.`,
      );
    }
    if (options.purge && !this.#o.hub.isConnected(row.agent)) {
      throw new HangarError('NO_AGENTS', `${row.agent}, which holds ${name}'s data, is not connected; purge it once the agent is back.`);
    }
    const now = this.#o.clock.now();
    store.transaction(() => {
      let deployId: string | null = row.deployId;
      const config = store.getConfig(app);
      if (row.attachedUrl !== null && config[row.configVar] === row.attachedUrl) {
        deployId = this.#setConfig(app, { [row.configVar]: null }, `Detach ${name} (unset ${row.configVar})`);
      }
      assertTransition(ADDON_TRANSITIONS, row.state, 'destroyed', 'add-on');
      store.updateAddon(name, {
        desired: 'destroyed',
        state: 'destroyed',
        attachedUrl: null,
        deployId,
        pid: null,
        since: now,
        message: '',
      });
    });
    this.#waiting.delete(name);
    this.#o.sync.requestSync();
    this.#logger.info({ app, addon: name, purge: options.purge }, 'add-on destroyed');
    if (options.purge) {
      await this.#runJob(row, 'purge', '');
      const standby = store.getAddonStandby(name);
      if (standby && this.#o.hub.isConnected(standby.agent)) {
        await this.runJob(standby.agent, { addon: name, action: 'purge', backup: '' }).catch((err: unknown) => {
          this.#logger.warn({ err, addon: name, agent: standby.agent }, 'could not purge the standby; its data stays there');
        });
      }
      store.deleteAddon(name);
    }
    return store.getAddon(name) ?? { ...row, desired: 'destroyed', state: 'destroyed', attachedUrl: null, since: now };
  }

  // ---------------------------------------------------------------- views

  /** The add-on, or ADDON_NOT_FOUND. */
  require(app: string, name: string): AddonRow {
    this.#o.store.requireApp(app);
    const row = this.#o.store.getAddon(name);
    if (!row || row.app !== app) {
      throw new HangarError('ADDON_NOT_FOUND', `${app} has no add-on named ${name}; see \`hangar addons -a ${app}\`.`);
    }
    return row;
  }

  list(app: string): AddonRow[] {
    this.#o.store.requireApp(app);
    return this.#o.store.listAddons({ app });
  }

  view(row: AddonRow, reveal: boolean): AddonView {
    const host = this.#o.store.getAgent(row.agent)?.address ?? '127.0.0.1';
    return {
      name: row.name,
      kind: row.kind,
      app: row.app,
      agent: row.agent,
      state: row.state,
      configVar: row.configVar,
      url: addonUrl(row, host, !reveal),
      port: row.port,
      attached: row.attachedUrl !== null,
      deploy: row.deployId,
      restarts: row.restarts,
      message:
        row.desired === 'run' && !this.#o.hub.isConnected(row.agent)
          ? `${row.agent} is not connected; last reported: ${row.message || row.state}`
          : row.message,
      since: new Date(row.since).toISOString(),
      createdAt: new Date(row.createdAt).toISOString(),
    };
  }

  // ---------------------------------------------------------------- agents

  /** Add-ons (running) per agent, for placement. */
  countOn(agent: string): number {
    return this.#o.store.listAddons().filter((a) => a.agent === agent && a.desired === 'run').length;
  }

  /** Records what an agent reports; attaches add-ons that came up. */
  onStatuses(agent: string, statuses: readonly AddonStatus__Output[]): void {
    // Most heartbeats carry no add-on: no transaction for them.
    if (statuses.length === 0) return;
    const store = this.#o.store;
    const changed: string[] = [];
    store.transaction(() => {
      for (const s of statuses) {
        const row = store.getAddon(s.name);
        if (row && row.agent !== agent && row.id === s.id && row.desired === 'run') {
          this.#o.onStandbyStatus?.(agent, s);
          continue;
        }
        if (!row || row.agent !== agent || row.id !== s.id || row.desired !== 'run') continue;
        const state: AddonState = isOneOf(ADDON_STATES, s.state) ? s.state : 'starting';
        const port = s.port || row.port;
        if (
          row.state === state &&
          row.port === port &&
          row.restarts === s.restarts &&
          row.message === s.message &&
          row.pid === (s.pid || null)
        )
          continue;
        assertTransition(ADDON_TRANSITIONS, row.state, state, 'add-on');
        store.updateAddon(s.name, {
          state,
          port,
          pid: s.pid || null,
          restarts: s.restarts,
          since: Number(s.since) || this.#o.clock.now(),
          message: s.message,
        });
        if (row.port !== port) changed.push(s.name);
        if (state === 'up') changed.push(s.name);
      }
    });
    // The agent picked a port: send it back so it is kept in desired state.
    if (changed.length > 0) this.#o.sync.requestSync();
    for (const name of new Set(changed)) this.#attach(name);
  }

  /** An agent answered a job. */
  onJobResult(agent: string, result: AddonJobResult__Output): void {
    const job = this.#jobs.get(result.id);
    if (!job || job.agent !== agent) return;
    this.#jobs.delete(result.id);
    clearTimeout(job.timer);
    job.resolve(result);
  }

  /** An agent's stream closed: its unanswered jobs fail now rather than at their timeout. */
  onDisconnect(agent: string): void {
    for (const [id, job] of this.#jobs) {
      if (job.agent !== agent) continue;
      this.#jobs.delete(id);
      clearTimeout(job.timer);
      job.reject(new HangarError('UNREACHABLE', `${agent} went away before it finished the job; check the add-on and try again.`));
    }
  }

  /** Periodic: attaches add-ons that are up but whose URL could not be set yet (a deploy was running). */
  tick(): void {
    for (const row of this.#o.store.listAddons()) {
      if (row.desired === 'run' && row.state === 'up') this.#attach(row.name);
    }
  }

  // ---------------------------------------------------------------- internals

  #runJob(row: AddonRow, action: string, backup: string): Promise<AddonJobResult__Output> {
    return this.runJob(row.agent, { addon: row.name, action, backup });
  }

  /**
   * Sends a one-shot job to `agent` and waits for its answer.
   *
   * @throws HangarError `NO_AGENTS` when the agent is not connected; the agent's error code when the job failed.
   */
  runJob(agent: string, fields: Omit<Partial<AddonJob>, 'id'> & { addon: string; action: string }): Promise<AddonJobResult__Output> {
    const id = randomUUID();
    const { action, addon } = fields;
    const sent = this.#o.hub.sendAddonJob(agent, { ...fields, id });
    if (!sent) {
      return Promise.reject(new HangarError('NO_AGENTS', `${agent}, which holds ${addon}, is not connected; try again once it is back.`));
    }
    return new Promise<AddonJobResult__Output>((resolve, reject) => {
      const timeoutMs = this.#o.jobTimeoutMs ?? 30 * 60_000;
      const timer = setTimeout(() => {
        this.#jobs.delete(id);
        reject(
          new HangarError('UNREACHABLE', `${agent} did not finish the ${action} of ${addon} within ${Math.round(timeoutMs / 1000)} s.`),
        );
      }, timeoutMs);
      this.#jobs.set(id, { agent, resolve, reject, timer });
    }).then((result) => {
      if (!result.ok) {
        const code = (isErrorCode(result.errorCode) ? result.errorCode : 'ADDON_FAILED') satisfies ErrorCode;
        throw new HangarError(code, result.error || `The ${action} of ${addon} failed on ${agent}.`);
      }
      return result;
    });
  }

  /**
   * Resolves once the add-on is up (its port known), polling its recorded state.
   *
   * @throws HangarError `ADDON_FAILED` when it failed or was not up within `timeoutMs`.
   */
  async waitUp(name: string, timeoutMs: number): Promise<AddonRow> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const row = this.#o.store.getAddon(name);
      if (!row || row.desired !== 'run') throw new HangarError('ADDON_NOT_FOUND', `${name} was destroyed meanwhile.`);
      if (row.state === 'up' && row.port !== null) return row;
      if (row.state === 'failed') throw new HangarError('ADDON_FAILED', `${name} could not be provisioned: ${row.message}`);
      if (Date.now() > deadline)
        throw new HangarError('ADDON_FAILED', `${name} was not up within ${Math.round(timeoutMs / 1000)} s (state ${row.state}).`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** Puts the add-on's URL in its app's config now or once it can (a failover: its new primary's). */
  reattach(name: string, description: string): void {
    this.#reasons.set(name, description);
    this.#attach(name);
  }

  /** Puts the add-on's URL in its app's config when it is up and not (or differently) set. */
  #attach(name: string): void {
    const store = this.#o.store;
    const row = store.getAddon(name);
    if (!row || row.desired !== 'run' || row.state !== 'up' || row.port === null) return;
    const host = store.getAgent(row.agent)?.address ?? '127.0.0.1';
    const url = addonUrl(row, host, false);
    if (url === null || row.attachedUrl === url) return;
    try {
      store.transaction(() => {
        this.#o.rollouts.assertIdle(row.app);
        const description = this.#reasons.get(name) ?? `Attach ${row.name} as ${row.configVar}`;
        const deployId = this.#setConfig(row.app, { [row.configVar]: url }, description);
        store.updateAddon(name, { attachedUrl: url, deployId });
      });
      this.#waiting.delete(name);
      this.#reasons.delete(name);
      this.#logger.info({ app: row.app, addon: name, configVar: row.configVar }, 'add-on attached');
    } catch (err) {
      if (!this.#waiting.has(name)) {
        this.#waiting.add(name);
        const why = isHangarError(err) ? err.message : String(err);
        this.#logger.info({ app: row.app, addon: name }, `attaching the add-on waits: ${why}`);
      }
    }
  }

  /** Patches config like `config:set`; returns the deploy of the new release (null before the first deploy). */
  #setConfig(app: string, patch: Record<string, string | null>, description: string): string | null {
    // Stricter than `config:set`: not even before the first release while it builds.
    this.#o.rollouts.assertIdle(app);
    return this.#o.releases.changeConfig(app, patch, 'hangar', description).started?.deploy.id ?? null;
  }

  #freeName(kind: AddonKind, all: readonly AddonRow[]): string {
    const names = new Set(all.map((a) => a.name));
    let n = 1;
    while (names.has(`${kind}-${n}`)) n++;
    return `${kind}-${n}`;
  }

  #pickAgent(wanted: string | undefined): string {
    const agents = this.#o.views.agentViews();
    if (wanted !== undefined) {
      const agent = agents.find((a) => a.name === wanted);
      if (!agent) throw new HangarError('NOT_FOUND', `No agent named ${wanted}; see \`hangar agents\`.`);
      if (!this.#o.fleet.isUp(wanted)) throw new HangarError('NO_AGENTS', `${wanted} is not connected; start it, or leave out --agent.`);
      return wanted;
    }
    const up = agents.filter((a) => this.#o.fleet.isUp(a.name));
    if (up.length === 0) {
      throw new HangarError(
        'NO_AGENTS',
        'No agent is connected, so the add-on cannot run anywhere; start one with `hangar agent --coordinator HOST:PORT --join-token TOKEN`.',
      );
    }
    const load = (name: string, instances: number) => instances + this.countOn(name);
    up.sort((a, b) => load(a.name, a.instances) - load(b.name, b.instances) || a.name.localeCompare(b.name));
    return (up[0] as (typeof up)[number]).name;
  }
}

function isErrorCode(code: string): code is ErrorCode {
  return ['ADDON_NOT_FOUND', 'BACKUP_NOT_FOUND', 'BACKUP_CORRUPT', 'ADDON_FAILED', 'BAD_INPUT', 'UNREACHABLE'].includes(code);
}
