import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { pino } from 'pino';
import { LogShipper } from '../../agent/logs/log-shipper.js';
import { systemClock } from '../../common/clock.js';
import type { LogBatch } from '../../proto/loader.js';

const logger = pino({ level: 'silent' });

function setup(t: TestContext, spoolBytes?: number) {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-shipper-'));
  const sent: LogBatch[] = [];
  let up = false;
  const shipper = new LogShipper({
    dir,
    send: (batch) => {
      if (!up) return false;
      sent.push(batch);
      return true;
    },
    batchBytes: 16 * 1024,
    ...(spoolBytes ? { spoolBytes } : {}),
    clock: systemClock,
    logger,
  });
  shipper.start();
  t.after(() => {
    shipper.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const flush = () => new Promise((r) => setTimeout(r, 50));
  const seqs = () => sent.flatMap((b) => (b.lines ?? []).map((l) => Number(l.seq)));
  return { shipper, sent, seqs, flush, setUp: (v: boolean) => (up = v) };
}

describe('LogShipper', () => {
  it('sends in bounded batches while connected and resends what was not acked after a reconnect', async (t) => {
    const { shipper, sent, seqs, flush, setUp } = setup(t);
    shipper.writeMany(Array.from({ length: 1000 }, (_, i) => ({ app: 'shop', source: 'router', line: `request ${i} ${'p'.repeat(50)}` })));
    await flush();
    assert.equal(sent.length, 0, 'nothing is sent while disconnected');
    setUp(true);
    shipper.onConnected();
    await flush();
    assert.deepEqual(
      seqs(),
      Array.from({ length: 1000 }, (_, i) => i + 1),
    );
    assert.ok(sent.length > 1 && sent.every((b) => JSON.stringify(b).length < 40 * 1024), 'batches stay small');
    shipper.onAck(600, shipper.epoch);
    // The stream drops before the rest was acked: after the reconnect, 601.. go again.
    shipper.onDisconnected();
    sent.length = 0;
    shipper.onConnected();
    await flush();
    assert.deepEqual(
      seqs(),
      Array.from({ length: 400 }, (_, i) => i + 601),
    );
    // An ack of another epoch (a stale stream) is ignored.
    shipper.onAck(1000, 'someone-else');
    assert.equal(shipper.acked, 600);
  });

  it('when the spool is full, drops the oldest lines and says so in a hangar line', async (t) => {
    const { shipper, sent, seqs, flush, setUp } = setup(t, 1024 * 1024);
    for (let i = 0; i < 100; i++) {
      shipper.writeMany(
        Array.from({ length: 100 }, (_, k) => ({ app: 'shop', source: 'web.1', line: `${i * 100 + k} ${'d'.repeat(200)}` })),
      );
    }
    await flush();
    setUp(true);
    shipper.onConnected();
    await flush();
    const lines = sent.flatMap((b) => b.lines ?? []);
    const notices = lines.filter((l) => l.source === 'hangar');
    const counts = notices.map((l) => Number(/^Dropped (\d+) log lines: the agent's log spool was full/.exec(l.line ?? '')?.[1]));
    assert.ok(counts.length > 0 && counts.every((c) => c > 0), JSON.stringify(notices));
    const s = seqs();
    const first = s[0] ?? 0;
    assert.ok(first > 1, 'the oldest lines were dropped');
    assert.ok(
      counts.reduce((a, b) => a + b, 0) <= first - 1,
      'the notices count dropped lines (a notice itself may be dropped by a later drop)',
    );
    assert.deepEqual(
      s,
      Array.from({ length: s.length }, (_, i) => first + i),
      'everything after the dropped lines, in order, none twice',
    );
    const data = lines.filter((l) => l.source === 'web.1').map((l) => Number(l.line?.split(' ')[0]));
    assert.equal(data[data.length - 1], 9999, 'the newest lines were kept');
  });
});
