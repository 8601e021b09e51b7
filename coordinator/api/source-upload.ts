import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { HangarError, isHangarError } from '../../common/errors.js';
import type { Upload } from '../releases/releases.js';

/** Streams an upload to a temporary file while hashing it; enforces the size limit. */
export async function receiveUpload(body: Readable, dir: string, maxBytes: number): Promise<Upload> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, `.upload-${randomUUID()}`);
  const hash = createHash('sha256');
  let size = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      size += chunk.length;
      if (size > maxBytes) {
        callback(
          new HangarError(
            'PAYLOAD_TOO_LARGE',
            `The upload is larger than ${Math.round(maxBytes / 1048576)} MiB; leave build output and data out of it (.hangarignore).`,
          ),
        );
        return;
      }
      hash.update(chunk);
      callback(null, chunk);
    },
  });
  try {
    await pipeline(body, meter, createWriteStream(path, { mode: 0o600 }));
  } catch (err) {
    await rm(path, { force: true });
    if (isHangarError(err)) throw err;
    throw new HangarError('BAD_INPUT', 'The upload was cut off before it finished; try again.', { cause: err });
  }
  await stat(path);
  return { sha256: hash.digest('hex'), path, size };
}
