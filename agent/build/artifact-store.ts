import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { access, mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { HangarError } from '../../common/errors.js';

/** Opens a stream of an artifact's bytes from the coordinator. */
export type ArtifactSource = (sha256: string) => Readable;

/**
 * Release artifacts on the agent's disk (`<dir>/<sha256>.tar.gz`), fetched once from the
 * coordinator and checked against their sha256. Concurrent fetches of one artifact share a promise.
 */
export class ArtifactStore {
  readonly #dir: string;
  readonly #source: ArtifactSource;
  readonly #inflight = new Map<string, Promise<string>>();

  constructor(dir: string, source: ArtifactSource) {
    this.#dir = dir;
    this.#source = source;
  }

  /** The local path of the artifact, fetching it first when missing. */
  get(sha256: string): Promise<string> {
    let p = this.#inflight.get(sha256);
    if (!p) {
      p = this.#fetch(sha256).finally(() => this.#inflight.delete(sha256));
      this.#inflight.set(sha256, p);
    }
    return p;
  }

  async #fetch(sha256: string): Promise<string> {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new HangarError('BAD_INPUT', `Bad artifact id ${sha256}.`);
    const path = join(this.#dir, `${sha256}.tar.gz`);
    try {
      await access(path);
      return path;
    } catch {
      // Not here yet: fetch it.
    }
    await mkdir(this.#dir, { recursive: true });
    const tmp = join(this.#dir, `.fetch-${randomUUID()}`);
    const hash = createHash('sha256');
    const hasher = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(this.#source(sha256), hasher, createWriteStream(tmp, { mode: 0o600 }));
      const actual = hash.digest('hex');
      if (actual !== sha256) {
        throw new HangarError(
          'BUILD_FAILED',
          `Artifact ${sha256.slice(0, 12)} arrived corrupted (sha256 ${actual.slice(0, 12)}); it will be fetched again.`,
        );
      }
      await rename(tmp, path);
      return path;
    } catch (err) {
      await rm(tmp, { force: true });
      if (err instanceof HangarError) throw err;
      throw new HangarError(
        'BUILD_FAILED',
        `Could not fetch artifact ${sha256.slice(0, 12)} from the coordinator: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
}
