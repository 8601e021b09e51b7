import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createLogger } from '../../common/logger.js';
import { LogHub } from '../../coordinator/logs/log-hub.js';
import { LogIngest } from '../../coordinator/logs/log-ingest.js';
import type { LogStore } from '../../coordinator/logs/log-store.js';

test('a store that keeps failing (disk full) is reported once per interval, with a count, and recovery is said', async () => {
  const said: { level: number; msg: string; failures?: number }[] = [];
  const logger = createLogger({
    level: 'info',
    destination: { write: (line: string) => void said.push(JSON.parse(line) as (typeof said)[number]) },
  });
  let full = true;
  const store = {
    ingestMany: (batches: readonly unknown[]) => {
      if (full) throw Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
      return batches.map(() => ({ acked: 7, inserted: [] }));
    },
  } as unknown as LogStore;
  let now = 0;
  const ingest = new LogIngest({ store, hub: new LogHub(), logger, now: () => now, failureLogIntervalMs: 30_000 });
  const submit = () => new Promise<number | null>((resolve) => ingest.submit('a1', 'e1', [], resolve));
  // An agent retrying every 250 ms for 60 s.
  for (let i = 0; i < 240; i++) {
    assert.equal(await submit(), null, 'a failed store is never acked');
    now += 250;
  }
  const errors = said.filter((s) => s.level === 50);
  assert.equal(errors.length, 2, 'two errors in 60 s, not 240');
  assert.match(errors[0]?.msg ?? '', /disk is full; free space/);
  assert.equal(errors[1]?.failures, 121);
  full = false;
  assert.equal(await submit(), 7);
  assert.deepEqual(
    said.filter((s) => s.level === 30).map((s) => [s.msg, s.failures]),
    [['storing log lines again', 240]],
  );
});
