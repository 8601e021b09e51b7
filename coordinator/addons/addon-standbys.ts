/**
 * PostgreSQL standbys and failover. An add-on's own row is its primary; its standby (one, on
 * another agent) is an `addon_standbys` row. The standby is `pending` until the primary is up and
 * ready to stream to it (the `standby-source` job: replication role, pg_hba.conf, slot); then
 * desired state has the standby's agent copy the primary (pg_basebackup) and follow it. The
 * primary measures the lag (the `replication` job, every {@link AddonStandbysOptions.lagIntervalMs}).
 *
 * Automatic failover: when the primary's agent has been disconnected longer than
 * `failoverAfterMs` and the standby is up, the standby is promoted, the two rows swap agents (the
 * old primary is `fenced`: desired state makes it a standby of the new primary, rebuilt from a
 * fresh base backup, so it never serves as a primary again), and a release with the new URL rolls
 * out. Commits the standby had not received when the primary died are lost (asynchronous
 * replication). A planned failover loses nothing: the primary is shut down cleanly (its WAL
 * sender sends everything first), the standby replays up to the primary's shutdown checkpoint,
 * then it is promoted and the old primary follows it as a standby with its data as it was.
 *
 * Synchronous replication (`--standby=sync`), non-strict as Patroni's synchronous_mode: once the
 * standby streams, the primary waits for it on every commit (`sync-on`: synchronous_standby_names
 * by reload), so a promoted standby has every acknowledged commit. When the lag checks find the
 * standby not streaming for `syncDegradeAfterMs`, the primary is degraded to async (`sync-off`),
 * so commits do not hang while the standby is away, and sync is turned on again once it streams.
 * A failover while degraded loses what the standby had not received, as with async.
 */
import { randomBytes } from 'node:crypto';
import type { Clock } from '../../common/clock.js';
import { HangarError, isHangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { ADDON_STATES, isOneOf, type AddonState } from '../../common/vocabulary.js';
import type { AddonJob, AddonJobResult__Output, AddonStatus__Output } from '../../proto/loader.js';
import type { AgentHub } from '../fleet/agent-hub.js';
import type { DesiredStateSync } from '../fleet/desired-state-sync.js';
import type { FleetViews } from '../fleet/fleet-views.js';
import type { AddonRow, AddonStandbyRow, Store } from '../store/store.js';

/** Options of {@link AddonStandbys}. */
export interface AddonStandbysOptions {
  store: Store;
  hub: Pick<AgentHub, 'isConnected'>;
  views: Pick<FleetViews, 'agentViews'>;
  sync: Pick<DesiredStateSync, 'requestSync'>;
  /** Sends a job to an agent (see `Addons.runJob`). */
  runJob: (agent: string, fields: Omit<Partial<AddonJob>, 'id'> & { addon: string; action: string }) => Promise<AddonJobResult__Output>;
  /** Puts the add-on's (new) URL in its app's config: a release with `description`. */
  attach: (name: string, description: string) => void;
  /** A certificate for the add-on's server names (both agents). */
  issueCertificate: (names: readonly string[]) => Promise<{ certPem: string; keyPem: string }>;
  /** A `hangar` line in the app's log. */
  recordEvent: (app: string, line: string, stream?: 'stdout' | 'stderr') => void;
  /** Add-ons per agent, for placement. */
  countOn: (agent: string) => number;
  /** The primary's agent disconnected this long (ms) triggers a failover. Default 30 000. */
  failoverAfterMs?: number;
  /** A sync standby not streaming this long (ms, seen by the lag checks) degrades the primary to async. Default 10 000. */
  syncDegradeAfterMs?: number;
  /** How often the lag is measured, ms. Default 5000. */
  lagIntervalMs?: number;
  /** Longest wait of a planned failover for the standby to catch up, ms. Default 120 000. */
  catchUpTimeoutMs?: number;
  clock: Clock;
  logger: Logger;
}

/** One server of an add-on, as `addons:info` shows it. */
export interface AddonServerView {
  agent: string;
  role: 'primary' | 'standby' | 'fenced';
  state: AddonState;
  lagBytes: number | null;
  lagSeconds: number | null;
}

/** What the `replication` job reports (see agent/addons/postgres-replication.ts). */
interface ReplicationReport {
  role: 'primary' | 'standby';
  lsn: string;
  standby: { state: string; replayLsn: string; lagBytes: number; lagSeconds: number } | null;
}

/** What to do with the primary of a standby: turn synchronous replication on, degrade it to async, or nothing. */
export type SyncDecision = 'enable' | 'degrade' | 'keep';

/**
 * Non-strict synchronous replication: sync is on while the standby streams; when it has not
 * streamed for `degradeAfterMs` (`awaySince`: when the lag checks first found it not streaming,
 * null while it streams) the primary is degraded to async; an async standby is never sync.
 */
export function syncDecision(o: {
  mode: 'sync' | 'async';
  active: boolean;
  streaming: boolean;
  awaySince: number | null;
  now: number;
  degradeAfterMs: number;
}): SyncDecision {
  if (o.mode === 'async') return o.active ? 'degrade' : 'keep';
  if (o.streaming) return o.active ? 'keep' : 'enable';
  if (!o.active || o.awaySince === null) return 'keep';
  return o.now - o.awaySince >= o.degradeAfterMs ? 'degrade' : 'keep';
}

/** A WAL position `X/Y` as a number of bytes. */
export function parseLsn(lsn: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(lsn.trim());
  if (!m) throw new HangarError('ADDON_FAILED', `"${lsn}" is not a WAL position`);
  return (BigInt(`0x${m[1]}`) << 32n) + BigInt(`0x${m[2]}`);
}

/** The standbys of the fleet's PostgreSQL add-ons, and their failovers. */
export class AddonStandbys {
  readonly #o: AddonStandbysOptions;
  readonly #logger: Logger;
  /** Add-ons with a job of this component under way (one at a time each). */
  readonly #busy = new Set<string>();
  readonly #startedAt: number;
  #lastLagAt = 0;
  /** Per add-on: when the lag checks first found its standby not streaming (absent: streaming). */
  readonly #awaySince = new Map<string, number>();

  constructor(options: AddonStandbysOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'addon-standbys' });
    this.#startedAt = options.clock.now();
  }

  get #failoverAfterMs(): number {
    return this.#o.failoverAfterMs ?? 30_000;
  }

  // ---------------------------------------------------------------- adding

  /**
   * The agent a new standby of `primary` goes on: `wanted`, or the least loaded connected agent
   * but the primary's.
   *
   * @throws HangarError `BAD_INPUT` for the primary's own agent or an unknown one; `CONFLICT` when no other agent is connected.
   */
  pickAgent(name: string, primary: string, wanted: string | undefined): string {
    const agents = this.#o.views.agentViews();
    if (wanted !== undefined) {
      if (wanted === primary) {
        throw new HangarError(
          'BAD_INPUT',
          `${primary} runs the primary of ${name}; a standby on the same agent would die with it. Pick another agent with --agent (see \`hangar agents\`).`,
        );
      }
      if (!agents.some((a) => a.name === wanted)) throw new HangarError('BAD_INPUT', `No agent named ${wanted}; see \`hangar agents\`.`);
      if (!this.#o.hub.isConnected(wanted))
        throw new HangarError('CONFLICT', `${wanted} is not connected; start it, or leave out --agent.`);
      return wanted;
    }
    const others = agents.filter((a) => a.name !== primary && this.#o.hub.isConnected(a.name));
    if (others.length === 0) {
      throw new HangarError(
        'CONFLICT',
        `${name} runs on ${primary} and no other agent is connected: a standby must be on another server. Start a second agent (\`hangar agent --coordinator HOST:PORT --join-token TOKEN\` on another machine), then run this again.`,
      );
    }
    const load = (a: (typeof others)[number]) => a.instances + this.#o.countOn(a.name);
    others.sort((a, b) => load(a) - load(b) || a.name.localeCompare(b.name));
    return (others[0] as (typeof others)[number]).name;
  }

  /**
   * Before a new add-on with a standby is made: a second connected agent is needed.
   *
   * @throws HangarError `CONFLICT` when there is none.
   */
  assertRoom(primary: string | undefined): void {
    const up = this.#o.views.agentViews().filter((a) => this.#o.hub.isConnected(a.name) && a.name !== primary);
    if (up.length < (primary === undefined ? 2 : 1)) {
      throw new HangarError(
        'CONFLICT',
        `A standby must run on another agent than its primary, and ${up.length === 0 ? 'no' : 'only one'} agent is connected. Start a second agent (\`hangar agent --coordinator HOST:PORT --join-token TOKEN\` on another machine), or leave out --standby; nothing was created.`,
      );
    }
  }

  /**
   * Adds a standby to a PostgreSQL add-on: it is copied from the primary once the primary is up.
   *
   * @throws HangarError `BAD_INPUT` for another kind, a destroyed add-on or the primary's agent; `CONFLICT` when it has one already or no other agent is up.
   */
  async add(row: AddonRow, wanted: string | undefined, syncMode: 'sync' | 'async' = 'async'): Promise<AddonStandbyRow> {
    const store = this.#o.store;
    if (row.kind !== 'postgres') {
      throw new HangarError('BAD_INPUT', `${row.name} is a ${row.kind} add-on; standbys are for PostgreSQL add-ons.`);
    }
    if (row.desired !== 'run') throw new HangarError('BAD_INPUT', `${row.name} is destroyed; create a new add-on.`);
    if (store.getAddonStandby(row.name)) {
      throw new HangarError('CONFLICT', `${row.name} has a standby already; see \`hangar addons:info ${row.name} -a ${row.app}\`.`);
    }
    const agent = this.pickAgent(row.name, row.agent, wanted);
    // One certificate for both servers: the app's URL names either after a failover.
    const names = [row.agent, agent].flatMap((a) => [a, store.getAgent(a)?.address ?? '']).filter((n) => n !== '');
    const tls = await this.#o.issueCertificate([...new Set([...names, 'localhost', '127.0.0.1'])]);
    const now = this.#o.clock.now();
    const standby: AddonStandbyRow = {
      addon: row.name,
      agent,
      role: 'pending',
      port: null,
      state: 'provisioning',
      pid: null,
      restarts: 0,
      since: now,
      message: 'waiting for the primary to be up',
      replicationPassword: randomBytes(24).toString('hex'),
      lagBytes: null,
      lagSeconds: null,
      lagAt: null,
      syncMode,
      syncActive: false,
      createdAt: now,
    };
    store.transaction(() => {
      if (store.getAddonStandby(row.name)) throw new HangarError('CONFLICT', `${row.name} has a standby already.`);
      store.setAddonTls(row.name, tls);
      store.insertAddonStandby(standby);
    });
    this.#logger.info({ app: row.app, addon: row.name, agent, syncMode }, 'standby added');
    this.#o.sync.requestSync();
    this.tick();
    return standby;
  }

  // ---------------------------------------------------------------- views

  /** The servers of an add-on: its primary, then its standby. */
  servers(row: AddonRow): AddonServerView[] {
    const primary: AddonServerView = {
      agent: row.agent,
      role: 'primary',
      state: row.state === 'destroyed' ? 'stopping' : row.state,
      lagBytes: null,
      lagSeconds: null,
    };
    const s = this.#o.store.getAddonStandby(row.name);
    if (!s) return [primary];
    return [
      primary,
      { agent: s.agent, role: s.role === 'fenced' ? 'fenced' : 'standby', state: s.state, lagBytes: s.lagBytes, lagSeconds: s.lagSeconds },
    ];
  }

  /** The replication mode of an add-on's standby, and whether sync is in force (null: no standby). */
  replication(row: AddonRow): { mode: 'sync' | 'async'; inForce: boolean } | null {
    const s = this.#o.store.getAddonStandby(row.name);
    return s ? { mode: s.syncMode, inForce: s.syncMode === 'sync' && s.syncActive } : null;
  }

  // ---------------------------------------------------------------- agents

  /** A status an agent reports for an add-on whose primary is elsewhere: its standby's. */
  onStatus(agent: string, s: AddonStatus__Output): void {
    const store = this.#o.store;
    const standby = store.getAddonStandby(s.name);
    const row = store.getAddon(s.name);
    if (!standby || !row || standby.agent !== agent || row.id !== s.id || standby.role === 'pending') return;
    const state: AddonState = isOneOf(ADDON_STATES, s.state) ? s.state : 'starting';
    // A fenced former primary is a standby once it runs as one.
    const role = standby.role === 'fenced' && s.standbyRole === 'standby' && state === 'up' ? 'standby' : standby.role;
    const port = s.port || standby.port;
    if (
      standby.state === state &&
      standby.port === port &&
      standby.role === role &&
      standby.message === s.message &&
      standby.pid === (s.pid || null) &&
      standby.restarts === s.restarts
    )
      return;
    store.updateAddonStandby(s.name, {
      state,
      role,
      port,
      pid: s.pid || null,
      restarts: s.restarts,
      since: Number(s.since) || this.#o.clock.now(),
      message: s.message,
    });
    if (role !== standby.role) this.#logger.info({ addon: s.name, agent }, 'the former primary is a standby now');
    if (port !== standby.port) this.#o.sync.requestSync();
  }

  /** Periodic: readies primaries for pending standbys, measures lag, fails over from lost primaries. */
  tick(): void {
    const store = this.#o.store;
    const now = this.#o.clock.now();
    const measure = now - this.#lastLagAt >= (this.#o.lagIntervalMs ?? 5000);
    if (measure) this.#lastLagAt = now;
    for (const s of store.listAddonStandbys()) {
      const row = store.getAddon(s.addon);
      if (!row || row.desired !== 'run' || this.#busy.has(row.name)) continue;
      const primaryUp = this.#o.hub.isConnected(row.agent);
      if (s.role === 'pending') {
        if (primaryUp && row.state === 'up' && row.port !== null) this.#run(row.name, () => this.#readySource(row, s));
      } else if (!primaryUp) {
        if (
          s.role === 'standby' &&
          s.state === 'up' &&
          this.#o.hub.isConnected(s.agent) &&
          this.#downFor(row.agent, now) >= this.#failoverAfterMs
        ) {
          this.#run(row.name, () => this.#automaticFailover(row, s));
        }
      } else if (measure && s.role === 'standby' && row.state === 'up') {
        this.#run(row.name, () => this.#measure(row));
      }
    }
  }

  /** How long `agent` has been disconnected, counted from the coordinator's start at most. */
  #downFor(agent: string, now: number): number {
    const seen = this.#o.store.getAgent(agent)?.lastSeen ?? 0;
    return now - Math.max(seen, this.#startedAt);
  }

  #run(name: string, job: () => Promise<void>): void {
    this.#busy.add(name);
    void job()
      .catch((err: unknown) => this.#logger.warn({ err, addon: name }, 'standby job failed; will try again'))
      .finally(() => this.#busy.delete(name));
  }

  async #readySource(row: AddonRow, s: AddonStandbyRow): Promise<void> {
    await this.#o.runJob(row.agent, { addon: row.name, action: 'standby-source', standbyReplicationPassword: s.replicationPassword });
    this.#o.store.updateAddonStandby(row.name, { role: 'standby', message: 'copying the primary' });
    this.#logger.info({ addon: row.name, primary: row.agent, standby: s.agent }, 'the primary is ready: the standby copies it');
    this.#o.sync.requestSync();
  }

  async #replication(agent: string, name: string): Promise<ReplicationReport> {
    const result = await this.#o.runJob(agent, { addon: name, action: 'replication' });
    return JSON.parse(result.report) as ReplicationReport;
  }

  async #measure(row: AddonRow): Promise<void> {
    const report = await this.#replication(row.agent, row.name);
    const lag = report.standby;
    const now = this.#o.clock.now();
    this.#o.store.updateAddonStandby(row.name, {
      lagBytes: lag ? lag.lagBytes : null,
      lagSeconds: lag ? lag.lagSeconds : null,
      lagAt: now,
    });
    const streaming = lag?.state === 'streaming';
    if (streaming) this.#awaySince.delete(row.name);
    else if (!this.#awaySince.has(row.name)) this.#awaySince.set(row.name, now);
    const s = this.#o.store.getAddonStandby(row.name);
    if (!s) return;
    const decision = syncDecision({
      mode: s.syncMode,
      active: s.syncActive,
      streaming,
      awaySince: this.#awaySince.get(row.name) ?? null,
      now,
      degradeAfterMs: this.#o.syncDegradeAfterMs ?? 10_000,
    });
    if (decision === 'enable') {
      await this.#o.runJob(row.agent, { addon: row.name, action: 'sync-on' });
      // In force only once the primary has it.
      this.#o.store.updateAddonStandby(row.name, { syncActive: true });
      this.#logger.info({ app: row.app, addon: row.name, standby: s.agent }, 'synchronous replication in force');
      this.#o.recordEvent(row.app, `${row.name}: synchronous replication to the standby on ${s.agent} is in force`);
    } else if (decision === 'degrade') {
      const away = Math.round((now - (this.#awaySince.get(row.name) ?? now)) / 1000);
      // Degraded before the primary is told: a failover from now on counts the standby as async.
      this.#o.store.updateAddonStandby(row.name, { syncActive: false });
      this.#logger.warn(
        { app: row.app, addon: row.name, standby: s.agent, away },
        'standby away: synchronous replication degraded to async',
      );
      this.#o.recordEvent(
        row.app,
        `${row.name}: the standby on ${s.agent} has not streamed for ${away} s; degraded to async replication so commits do not wait for it (sync comes back once it streams)`,
        'stderr',
      );
      await this.#o.runJob(row.agent, { addon: row.name, action: 'sync-off' });
    }
  }

  // ---------------------------------------------------------------- failover

  /** Promotes the standby of `row` and makes it the primary; the old primary becomes `oldRole`. */
  async #promoteAndSwap(row: AddonRow, s: AddonStandbyRow, oldRole: 'standby' | 'fenced'): Promise<void> {
    await this.#o.runJob(s.agent, { addon: row.name, action: 'promote' });
    const store = this.#o.store;
    const now = this.#o.clock.now();
    store.transaction(() => {
      store.updateAddon(row.name, {
        agent: s.agent,
        port: s.port,
        state: 'up',
        pid: s.pid,
        restarts: s.restarts,
        since: now,
        message: '',
      });
      store.updateAddonStandby(row.name, {
        agent: row.agent,
        role: oldRole,
        port: row.port,
        state: 'provisioning',
        pid: null,
        restarts: 0,
        since: now,
        message:
          oldRole === 'fenced' ? `fenced: ${row.agent} becomes a standby of ${s.agent} when it is back` : 'following the new primary',
        lagBytes: null,
        lagSeconds: null,
        lagAt: null,
        // The promoted server starts async; sync comes back once the new standby streams.
        syncActive: false,
      });
    });
    this.#awaySince.delete(row.name);
    this.#o.sync.requestSync();
    this.#o.attach(row.name, `Failover ${row.name} to ${s.agent}`);
  }

  async #automaticFailover(row: AddonRow, s: AddonStandbyRow): Promise<void> {
    const down = Math.round(this.#downFor(row.agent, this.#o.clock.now()) / 1000);
    // With sync in force when the primary was lost, the standby confirmed every acknowledged commit.
    const inSync = s.syncMode === 'sync' && s.syncActive;
    this.#logger.warn({ app: row.app, addon: row.name, primary: row.agent, standby: s.agent, down }, 'primary lost: promoting the standby');
    this.#o.recordEvent(
      row.app,
      `${row.name}: ${row.agent}, its primary's agent, has been unreachable for ${down} s; promoting the standby on ${s.agent}`,
      'stderr',
    );
    try {
      await this.#promoteAndSwap(row, s, 'fenced');
    } catch (err) {
      this.#o.recordEvent(
        row.app,
        `${row.name}: the failover to ${s.agent} failed: ${isHangarError(err) ? err.message : String(err)}`,
        'stderr',
      );
      throw err;
    }
    this.#o.recordEvent(
      row.app,
      inSync
        ? `${row.name}: failed over to ${s.agent}, which was in sync: no acknowledged commit is lost. ${row.agent} is fenced and becomes a standby when it is back`
        : `${row.name}: failed over to ${s.agent}${s.syncMode === 'sync' ? ' (degraded to async when the primary was lost)' : ''}; commits the standby had not received are lost. ${row.agent} is fenced and becomes a standby when it is back`,
      'stderr',
    );
  }

  /**
   * A planned failover (switchover) with no data lost: the primary is stopped cleanly and fenced,
   * the standby replays all of its WAL, is promoted, and the old primary follows it. `progress`
   * hears each step.
   *
   * @throws HangarError `BAD_INPUT` for another kind or an add-on without a standby; `CONFLICT` while the standby is not streaming or another failover runs; `NO_AGENTS` when an agent is away.
   */
  async failover(row: AddonRow, progress: (step: string) => void): Promise<void> {
    if (row.kind !== 'postgres') {
      throw new HangarError('BAD_INPUT', `${row.name} is a ${row.kind} add-on; failover is for PostgreSQL add-ons with a standby.`);
    }
    const s = this.#o.store.getAddonStandby(row.name);
    if (!s || row.desired !== 'run') {
      throw new HangarError(
        'BAD_INPUT',
        `${row.name} has no standby to fail over to; add one with \`hangar addons:standby:add ${row.name} -a ${row.app}\`.`,
      );
    }
    if (s.role !== 'standby' || s.state !== 'up') {
      throw new HangarError(
        'CONFLICT',
        `The standby of ${row.name} on ${s.agent} is not ready (${s.role}, ${s.state}); wait until addons:info says it is up.`,
      );
    }
    for (const agent of [row.agent, s.agent]) {
      if (!this.#o.hub.isConnected(agent)) throw new HangarError('NO_AGENTS', `${agent} is not connected; try again once it is back.`);
    }
    // A lag measurement takes a moment: waited for.
    const busyUntil = Date.now() + 15_000;
    while (this.#busy.has(row.name) && Date.now() < busyUntil) await new Promise((r) => setTimeout(r, 100));
    if (this.#busy.has(row.name))
      throw new HangarError('CONFLICT', `${row.name} is busy with another standby job; try again in a few seconds.`);
    this.#busy.add(row.name);
    try {
      const before = await this.#replication(row.agent, row.name);
      if (!before.standby || before.standby.state !== 'streaming') {
        throw new HangarError(
          'CONFLICT',
          `The standby of ${row.name} on ${s.agent} is not streaming from ${row.agent}; nothing was changed.`,
        );
      }
      progress(`the standby on ${s.agent} is ${before.standby.lagBytes} bytes behind`);
      progress(`stopping the primary on ${row.agent} (its connections end; it sends all of its WAL first)`);
      const demoted = await this.#o.runJob(row.agent, { addon: row.name, action: 'demote' });
      const target = parseLsn((JSON.parse(demoted.report) as { lsn: string }).lsn);
      try {
        const deadline = Date.now() + (this.#o.catchUpTimeoutMs ?? 120_000);
        for (;;) {
          const at = await this.#replication(s.agent, row.name);
          if (parseLsn(at.lsn) >= target) break;
          if (Date.now() > deadline) throw new HangarError('ADDON_FAILED', `the standby on ${s.agent} did not catch up with ${row.agent}`);
          await new Promise((r) => setTimeout(r, 200));
        }
        progress(`the standby on ${s.agent} has replayed everything the primary wrote`);
        await this.#promoteAndSwap(row, s, 'standby');
      } catch (err) {
        // Nothing moved: the old primary starts again as the primary.
        await this.#o.runJob(row.agent, { addon: row.name, action: 'undemote' }).catch((e: unknown) => {
          this.#logger.error({ err: e, addon: row.name }, 'could not restart the primary after a failed failover');
        });
        throw new HangarError(
          'ADDON_FAILED',
          `The failover of ${row.name} did not happen (${isHangarError(err) ? err.message : String(err)}); ${row.agent} is the primary again.`,
          { cause: err },
        );
      }
      progress(`${s.agent} is the primary; ${row.agent} follows it as the standby`);
      this.#o.recordEvent(row.app, `${row.name}: planned failover to ${s.agent}, no data lost; ${row.agent} is its standby`);
    } finally {
      this.#busy.delete(row.name);
    }
  }

  /** Lag per standby, for the metrics endpoint. */
  lags(): { app: string; addon: string; agent: string; lagBytes: number; lagSeconds: number }[] {
    const store = this.#o.store;
    return store.listAddonStandbys().flatMap((s) => {
      const row = store.getAddon(s.addon);
      if (!row || row.desired !== 'run' || s.role !== 'standby' || s.lagBytes === null) return [];
      return [{ app: row.app, addon: s.addon, agent: s.agent, lagBytes: s.lagBytes, lagSeconds: s.lagSeconds ?? 0 }];
    });
  }
}
