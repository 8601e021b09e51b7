/**
 * Safety rules for the gzipped tar archives users upload (sources) and agents unpack (slugs):
 * no absolute paths, no `..` components, no link that leads out of the tree, nothing written
 * through a link, no devices or FIFOs, and a bound on the uncompressed size. The coordinator's
 * source inspector and the agent's slug unpacker both apply them, so they live here.
 */

import { createReadStream } from 'node:fs';
import { once } from 'node:events';
import type { ReadEntry } from 'tar';
import { HangarError, describeError } from './errors.js';

/** Default bound of an archive's uncompressed size: 512 MiB. */
export const DEFAULT_MAX_ARCHIVE_BYTES = 512 * 1024 * 1024;

/** Longest chain of symbolic links followed while checking where a link leads. */
const MAX_LINK_HOPS = 40;

const BLOCK = 512;

/** Entry types that may appear in an archive; anything else is refused. */
export const SAFE_ENTRY_TYPES: ReadonlySet<string> = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory', 'SymbolicLink', 'Link']);

/** The parts of a tar entry header the guard looks at. */
export interface ArchiveEntryHeader {
  /** Path as written in the archive (a leading `./` is tolerated). */
  path: string;
  /** node-tar's type name: `File`, `Directory`, `SymbolicLink`, `Link`, `FIFO`… */
  type: string;
  /** Target of a symbolic or hard link. */
  linkpath?: string | undefined;
  /** Size of the entry's data in bytes. */
  size: number;
}

function refuse(name: string, why: string): HangarError {
  return new HangarError('BAD_INPUT', `Unsafe archive entry "${name}": ${why}. Remove it from the directory you deploy.`, {
    details: { entry: name, reason: why },
  });
}

/**
 * Splits an archive path into its components: a leading `./` and `.` components are dropped.
 * The archive's root directory (`.`, `./`) gives an empty list.
 *
 * @throws HangarError `BAD_INPUT` for an absolute path or a `..` component.
 */
export function entryPathComponents(raw: string): string[] {
  if (raw.startsWith('/') || /^[A-Za-z]:[\\/]/.test(raw)) throw refuse(raw, 'absolute path');
  const parts = raw.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) throw refuse(raw, 'path contains ".."');
  return parts;
}

/** An archive path in its normal form (`./app/x/` → `app/x`); `''` is the root. */
export function normalizeEntryPath(raw: string): string {
  return entryPathComponents(raw).join('/');
}

/** Options of {@link ArchiveGuard}. */
export interface ArchiveGuardOptions {
  /** Bound of the uncompressed size (headers and data). Default {@link DEFAULT_MAX_ARCHIVE_BYTES}. */
  maxBytes?: number;
}

/**
 * Checks the entries of one archive as they are read ({@link ArchiveGuard.admit}) and, once all
 * are read, where its links lead ({@link ArchiveGuard.finish}). Links are resolved the way the
 * kernel would after extraction, following chains of links, so `a -> sub/b/..` with `sub/b -> ..`
 * is caught even though each link looks harmless on its own.
 */
export class ArchiveGuard {
  readonly maxBytes: number;
  #totalBytes = 0;
  #entries = 0;
  /** Symbolic links by normalized path → raw target (last one wins, as on extraction). */
  readonly #symlinks = new Map<string, string>();
  /** Every path ever written as a symbolic link. */
  readonly #everSymlink = new Set<string>();
  /** Every non-root path in the archive, in order. */
  readonly #paths: string[] = [];
  readonly #files = new Set<string>();
  readonly #hardlinks: { path: string; target: string }[] = [];

  constructor(options: ArchiveGuardOptions = {}) {
    this.maxBytes = options.maxBytes ?? DEFAULT_MAX_ARCHIVE_BYTES;
  }

  /** Uncompressed bytes (headers and padded data) admitted so far. */
  get totalBytes(): number {
    return this.#totalBytes;
  }

  /** Entries admitted so far. */
  get entries(): number {
    return this.#entries;
  }

  /**
   * Checks one entry and returns its normalized path (`''` for the root directory).
   *
   * @throws HangarError `BAD_INPUT` naming the entry when it is unsafe; `PAYLOAD_TOO_LARGE` when
   *   the archive grows past `maxBytes`.
   */
  admit(entry: ArchiveEntryHeader): string {
    this.#totalBytes += BLOCK + Math.ceil(Math.max(0, entry.size) / BLOCK) * BLOCK;
    if (this.#totalBytes > this.maxBytes) {
      throw new HangarError(
        'PAYLOAD_TOO_LARGE',
        `The archive is larger than ${formatBytes(this.maxBytes)} uncompressed; leave virtualenvs, node_modules, media and data files out of the directory you deploy.`,
        { details: { maxBytes: this.maxBytes } },
      );
    }
    this.#entries += 1;

    if (!SAFE_ENTRY_TYPES.has(entry.type)) {
      const kind =
        entry.type === 'CharacterDevice' || entry.type === 'BlockDevice'
          ? 'device files are not allowed'
          : entry.type === 'FIFO'
            ? 'FIFOs are not allowed'
            : `unsupported entry type ${entry.type}`;
      throw refuse(entry.path, kind);
    }
    const path = normalizeEntryPath(entry.path);
    if (path === '') {
      if (entry.type !== 'Directory') throw refuse(entry.path, 'the archive root must be a directory');
      return path;
    }
    this.#paths.push(path);
    this.#symlinks.delete(path);
    this.#files.delete(path);

    switch (entry.type) {
      case 'SymbolicLink': {
        const target = entry.linkpath ?? '';
        if (target === '') throw refuse(entry.path, 'symbolic link without a target');
        if (target.startsWith('/')) throw refuse(entry.path, `symbolic link to an absolute path (${target})`);
        this.#symlinks.set(path, target);
        this.#everSymlink.add(path);
        break;
      }
      case 'Link': {
        const target = entry.linkpath ?? '';
        if (target === '') throw refuse(entry.path, 'hard link without a target');
        if (target.startsWith('/') || target.split('/').includes('..')) {
          throw refuse(entry.path, `hard link to a path outside the archive (${target})`);
        }
        const normalized = normalizeEntryPath(target);
        if (!this.#files.has(normalized)) {
          throw refuse(entry.path, `hard link to "${target}", which is not a file earlier in the archive`);
        }
        this.#hardlinks.push({ path, target: normalized });
        this.#files.add(path);
        break;
      }
      case 'Directory':
        break;
      default:
        this.#files.add(path);
    }
    return path;
  }

  /**
   * Checks what needs the whole archive: every symbolic link resolves inside the tree (through
   * any chain of links), no entry lies below a symbolic link (it would be written through it),
   * and hard link targets are reached without crossing a link.
   *
   * @throws HangarError `BAD_INPUT` naming the first offending entry.
   */
  finish(): void {
    for (const path of this.#paths) {
      const parts = path.split('/');
      for (let i = 1; i < parts.length; i += 1) {
        const ancestor = parts.slice(0, i).join('/');
        if (this.#everSymlink.has(ancestor)) {
          throw refuse(path, `it lies below the symbolic link "${ancestor}"`);
        }
      }
    }
    for (const [path, target] of this.#symlinks) {
      const start = path.split('/').slice(0, -1);
      if (!this.#resolvesInside(start, target.split('/'))) {
        throw refuse(path, `symbolic link pointing outside the archive (${target})`);
      }
    }
    for (const { path, target } of this.#hardlinks) {
      if (!this.#resolvesInside([], target.split('/'))) {
        throw refuse(path, `hard link to a path outside the archive (${target})`);
      }
    }
  }

  /** Walks `components` from directory `base` (both relative to the root), following links. */
  #resolvesInside(base: string[], components: string[]): boolean {
    const resolved = [...base];
    const queue = [...components];
    let hops = 0;
    while (queue.length > 0) {
      const part = queue.shift() as string;
      if (part === '' || part === '.') continue;
      if (part === '..') {
        if (resolved.length === 0) return false;
        resolved.pop();
        continue;
      }
      resolved.push(part);
      const link = this.#symlinks.get(resolved.join('/'));
      if (link !== undefined) {
        hops += 1;
        if (hops > MAX_LINK_HOPS || link.startsWith('/')) return false;
        resolved.pop();
        queue.unshift(...link.split('/'));
      }
    }
    return true;
  }
}

function formatBytes(bytes: number): string {
  if (bytes >= 1024 * 1024) return `${Math.round((bytes / 1024 / 1024) * 10) / 10} MiB`;
  if (bytes >= 1024) return `${Math.round((bytes / 1024) * 10) / 10} KiB`;
  return `${bytes} bytes`;
}

/** Options of {@link scanArchive}. */
export interface ScanArchiveOptions extends ArchiveGuardOptions {
  /**
   * Called for each admitted entry with its normalized path. To read an entry's data, attach a
   * `data` listener before returning; the entry is resumed (drained) afterwards either way.
   */
  onEntry?: (entry: ReadEntry, path: string) => void;
  /** Stops the scan; the promise then rejects with the signal's reason. */
  signal?: AbortSignal | undefined;
}

/** What {@link scanArchive} saw. */
export interface ArchiveScan {
  /** Uncompressed size in bytes (headers and padded data). */
  totalBytes: number;
  /** Number of entries, the root directory included. */
  entries: number;
}

/**
 * Streams a (gzipped) tar archive through an {@link ArchiveGuard} without writing anything to
 * disk, stopping at the first unsafe entry.
 *
 * @throws HangarError `BAD_INPUT` for an unsafe entry or a file that is not a (gzipped) tar
 *   archive; `PAYLOAD_TOO_LARGE` past `maxBytes`.
 */
export async function scanArchive(file: string, options: ScanArchiveOptions = {}): Promise<ArchiveScan> {
  // tar loads only when an archive is scanned: an idle agent never needs it (about 3 MB of RSS).
  const { Parser } = await import('tar');
  const guard = new ArchiveGuard(options);
  let failure: unknown;
  const parser = new Parser({
    strict: true,
    // The guard bounds the uncompressed size itself, with a clearer error than a ratio.
    maxDecompressionRatio: Infinity,
  });
  const fail = (err: unknown): void => {
    failure ??= err;
  };
  const onEntry = (entry: ReadEntry): void => {
    if (failure !== undefined) {
      entry.resume();
      return;
    }
    try {
      const path = guard.admit({ path: entry.path, type: entry.type, linkpath: entry.linkpath, size: entry.size });
      options.onEntry?.(entry, path);
    } catch (err) {
      fail(err);
    }
    entry.resume();
  };
  parser.on('entry', onEntry);
  parser.on('ignoredEntry', (entry: ReadEntry) => {
    if (!entry.meta) onEntry(entry);
  });
  parser.on('error', (err: unknown) => fail(err));
  const ended = new Promise<void>((resolve) => {
    parser.on('end', () => resolve());
    parser.on('abort', () => resolve());
    parser.on('error', () => resolve());
  });

  const input = createReadStream(file, { signal: options.signal });
  try {
    for await (const chunk of input) {
      if (failure !== undefined) break;
      if (!parser.write(chunk as Buffer)) await Promise.race([once(parser, 'drain'), ended]);
    }
    if (failure === undefined) {
      parser.end();
      await ended;
    }
  } catch (err) {
    fail(err);
  } finally {
    input.destroy();
  }

  if (failure === undefined) {
    try {
      guard.finish();
    } catch (err) {
      fail(err);
    }
  }
  if (failure !== undefined) {
    if (failure instanceof HangarError) throw failure;
    if (options.signal?.aborted) {
      const reason: unknown = options.signal.reason;
      throw reason instanceof Error ? reason : new Error(describeError(reason));
    }
    const code = (failure as { code?: unknown }).code;
    if ((code === 'ENOENT' || code === 'EACCES') && failure instanceof Error) throw failure;
    throw new HangarError(
      'BAD_INPUT',
      `The upload is not a valid gzipped tar archive (${describeError(failure)}); create it with "tar czf".`,
      { cause: failure },
    );
  }
  return { totalBytes: guard.totalBytes, entries: guard.entries };
}
