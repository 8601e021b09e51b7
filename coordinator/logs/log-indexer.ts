import { Worker } from 'node:worker_threads';
import type { Logger } from '../../common/logger.js';
import type { LogSearchStep } from './log-search.js';

/** What the worker is started with. */
export interface LogIndexerWorkerData {
  sourcePath: string;
  path: string;
  batchRows: number;
  idleMs: number;
  nice: boolean;
}

/** What the worker tells the main thread. */
export type LogIndexerMessage = ({ type: 'step' } & LogSearchStep) | { type: 'error'; code: string; message: string };

/** Options of {@link LogIndexer}. */
export interface LogIndexerOptions {
  /** The coordinator's SQLite file. */
  sourcePath: string;
  /** The grep index's file (see LogStore's `searchPath`). */
  path: string;
  logger: Logger;
  /** Lines per index transaction. Default 2000 (a few tens of ms of work). */
  batchRows?: number;
  /** Pause when every line is indexed, ms. Default 200. */
  idleMs?: number;
  /** Runs the worker thread at the lowest CPU priority (nice 19). Default true. */
  nice?: boolean;
  /** At most one "could not index" warning per this many ms. Default 30 s. */
  failureLogIntervalMs?: number;
  /** For that rate. Default `Date.now`. */
  now?: () => number;
}

/**
 * Keeps the grep index filled, in a worker thread (log-search-worker.ts): ingestion stores lines
 * and moves on; the index follows within a few hundred ms, and searches scan what it has not
 * reached yet. A failing index (a full disk) is a warning said once per interval; it costs
 * searches speed, never lines.
 */
export class LogIndexer {
  readonly #o: LogIndexerOptions;
  readonly #logger: Logger;
  #worker: Worker | null = null;
  #exited: Promise<void> = Promise.resolve();
  #indexedTo = -1;
  #failures = 0;
  #failureLoggedAt = -Infinity;
  #closed = false;
  readonly #waiters: { id: number; resolve: () => void }[] = [];

  constructor(options: LogIndexerOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'log-indexer' });
  }

  /** Starts the worker; idempotent, and a closed indexer stays closed. */
  start(): void {
    if (this.#worker || this.#closed) return;
    const data: LogIndexerWorkerData = {
      sourcePath: this.#o.sourcePath,
      path: this.#o.path,
      batchRows: this.#o.batchRows ?? 2000,
      idleMs: this.#o.idleMs ?? 200,
      nice: this.#o.nice ?? true,
    };
    const worker = new Worker(new URL('./log-search-worker.js', import.meta.url), { workerData: data });
    worker.on('message', (m: LogIndexerMessage) => this.#onMessage(m));
    worker.on('error', (err) => this.#logger.error({ err }, 'the log index worker failed; --grep scans the lines instead'));
    this.#exited = new Promise((resolve) => worker.once('exit', () => resolve()));
    this.#worker = worker;
  }

  /** Highest line id the index covers, as last reported (-1 before the first step). */
  get indexedTo(): number {
    return this.#indexedTo;
  }

  /** Resolves once the index covers line `id` (tests, benchmarks), or the indexer closed. */
  reached(id: number): Promise<void> {
    if (this.#indexedTo >= id || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ id, resolve }));
  }

  /** Stops the worker after its current step; idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const w of this.#waiters.splice(0)) w.resolve();
    this.#worker?.postMessage('stop');
    await this.#exited;
  }

  #onMessage(m: LogIndexerMessage): void {
    if (m.type === 'step') {
      if (this.#failures > 0) this.#logger.info({ failures: this.#failures }, 'indexing log lines again');
      this.#failures = 0;
      this.#failureLoggedAt = -Infinity;
      this.#indexedTo = m.indexedTo;
      for (let i = this.#waiters.length - 1; i >= 0; i--) {
        const w = this.#waiters[i];
        if (w && w.id <= m.indexedTo) {
          this.#waiters.splice(i, 1);
          w.resolve();
        }
      }
      return;
    }
    this.#failures++;
    const now = (this.#o.now ?? Date.now)();
    if (now - this.#failureLoggedAt < (this.#o.failureLogIntervalMs ?? 30_000)) return;
    this.#failureLoggedAt = now;
    const full = m.code === 'SQLITE_FULL';
    this.#logger.warn(
      { code: m.code, failures: this.#failures },
      full
        ? "could not index log lines for --grep: the coordinator's disk is full; searches scan instead until space is freed"
        : `could not index log lines for --grep (${m.message}); searches scan instead`,
    );
  }
}
