import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Backoff } from '../../agent/workloads/backoff.js';

/** No jitter effect: random() = 0.5 makes the spread zero. */
const middle = (): number => 0.5;

describe('Backoff', () => {
  it('grows delays exponentially from initialMs and caps them at maxMs', () => {
    const backoff = new Backoff({ initialMs: 100, maxMs: 1000, factor: 2, random: middle, crashLoopThreshold: 100 });
    const delays = Array.from({ length: 6 }, () => backoff.recordExit(0).delayMs);
    assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000]);
    assert.equal(backoff.delayFor(1), 100);
    assert.equal(backoff.delayFor(3), 400);
  });

  it('uses the documented defaults', () => {
    const backoff = new Backoff({ random: middle });
    assert.equal(backoff.delayFor(1), 1000);
    assert.equal(backoff.delayFor(20), 60_000);
    assert.equal(backoff.stableMs, 10_000);
    assert.equal(backoff.crashLoopThreshold, 5);
    assert.equal(backoff.jitter, 0.1);
  });

  it('spreads delays by the jitter fraction using the injected random source', () => {
    const low = new Backoff({ initialMs: 1000, maxMs: 60_000, jitter: 0.1, random: () => 0 });
    const high = new Backoff({ initialMs: 1000, maxMs: 60_000, jitter: 0.1, random: () => 0.999999 });
    assert.equal(low.delayFor(1), 900);
    assert.equal(high.delayFor(1), 1100);
    assert.equal(low.delayFor(2), 1800);
  });

  it('never exceeds maxMs, even with upward jitter', () => {
    const backoff = new Backoff({ initialMs: 1000, maxMs: 5000, jitter: 0.5, random: () => 0.999999 });
    assert.equal(backoff.delayFor(10), 5000);
  });

  it('resets the attempt count after a run of at least stableMs', () => {
    const backoff = new Backoff({ initialMs: 100, maxMs: 10_000, stableMs: 5000, random: middle });
    backoff.recordExit(10);
    backoff.recordExit(10);
    assert.equal(backoff.recordExit(10).delayMs, 400);
    const afterStable = backoff.recordExit(5000);
    assert.deepEqual(afterStable, { attempt: 1, delayMs: 100, shortRuns: 0, crashLoop: false, crashLoopStarted: false });
    assert.equal(backoff.recordExit(10).delayMs, 200);
  });

  it('detects a crash loop after crashLoopThreshold short runs and then waits maxMs', () => {
    const backoff = new Backoff({ initialMs: 10, maxMs: 500, crashLoopThreshold: 3, random: middle });
    const decisions = Array.from({ length: 5 }, () => backoff.recordExit(1));
    assert.deepEqual(
      decisions.map((d) => [d.shortRuns, d.crashLoop, d.crashLoopStarted, d.delayMs]),
      [
        [1, false, false, 10],
        [2, false, false, 20],
        [3, true, true, 500],
        [4, true, false, 500],
        [5, true, false, 500],
      ],
    );
    assert.equal(backoff.inCrashLoop, true);
    backoff.recordExit(60_000);
    assert.equal(backoff.inCrashLoop, false, 'a stable run ends the crash loop');
  });

  it('forgets everything on reset()', () => {
    const backoff = new Backoff({ initialMs: 10, crashLoopThreshold: 2, random: middle });
    backoff.recordExit(0);
    backoff.recordExit(0);
    assert.equal(backoff.inCrashLoop, true);
    backoff.reset();
    assert.equal(backoff.attempt, 0);
    assert.equal(backoff.shortRuns, 0);
    assert.equal(backoff.recordExit(0).delayMs, 10);
  });

  it('rejects nonsensical options', () => {
    assert.throws(() => new Backoff({ initialMs: 2000, maxMs: 1000 }), RangeError);
    assert.throws(() => new Backoff({ factor: 0.5 }), RangeError);
    assert.throws(() => new Backoff({ jitter: 2 }), RangeError);
    assert.throws(() => new Backoff({ crashLoopThreshold: 0 }), RangeError);
  });
});
