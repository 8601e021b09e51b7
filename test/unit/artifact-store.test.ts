import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test, type TestContext } from 'node:test';
import { ArtifactStore } from '../../agent/build/artifact-store.js';
import { isHangarError } from '../../common/errors.js';

const BYTES = Buffer.from('a release artifact, gzipped in real life\n'.repeat(2000));
const SHA = createHash('sha256').update(BYTES).digest('hex');

/** A gRPC status error as @grpc/grpc-js emits it on a stream. */
function grpcError(code: number, details: string): Error {
  return Object.assign(new Error(`${code} ${details}`), { code, details });
}

/** Half the bytes, then the stream fails with `err` (the coordinator killed mid-transfer). */
function cutStream(err: Error): Readable {
  return Readable.from(
    (async function* () {
      yield BYTES.subarray(0, BYTES.length / 2);
      throw err;
    })(),
  );
}

async function dir(t: TestContext): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'hangar-artifacts-'));
  t.after(() => rm(d, { recursive: true, force: true }));
  return d;
}

test('a fetch cut by the coordinator going away is tried again and lands whole; no partial file stays', async (t) => {
  const d = await dir(t);
  let calls = 0;
  const store = new ArtifactStore(
    d,
    () => {
      calls++;
      if (calls === 1) throw new Error('not connected');
      if (calls === 2) return cutStream(grpcError(14, 'UNAVAILABLE: read ECONNRESET'));
      return Readable.from([BYTES]);
    },
    { delayMs: 5 },
  );
  const path = await store.get(SHA);
  assert.equal(calls, 3);
  assert.deepEqual(await readFile(path), BYTES);
  assert.deepEqual(await readdir(d), [`${SHA}.tar.gz`]);
  // Cached: not fetched again.
  assert.equal(await store.get(SHA), path);
  assert.equal(calls, 3);
});

test('a missing artifact fails at once; a coordinator that never comes back fails after the retry window', async (t) => {
  const d = await dir(t);
  let calls = 0;
  const missing = new ArtifactStore(
    d,
    () => {
      calls++;
      return cutStream(grpcError(5, 'NOT_FOUND: no such artifact'));
    },
    { delayMs: 5 },
  );
  await assert.rejects(missing.get(SHA), (err) => isHangarError(err, 'BUILD_FAILED') && /NOT_FOUND/.test(err.message));
  assert.equal(calls, 1);

  calls = 0;
  const gone = new ArtifactStore(
    d,
    () => {
      calls++;
      return cutStream(grpcError(14, 'UNAVAILABLE: connect ECONNREFUSED'));
    },
    { delayMs: 5, forMs: 100 },
  );
  await assert.rejects(gone.get(SHA), (err) => isHangarError(err, 'BUILD_FAILED') && /UNAVAILABLE/.test(err.message));
  assert.ok(calls >= 3, `tried ${calls} times`);
  assert.deepEqual(await readdir(d), [], 'a partial download was left behind');
});

test('an artifact that arrives corrupted is refused, not retried into the cache', async (t) => {
  const d = await dir(t);
  const store = new ArtifactStore(d, () => Readable.from([Buffer.from('something else')]), { delayMs: 5 });
  await assert.rejects(store.get(SHA), (err) => isHangarError(err, 'BUILD_FAILED') && /corrupted/.test(err.message));
  assert.deepEqual(await readdir(d), []);
});
