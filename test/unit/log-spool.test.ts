import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { pino } from 'pino';
import { LogSpool, type SpoolInput } from '../../agent/logs/log-spool.js';
import type { Clock } from '../../common/clock.js';

/** A clock whose timers never fire: the state file is written only when the spool must. */
const frozen: Clock = { now: () => 1_000, setTimeout: () => ({}), clearTimeout: () => undefined };
const logger = pino({ level: 'silent' });

function dir(t: TestContext): string {
  const d = mkdtempSync(join(tmpdir(), 'hangar-spool-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

function lines(n: number, from = 0, extra: Partial<SpoolInput> = {}): SpoolInput[] {
  return Array.from({ length: n }, (_, i) => ({
    ts: 1,
    app: 'shop',
    source: 'web.1',
    stream: 'stdout' as const,
    line: `line ${from + i}`,
    ...extra,
  }));
}

/** Everything from `from` on, the way the shipper reads it: batch after batch. */
function readAll(spool: LogSpool, from = 1) {
  const out = [];
  for (let next = from; ;) {
    const batch = spool.read(next, 1e6);
    const last = batch[batch.length - 1];
    if (!last) return out;
    out.push(...batch);
    next = last.seq + 1;
  }
}

describe('LogSpool', () => {
  it('numbers lines consecutively, serves them from memory or disk, and drops acked segments', (t) => {
    const d = dir(t);
    const spool = new LogSpool({ dir: d, segmentBytes: 64 * 1024, memoryBytes: 100_000, clock: frozen, logger });
    spool.open();
    assert.equal(spool.append(lines(10)), 10);
    for (let i = 0; i < 50; i++) spool.append(lines(100, 10 + i * 100));
    assert.equal(spool.lastSeq, 5010);
    const first = readAll(spool);
    assert.equal(first.length, 5010, 'read back from the segments behind the memory window');
    assert.deepEqual(
      first.map((r) => r.seq),
      Array.from({ length: 5010 }, (_, i) => i + 1),
    );
    assert.equal(first[4000]?.line, 'line 4000');
    const batch = spool.read(100, 1000);
    assert.ok(batch.length > 1 && batch.length < 30, 'bounded by bytes');
    assert.equal(batch[0]?.seq, 100);
    const segmentsBefore = readdirSync(d).filter((n) => n.startsWith('seg-')).length;
    assert.ok(segmentsBefore > 1);
    spool.ack(4000);
    assert.ok(readdirSync(d).filter((n) => n.startsWith('seg-')).length < segmentsBefore);
    assert.equal(spool.read(1, 1000)[0]?.seq, 4001, 'acked lines are not served again');
    spool.close();
  });

  it('keeps epoch, acked seq, unacked lines and file offsets across a crash (no close)', (t) => {
    const d = dir(t);
    const a = new LogSpool({ dir: d, clock: frozen, logger });
    a.open();
    a.trackFile({ path: '/x/stdout.log', app: 'shop', source: 'web.1', stream: 'stdout' });
    a.append(lines(3, 0, { file: '/x/stdout.log', offset: 0 }).map((l, i) => ({ ...l, offset: (i + 1) * 7 })));
    a.ack(2);
    a.append(lines(2, 3));
    // Crash: no close(), and the lazy state write never ran (frozen clock).
    const b = new LogSpool({ dir: d, clock: frozen, logger });
    b.open();
    assert.equal(b.epoch, a.epoch);
    assert.equal(b.lastSeq, 5);
    assert.equal(b.file('/x/stdout.log')?.offset, 21, 'offset recovered from the records');
    assert.deepEqual(
      readAll(b).map((r) => r.seq),
      [1, 2, 3, 4, 5].filter((s) => s > b.acked),
    );
    assert.equal(b.append(lines(1)), 6, 'numbering goes on, nothing numbered twice');
    b.close();
  });

  it('cuts a record half-written when the agent died', (t) => {
    const d = dir(t);
    const a = new LogSpool({ dir: d, clock: frozen, logger });
    a.open();
    a.append(lines(3));
    a.close();
    const seg = readdirSync(d).find((n) => n.startsWith('seg-'));
    assert.ok(seg);
    appendFileSync(join(d, seg), '[4,1,"shop","web.1","std');
    const b = new LogSpool({ dir: d, clock: frozen, logger });
    b.open();
    assert.equal(b.lastSeq, 3);
    assert.equal(b.append(lines(1)), 4);
    assert.deepEqual(
      readAll(b).map((r) => r.line),
      ['line 0', 'line 1', 'line 2', 'line 0'],
    );
    b.close();
  });

  it('when full, drops the oldest lines and says how many per app', (t) => {
    const d = dir(t);
    const dropped: [string, number][] = [];
    const spool = new LogSpool({
      dir: d,
      maxBytes: 1024 * 1024,
      segmentBytes: 64 * 1024,
      clock: frozen,
      logger,
      onDropped: (app, n) => dropped.push([app, n]),
    });
    spool.open();
    for (let i = 0; i < 40; i++) spool.append(lines(1000, i * 1000, { line: `${'y'.repeat(40)} ${i}` }));
    assert.ok(spool.bytes <= 1024 * 1024 + 64 * 1024, `spool holds ${spool.bytes} bytes`);
    const total = dropped.reduce((n, [, c]) => n + c, 0);
    assert.ok(total > 0);
    assert.ok(dropped.every(([app]) => app === 'shop'));
    assert.equal(spool.firstSeq, total + 1, 'exactly the oldest lines went');
    assert.equal(spool.read(1, 100)[0]?.seq, total + 1);
    spool.close();
  });
});
