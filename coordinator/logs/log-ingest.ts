import type { Logger } from '../../common/logger.js';
import type { LogHub } from './log-hub.js';
import type { IncomingLogLine, LogStorage } from './log-store.js';

/** Options of {@link LogIngest}. */
export interface LogIngestOptions {
  store: LogStorage;
  hub: LogHub;
  logger: Logger;
  /** For the rate of the "could not store" error. Default `Date.now`. */
  now?: () => number;
  /** At most one "could not store" error per this many ms while storing keeps failing. Default 30 s. */
  failureLogIntervalMs?: number;
}

interface Pending {
  agent: string;
  epoch: string;
  lines: readonly IncomingLogLine[];
  /** The seq to ack once stored, or null when storing failed. */
  reply: (acked: number | null) => void;
}

/**
 * The coordinator's log ingestion: batches that arrive in the same tick (from one agent or many)
 * are stored in one transaction, then published to live subscribers and acked. One writer, few
 * commits, and an ack is only ever sent for lines that are committed.
 */
export class LogIngest {
  readonly #o: LogIngestOptions;
  readonly #logger: Logger;
  #queue: Pending[] = [];
  /** Failed flushes since the last one that stored, and when the last of them was logged. */
  #failures = 0;
  #failureLoggedAt = -Infinity;
  #scheduled = false;
  #closed = false;

  constructor(options: LogIngestOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'log-ingest' });
  }

  /** Queues a batch; `reply` gets the seq to ack after the commit (null: not stored). */
  submit(agent: string, epoch: string, lines: readonly IncomingLogLine[], reply: (acked: number | null) => void): void {
    if (this.#closed) return;
    this.#queue.push({ agent, epoch, lines, reply });
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.#flush());
  }

  /** Stores nothing more (queued batches stay unacked: their agents send them again); idempotent. */
  close(): void {
    this.#closed = true;
    this.#queue = [];
  }

  #flush(): void {
    this.#scheduled = false;
    if (this.#closed) return;
    const items = this.#queue;
    this.#queue = [];
    if (items.length === 0) return;
    let acks: (number | null)[];
    try {
      const results = this.#o.store.ingestMany(items);
      for (const r of results) this.#o.hub.publish(r.inserted);
      acks = results.map((r) => r.acked);
      if (this.#failures > 0) this.#logger.info({ failures: this.#failures }, 'storing log lines again');
      this.#failures = 0;
      this.#failureLoggedAt = -Infinity;
    } catch (err) {
      // Not acked: the agents keep the lines and send them again (every few hundred ms while the disk
      // stays full), so the error is said once per interval with a count, not on every attempt.
      this.#failures++;
      const now = (this.#o.now ?? Date.now)();
      if (now - this.#failureLoggedAt >= (this.#o.failureLogIntervalMs ?? 30_000)) {
        this.#failureLoggedAt = now;
        const full = (err as { code?: unknown }).code === 'SQLITE_FULL';
        this.#logger.error(
          { err, batches: items.length, failures: this.#failures },
          full ? "could not store log lines: the coordinator's disk is full; free space in its data dir" : 'could not store log lines',
        );
      }
      acks = items.map(() => null);
    }
    items.forEach((item, i) => {
      try {
        item.reply(acks[i] ?? null);
      } catch (err) {
        this.#logger.warn({ err, agent: item.agent }, 'could not ack log lines');
      }
    });
  }
}
