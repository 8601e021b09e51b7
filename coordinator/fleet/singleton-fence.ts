/**
 * Never two copies of a singleton process type (a `clock`, Celery `beat`) at once, fleet-wide.
 * The rows of the store say what the coordinator *wants*; this says what agents last *reported*
 * running (hello, heartbeats, stop events), so a new copy starts only once no agent runs one:
 * after the old copy's stop finished, or, for an agent out of touch, once its singleton lease
 * (plus the type's stop timeout) has passed since the coordinator last heard from it — by then
 * that agent has stopped its copy on its own.
 */
import { processSettingsOf } from '../../common/app-json.js';
import type { Clock } from '../../common/clock.js';
import { instanceName, parseInstanceKey } from '../../common/vocabulary.js';
import type { AgentRow, ReleaseRow } from '../store/store.js';

/** Default of `hangar agent --singleton-lease`, ms. */
export const DEFAULT_SINGLETON_LEASE_MS = 30_000;

/** Slack on top of an out-of-touch agent's lease and stop timeout (its SIGKILL, clock rates), ms. */
const LEASE_MARGIN_MS = 2000;

/** Options of {@link SingletonFence}. */
export interface SingletonFenceOptions {
  /** The agents the coordinator knows (name, last seen, lease). */
  agents: () => readonly AgentRow[];
  /** True while the agent's stream is open. */
  isConnected: (agent: string) => boolean;
  /** Stop timeout of types whose app.json sets none, s (the coordinator's `graceSeconds`). */
  graceSeconds: number;
  clock: Clock;
}

/** What agents last reported running, and whether a singleton may start; see the module comment. */
export class SingletonFence {
  readonly #o: SingletonFenceOptions;
  /** Instance keys each agent last reported running (stopping ones included). Absent: not heard since start. */
  readonly #running = new Map<string, Set<string>>();

  constructor(options: SingletonFenceOptions) {
    this.#o = options;
  }

  /** The whole list of what runs on `agent` (hello, heartbeat). */
  onReport(agent: string, keys: Iterable<string>): void {
    this.#running.set(agent, new Set(keys));
  }

  /** One instance event: a stopped instance no longer runs there; any other event means it does. */
  onEvent(agent: string, key: string, kind: string): void {
    const running = this.#running.get(agent);
    if (!running || key === '') return;
    if (kind === 'stopped') running.delete(key);
    else if (kind !== 'health_failed') running.add(key);
  }

  /** Forgets an agent removed from the fleet. */
  forget(agent: string): void {
    this.#running.delete(agent);
  }

  /**
   * Why a copy of `release`'s `type` may not start now (a sentence), or null when it may (always
   * for a type that is not a singleton). `except` names an agent not to wait for.
   */
  blockerFor(release: Pick<ReleaseRow, 'app' | 'appJson'>, type: string, options: { except?: string } = {}): string | null {
    const settings = processSettingsOf(release.appJson, type);
    if (!settings.singleton) return null;
    return this.blocker(release.app, type, settings.stopTimeoutS ?? this.#o.graceSeconds, options);
  }

  /**
   * Why a copy of `app`'s `type` may not start now (a sentence), or null when it may. `except`
   * names an agent not to wait for.
   */
  blocker(app: string, type: string, stopTimeoutS: number, options: { except?: string } = {}): string | null {
    const now = this.#o.clock.now();
    for (const agent of this.#o.agents()) {
      if (agent.name === options.except) continue;
      const reported = this.#running.get(agent.name);
      const copies = reported ? [...reported].filter((k) => isOf(k, app, type)) : null;
      if (this.#o.isConnected(agent.name)) {
        if (copies === null) return `waiting for ${agent.name} to report what it runs`;
        if (copies.length > 0) return `waiting for ${names(copies)} on ${agent.name} to stop`;
        continue;
      }
      if (copies !== null && copies.length === 0) continue;
      const until = agent.lastSeen + agent.singletonLeaseMs + stopTimeoutS * 1000 + LEASE_MARGIN_MS;
      if (now < until) {
        const what = copies === null ? `any copy ${agent.name} may run` : names(copies);
        return `${agent.name} is out of touch: waiting ${Math.ceil((until - now) / 1000)} s more for its lease to stop ${what}`;
      }
    }
    return null;
  }
}

function isOf(key: string, app: string, type: string): boolean {
  const id = parseInstanceKey(key);
  return id !== null && id.app === app && id.type === type;
}

function names(keys: readonly string[]): string {
  return keys
    .map((k) => {
      const id = parseInstanceKey(k);
      return id ? `${instanceName(id)} (v${id.release})` : k;
    })
    .join(', ');
}
