import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { access, mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { HangarError } from '../../common/errors.js';

/** Opens a stream of an artifact's bytes from the coordinator. */
export type ArtifactSource = (sha256: string) => Readable;

/** How long a fetch cut by the coordinator going away is tried again (the link finds the new leader meanwhile). */
export interface ArtifactRetry {
  /** Give up this long after the first failure. Default 60 s. */
  forMs?: number;
  /** First pause between tries, doubled up to 2 s. Default 250 ms. */
  delayMs?: number;
}

/** gRPC CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE: the coordinator went away, not the artifact. */
const RETRIED_GRPC_CODES = new Set([1, 4, 14]);

/** A failure another try can get past: the connection, not the artifact or the disk. */
function transient(err: unknown): boolean {
  if (err instanceof HangarError) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'number') return RETRIED_GRPC_CODES.has(code);
  return /not connected|not joined|ECONNRESET|ECONNREFUSED|EPIPE/.test(err instanceof Error ? err.message : String(err));
}

/**
 * Release artifacts on the agent's disk (`<dir>/<sha256>.tar.gz`), fetched once from the
 * coordinator and checked against their sha256. Concurrent fetches of one artifact share a promise.
 * A fetch cut by the coordinator (a restart, a failover to another one) is tried again for a while.
 */
export class ArtifactStore {
  readonly #dir: string;
  readonly #source: ArtifactSource;
  readonly #retry: Required<ArtifactRetry>;
  readonly #inflight = new Map<string, Promise<string>>();

  constructor(dir: string, source: ArtifactSource, retry: ArtifactRetry = {}) {
    this.#dir = dir;
    this.#source = source;
    this.#retry = { forMs: retry.forMs ?? 60_000, delayMs: retry.delayMs ?? 250 };
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
    let deadline = 0;
    for (let delay = this.#retry.delayMs; ; delay = Math.min(delay * 2, 2000)) {
      try {
        return await this.#fetchOnce(sha256, path);
      } catch (err) {
        const cause = err instanceof HangarError && err.cause !== undefined ? err.cause : err;
        deadline ||= Date.now() + this.#retry.forMs;
        if (!transient(cause) || Date.now() + delay > deadline) throw err;
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  async #fetchOnce(sha256: string, path: string): Promise<string> {
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
        `Could not fetch artifact ${sha256.slice(0, 12)} from the coordinator: ${(err as Error).message}; deploy again once it answers`,
        { cause: err },
      );
    }
  }
}
