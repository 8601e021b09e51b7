import { execFile } from 'node:child_process';
import { closeSync, fstatSync, openSync, readSync, statSync, watch, type FSWatcher } from 'node:fs';
import type { Clock, ClockTimer } from '../../common/clock.js';
import type { Logger } from '../../common/logger.js';
import type { LogSpool, SpoolInput } from './log-spool.js';

/** A file to follow and what its lines are. */
export interface TailSpec {
  path: string;
  app: string;
  /** `web.1`, `worker.2`, `redis`… */
  source: string;
  stream: 'stdout' | 'stderr';
}

/** Options of {@link LogTailer}. */
export interface LogTailerOptions {
  spool: LogSpool;
  /**
   * Called after lines were appended to the spool: `watched` when a watcher's wake-up was read
   * after {@link dirtyDelayMs} (the lines have waited already), `round` otherwise.
   */
  onAppended?: (how: 'watched' | 'round') => void;
  /**
   * A write a file's watcher saw is read this long after, so that what many files write in that
   * time is read in one turn of the loop (and one wake-up of the process) instead of one each, ms.
   * Default 0: on the next turn.
   */
  dirtyDelayMs?: number;
  /**
   * How often every file is checked when nothing wakes the tailer, ms. Default 1000 while each
   * file has its watcher (a write wakes the tailer for that file at once; the round only catches
   * replaced files, partial lines and retirement), 100 while one has none.
   */
  pollMs?: number;
  /** Most bytes read from one file per round, so one flooding process cannot starve the others. Default 256 KiB. */
  readBytes?: number;
  /** Lines longer than this are cut, with a marker, bytes. Default 64 KiB. */
  maxLineBytes?: number;
  /**
   * Once this many more bytes of a file were shipped and acked, their disk space is freed (punched
   * out of the file; see {@link LogTailer}), bytes. Default 64 MiB.
   */
  rotateBytes?: number;
  /** Frees the disk space of the first `length` bytes of a file. Default: util-linux `fallocate --punch-hole`. */
  punchHole?: (path: string, length: number, done: (err: Error | null) => void) => void;
  /** A partial last line (no newline yet) is shipped after it has waited this long, ms. Default 1000. */
  partialLineMs?: number;
  /** A file no longer wanted is let go once read to its end and quiet for this long, ms. Default 5000. */
  retireAfterMs?: number;
  clock: Clock;
  logger: Logger;
}

interface Tailed {
  spec: TailSpec;
  fd: number | null;
  ino: number;
  offset: number;
  /** Inside a line that was cut: bytes are skipped up to its newline. */
  skipping: boolean;
  /** When the current partial last line was first seen (0: none), and where it starts. */
  partialSince: number;
  partialAt: number;
  retiring: boolean;
  lastChange: number;
  watcher: FSWatcher | null;
  /** Where the lines of each spool append end, oldest first, until acked. */
  checkpoints: { seq: number; offset: number }[];
  /** Every byte before this was shipped and acked. */
  ackedOffset: number;
  /** Disk space is freed before this (a hole that reads as zeros). */
  punchedTo: number;
  punching: boolean;
}

/** Block size the punched range is rounded down to (a partial block would only be zeroed). */
const PUNCH_ALIGN = 4096;

/** `fallocate --punch-hole` (util-linux, in every Debian): frees the blocks, keeps the size. */
function fallocatePunchHole(path: string, length: number, done: (err: Error | null) => void): void {
  execFile('fallocate', ['--punch-hole', '--offset', '0', '--length', String(length), path], { timeout: 30_000 }, (err) => done(err));
}

/**
 * Follows files by offset (the way Vector and Fluent Bit do): app output written to per-instance
 * files survives an agent restart, and reading resumes from where the spool says lines end. Each
 * round reads a bounded amount of every file in turn, so a flood in one file neither stalls the
 * agent nor delays the others; a busy file gets the next round at once instead of after the poll.
 *
 * Rotation never moves or truncates a file: the app holds it open with O_APPEND and may write
 * at any moment, so a truncate (or copy-truncate) after a size check loses what lands between the
 * two, and a rename cannot make the app reopen. Instead, once enough of a file was shipped and
 * acked, that prefix is punched out (FALLOC_FL_PUNCH_HOLE): its blocks are freed, offsets stay
 * where they were, and the app's appends go on untouched — lossless without any window, and the
 * offsets the spool resumes from after an agent restart stay valid. A tailer that starts in the
 * hole (a lost spool) skips its zeros. On a filesystem without hole punching the file keeps
 * growing (said once) rather than losing lines.
 */
export class LogTailer {
  readonly #o: LogTailerOptions;
  readonly #logger: Logger;
  readonly #files = new Map<string, Tailed>();
  readonly #buf: Buffer;
  readonly #maxLine: number;
  #timer: ClockTimer | null = null;
  #immediate: NodeJS.Immediate | null = null;
  /** Files their watcher said were written to, read on the next turn without a whole round. */
  readonly #dirty = new Set<Tailed>();
  #dirtyImmediate: NodeJS.Immediate | null = null;
  #dirtyTimer: ClockTimer | null = null;
  #state: 'idle' | 'running' | 'closed' = 'idle';

  constructor(options: LogTailerOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'log-tailer' });
    this.#maxLine = options.maxLineBytes ?? 64 * 1024;
    this.#buf = Buffer.allocUnsafe(Math.max(options.readBytes ?? 256 * 1024, this.#maxLine * 2));
  }

  /** Paths followed now. */
  paths(): string[] {
    return [...this.#files.keys()];
  }

  /** Follows a file (idempotent); a file let go of before is followed again. */
  tail(spec: TailSpec): void {
    const known = this.#files.get(spec.path);
    if (known) {
      known.retiring = false;
      return;
    }
    const tracked = this.#o.spool.trackFile({ path: spec.path, app: spec.app, source: spec.source, stream: spec.stream });
    const t: Tailed = {
      spec,
      fd: null,
      ino: 0,
      offset: tracked.offset,
      skipping: false,
      partialSince: 0,
      partialAt: -1,
      retiring: false,
      lastChange: this.#o.clock.now(),
      watcher: null,
      checkpoints: [{ seq: tracked.lastSeq, offset: tracked.offset }],
      ackedOffset: 0,
      punchedTo: 0,
      punching: false,
    };
    this.#files.set(spec.path, t);
    this.wake();
  }

  /** Lets a file go once everything in it has been read and it has been quiet a while. */
  retire(path: string): void {
    const t = this.#files.get(path);
    if (t) t.retiring = true;
  }

  /** Starts the read loop; idempotent. */
  start(): void {
    if (this.#state !== 'idle') return;
    this.#state = 'running';
    this.wake();
  }

  /** Runs a round soon (new data was announced). */
  wake(): void {
    if (this.#state !== 'running' || this.#immediate) return;
    if (this.#timer) {
      this.#o.clock.clearTimeout(this.#timer);
      this.#timer = null;
    }
    this.#immediate = setImmediate(() => {
      this.#immediate = null;
      this.#round();
    });
  }

  /** Stops reading and closes the files; idempotent. */
  close(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    if (this.#timer) this.#o.clock.clearTimeout(this.#timer);
    if (this.#immediate) clearImmediate(this.#immediate);
    if (this.#dirtyImmediate) clearImmediate(this.#dirtyImmediate);
    if (this.#dirtyTimer) this.#o.clock.clearTimeout(this.#dirtyTimer);
    this.#dirtyTimer = null;
    this.#dirty.clear();
    for (const t of this.#files.values()) this.#release(t);
    this.#files.clear();
  }

  #round(): void {
    if (this.#state !== 'running') return;
    // Every file is read below.
    this.#dirty.clear();
    if (this.#dirtyTimer) this.#o.clock.clearTimeout(this.#dirtyTimer);
    this.#dirtyTimer = null;
    let busy = false;
    let appended = false;
    for (const t of [...this.#files.values()]) {
      try {
        const r = this.#readSome(t);
        busy ||= r.more;
        appended ||= r.appended;
      } catch (err) {
        this.#logger.warn({ err, path: t.spec.path }, 'could not read a log file; will try again');
      }
    }
    if (appended) this.#o.onAppended?.('round');
    if (this.#state !== 'running') return;
    if (busy) this.wake();
    else this.#timer = this.#o.clock.setTimeout(() => this.#round(), this.#pollMs());
  }

  #pollMs(): number {
    if (this.#o.pollMs !== undefined) return this.#o.pollMs;
    for (const t of this.#files.values()) if (t.watcher === null) return 100;
    return 1000;
  }

  /** A watcher saw `t` written to: read it (only it) on the next turn of the loop. */
  #wakeFor(t: Tailed): void {
    // A whole round coming next reads it anyway.
    if (this.#state !== 'running' || this.#immediate) return;
    this.#dirty.add(t);
    const delay = this.#o.dirtyDelayMs ?? 0;
    if (delay > 0) {
      this.#dirtyTimer ??= this.#o.clock.setTimeout(() => {
        this.#dirtyTimer = null;
        this.#readDirty();
      }, delay);
      return;
    }
    this.#dirtyImmediate ??= setImmediate(() => {
      this.#dirtyImmediate = null;
      this.#readDirty();
    });
  }

  #readDirty(): void {
    if (this.#state !== 'running') return;
    const files = [...this.#dirty];
    this.#dirty.clear();
    let appended = false;
    for (const t of files) {
      if (this.#files.get(t.spec.path) !== t || t.fd === null) continue;
      try {
        const r = this.#readSome(t, false);
        appended ||= r.appended;
        // A busy file: whole rounds from now on, as after a timer round, so a flood in one file
        // is read a bounded amount at a time beside the others.
        if (r.more) this.wake();
      } catch (err) {
        this.#logger.warn({ err, path: t.spec.path }, 'could not read a log file; will try again');
      }
    }
    if (appended) this.#o.onAppended?.(this.#o.dirtyDelayMs ? 'watched' : 'round');
  }

  /**
   * Reads up to one buffer of a file; `more` when it has more to read right away. `checkPath`:
   * also see whether the path now names another file (replaced); the periodic round does.
   */
  #readSome(t: Tailed, checkPath = true): { more: boolean; appended: boolean } {
    const now = this.#o.clock.now();
    let pathIno = t.ino;
    if (checkPath || t.fd === null) {
      try {
        pathIno = statSync(t.spec.path).ino;
      } catch {
        pathIno = 0;
      }
    }
    if (t.fd === null) {
      if (pathIno === 0) {
        if (t.retiring && now - t.lastChange > (this.#o.retireAfterMs ?? 5000)) this.#forget(t);
        return { more: false, appended: false };
      }
      t.fd = openSync(t.spec.path, 'r');
      t.ino = fstatSync(t.fd).ino;
      this.#watch(t);
    }
    const size = fstatSync(t.fd).size;
    if (size < t.offset) {
      this.#logger.info({ path: t.spec.path }, 'log file was truncated; reading it from the start');
      t.offset = 0;
      t.skipping = false;
      this.#restart(t);
      this.#o.spool.resetFile(t.spec.path);
    }
    if (size === t.offset) {
      if (pathIno !== 0 && pathIno !== t.ino) {
        // Replaced (moved away and created anew): the old one is read to its end; follow the new one.
        this.#release(t);
        t.offset = 0;
        this.#restart(t);
        this.#o.spool.resetFile(t.spec.path);
        return { more: true, appended: false };
      }
      this.#maybeRotate(t);
      if (t.retiring && now - t.lastChange > (this.#o.retireAfterMs ?? 5000)) this.#forget(t);
      return { more: false, appended: false };
    }
    t.lastChange = now;
    const want = Math.min(this.#buf.length, size - t.offset);
    const n = readSync(t.fd, this.#buf, 0, want, t.offset);
    if (n <= 0) return { more: false, appended: false };
    const buf = this.#buf;
    if (buf[0] === 0 && !t.skipping && t.partialSince === 0) {
      // A punched-out hole (a tailer without its spool reads the file from the start): no lines,
      // and the line its end cuts was shipped before; reading resumes at the next whole line.
      let zeros = 1;
      while (zeros < n && buf[zeros] === 0) zeros++;
      t.offset += zeros;
      if (zeros < n || t.offset === size) t.skipping = true;
      return { more: true, appended: false };
    }
    const inputs: SpoolInput[] = [];
    const base = t.offset;
    const { app, source, stream, path } = t.spec;
    const push = (start: number, end: number, cutFrom?: number) => {
      let line = buf.toString('utf8', start, end);
      if (cutFrom !== undefined) line += ` [hangar: line cut at ${this.#maxLine} bytes]`;
      else if (line.endsWith('\r')) line = line.slice(0, -1);
      inputs.push({ ts: now, app, source, stream, line, file: path, offset: base + (cutFrom ?? end + 1) });
    };
    let pos = 0;
    for (;;) {
      let nl = buf.indexOf(10, pos);
      if (nl >= n) nl = -1;
      if (nl === -1) break;
      if (t.skipping) {
        t.skipping = false;
        // The rest of a cut line ends here; record the offset so a restart does not re-read it.
        if (inputs.length > 0) {
          const last = inputs[inputs.length - 1];
          if (last) last.offset = base + nl + 1;
        }
      } else if (nl - pos > this.#maxLine) {
        push(pos, pos + this.#maxLine, nl + 1);
      } else {
        push(pos, nl);
      }
      pos = nl + 1;
    }
    const rest = n - pos;
    if (rest > 0) {
      if (t.skipping) {
        pos = n;
        if (inputs.length > 0) {
          const last = inputs[inputs.length - 1];
          if (last) last.offset = base + n;
        }
      } else if (rest >= this.#maxLine) {
        push(pos, pos + this.#maxLine, n);
        t.skipping = true;
        pos = n;
      } else if (t.offset + n === size) {
        // A last line without its newline yet: wait for the rest, but not forever.
        if (t.partialSince === 0 || t.partialAt !== base + pos) {
          t.partialSince = now;
          t.partialAt = base + pos;
        } else if (now - t.partialSince >= (this.#o.partialLineMs ?? 1000)) {
          push(pos, n);
          const last = inputs[inputs.length - 1];
          if (last) last.offset = base + n;
          pos = n;
        }
      }
    }
    if (pos === n || rest === 0) t.partialSince = 0;
    if (inputs.length > 0) {
      const seq = this.#o.spool.append(inputs);
      const last = inputs[inputs.length - 1];
      if (last?.offset !== undefined) t.checkpoints.push({ seq, offset: last.offset });
    }
    t.offset = base + pos;
    this.#maybeRotate(t);
    return { more: t.offset < size && pos > 0, appended: inputs.length > 0 };
  }

  /** Frees the disk space of what was shipped and acked, once there is enough of it. */
  #maybeRotate(t: Tailed): void {
    const acked = this.#o.spool.acked;
    while (t.checkpoints.length > 0 && (t.checkpoints[0]?.seq ?? Infinity) <= acked) {
      t.ackedOffset = Math.max(t.ackedOffset, t.checkpoints.shift()?.offset ?? 0);
    }
    const length = Math.floor(t.ackedOffset / PUNCH_ALIGN) * PUNCH_ALIGN;
    if (t.punching || length - t.punchedTo < (this.#o.rotateBytes ?? 64 * 1024 * 1024)) return;
    t.punching = true;
    const path = t.spec.path;
    const ino = t.ino;
    (this.#o.punchHole ?? fallocatePunchHole)(path, length, (err) => {
      t.punching = false;
      if (t.ino !== ino && t.ino !== 0) return;
      if (err) {
        // Not retried for this file: it keeps its lines and grows, which is better than losing them.
        t.punchedTo = Infinity;
        this.#logger.warn(
          { err, path },
          'could not free the disk space of shipped log lines (does this filesystem support fallocate --punch-hole?); the file keeps growing',
        );
        return;
      }
      t.punchedTo = length;
      this.#logger.info({ path, bytes: length }, 'rotated a log file: freed the disk space of its shipped lines');
    });
  }

  /** The file was truncated or replaced: nothing of it is shipped or punched. */
  #restart(t: Tailed): void {
    t.checkpoints = [];
    t.ackedOffset = 0;
    t.punchedTo = 0;
  }

  #watch(t: Tailed): void {
    try {
      t.watcher = watch(t.spec.path, { persistent: false }, () => this.#wakeFor(t));
      t.watcher.on('error', () => {
        t.watcher?.close();
        t.watcher = null;
      });
    } catch {
      t.watcher = null;
    }
  }

  #release(t: Tailed): void {
    t.watcher?.close();
    t.watcher = null;
    if (t.fd !== null) {
      try {
        closeSync(t.fd);
      } catch {
        // Already closed.
      }
    }
    t.fd = null;
    t.ino = 0;
  }

  #forget(t: Tailed): void {
    this.#release(t);
    this.#dirty.delete(t);
    this.#files.delete(t.spec.path);
    this.#o.spool.forgetFile(t.spec.path);
  }
}
