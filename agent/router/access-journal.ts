/**
 * The router process's access entries, on disk until the agent has taken them: the router appends
 * one JSON line per request to DATA/router/access/NNNNNNNNNN.jsonl (a new segment every
 * {@link SEGMENT_BYTES}); the agent reads by offset, saved in DATA/router/access.offset after the
 * lines went into its log spool, and deletes a segment once read to its end and a newer one
 * exists. So access lines and traffic figures of requests served while the agent was away (a
 * restart, a crash, an upgrade) arrive when it is back, each once (at least once across a crash
 * between the spool write and the offset save).
 */
import {
  closeSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../common/logger.js';
import type { AccessEntry } from './router.js';

/** A router starts a new segment once its current one is this large, bytes. */
export const SEGMENT_BYTES = 32 * 1024 * 1024;
/** Buffered entries are written at least this often, ms. */
const FLUSH_MS = 50;
/** Most bytes the reader takes in one round. */
const READ_BYTES = 1024 * 1024;

function segmentName(n: number): string {
  return `${String(n).padStart(10, '0')}.jsonl`;
}

/** Segment numbers in `dir`, ascending. */
function segments(dir: string): number[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.flatMap((n) => (/^\d{10}\.jsonl$/.test(n) ? [Number(n.slice(0, 10))] : [])).sort((a, b) => a - b);
}

/**
 * The router side: appends entries, buffered for {@link FLUSH_MS}, each flush one `write` on an
 * O_APPEND file (two router processes during an upgrade never interleave inside a line).
 */
export class AccessJournalWriter {
  readonly #dir: string;
  readonly #logger: Logger;
  /** May this writer start a new segment? Not while the router it replaced still writes. */
  readonly #mayRotate: () => boolean;
  #fd: number | null = null;
  #segment = 0;
  #size = 0;
  #buffer: string[] = [];
  #timer: NodeJS.Timeout | null = null;

  constructor(options: { dir: string; logger: Logger; mayRotate?: () => boolean }) {
    this.#dir = options.dir;
    this.#logger = options.logger;
    this.#mayRotate = options.mayRotate ?? (() => true);
    mkdirSync(this.#dir, { recursive: true, mode: 0o700 });
    this.#open(segments(this.#dir).at(-1) ?? 1);
  }

  append(entry: AccessEntry): void {
    this.#buffer.push(`${JSON.stringify(entry)}\n`);
    this.#timer ??= setTimeout(() => this.flush(), FLUSH_MS);
  }

  /** Writes what is buffered now. */
  flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#buffer.length === 0 || this.#fd === null) return;
    const data = Buffer.from(this.#buffer.join(''));
    this.#buffer = [];
    try {
      // A newer segment (made by the router that replaced this one) is written to from now on.
      const newest = segments(this.#dir).at(-1) ?? this.#segment;
      if (newest > this.#segment) this.#open(newest);
      else if (this.#size >= SEGMENT_BYTES && this.#mayRotate()) this.#open(this.#segment + 1);
      writeSync(this.#fd, data);
      this.#size += data.length;
    } catch (err) {
      this.#logger.error({ err }, 'could not write access entries');
    }
  }

  close(): void {
    this.flush();
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = null;
  }

  #open(segment: number): void {
    const fd = openSync(join(this.#dir, segmentName(segment)), 'a', 0o600);
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = fd;
    this.#segment = segment;
    this.#size = fstatSync(fd).size;
  }
}

/**
 * The agent side: reads entries from where it stopped. {@link read} hands complete lines to
 * `onEntries` and saves the new offset after it returned.
 */
export class AccessJournalReader {
  readonly #dir: string;
  readonly #offsetFile: string;
  readonly #logger: Logger;
  readonly #onEntries: (entries: AccessEntry[]) => void;
  #segment: number;
  #offset: number;
  readonly #buf = Buffer.allocUnsafe(READ_BYTES);

  constructor(options: { dir: string; offsetFile: string; logger: Logger; onEntries: (entries: AccessEntry[]) => void }) {
    this.#dir = options.dir;
    this.#offsetFile = options.offsetFile;
    this.#logger = options.logger;
    this.#onEntries = options.onEntries;
    let saved = { segment: 0, offset: 0 };
    try {
      const parsed = JSON.parse(readFileSync(this.#offsetFile, 'utf8')) as { segment?: unknown; offset?: unknown };
      if (typeof parsed.segment === 'number' && typeof parsed.offset === 'number')
        saved = { segment: parsed.segment, offset: parsed.offset };
    } catch {
      // First start, or no offset saved yet: from the oldest segment.
    }
    this.#segment = saved.segment;
    this.#offset = saved.offset;
  }

  /** Reads what was appended since the last call (bounded per call); true when there may be more. */
  read(): boolean {
    const all = segments(this.#dir);
    if (all.length === 0) return false;
    const first = all[0] as number;
    if (this.#segment < first || !all.includes(this.#segment)) {
      // Saved segment gone (or none saved): start at the oldest one after it.
      const next = all.find((n) => n > this.#segment) ?? first;
      this.#move(next);
    }
    const path = join(this.#dir, segmentName(this.#segment));
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch {
      return false;
    }
    let got = 0;
    try {
      got = readSync(fd, this.#buf, 0, this.#buf.length, this.#offset);
    } finally {
      closeSync(fd);
    }
    const end = got > 0 ? this.#buf.lastIndexOf(10, got - 1) : -1;
    if (end === -1) {
      // Nothing complete here: once a newer segment exists, this one is done (its writer moved on).
      const newer = all.find((n) => n > this.#segment);
      if (newer !== undefined && got === 0) {
        try {
          unlinkSync(path);
        } catch (err) {
          this.#logger.warn({ err, path }, 'could not delete a read access segment');
        }
        this.#move(newer);
        return true;
      }
      return false;
    }
    const entries: AccessEntry[] = [];
    for (const line of this.#buf.subarray(0, end).toString('utf8').split('\n')) {
      if (line.length === 0) continue;
      try {
        entries.push(JSON.parse(line) as AccessEntry);
      } catch {
        this.#logger.warn({ path }, 'skipped a malformed access entry');
      }
    }
    if (entries.length > 0) this.#onEntries(entries);
    this.#offset += end + 1;
    this.#save();
    return got === this.#buf.length || all.some((n) => n > this.#segment);
  }

  #move(segment: number): void {
    this.#segment = segment;
    this.#offset = 0;
    this.#save();
  }

  #save(): void {
    try {
      writeFileSync(`${this.#offsetFile}.tmp`, JSON.stringify({ segment: this.#segment, offset: this.#offset }), { mode: 0o600 });
      renameSync(`${this.#offsetFile}.tmp`, this.#offsetFile);
    } catch (err) {
      this.#logger.error({ err }, 'could not save the access journal offset');
    }
  }
}
