import type { Logger } from '../../common/logger.js';
import type { LogHub } from './log-hub.js';
import type { IncomingLogLine, LogStore } from './log-store.js';

/** Options of {@link LogIngest}. */
export interface LogIngestOptions {
  store: LogStore;
  hub: LogHub;
  logger: Logger;
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
    } catch (err) {
      // Not acked: the agents keep the lines and send them again.
      this.#logger.error({ err, batches: items.length }, 'could not store log lines');
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
