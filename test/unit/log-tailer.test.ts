import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { pino } from 'pino';
import { LogSpool, type LogRecord } from '../../agent/logs/log-spool.js';
import { LogTailer } from '../../agent/logs/log-tailer.js';
import { systemClock } from '../../common/clock.js';

const logger = pino({ level: 'silent' });

function setup(t: TestContext, options: { readBytes?: number; partialLineMs?: number } = {}) {
  const d = mkdtempSync(join(tmpdir(), 'hangar-tailer-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  const spool = new LogSpool({ dir: join(d, 'spool'), clock: systemClock, logger });
  spool.open();
  const tailer = new LogTailer({ spool, pollMs: 20, clock: systemClock, logger, ...options });
  t.after(() => {
    tailer.close();
    spool.close();
  });
  tailer.start();
  const all = (): LogRecord[] => {
    const out: LogRecord[] = [];
    for (let next = 1; ;) {
      const batch = spool.read(next, 1e8, 1e6);
      const last = batch[batch.length - 1];
      if (!last) return out;
      out.push(...batch);
      next = last.seq + 1;
    }
  };
  return { d, spool, tailer, all };
}

async function until<T>(what: string, fn: () => T | null | undefined | false, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('LogTailer', () => {
  it('turns bytes into text lines: invalid UTF-8 replaced, CRLF trimmed, long lines cut with a marker', async (t) => {
    const { d, tailer, all } = setup(t);
    const path = join(d, 'out.log');
    writeFileSync(path, '');
    tailer.tail({ path, app: 'shop', source: 'web.1', stream: 'stderr' });
    appendFileSync(path, Buffer.concat([Buffer.from('caf'), Buffer.from([0xc3, 0x28]), Buffer.from(' ok\r\nsecond\n')]));
    appendFileSync(path, `${'a'.repeat(200 * 1024)}\nafter\n`);
    const lines = await until('4 lines', () => (all().length >= 4 ? all() : null));
    assert.equal(lines.length, 4);
    assert.equal(lines[0]?.line, 'caf\uFFFD( ok');
    assert.equal(lines[1]?.line, 'second');
    assert.equal(lines[2]?.line, `${'a'.repeat(64 * 1024)} [hangar: line cut at 65536 bytes]`);
    assert.equal(lines[3]?.line, 'after');
    assert.ok(lines.every((l) => l.app === 'shop' && l.source === 'web.1' && l.stream === 'stderr'));
  });

  it('holds a partial last line until its newline comes, or ships it after a while', async (t) => {
    const { d, tailer, all } = setup(t, { partialLineMs: 300 });
    const path = join(d, 'out.log');
    writeFileSync(path, 'one\ntw');
    tailer.tail({ path, app: 'shop', source: 'web.1', stream: 'stdout' });
    await until('first line', () => all().length === 1);
    appendFileSync(path, 'o\nthree');
    const lines = await until('three lines', () => (all().length === 3 ? all() : null), 3000);
    assert.deepEqual(
      lines.map((l) => l.line),
      ['one', 'two', 'three'],
    );
  });

  it('resumes after a restart where the spool says, and reads a truncated file from its start', async (t) => {
    const { d, spool, tailer, all } = setup(t);
    const path = join(d, 'out.log');
    writeFileSync(path, 'a\nb\n');
    tailer.tail({ path, app: 'shop', source: 'web.1', stream: 'stdout' });
    await until('2 lines', () => all().length === 2);
    tailer.close();
    appendFileSync(path, 'c\n');
    const next = new LogTailer({ spool, pollMs: 20, clock: systemClock, logger });
    t.after(() => next.close());
    next.start();
    next.tail({ path, app: 'shop', source: 'web.1', stream: 'stdout' });
    await until('3 lines', () => all().length === 3);
    truncateSync(path, 0);
    appendFileSync(path, 'd\n');
    await until('4 lines', () => all().length === 4);
    assert.deepEqual(
      all().map((l) => l.line),
      ['a', 'b', 'c', 'd'],
    );
  });

  it('does not let a flooding file starve a quiet one', async (t) => {
    const { d, tailer, all } = setup(t, { readBytes: 64 * 1024 });
    const flood = join(d, 'flood.log');
    const quiet = join(d, 'quiet.log');
    writeFileSync(flood, `${'x'.repeat(99)}\n`.repeat(100_000));
    writeFileSync(quiet, 'hello\n');
    tailer.tail({ path: flood, app: 'shop', source: 'worker.1', stream: 'stdout' });
    tailer.tail({ path: quiet, app: 'shop', source: 'web.1', stream: 'stdout' });
    const lines = await until('all lines', () => (all().length === 100_001 ? all() : null), 20_000);
    const quietSeq = lines.find((l) => l.line === 'hello')?.seq ?? Infinity;
    assert.ok(quietSeq < 2000, `the quiet file's line came at seq ${quietSeq}, not after the whole flood`);
  });
});
