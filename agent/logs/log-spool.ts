import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Clock, ClockTimer } from '../../common/clock.js';
import type { Logger } from '../../common/logger.js';

/** One log line with its per-agent sequence number. */
export interface LogRecord {
  seq: number;
  /** Unix ms when the agent read (or made) the line. */
  ts: number;
  app: string;
  /** `web.1`, `router`, `build`, `release`, `hangar`, an add-on… */
  source: string;
  stream: 'stdout' | 'stderr';
  line: string;
}

/** A line to append; lines read from a tailed file say which file and the offset after them. */
export interface SpoolInput {
  ts: number;
  app: string;
  source: string;
  stream: 'stdout' | 'stderr';
  line: string;
  /** Path of the tailed file the line came from. */
  file?: string;
  /** Byte offset in `file` just after this line. */
  offset?: number;
}

/** Where the agent is in a tailed file, as far as the spool holds its lines. */
export interface TailedFile {
  path: string;
  app: string;
  source: string;
  stream: 'stdout' | 'stderr';
  /** Byte offset up to which lines are in the spool. */
  offset: number;
  /** Seq of the last line of this file in the spool (0 when none). */
  lastSeq: number;
}

/** Options of {@link LogSpool}. */
export interface LogSpoolOptions {
  /** Directory of the segment files and the state file. */
  dir: string;
  /** Largest total size of the segments, bytes; the oldest are dropped beyond it. Default 256 MiB. */
  maxBytes?: number;
  /** Size at which a segment is closed and a new one started, bytes. Default 4 MiB (at most maxBytes / 4). */
  segmentBytes?: number;
  /** Most bytes of unshipped lines also kept in memory (saves reading them back), bytes. Default 64 MiB. */
  memoryBytes?: number;
  /** Called with the lines dropped, per app, when the spool was full. */
  onDropped?: (app: string, count: number) => void;
  clock: Clock;
  logger: Logger;
}

interface Segment {
  firstSeq: number;
  /** Seq of its last record (firstSeq - 1 while empty). */
  lastSeq: number;
  bytes: number;
  path: string;
}

interface SpoolState {
  epoch: string;
  acked: number;
  /** The spool's last seq when `files` was taken; records after it update the offsets. */
  filesSeq: number;
  files: TailedFile[];
}

/** A record on disk: `[seq, ts, app, source, stream, line, file?, offset?]`, one JSON array a line. */
type DiskRecord = [number, number, string, string, 'stdout' | 'stderr', string, string?, number?];

const SEGMENT_PREFIX = 'seg-';
const SEGMENT_SUFFIX = '.jsonl';
/**
 * Longest wait before a changed state is saved, ms. A state older than the segments costs nothing
 * after a crash: the tailed files' offsets are read back from the records after `filesSeq`, and
 * lines acked since are only sent again (the coordinator drops them on agent + seq). A segment is
 * deleted only after a save, so those records are always there.
 */
const STATE_SAVE_MS = 5000;
/** Memory accounted per record beside its text (rough size of the object and strings). */
const RECORD_OVERHEAD = 96;

function segmentName(firstSeq: number): string {
  return `${SEGMENT_PREFIX}${String(firstSeq).padStart(16, '0')}${SEGMENT_SUFFIX}`;
}

/**
 * The agent's bounded on-disk log spool. Lines get consecutive sequence numbers and are appended
 * to segment files (synchronously, so a killed agent keeps everything it numbered) until the
 * coordinator acks them; acked segments are deleted. When the spool is full the oldest segment is
 * dropped and the loss counted. The state file keeps the epoch, the acked seq and, for each tailed
 * file, how far its lines are in the spool: after a restart tailing resumes there, so a line is
 * neither lost nor numbered twice.
 */
export class LogSpool {
  readonly #o: LogSpoolOptions;
  readonly #logger: Logger;
  readonly #maxBytes: number;
  readonly #segmentBytes: number;
  readonly #memoryBytes: number;
  readonly #segments: Segment[] = [];
  readonly #files = new Map<string, TailedFile>();
  #epoch = '';
  #acked = 0;
  #lastSeq = 0;
  #fd: number | null = null;
  #totalBytes = 0;
  /** Recent records, consecutive seqs starting at `#memFirst`. */
  #mem: LogRecord[] = [];
  #memFirst = 1;
  #memSize = 0;
  /** One parsed segment, for reads behind the memory window. */
  #cache: { path: string; records: LogRecord[] } | null = null;
  #stateTimer: ClockTimer | null = null;
  #stateDirty = false;
  #state: 'idle' | 'open' | 'closed' = 'idle';

  constructor(options: LogSpoolOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'log-spool' });
    this.#maxBytes = options.maxBytes ?? 256 * 1024 * 1024;
    this.#segmentBytes = Math.max(64 * 1024, Math.min(options.segmentBytes ?? 4 * 1024 * 1024, Math.floor(this.#maxBytes / 4)));
    this.#memoryBytes = options.memoryBytes ?? 64 * 1024 * 1024;
  }

  /** Identity of this spool; seqs count within it. */
  get epoch(): string {
    return this.#epoch;
  }

  /** Highest seq the coordinator acked. */
  get acked(): number {
    return this.#acked;
  }

  /** Seq of the newest line (0 when none yet). */
  get lastSeq(): number {
    return this.#lastSeq;
  }

  /** Seq of the oldest line still held (lastSeq + 1 when empty). */
  get firstSeq(): number {
    const first = this.#segments.find((s) => s.lastSeq >= s.firstSeq && s.lastSeq > this.#acked);
    return first ? Math.max(first.firstSeq, this.#acked + 1) : this.#lastSeq + 1;
  }

  /** Bytes the segments take on disk. */
  get bytes(): number {
    return this.#totalBytes;
  }

  /** Files whose lines are in the spool, with how far. */
  files(): TailedFile[] {
    return [...this.#files.values()].map((f) => ({ ...f }));
  }

  file(path: string): TailedFile | undefined {
    const f = this.#files.get(path);
    return f ? { ...f } : undefined;
  }

  /** Loads the state and the segments (a new epoch when there are none); idempotent. */
  open(): void {
    if (this.#state !== 'idle') return;
    mkdirSync(this.#o.dir, { recursive: true, mode: 0o700 });
    let state: SpoolState | null = null;
    try {
      state = JSON.parse(readFileSync(join(this.#o.dir, 'state.json'), 'utf8')) as SpoolState;
    } catch {
      state = null;
    }
    this.#epoch = state?.epoch || randomBytes(8).toString('hex');
    this.#acked = state?.acked ?? 0;
    for (const f of state?.files ?? []) this.#files.set(f.path, { ...f });
    const filesSeq = state?.filesSeq ?? 0;

    const names = readdirSync(this.#o.dir)
      .filter((n) => n.startsWith(SEGMENT_PREFIX) && n.endsWith(SEGMENT_SUFFIX))
      .sort();
    for (let i = 0; i < names.length; i++) {
      const name = names[i] ?? '';
      const path = join(this.#o.dir, name);
      const firstSeq = Number(name.slice(SEGMENT_PREFIX.length, -SEGMENT_SUFFIX.length));
      const nextName = names[i + 1];
      const nextFirst = nextName ? Number(nextName.slice(SEGMENT_PREFIX.length, -SEGMENT_SUFFIX.length)) : Infinity;
      const segment: Segment = { firstSeq, lastSeq: nextFirst - 1, bytes: 0, path };
      // Only segments that may hold records newer than the files snapshot (or the last one) are parsed.
      if (nextName === undefined || nextFirst - 1 > filesSeq) {
        const { records, validBytes, disk } = this.#parse(path);
        segment.bytes = validBytes;
        segment.lastSeq = records.length > 0 ? (records[records.length - 1]?.seq ?? firstSeq - 1) : firstSeq - 1;
        for (const d of disk) {
          if (d[0] <= filesSeq || d[6] === undefined || d[7] === undefined) continue;
          const f = this.#files.get(d[6]);
          if (f) {
            f.offset = d[7];
            f.lastSeq = d[0];
          } else {
            this.#files.set(d[6], { path: d[6], app: d[2], source: d[3], stream: d[4], offset: d[7], lastSeq: d[0] });
          }
        }
        const size = fstatOrZero(path);
        // A record half-written when the agent died is cut off; it was never numbered for anyone.
        if (size > validBytes) writeFileSync(path, readFileSync(path).subarray(0, validBytes));
      } else {
        segment.bytes = fstatOrZero(path);
      }
      if (segment.lastSeq < segment.firstSeq) {
        rmSync(path, { force: true });
        continue;
      }
      this.#segments.push(segment);
      this.#totalBytes += segment.bytes;
    }
    const last = this.#segments[this.#segments.length - 1];
    this.#lastSeq = Math.max(this.#acked, last ? last.lastSeq : 0, filesSeq);
    this.#memFirst = this.#lastSeq + 1;
    this.#state = 'open';
    this.#dropAcked();
    this.#writeState();
    this.#logger.info({ epoch: this.#epoch, acked: this.#acked, lastSeq: this.#lastSeq, bytes: this.#totalBytes }, 'log spool open');
  }

  /** Numbers and appends lines; returns the seq of the last one. */
  append(inputs: readonly SpoolInput[]): number {
    if (this.#state !== 'open') throw new Error(`log spool is ${this.#state}`);
    if (inputs.length === 0) return this.#lastSeq;
    let text = '';
    // Lines of one read share app, source, stream and file: their JSON is made once.
    let prev: SpoolInput | null = null;
    let head = '';
    let fileJson = '';
    let f: TailedFile | undefined;
    // A read's lines also share their ts: a Unix ms is past the small integers, so its string is
    // costly, and is made once per run of lines with the same head and ts.
    let lastTs = Number.NaN;
    let tsHead = '';
    for (const input of inputs) {
      const seq = ++this.#lastSeq;
      if (!prev || prev.app !== input.app || prev.source !== input.source || prev.stream !== input.stream || prev.file !== input.file) {
        head = `,${JSON.stringify(input.app)},${JSON.stringify(input.source)},"${input.stream}",`;
        fileJson = input.file === undefined ? '' : `,${JSON.stringify(input.file)},`;
        f = input.file === undefined ? undefined : this.#files.get(input.file);
        prev = input;
        lastTs = Number.NaN;
      }
      if (input.ts !== lastTs) {
        lastTs = input.ts;
        tsHead = `,${input.ts}${head}`;
      }
      // The same as JSON.stringify([seq, ts, app, source, stream, line, file?, offset?]) (a DiskRecord).
      if (input.file !== undefined && input.offset !== undefined) {
        text += `[${seq}${tsHead}${JSON.stringify(input.line)}${fileJson}${input.offset}]\n`;
        if (f) {
          f.offset = input.offset;
          f.lastSeq = seq;
        }
      } else {
        text += `[${seq}${tsHead}${JSON.stringify(input.line)}]\n`;
      }
      this.#mem.push({ seq, ts: input.ts, app: input.app, source: input.source, stream: input.stream, line: input.line });
      this.#memSize += input.line.length + RECORD_OVERHEAD;
    }
    const buffer = Buffer.from(text);
    const segment = this.#currentSegment(this.#lastSeq - inputs.length + 1);
    writeSync(this.#fd ?? -1, buffer);
    segment.bytes += buffer.length;
    segment.lastSeq = this.#lastSeq;
    this.#totalBytes += buffer.length;
    if (segment.bytes >= this.#segmentBytes) this.#closeSegment();
    this.#trimMemory();
    this.#enforceLimit();
    this.#markDirty();
    return this.#lastSeq;
  }

  /**
   * Lines from `fromSeq` on (or from the oldest held, when `fromSeq` was dropped), in order,
   * up to about `maxBytes` of text.
   */
  read(fromSeq: number, maxBytes: number, maxLines = 10_000): LogRecord[] {
    if (fromSeq > this.#lastSeq) return [];
    const out: LogRecord[] = [];
    let bytes = 0;
    const start = Math.max(fromSeq, this.firstSeq);
    if (start >= this.#memFirst) {
      for (let i = start - this.#memFirst; i < this.#mem.length && out.length < maxLines; i++) {
        const r = this.#mem[i];
        if (!r) break;
        bytes += r.line.length + 64;
        if (out.length > 0 && bytes > maxBytes) break;
        out.push(r);
      }
      return out;
    }
    const segment = this.#segments.find((s) => s.lastSeq >= start && s.lastSeq >= s.firstSeq);
    if (!segment) return [];
    if (this.#cache?.path !== segment.path || (this.#cache.records[this.#cache.records.length - 1]?.seq ?? 0) < start) {
      this.#cache = { path: segment.path, records: this.#parse(segment.path).records };
    }
    for (const r of this.#cache.records) {
      if (r.seq < start) continue;
      if (out.length >= maxLines) break;
      bytes += r.line.length + 64;
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(r);
    }
    return out;
  }

  /** Records that the coordinator stored every line up to `seq`; drops what is no longer needed. */
  ack(seq: number): void {
    if (this.#state !== 'open' || seq <= this.#acked) return;
    this.#acked = Math.min(seq, this.#lastSeq);
    this.#dropAcked();
    this.#markDirty();
  }

  /** Starts following a file from `offset` (the spool's own offset when it knows the file). */
  trackFile(file: Omit<TailedFile, 'lastSeq' | 'offset'> & { offset?: number }): TailedFile {
    const known = this.#files.get(file.path);
    if (known) return { ...known };
    const f: TailedFile = { ...file, offset: file.offset ?? 0, lastSeq: 0 };
    this.#files.set(f.path, f);
    this.#markDirty();
    return { ...f };
  }

  /** The file was truncated or replaced: its lines start again at offset 0. Saved at once. */
  resetFile(path: string): void {
    const f = this.#files.get(path);
    if (!f) return;
    f.offset = 0;
    this.#writeState();
  }

  /** Stops remembering a file. */
  forgetFile(path: string): void {
    if (this.#files.delete(path)) this.#markDirty();
  }

  /** Saves the state and closes the segment; idempotent. */
  close(): void {
    if (this.#state !== 'open') {
      this.#state = 'closed';
      return;
    }
    if (this.#stateTimer) this.#o.clock.clearTimeout(this.#stateTimer);
    this.#writeState();
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = null;
    this.#state = 'closed';
  }

  #currentSegment(firstSeq: number): Segment {
    const last = this.#segments[this.#segments.length - 1];
    if (this.#fd !== null && last) return last;
    const path = join(this.#o.dir, segmentName(firstSeq));
    this.#fd = openSync(path, 'a', 0o600);
    const segment: Segment = { firstSeq, lastSeq: firstSeq - 1, bytes: 0, path };
    this.#segments.push(segment);
    return segment;
  }

  #closeSegment(): void {
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = null;
  }

  #trimMemory(): void {
    let drop = 0;
    let freed = 0;
    // Over the cap, down to three quarters of it, so that the (linear) splice happens rarely.
    const target = this.#memSize > this.#memoryBytes ? this.#memoryBytes * 0.75 : Infinity;
    while (drop < this.#mem.length && (this.#memSize - freed > target || (this.#mem[drop]?.seq ?? Infinity) <= this.#acked)) {
      freed += (this.#mem[drop]?.line.length ?? 0) + RECORD_OVERHEAD;
      drop++;
    }
    // Acked records are skipped by index anyway; removing them in bulk keeps the splices rare.
    if (target === Infinity && drop < 4096 && drop < this.#mem.length) return;
    this.#memSize -= freed;
    this.#dropMemory(drop);
  }

  /** Forgets the first `count` records in memory (splice is O(n): done in one go per call). */
  #dropMemory(count: number): void {
    if (count <= 0) return;
    if (count >= this.#mem.length) this.#mem = [];
    else this.#mem.splice(0, count);
    this.#memFirst += count;
  }

  /** Deletes segments all of whose lines are acked (never the open one). */
  #dropAcked(): void {
    while (this.#segments.length > 0) {
      const first = this.#segments[0];
      if (!first || first.lastSeq > this.#acked) break;
      if (this.#fd !== null && this.#segments.length === 1) break;
      this.#removeSegment(first);
    }
    this.#trimMemory();
  }

  /** Beyond maxBytes, drops the oldest segments, counting the unacked lines lost per app. */
  #enforceLimit(): void {
    const lost = new Map<string, number>();
    while (this.#totalBytes > this.#maxBytes && this.#segments.length > 1) {
      const oldest = this.#segments[0];
      if (!oldest) break;
      for (const r of this.#parse(oldest.path).records) {
        if (r.seq > this.#acked) lost.set(r.app, (lost.get(r.app) ?? 0) + 1);
      }
      this.#removeSegment(oldest);
      // Memory holds only consecutive seqs from memFirst on; drop what precedes the new oldest.
      const keepFrom = this.#segments[0]?.firstSeq ?? this.#lastSeq + 1;
      let drop = 0;
      while (drop < this.#mem.length && (this.#mem[drop]?.seq ?? Infinity) < keepFrom) {
        this.#memSize -= (this.#mem[drop]?.line.length ?? 0) + RECORD_OVERHEAD;
        drop++;
      }
      this.#dropMemory(drop);
    }
    for (const [app, count] of lost) {
      this.#logger.warn({ app, count }, 'log spool full: dropped the oldest lines');
      this.#o.onDropped?.(app, count);
    }
  }

  #removeSegment(segment: Segment): void {
    this.#segments.splice(this.#segments.indexOf(segment), 1);
    this.#totalBytes -= segment.bytes;
    if (this.#cache?.path === segment.path) this.#cache = null;
    // The files' offsets in its records go with it: a saved state no older than them comes first.
    if (this.#state === 'open') this.#writeState();
    rmSync(segment.path, { force: true });
  }

  #parse(path: string): { records: LogRecord[]; disk: DiskRecord[]; validBytes: number } {
    let buf: Buffer;
    try {
      buf = readFileSync(path);
    } catch {
      return { records: [], disk: [], validBytes: 0 };
    }
    const records: LogRecord[] = [];
    const disk: DiskRecord[] = [];
    let start = 0;
    let validBytes = 0;
    for (;;) {
      const nl = buf.indexOf(10, start);
      if (nl === -1) break;
      try {
        const d = JSON.parse(buf.toString('utf8', start, nl)) as DiskRecord;
        disk.push(d);
        records.push({ seq: d[0], ts: d[1], app: d[2], source: d[3], stream: d[4], line: d[5] });
        validBytes = nl + 1;
      } catch {
        break;
      }
      start = nl + 1;
    }
    return { records, disk, validBytes };
  }

  #markDirty(): void {
    this.#stateDirty = true;
    if (this.#stateTimer) return;
    this.#stateTimer = this.#o.clock.setTimeout(() => {
      this.#stateTimer = null;
      if (this.#stateDirty && this.#state === 'open') this.#writeState();
    }, STATE_SAVE_MS);
  }

  #writeState(): void {
    const state: SpoolState = { epoch: this.#epoch, acked: this.#acked, filesSeq: this.#lastSeq, files: [...this.#files.values()] };
    const path = join(this.#o.dir, 'state.json');
    try {
      writeFileSync(`${path}.tmp`, JSON.stringify(state), { mode: 0o600 });
      renameSync(`${path}.tmp`, path);
      this.#stateDirty = false;
    } catch (err) {
      this.#logger.error({ err }, 'could not save the log spool state');
    }
  }
}

function fstatOrZero(path: string): number {
  try {
    const fd = openSync(path, 'r');
    try {
      return fstatSync(fd).size;
    } finally {
      closeSync(fd);
    }
  } catch {
    return 0;
  }
}
