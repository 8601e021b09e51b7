/**
 * What the leader's write fence (coordinator/ha/write-fence.ts: a TEMP trigger per table and
 * operation, checking the lease's epoch per row) costs on the log ingest hot path: the same
 * batches through `LogStore.ingest` on an unfenced and a fenced database, alternated.
 *
 *   npm run bench:fence [-- --lines 200000 --batch 500 --rounds 3]
 *
 * Prints lines/s of each and the fence's share, beside its goal (≤ 15 % slower).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { SecretBox } from '../common/secret-box.js';
import { LeaderLease } from '../coordinator/ha/leader-lease.js';
import { LogStore } from '../coordinator/logs/log-store.js';
import { Store } from '../coordinator/store/store.js';
import { Goals } from './goals.js';

const { values } = parseArgs({
  options: {
    lines: { type: 'string', default: '200000' },
    batch: { type: 'string', default: '500' },
    rounds: { type: 'string', default: '3' },
  },
});
const LINES = Number(values.lines);
const BATCH = Number(values.batch);
const ROUNDS = Number(values.rounds);

async function ingestRate(fenced: boolean, round: number): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-fence-bench-'));
  try {
    const path = join(dir, 'hangar.db');
    const lease = new LeaderLease({ path, logger: pino({ level: 'silent' }) });
    lease.configure(
      { name: 'bench', apiUrl: 'http://127.0.0.1:1', grpcAddress: '127.0.0.1:2' },
      { onElected: () => undefined, onLost: () => undefined },
    );
    lease.tick();
    const epoch = lease.epoch ?? 0;
    const fence = fenced ? { fence: { epoch, onFenced: () => undefined } } : {};
    const store = new Store({ path, secrets: new SecretBox(randomBytes(32)), ...fence });
    const logs = new LogStore({ path, ...fence });
    const line = `GET /items/${round} 200 12ms ${'x'.repeat(60)}`;
    const started = performance.now();
    for (let seq = 1; seq <= LINES; seq += BATCH) {
      const batch = Array.from({ length: Math.min(BATCH, LINES - seq + 1) }, (_, i) => ({
        seq: seq + i,
        ts: Date.now(),
        app: 'shop',
        source: 'app[web.1]',
        stream: 'stdout' as const,
        line,
      }));
      logs.ingest('agent-1', 'e1', batch);
    }
    const rate = LINES / ((performance.now() - started) / 1000);
    logs.close();
    store.close();
    lease.close();
    return rate;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const plain: number[] = [];
const fencedRates: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  plain.push(await ingestRate(false, round));
  fencedRates.push(await ingestRate(true, round));
}
const best = (xs: number[]) => Math.max(...xs);
console.log(`log ingest without the fence: ${Math.round(best(plain)).toLocaleString('en-US')} lines/s (best of ${ROUNDS})`);
console.log(`log ingest with the fence:    ${Math.round(best(fencedRates)).toLocaleString('en-US')} lines/s (best of ${ROUNDS})`);
const goals = new Goals();
goals.check({ name: 'write fence cost on log ingest', value: (1 - best(fencedRates) / best(plain)) * 100, unit: '%', op: '<=', goal: 15 });
goals.finish('write-fence');
