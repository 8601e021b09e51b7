import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decide, INITIAL_STATE, type AutoscaleTuning, type Observation, type ScalerState } from '../../coordinator/autoscale/autoscaler.js';
import type { AutoscalePolicy } from '../../coordinator/autoscale/autoscale-store.js';

const tuning: AutoscaleTuning = {
  windowMs: 60_000,
  sustainMs: 30_000,
  upCooldownMs: 60_000,
  downCooldownMs: 180_000,
  downRatio: 0.5,
  minRequests: 5,
};
const policy: AutoscalePolicy = { app: 'shop', type: 'web', min: 1, max: 4, p95Ms: 500, cpuPct: null };

/** Runs decide every 10 s on an injected clock; returns the quantities after each step. */
function run(observe: (now: number, quantity: number) => Omit<Observation, 'quantity'>, steps: number, start = 1, p = policy) {
  let state: ScalerState = INITIAL_STATE;
  let quantity = start;
  const history: number[] = [];
  for (let i = 0; i < steps; i++) {
    const now = 1_000_000 + i * 10_000;
    const r = decide(p, state, { quantity, ...observe(now, quantity) }, now, tuning);
    state = r.state;
    if (r.change) quantity = r.change.to;
    history.push(quantity);
  }
  return history;
}

test('scales up only after the pressure lasted sustainMs, then waits out the cool-down', () => {
  const h = run(() => ({ p95Ms: 900, cpuPct: null }), 12);
  // High from t=0; sustained at t=30 s (step 3) → 1 → 2; next up no sooner than 60 s later (step 9).
  assert.equal(h[2], 1);
  assert.equal(h[3], 2);
  assert.equal(h[8], 2);
  assert.ok((h[9] ?? 0) > 2);
});

test('grows in proportion to the overload, at most doubling, never above max', () => {
  const r = decide(
    policy,
    { highSince: 0, lowSince: null, lastChangeAt: null },
    { quantity: 2, p95Ms: 5000, cpuPct: null },
    40_000,
    tuning,
  );
  assert.equal(r.change?.to, 4);
  const capped = decide(
    { ...policy, max: 3 },
    { highSince: 0, lowSince: null, lastChangeAt: null },
    { quantity: 2, p95Ms: 5000, cpuPct: null },
    40_000,
    tuning,
  );
  assert.equal(capped.change?.to, 3);
  assert.match(capped.change?.reason ?? '', /p95 5000 ms vs target 500 ms/);
});

test('no flapping: a figure between the hysteresis band and the target changes nothing', () => {
  // 300 ms: under the 500 ms target, above 0.5 × 500: neither up nor down, ever.
  assert.deepEqual(
    run(() => ({ p95Ms: 300, cpuPct: null }), 60, 3),
    Array(60).fill(3),
  );
  // Alternating high and low never lasts sustainMs: nothing changes.
  assert.deepEqual(
    run((now) => ({ p95Ms: (now / 10_000) % 2 === 0 ? 900 : 100, cpuPct: null }), 60, 2),
    Array(60).fill(2),
  );
});

test('shrinks one at a time when calm lasts, respecting the down cool-down, down to min', () => {
  const h = run(() => ({ p95Ms: null, cpuPct: null }), 60, 4);
  assert.equal(h[2], 4);
  assert.equal(h[3], 3);
  // Next step down no sooner than 180 s after the first (step 21).
  assert.equal(h[20], 3);
  assert.equal(h[21], 2);
  assert.equal(h.at(-1), 1);
  assert.ok(h.every((q) => q >= 1));
});

test('out-of-range quantities are corrected at once', () => {
  assert.equal(decide(policy, INITIAL_STATE, { quantity: 0, p95Ms: null, cpuPct: null }, 0, tuning).change?.to, 1);
  assert.equal(decide(policy, INITIAL_STATE, { quantity: 9, p95Ms: null, cpuPct: null }, 0, tuning).change?.to, 4);
});

test('CPU targets work for any type; the worst figure decides', () => {
  const cpuPolicy: AutoscalePolicy = { app: 'shop', type: 'worker', min: 1, max: 5, p95Ms: null, cpuPct: 60 };
  const up = run(() => ({ p95Ms: null, cpuPct: 90 }), 4, 1, cpuPolicy);
  assert.equal(up[3], 2);
  const both: AutoscalePolicy = { ...policy, cpuPct: 60 };
  // Latency fine, CPU high → up.
  assert.equal(run(() => ({ p95Ms: 100, cpuPct: 95 }), 4, 1, both)[3], 2);
  // Latency low but CPU in the band → no scale-down.
  assert.deepEqual(
    run(() => ({ p95Ms: 10, cpuPct: 45 }), 30, 3, both),
    Array(30).fill(3),
  );
});
