import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/logger.js';
import type { AgentView, PsRow } from '../../common/api-types.js';
import type { AddonSpec, AppRoutes, InstanceSpec, InstanceStatus__Output, Task } from '../../proto/loader.js';
import type { AgentHub, Hello__Output } from './agent-hub.js';
import { freeIndexes, placeInstances } from './scheduler.js';
import { newInstanceRow, type AgentRow, type InstanceRow, type InstanceState, type ReleaseRow, type Store } from '../store/store.js';

/** Options of {@link Fleet}. */
export interface FleetOptions {
  store: Store;
  hub: AgentHub;
  clock: Clock;
  logger: Logger;
  /** Apps are served at APP.<domain>. */
  domain: string;
  /** Seconds between SIGTERM and SIGKILL when an instance stops. Default 30, like gunicorn's. */
  graceSeconds: number;
  /** Longest wait for every router to drop a draining instance before it is stopped anyway, ms. */
  drainTimeoutMs: number;
  /** An agent silent this long is shown `down`, ms. */
  agentDownAfterMs: number;
  /** The one-shot tasks (build + release phase) an agent must run now. */
  tasksFor(agent: string): Task[];
  /**
   * True while a rollout places the app's instances itself (batch by batch): formation changes
   * then only record the new counts, which the rollout picks up. Default: never.
   */
  holdsPlacement?: (app: string) => boolean;
  /** The add-on servers an agent must run. Default: none. */
  addonsFor?(agent: string): AddonSpec[];
  /** The agent's host usage from its last metrics report, or null. */
  usageOf?(agent: string): { cpuPct: number; memoryUsedMb: number } | null;
}

const INSTANCE_STATES: readonly InstanceState[] = ['starting', 'up', 'crashed', 'stopping'];

/** Agents sent their desired state per turn of the event loop. */
const SYNC_CHUNK = 100;

/** `shop:web.1:v3` */
export function instanceKey(app: string, type: string, idx: number, release: number): string {
  return `${app}:${type}.${idx}:v${release}`;
}

/** The process types a release runs (every Procfile entry but `release`). */
export function runnableTypes(release: ReleaseRow): string[] {
  return Object.keys(release.procfile).filter((t) => t !== 'release');
}

/**
 * The fleet: agents, where instances are placed, and the desired state each agent is sent.
 * Level-triggered: any change calls {@link requestSync}, which sends every connected agent its
 * whole desired state under a new generation.
 */
export class Fleet {
  readonly #o: FleetOptions;
  readonly #logger: Logger;
  #syncQueued = false;
  /** A sync is sending its chunks. */
  #syncing = false;
  #syncAll = false;
  readonly #syncAgents = new Set<string>();
  #lastSyncAt = 0;
  #lastSyncMs = 0;
  #closed = false;
  /** Agents are not judged down before the coordinator has run for the liveness window. */
  readonly #startedAt: number;
  #lastLostCheck = -Infinity;
  #lastLostWarning = '';

  constructor(options: FleetOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'fleet' });
    this.#startedAt = options.clock.now();
  }

  close(): void {
    this.#closed = true;
  }

  /** The app's default domain. */
  domainOf(app: string): string {
    return `${app}.${this.#o.domain}`;
  }

  // ---------------------------------------------------------------- agent events

  onHello(agent: string, hello: Hello__Output): void {
    const now = this.#o.clock.now();
    const existing = this.#o.store.getAgent(agent);
    this.#o.store.upsertAgent({
      name: agent,
      address: hello.advertiseAddress || '127.0.0.1',
      routerPort: hello.routerPort,
      cpus: hello.capacity?.cpus ?? 1,
      memoryMb: Number(hello.capacity?.memoryMb ?? 0),
      maxInstances: hello.capacity?.maxInstances || 100,
      version: hello.version,
      lastSeen: now,
      createdAt: existing?.createdAt ?? now,
    });
    this.applyStatuses(agent, hello.instances);
    // The newcomer needs its state now; the others only if its statuses changed routes (above).
    this.requestSync(agent);
  }

  onHeartbeat(agent: string, statuses: InstanceStatus__Output[]): void {
    this.#o.store.touchAgent(agent, this.#o.clock.now());
    this.applyStatuses(agent, statuses);
  }

  /** Records instance states an agent reports; syncs routes when a web instance's health changed. */
  applyStatuses(agent: string, statuses: readonly InstanceStatus__Output[]): void {
    let routesChanged = false;
    this.#o.store.transaction(() => {
      for (const s of statuses) {
        const state = INSTANCE_STATES.includes(s.state as InstanceState) ? (s.state as InstanceState) : 'starting';
        const row = this.#o.store.getInstance(s.key);
        if (!row || row.agent !== agent) continue;
        const pid = s.pid || null;
        const port = s.port || null;
        const since = Number(s.since) || row.since;
        // Heartbeats repeat what is known: only a change is written.
        if (
          row.state === state &&
          row.pid === pid &&
          row.port === port &&
          row.restarts === s.restarts &&
          row.since === since &&
          row.message === s.message &&
          row.logTail === s.logTail
        ) {
          continue;
        }
        this.#o.store.updateInstanceStatus(s.key, {
          state,
          pid: s.pid || null,
          port: s.port || null,
          restarts: s.restarts,
          since: Number(s.since) || this.#o.clock.now(),
          message: s.message,
          logTail: s.logTail,
        });
        if (row.type === 'web' && (row.state === 'up') !== (state === 'up')) routesChanged = true;
        if (row.type === 'web' && state === 'up' && row.port !== (s.port || null)) routesChanged = true;
      }
    });
    if (routesChanged) this.requestSync();
  }

  // ---------------------------------------------------------------- placement

  /**
   * Makes the instances of the app's current release match its formation: places missing ones
   * (spread across agents) and drains extra ones (highest index first). Throws NO_CAPACITY or
   * NO_AGENTS when something cannot be placed (nothing is changed then).
   */
  reconcileFormation(app: string): void {
    const store = this.#o.store;
    const appRow = store.requireApp(app);
    if (appRow.currentRelease === null) return;
    const release = store.getRelease(app, appRow.currentRelease);
    if (!release) return;
    if (this.#o.holdsPlacement?.(app) === true) return;
    const formation = store.getFormation(app);
    store.transaction(() => {
      const all = store.listInstances();
      const running = all.filter((i) => i.app === app && i.release === release.version && i.desired === 'run');
      const toAdd: { type: string; idx: number }[] = [];
      const toDrain: InstanceRow[] = [];
      for (const type of runnableTypes(release)) {
        const want = formation[type] ?? 0;
        const have = running.filter((i) => i.type === type).sort((a, b) => a.idx - b.idx);
        if (have.length < want) {
          // Rows still draining keep their keys until every router dropped them.
          const used = all.filter((i) => i.app === app && i.release === release.version && i.type === type).map((i) => i.idx);
          for (const idx of freeIndexes(used, want - have.length)) toAdd.push({ type, idx });
        } else if (have.length > want) {
          toDrain.push(...have.slice(want));
        }
      }
      this.place(app, release.version, toAdd);
      if (toDrain.length > 0) this.drain(toDrain);
    });
    this.requestSync();
  }

  /**
   * Places new instances of a release (spread across agents). Throws NO_CAPACITY or NO_AGENTS
   * when something cannot be placed (nothing is changed then).
   */
  place(app: string, release: number, toAdd: readonly { type: string; idx: number }[]): void {
    if (toAdd.length === 0) return;
    const store = this.#o.store;
    const now = this.#o.clock.now();
    store.transaction(() => {
      const all = store.listInstances();
      const agents = store.listAgents().map((a) => ({
        name: a.name,
        up: this.isUp(a.name),
        maxInstances: a.maxInstances,
        load: all.filter((i) => i.agent === a.name).length,
      }));
      const placed = placeInstances(
        agents,
        all.map((i) => ({ agent: i.agent, app: i.app, type: i.type })),
        toAdd.map((t) => ({ app, type: t.type })),
      );
      toAdd.forEach((t, n) => {
        store.insertInstance(
          newInstanceRow(
            { key: instanceKey(app, t.type, t.idx, release), app, type: t.type, idx: t.idx, release, agent: placed[n] as string },
            now,
          ),
        );
      });
    });
    this.requestSync();
  }

  /**
   * Takes instances out of every router first; they are stopped once every connected agent has
   * applied the routes without them (or after the drain timeout).
   */
  drain(instances: readonly InstanceRow[]): void {
    if (instances.length === 0) return;
    const generation = this.#o.store.nextGeneration();
    const now = this.#o.clock.now();
    for (const i of instances) this.#o.store.markDraining(i.key, generation, now);
    this.requestSync();
  }

  /** Removes instances from desired state at once: their agents stop them. */
  remove(instances: readonly InstanceRow[]): void {
    for (const i of instances) this.#o.store.deleteInstance(i.key);
    if (instances.length > 0) this.requestSync();
  }

  /** Periodic work: finish drains whose routes every agent applied; move instances off down agents. */
  tick(): void {
    const now = this.#o.clock.now();
    if (now - this.#lastLostCheck >= 1000) {
      this.#lastLostCheck = now;
      this.#replaceLost(now);
    }
    const draining = this.#o.store.listDraining();
    if (draining.length === 0) return;
    // Every router that may still have the instance must have dropped it: the connected agents,
    // and those seen lately that are reconnecting (e.g. after a coordinator restart).
    const routers = new Set(this.#o.hub.connected());
    for (const a of this.#o.store.listAgents()) if (now - a.lastSeen < this.#o.agentDownAfterMs) routers.add(a.name);
    const finished = draining.filter((i) => {
      const gen = i.drainGeneration ?? 0;
      const allApplied = [...routers].every((a) => this.#o.hub.isConnected(a) && (this.#o.hub.appliedGeneration(a) ?? 0) >= gen);
      return allApplied || now - (i.drainStarted ?? now) > this.#o.drainTimeoutMs;
    });
    this.remove(finished);
  }

  isUp(agent: string): boolean {
    return this.#o.hub.isConnected(agent);
  }

  /** How long the agent has been down (0 when up), counted from the coordinator's start at most. */
  #downFor(a: AgentRow, now: number): number {
    if (this.isUp(a.name) && now - a.lastSeen < this.#o.agentDownAfterMs) return 0;
    return now - Math.max(a.lastSeen, this.#startedAt);
  }

  /**
   * Instances of agents down for `agentDownAfterMs` are placed on agents that are up, under the
   * same names (web.1 stays web.1). The down agent, when it comes back, no longer finds them in its
   * desired state and stops its copies; draining ones are simply forgotten.
   */
  #replaceLost(now: number): void {
    const store = this.#o.store;
    const agents = store.listAgents();
    const lost = new Set(agents.filter((a) => this.#downFor(a, now) >= this.#o.agentDownAfterMs).map((a) => a.name));
    if (lost.size === 0) return;
    const all = store.listInstances();
    const stranded = all.filter((i) => lost.has(i.agent));
    if (stranded.length === 0) return;
    const kept = all.filter((i) => !lost.has(i.agent));
    const placed = kept.map((i) => ({ agent: i.agent, app: i.app, type: i.type }));
    const moves: { instance: InstanceRow; to: string }[] = [];
    const unplaced: string[] = [];
    for (const i of stranded) {
      if (i.desired !== 'run') continue;
      const candidates = agents.map((a) => ({
        name: a.name,
        up: !lost.has(a.name) && this.isUp(a.name),
        maxInstances: a.maxInstances,
        load: placed.filter((p) => p.agent === a.name).length,
      }));
      try {
        const [to] = placeInstances(candidates, placed, [{ app: i.app, type: i.type }]);
        if (!to) throw new Error('no agent');
        placed.push({ agent: to, app: i.app, type: i.type });
        moves.push({ instance: i, to });
      } catch {
        unplaced.push(`${i.app} ${i.type}.${i.idx}`);
      }
    }
    const forgotten = stranded.filter((i) => i.desired !== 'run');
    if (moves.length === 0 && forgotten.length === 0) {
      const warning = unplaced.join(', ');
      if (warning !== this.#lastLostWarning) {
        this.#lastLostWarning = warning;
        this.#logger.warn({ instances: unplaced }, 'instances of a down agent cannot be placed elsewhere (no agent up with room)');
      }
      return;
    }
    store.transaction(() => {
      for (const m of moves) store.moveInstance(m.instance.key, m.to, now, `moved from ${m.instance.agent}, which is down`);
      for (const i of forgotten) store.deleteInstance(i.key);
    });
    for (const m of moves) {
      this.#logger.info({ instance: m.instance.key, from: m.instance.agent, to: m.to }, 'agent down: instance placed on another agent');
    }
    this.requestSync();
  }

  // ---------------------------------------------------------------- desired state

  /**
   * Coalesces changes: one snapshot per agent per turn of the event loop. `agent`: only that one
   * needs its state (a hello). Syncs are spaced by twice the time the last one took, so that a
   * storm of changes on a large fleet (a thousand agents reconnecting) is batched and never holds
   * the event loop more than a third of the time; on small fleets that is about a millisecond.
   */
  requestSync(agent?: string): void {
    if (this.#closed) return;
    if (agent === undefined) this.#syncAll = true;
    else this.#syncAgents.add(agent);
    this.#scheduleSync();
  }

  #scheduleSync(): void {
    if (this.#syncQueued || this.#syncing || this.#closed) return;
    this.#syncQueued = true;
    const run = () => {
      this.#syncQueued = false;
      if (this.#closed) return;
      const all = this.#syncAll;
      const only = [...this.#syncAgents];
      this.#syncAll = false;
      this.#syncAgents.clear();
      this.#syncing = true;
      const finish = (busyMs: number) => {
        this.#syncing = false;
        this.#lastSyncAt = performance.now();
        this.#lastSyncMs = busyMs;
        if (this.#syncAll || this.#syncAgents.size > 0) this.#scheduleSync();
      };
      try {
        this.syncNow(all ? undefined : only, finish);
      } catch (err) {
        this.#logger.error({ err }, 'failed to send desired state to agents');
        finish(0);
      }
    };
    const wait = this.#lastSyncAt + 2 * this.#lastSyncMs - performance.now();
    if (wait >= 1) setTimeout(run, wait).unref();
    else setImmediate(run);
  }

  /**
   * Sends connected agents (all, or the ones named) their desired state under a new generation,
   * {@link SYNC_CHUNK} agents per turn of the event loop so that heartbeats are handled in between
   * on a large fleet. `done` gets the time spent, ms.
   */
  syncNow(only?: readonly string[], done?: (busyMs: number) => void): void {
    const started = performance.now();
    const store = this.#o.store;
    const generation = store.nextGeneration();
    const instances = store.listInstances();
    const releases = new Map<string, ReleaseRow | null>();
    const releaseOf = (app: string, version: number): ReleaseRow | null => {
      const k = `${app}:${version}`;
      if (!releases.has(k)) releases.set(k, store.getRelease(app, version));
      return releases.get(k) ?? null;
    };
    const byAgent = new Map<string, InstanceRow[]>();
    for (const i of instances) {
      const list = byAgent.get(i.agent);
      if (list) list.push(i);
      else byAgent.set(i.agent, [i]);
    }
    const routes = this.#routes(instances);
    const targets = only ? only.filter((a) => this.#o.hub.isConnected(a)) : this.#o.hub.connected();
    let busy = performance.now() - started;
    const sendChunk = (from: number) => {
      if (this.#closed) return;
      const t0 = performance.now();
      try {
        for (const agent of targets.slice(from, from + SYNC_CHUNK)) {
          const specs: InstanceSpec[] = [];
          for (const i of byAgent.get(agent) ?? []) {
            const release = releaseOf(i.app, i.release);
            if (!release) continue;
            specs.push(this.#spec(i, release));
          }
          this.#o.hub.send(agent, {
            generation,
            instances: specs,
            routes,
            tasks: this.#o.tasksFor(agent),
            addons: this.#o.addonsFor?.(agent) ?? [],
          });
        }
      } catch (err) {
        this.#logger.error({ err }, 'failed to send desired state to agents');
      }
      busy += performance.now() - t0;
      if (from + SYNC_CHUNK < targets.length) setImmediate(() => sendChunk(from + SYNC_CHUNK));
      else done?.(busy);
    };
    sendChunk(0);
  }

  #spec(i: InstanceRow, release: ReleaseRow): InstanceSpec {
    const healthPath = healthPathOf(release.appJson);
    const health = healthCheckOf(release.appJson);
    return {
      key: i.key,
      app: i.app,
      type: i.type,
      index: i.idx,
      release: i.release,
      artifactSha256: release.artifactSha256,
      command: release.procfile[i.type] ?? '',
      env: {
        ...release.config,
        HANGAR_APP: i.app,
        HANGAR_RELEASE: `v${i.release}`,
        HANGAR_INSTANCE: `${i.type}.${i.idx}`,
        PYTHONUNBUFFERED: release.config.PYTHONUNBUFFERED ?? '1',
      },
      healthPath: i.type === 'web' ? healthPath : '',
      domain: this.domainOf(i.app),
      graceSeconds: this.#o.graceSeconds,
      restartNonce: i.restartNonce,
      healthTimeoutMs: i.type === 'web' ? health.timeoutMs : 0,
      healthChecksInARow: i.type === 'web' ? health.inARow : 0,
    };
  }

  #routes(instances: readonly InstanceRow[]): AppRoutes[] {
    const agents = new Map(this.#o.store.listAgents().map((a) => [a.name, a]));
    const web = new Map<string, InstanceRow[]>();
    for (const i of instances) {
      if (i.type !== 'web' || i.desired !== 'run' || i.state !== 'up' || !i.port) continue;
      const list = web.get(i.app);
      if (list) list.push(i);
      else web.set(i.app, [i]);
    }
    return this.#o.store.listApps().map((app) => ({
      app: app.name,
      domains: [this.domainOf(app.name)],
      backends: (web.get(app.name) ?? []).flatMap((i) => {
        const agent = agents.get(i.agent);
        return agent ? [{ instanceKey: i.key, host: agent.address, port: i.port ?? 0 }] : [];
      }),
    }));
  }

  // ---------------------------------------------------------------- views

  agentViews(): AgentView[] {
    const instances = this.#o.store.listInstances();
    const now = this.#o.clock.now();
    return this.#o.store.listAgents().map((a) => ({
      name: a.name,
      state: this.isUp(a.name) && now - a.lastSeen < this.#o.agentDownAfterMs ? 'up' : 'down',
      address: a.address,
      routerPort: a.routerPort,
      instances: instances.filter((i) => i.agent === a.name).length,
      capacity: { cpus: a.cpus, memoryMb: a.memoryMb, maxInstances: a.maxInstances },
      lastSeen: new Date(a.lastSeen).toISOString(),
      version: a.version,
      cpuPct: this.#o.usageOf?.(a.name)?.cpuPct ?? null,
      memoryUsedMb: this.#o.usageOf?.(a.name)?.memoryUsedMb ?? null,
    }));
  }

  psRows(app: string): PsRow[] {
    return this.#o.store.listInstances({ app }).map((i) => ({
      id: `${i.type}.${i.idx}`,
      type: i.type,
      release: `v${i.release}`,
      agent: i.agent,
      state: i.desired === 'drain' ? 'stopping' : i.state,
      pid: i.pid,
      port: i.port,
      restarts: i.restarts,
      since: new Date(i.since).toISOString(),
    }));
  }
}

/** The health-check path of a release: app.json `healthchecks.web.path`, else `/`. */
export function healthPathOf(appJson: unknown): string {
  if (appJson && typeof appJson === 'object') {
    const hc = (appJson as { healthchecks?: { web?: { path?: unknown } } }).healthchecks;
    const path = hc?.web?.path;
    if (typeof path === 'string' && path.startsWith('/')) return path;
  }
  return '/';
}

/** Default number of passing health checks in a row that make a web instance healthy. */
export const DEFAULT_HEALTH_CHECKS_IN_A_ROW = 2;

/**
 * Timing of web health checks from app.json `healthchecks.web`: `timeout` (seconds one check may
 * take; default 2) and `attempts` (passing checks in a row needed; default
 * {@link DEFAULT_HEALTH_CHECKS_IN_A_ROW}). Dokku's list form was reduced to one check on upload.
 */
export function healthCheckOf(appJson: unknown): { timeoutMs: number; inARow: number } {
  let timeoutMs = 2000;
  let inARow = DEFAULT_HEALTH_CHECKS_IN_A_ROW;
  if (appJson && typeof appJson === 'object') {
    const web = (appJson as { healthchecks?: { web?: { timeout?: unknown; attempts?: unknown } } }).healthchecks?.web;
    if (typeof web?.timeout === 'number' && web.timeout > 0) timeoutMs = Math.min(600_000, Math.round(web.timeout * 1000));
    if (typeof web?.attempts === 'number' && Number.isInteger(web.attempts) && web.attempts >= 1) inARow = Math.min(1000, web.attempts);
  }
  return { timeoutMs, inARow };
}
