/**
 * Unpacks a release's build artifact (a gzipped tar of the app) into `slugs/<sha256>/`, once:
 * the archive is checksummed, checked entry by entry, extracted to a temporary directory and
 * renamed into place, so a slug directory that exists is always complete.
 */

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, mkdir, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULT_MAX_ARCHIVE_BYTES, SAFE_ENTRY_TYPES, scanArchive } from '../../common/archive-guard.js';
import { HangarError } from '../../common/errors.js';

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Options of {@link unpackSlug}. */
export interface UnpackSlugOptions {
  /** The gzipped tar to unpack. */
  artifactPath: string;
  /** Expected SHA-256 of the artifact file (lowercase hex); also names the slug directory. */
  sha256: string;
  /** Directory holding every slug (`DATA_DIR/slugs`); created when missing. */
  slugsDir: string;
  /** Bound of the uncompressed size. Default 512 MiB. */
  maxBytes?: number;
  /** Stops the work; the promise then rejects and nothing partial is left behind. */
  signal?: AbortSignal | undefined;
}

/** Where a slug was unpacked. */
export interface UnpackedSlug {
  /** `slugsDir/<sha256>`: the app's files. */
  appDir: string;
  /** True when the slug already existed and was reused as is. */
  reused: boolean;
  /** Entries in the archive (0 when reused). */
  entries: number;
  /** Uncompressed size of the archive in bytes (0 when reused). */
  totalBytes: number;
}

/**
 * Unpacks an artifact into `slugsDir/<sha256>/`, or reuses that directory when it exists.
 *
 * @throws HangarError `BAD_INPUT` when the checksum does not match, the file is not a gzipped
 *   tar, or an entry is unsafe (absolute path, `..`, a link leading outside, a device or FIFO);
 *   `PAYLOAD_TOO_LARGE` past `maxBytes`; `ARTIFACT_NOT_FOUND` when the file is missing.
 */
export async function unpackSlug(options: UnpackSlugOptions): Promise<UnpackedSlug> {
  const { artifactPath, sha256, slugsDir, signal } = options;
  if (!SHA256_HEX.test(sha256)) {
    throw new HangarError('BAD_INPUT', `"${sha256}" is not a SHA-256 digest (64 lowercase hex digits).`);
  }
  const appDir = join(slugsDir, sha256);
  if (await isDirectory(appDir)) return { appDir, reused: true, entries: 0, totalBytes: 0 };

  const actual = await hashFile(artifactPath, signal);
  if (actual !== sha256) {
    throw new HangarError(
      'BAD_INPUT',
      `The artifact's checksum is ${actual}, not ${sha256}; it was corrupted or replaced, upload it again.`,
    );
  }
  const scan = await scanArchive(artifactPath, { maxBytes: options.maxBytes ?? DEFAULT_MAX_ARCHIVE_BYTES, signal });

  await mkdir(slugsDir, { recursive: true });
  const tmp = await mkdtemp(join(slugsDir, `.tmp-${sha256.slice(0, 12)}-`));
  try {
    // Loaded on the first unpack only: an idle agent does not carry tar.
    const { extract } = await import('tar');
    await extract({
      file: artifactPath,
      cwd: tmp,
      strict: true,
      preserveOwner: false,
      maxDecompressionRatio: Infinity,
      // Already enforced by the scan; kept so extraction can never create anything else.
      filter: (_path, entry) => 'type' in entry && SAFE_ENTRY_TYPES.has(entry.type),
    });
    signal?.throwIfAborted();
    // mkdtemp makes the directory private; the app's processes may run as another user.
    await chmod(tmp, 0o755);
    try {
      await rename(tmp, appDir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // A concurrent unpack of the same artifact finished first: its copy is as good as ours.
      if ((code === 'ENOTEMPTY' || code === 'EEXIST') && (await isDirectory(appDir))) {
        await rm(tmp, { recursive: true, force: true });
        return { appDir, reused: true, entries: 0, totalBytes: 0 };
      }
      throw err;
    }
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  return { appDir, reused: false, entries: scan.entries, totalBytes: scan.totalBytes };
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

async function hashFile(path: string, signal: AbortSignal | undefined): Promise<string> {
  const hash = createHash('sha256');
  try {
    for await (const chunk of createReadStream(path, { signal })) hash.update(chunk as Buffer);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new HangarError('ARTIFACT_NOT_FOUND', `The build artifact ${path} does not exist; fetch it again.`, { cause: err });
    }
    throw err;
  }
  return hash.digest('hex');
}
