import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { pino } from 'pino';
import { LogSpool, type LogRecord } from '../../agent/logs/log-spool.js';
import { LogTailer, type LogTailerOptions } from '../../agent/logs/log-tailer.js';
import { systemClock } from '../../common/clock.js';

const logger = pino({ level: 'silent' });

function setup(
  t: TestContext,
  options: Partial<Pick<LogTailerOptions, 'readBytes' | 'partialLineMs' | 'pollMs' | 'dirtyDelayMs' | 'onAppended'>> = {},
) {
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

  it('with a dirty delay, reads what several files wrote in that time in one turn, after the delay', async (t) => {
    const calls: string[] = [];
    // No timed rounds after the first: only the watchers wake the tailer.
    const { d, tailer, all } = setup(t, { pollMs: 60_000, dirtyDelayMs: 400, onAppended: (how) => calls.push(how) });
    const paths = ['a', 'b', 'c'].map((n) => join(d, `${n}.log`));
    for (const [i, path] of paths.entries()) {
      writeFileSync(path, '');
      tailer.tail({ path, app: 'shop', source: `web.${i + 1}`, stream: 'stdout' });
    }
    // The first round opens the files and sets their watchers.
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(calls, []);
    for (const path of paths) appendFileSync(path, `hello from ${path}\n`);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(all().length, 0, 'held for the delay');
    const lines = await until('3 lines', () => (all().length >= 3 ? all() : null));
    assert.deepEqual(lines.map((l) => l.line).sort(), paths.map((p) => `hello from ${p}`).sort());
    assert.deepEqual(calls, ['watched'], 'the three files were read in one turn');
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

  it('rotates a file written flat out many times and loses nothing: every line once, in order', async (t) => {
    const d = mkdtempSync(join(tmpdir(), 'hangar-tailer-rotate-'));
    t.after(() => rmSync(d, { recursive: true, force: true }));
    const messages: string[] = [];
    const spy = pino({ level: 'info' }, { write: (m: string) => void messages.push((JSON.parse(m) as { msg: string }).msg) });
    const spool = new LogSpool({ dir: join(d, 'spool'), clock: systemClock, logger });
    spool.open();
    // The default punch (fallocate --punch-hole), counted: the second tailer below must not read
    // the file while this one's last punch is still running (two tailers on one file never happen
    // in an agent; a hole growing under a reader turns the line it is in the middle of into zeros).
    let punching = 0;
    const punchHole = (path: string, length: number, done: (err: Error | null) => void) => {
      punching++;
      execFile('fallocate', ['--punch-hole', '--offset', '0', '--length', String(length), path], { timeout: 30_000 }, (err) => {
        punching--;
        done(err);
      });
    };
    const tailer = new LogTailer({
      spool,
      pollMs: 5,
      readBytes: 16 * 1024,
      rotateBytes: 64 * 1024,
      clock: systemClock,
      logger: spy,
      punchHole,
    });
    t.after(() => {
      tailer.close();
      spool.close();
    });
    tailer.start();
    const path = join(d, 'out.log');
    writeFileSync(path, '');
    tailer.tail({ path, app: 'shop', source: 'web.1', stream: 'stdout' });
    // A real process, appending (O_APPEND, as an instance's stdout) as fast as it can, one write a line.
    const total = 200_000;
    const writer = spawn(
      '/usr/bin/python3',
      [
        '-c',
        `import os\nfd = os.open(${JSON.stringify(path)}, os.O_WRONLY | os.O_APPEND)\nfor i in range(1, ${total + 1}): os.write(fd, b"seq %d pad-pad-pad\\n" % i)`,
      ],
      { stdio: 'ignore' },
    );
    t.after(() => {
      if (writer.exitCode === null) writer.kill('SIGKILL');
    });
    const exited = new Promise<number | null>((resolve) => writer.once('exit', (code) => resolve(code)));
    // The shipper's part: read what the spool holds and ack it, as the coordinator would.
    const got: number[] = [];
    let next = 1;
    const deadline = Date.now() + 120_000;
    while (got.length < total && Date.now() < deadline) {
      for (;;) {
        const batch = spool.read(next, 1e6, 10_000);
        const last = batch.at(-1);
        if (!last) break;
        for (const r of batch) got.push(Number(/^seq (\d+) pad-pad-pad$/.exec(r.line)?.[1] ?? NaN));
        next = last.seq + 1;
        spool.ack(last.seq);
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    assert.equal(await exited, 0);
    const rotations = messages.filter((m) => m.startsWith('rotated a log file')).length;
    assert.ok(rotations >= 10, `only ${rotations} rotations while ${total} lines were written`);
    assert.equal(got.length, total);
    const wrong = got.findIndex((seq, i) => seq !== i + 1);
    assert.equal(wrong, -1, `line ${wrong + 1} is seq ${got[wrong]}`);
    // The shipped part takes no disk space any more; the file's size (offsets) never went back.
    const st = statSync(path);
    assert.ok(st.size >= total * 20);
    assert.ok(st.blocks * 512 < st.size / 4, `${st.blocks * 512} bytes on disk of ${st.size}`);
    // A tailer that lost its spool reads from the start: the hole gives no lines, only the kept tail.
    tailer.close();
    await until('the last punch to finish', () => punching === 0);
    const again = setup(t);
    again.tailer.tail({ path, app: 'shop', source: 'web.1', stream: 'stdout' });
    const tail = await until('the unpunched tail', () => (again.all().length > 0 ? again.all() : null));
    assert.ok(
      tail.every((r) => /^seq \d+ pad-pad-pad$/.test(r.line)),
      'no zeros read as a line',
    );
    assert.equal(tail.at(-1)?.line, `seq ${total} pad-pad-pad`);
  });
});
