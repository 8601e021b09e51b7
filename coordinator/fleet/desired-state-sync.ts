import type { Logger } from '../../common/logger.js';
import type { Store } from '../store/store.js';
import type { AgentHub } from './agent-hub.js';
import type { DesiredStateAssembler } from './desired-state.js';

/** Options of {@link DesiredStateSync}. */
export interface DesiredStateSyncOptions {
  store: Store;
  hub: Pick<AgentHub, 'connected' | 'isConnected' | 'send'>;
  assembler: DesiredStateAssembler;
  logger: Logger;
}

/**
 * Longest stretch spent sending desired states before the event loop gets a turn, ms: a count of
 * agents per turn (it was 100) is no bound when each state lists every route of a large fleet.
 */
const SYNC_SLICE_MS = 10;

/**
 * Sends agents their desired state. Level-triggered: any change calls {@link requestSync}, which
 * sends every connected agent its whole desired state under a new generation.
 */
export class DesiredStateSync {
  readonly #o: DesiredStateSyncOptions;
  readonly #logger: Logger;
  #syncQueued = false;
  /** A sync is sending its chunks. */
  #syncing = false;
  #syncAll = false;
  readonly #syncAgents = new Set<string>();
  #lastSyncAt = 0;
  #lastSyncMs = 0;
  #closed = false;

  constructor(options: DesiredStateSyncOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'desired-state' });
  }

  close(): void {
    this.#closed = true;
  }

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
   * for at most {@link SYNC_SLICE_MS} per turn of the event loop (at least one agent) so that
   * heartbeats are handled in between on a large fleet. `done` gets the time spent, ms.
   */
  syncNow(only?: readonly string[], done?: (busyMs: number) => void): void {
    const started = performance.now();
    const generation = this.#o.store.nextGeneration();
    const snapshot = this.#o.assembler.snapshot();
    const targets = only ? only.filter((a) => this.#o.hub.isConnected(a)) : this.#o.hub.connected();
    let busy = performance.now() - started;
    const sendChunk = (from: number) => {
      if (this.#closed) return;
      const t0 = performance.now();
      let next = from;
      try {
        do {
          const agent = targets[next++];
          if (agent !== undefined) this.#o.hub.send(agent, { generation, ...snapshot.forAgent(agent) });
        } while (next < targets.length && performance.now() - t0 < SYNC_SLICE_MS);
      } catch (err) {
        this.#logger.error({ err }, 'failed to send desired state to agents');
      }
      busy += performance.now() - t0;
      if (next < targets.length) setImmediate(() => sendChunk(next));
      else done?.(busy);
    };
    sendChunk(0);
  }
}
