import type { Clock, ClockTimer } from '../../common/clock.js';
import type { Logger } from '../../common/logger.js';
import type { LogBatch } from '../../proto/loader.js';
import { LogSpool } from './log-spool.js';
import { LogTailer, type TailSpec } from './log-tailer.js';

/** Options of {@link LogShipper}. */
export interface LogShipperOptions {
  /** Directory of the spool. */
  dir: string;
  /** Sends a batch on the coordinator stream; false when not connected. */
  send: (batch: LogBatch) => boolean;
  /** Largest spool on disk, bytes; the oldest lines are dropped beyond it. Default 256 MiB. */
  spoolBytes?: number;
  /** Largest batch, bytes of text. Default 256 KiB. */
  batchBytes?: number;
  /** Most lines sent but not yet acked. Default 50 000. */
  maxInFlightLines?: number;
  /**
   * New lines wait this long before they are sent, so that the lines of many files written at
   * about the same time go in one batch (and one ack) rather than one message each, ms. Acks and
   * reconnects send at once. Default 200.
   */
  batchDelayMs?: number;
  /** Tailer poll interval, ms. Default 100. */
  pollMs?: number;
  /** Once this many more bytes of a file are shipped and acked, their disk space is freed (see LogTailer), bytes. Default 64 MiB. */
  rotateBytes?: number;
  clock: Clock;
  logger: Logger;
}

/** A line the agent itself makes (router access, lifecycle, task output). */
export interface DirectLine {
  app: string;
  source: string;
  stream?: 'stdout' | 'stderr';
  line: string;
  ts?: number;
}

/**
 * Ships the agent's log lines to the coordinator: tails files and takes direct lines into the
 * spool (where they get their seq), sends them in bounded batches while connected, resends what
 * was not acked after a reconnect, and lets the spool drop what the coordinator acked.
 */
export class LogShipper {
  readonly #o: LogShipperOptions;
  readonly #logger: Logger;
  readonly #spool: LogSpool;
  readonly #tailer: LogTailer;
  #connected = false;
  readonly #groups = new Map<string, Set<string>>();
  /** Next seq to send on this connection. */
  #cursor = 1;
  #pumpScheduled = false;
  #batchTimer: ClockTimer | null = null;
  readonly #batchDelayMs: number;
  #state: 'idle' | 'running' | 'closed' = 'idle';

  constructor(options: LogShipperOptions) {
    this.#o = options;
    this.#batchDelayMs = options.batchDelayMs ?? 200;
    this.#logger = options.logger.child({ component: 'log-shipper' });
    this.#spool = new LogSpool({
      dir: options.dir,
      ...(options.spoolBytes !== undefined ? { maxBytes: options.spoolBytes } : {}),
      clock: options.clock,
      logger: options.logger,
      onDropped: (app, count) =>
        // After the drop, so it is numbered after what is still held.
        queueMicrotask(() =>
          this.write({
            app,
            source: 'hangar',
            stream: 'stderr',
            line: `Dropped ${count} log lines: the agent's log spool was full while the coordinator was unreachable or slow`,
          }),
        ),
    });
    this.#tailer = new LogTailer({
      spool: this.#spool,
      // The tailer holds what watchers announce for the batch delay, so that lines many files
      // write in that time are read in one turn: those have waited, and go at once.
      dirtyDelayMs: this.#batchDelayMs,
      onAppended: (how) => (how === 'watched' ? this.#schedulePump() : this.#scheduleBatch()),
      ...(options.pollMs !== undefined ? { pollMs: options.pollMs } : {}),
      ...(options.rotateBytes !== undefined ? { rotateBytes: options.rotateBytes } : {}),
      clock: options.clock,
      logger: options.logger,
    });
  }

  /** Identity of the spool (sent in Hello). */
  get epoch(): string {
    return this.#spool.epoch;
  }

  /** Highest seq the coordinator acked. */
  get acked(): number {
    return this.#spool.acked;
  }

  /** Seq of the newest line. */
  get lastSeq(): number {
    return this.#spool.lastSeq;
  }

  /** Opens the spool and resumes following the files it knows (as retiring until wanted again). */
  start(): void {
    if (this.#state !== 'idle') return;
    this.#spool.open();
    this.#state = 'running';
    for (const f of this.#spool.files()) {
      this.#tailer.tail({ path: f.path, app: f.app, source: f.source, stream: f.stream });
      this.#tailer.retire(f.path);
    }
    this.#tailer.start();
  }

  /**
   * Follows a file (add-on logs, anything that writes lines to a file) until {@link untail}.
   * Lines get `app`, `source` (e.g. `redis`) and `stream`.
   */
  tail(spec: TailSpec): void {
    if (this.#state !== 'running') return;
    this.#tailer.tail(spec);
  }

  /** Stops following a file once everything in it has been read. */
  untail(path: string): void {
    if (this.#state !== 'running') return;
    this.#tailer.retire(path);
  }

  /**
   * Makes `specs` the files of `group` (e.g. `instances`): new ones are followed, the group's
   * others are let go once read to their end. Files of other groups or of {@link tail} are untouched.
   */
  setTails(group: string, specs: readonly TailSpec[]): void {
    if (this.#state !== 'running') return;
    const wanted = new Set(specs.map((s) => s.path));
    for (const spec of specs) this.#tailer.tail(spec);
    const previous = this.#groups.get(group) ?? new Set<string>();
    for (const path of previous) if (!wanted.has(path)) this.#tailer.retire(path);
    this.#groups.set(group, wanted);
  }

  /** Adds a line the agent made itself. */
  write(line: DirectLine): void {
    this.writeMany([line]);
  }

  /** Adds lines the agent made itself, in order. */
  writeMany(lines: readonly DirectLine[]): void {
    if (this.#state !== 'running' || lines.length === 0) return;
    const now = this.#o.clock.now();
    try {
      this.#spool.append(
        lines.map((l) => ({ ts: l.ts ?? now, app: l.app, source: l.source, stream: l.stream ?? 'stdout', line: cutLine(l.line) })),
      );
    } catch (err) {
      this.#logger.error({ err }, 'could not spool log lines');
      return;
    }
    this.#scheduleBatch();
  }

  /** The stream is up: resend everything not acked. */
  onConnected(): void {
    this.#connected = true;
    this.#cursor = this.#spool.acked + 1;
    this.#schedulePump();
  }

  onDisconnected(): void {
    this.#connected = false;
  }

  /** The coordinator stored every line up to `seq`. */
  onAck(seq: number, epoch: string): void {
    if (this.#state !== 'running' || (epoch && epoch !== this.#spool.epoch)) return;
    this.#spool.ack(seq);
    // After a coordinator restart it may already hold more than we sent on this connection.
    if (this.#cursor <= seq) this.#cursor = seq + 1;
    this.#schedulePump();
  }

  /** Stops tailing and saves the spool; idempotent. */
  close(): void {
    if (this.#state === 'closed') return;
    const wasRunning = this.#state === 'running';
    this.#state = 'closed';
    if (this.#batchTimer) this.#o.clock.clearTimeout(this.#batchTimer);
    this.#batchTimer = null;
    this.#tailer.close();
    if (wasRunning) this.#spool.close();
  }

  /** New lines: a pump after the batch delay, unless one is due already. */
  #scheduleBatch(): void {
    if (this.#batchTimer || this.#pumpScheduled || !this.#connected) return;
    this.#batchTimer = this.#o.clock.setTimeout(() => {
      this.#batchTimer = null;
      this.#schedulePump();
    }, this.#batchDelayMs);
  }

  #schedulePump(): void {
    if (this.#pumpScheduled || !this.#connected) return;
    this.#pumpScheduled = true;
    setImmediate(() => {
      this.#pumpScheduled = false;
      this.#pump();
    });
  }

  #pump(): void {
    if (this.#state !== 'running') return;
    const maxInFlight = this.#o.maxInFlightLines ?? 50_000;
    const batchBytes = this.#o.batchBytes ?? 256 * 1024;
    while (this.#connected && this.#cursor <= this.#spool.lastSeq && this.#cursor - 1 - this.#spool.acked < maxInFlight) {
      const records = this.#spool.read(this.#cursor, batchBytes);
      const last = records[records.length - 1];
      if (!last) break;
      // Records have exactly LogLine's fields.
      const sent = this.#o.send({ lines: records });
      if (!sent) {
        this.#connected = false;
        break;
      }
      this.#cursor = last.seq + 1;
    }
  }
}

/** Direct lines follow the same 64 KiB rule as tailed ones. */
function cutLine(line: string): string {
  return line.length > 64 * 1024 ? `${line.slice(0, 64 * 1024)} [hangar: line cut at 65536 bytes]` : line;
}
