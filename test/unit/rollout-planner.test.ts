import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planRollout, surgeCount, surgeOf, type PlanInstance, type Surge } from '../../coordinator/releases/rollout-planner.js';

function inst(type: string, idx: number, release: number, state: PlanInstance['state'] = 'up', desired: PlanInstance['desired'] = 'run') {
  return { key: `app:${type}.${idx}:v${release}`, type, idx, release, desired, state };
}

test('surge: 25% of the wanted count rounded up, at least 1; app.json may override', () => {
  assert.equal(surgeCount('25%', 10), 3);
  assert.equal(surgeCount('25%', 4), 1);
  assert.equal(surgeCount('25%', 1), 1);
  assert.equal(surgeCount('25%', 0), 1);
  assert.equal(surgeCount('100%', 5), 5);
  assert.equal(surgeCount(2, 10), 2);
  assert.equal(surgeOf(null), '25%');
  assert.equal(surgeOf({ hangar: { surge: 3 } }), 3);
  assert.equal(surgeOf({ hangar: { surge: '50%' } }), '50%');
  assert.equal(surgeOf({ hangar: { surge: 0 } }), '25%');
  assert.equal(surgeOf({ hangar: { surge: 'lots' } }), '25%');
});

test('a first deploy starts every instance at once', () => {
  const plan = planRollout({ target: 1, formation: { web: 3, worker: 1 }, instances: [], surge: '25%' });
  assert.deepEqual(
    plan.steps.map((s) => [s.type, s.start]),
    [
      ['web', [1, 2, 3]],
      ['worker', [1]],
    ],
  );
  assert.equal(plan.done, false);
});

test('one batch: start surge new, then drain as many old as came up, then wait for the drain', () => {
  const old = [inst('web', 1, 1), inst('web', 2, 1), inst('web', 3, 1), inst('web', 4, 1)];
  let plan = planRollout({ target: 2, formation: { web: 4 }, instances: old, surge: '25%' });
  assert.deepEqual(plan.steps[0]?.start, [1]);
  assert.deepEqual(plan.steps[0]?.drain, []);

  plan = planRollout({ target: 2, formation: { web: 4 }, instances: [...old, inst('web', 1, 2, 'starting')], surge: '25%' });
  assert.deepEqual(plan.steps[0]?.start, [], 'waits while the batch starts');
  assert.deepEqual(plan.steps[0]?.pending, ['app:web.1:v2']);

  plan = planRollout({ target: 2, formation: { web: 4 }, instances: [...old, inst('web', 1, 2)], surge: '25%' });
  assert.deepEqual(plan.steps[0]?.drain, ['app:web.4:v1'], 'highest old index drains first');
  assert.deepEqual(plan.steps[0]?.start, [], 'no new batch before the old one is drained');

  const draining = [...old.slice(0, 3), inst('web', 4, 1, 'up', 'drain'), inst('web', 1, 2)];
  plan = planRollout({ target: 2, formation: { web: 4 }, instances: draining, surge: '25%' });
  assert.deepEqual(plan.steps[0]?.start, [], 'waits for the drain');

  plan = planRollout({ target: 2, formation: { web: 4 }, instances: [...old.slice(0, 3), inst('web', 1, 2)], surge: '25%' });
  assert.deepEqual(plan.steps[0]?.start, [2], 'next batch');
});

test('old instances that serve nothing go at once; workers are not drained through routers', () => {
  const plan = planRollout({
    target: 2,
    formation: { web: 2, worker: 1 },
    instances: [inst('web', 1, 1), inst('web', 2, 1, 'crashed'), inst('worker', 1, 1), inst('worker', 1, 2)],
    surge: 1,
  });
  const web = plan.steps.find((s) => s.type === 'web');
  const worker = plan.steps.find((s) => s.type === 'worker');
  assert.deepEqual(web?.remove, ['app:web.2:v1']);
  assert.deepEqual(worker?.remove, ['app:worker.1:v1']);
  assert.deepEqual(worker?.drain, []);
});

test('types the target does not run go to zero; the plan is done when only the target runs', () => {
  let plan = planRollout({ target: 2, formation: { web: 1 }, instances: [inst('web', 1, 2), inst('clock', 1, 1)], surge: 1 });
  assert.deepEqual(plan.steps.find((s) => s.type === 'clock')?.remove, ['app:clock.1:v1']);
  assert.equal(plan.done, false);
  plan = planRollout({ target: 2, formation: { web: 1 }, instances: [inst('web', 1, 2)], surge: 1 });
  assert.equal(plan.done, true);
});

/** Runs a rollout to the end, every new instance healthy at once, drains finishing at once. */
function simulate(wanted: number, surge: Surge, fromRelease: PlanInstance[]): { batches: number; minServing: number; maxRunning: number } {
  let rows = [...fromRelease];
  let batches = 0;
  let minServing = Infinity;
  let maxRunning = 0;
  for (let tick = 0; tick < 1000; tick++) {
    const plan = planRollout({ target: 9, formation: { web: wanted }, instances: rows, surge });
    if (plan.done) return { batches, minServing, maxRunning };
    const step = plan.steps[0];
    assert.ok(step);
    rows = rows.filter((r) => !step.remove.includes(r.key) && r.desired !== 'drain');
    rows = rows.map((r) => (step.drain.includes(r.key) ? { ...r, desired: 'drain' as const } : r));
    if (step.start.length > 0) batches++;
    rows.push(...step.start.map((idx) => inst('web', idx, 9, 'starting')));
    maxRunning = Math.max(maxRunning, rows.length);
    // Routers serve what is `run` and up; new ones become healthy before the next tick.
    minServing = Math.min(minServing, rows.filter((r) => r.desired === 'run' && r.state === 'up').length);
    rows = rows.map((r) => (r.state === 'starting' ? { ...r, state: 'up' as const } : r));
  }
  throw new Error('the rollout never finished');
}

test('a rolling rollout of 10 keeps 10 serving, runs at most 10 + surge, in ceil(10 / surge) batches', () => {
  const old = Array.from({ length: 10 }, (_, i) => inst('web', i + 1, 1));
  const r = simulate(10, '25%', old);
  assert.equal(r.batches, 4);
  assert.equal(r.minServing, 10);
  assert.ok(r.maxRunning <= 13, `ran ${r.maxRunning}`);
  const one = simulate(3, 1, old.slice(0, 3));
  assert.equal(one.batches, 3);
  assert.equal(one.minServing, 3);
});

test('rolling back: the failed release instances drain once the previous ones serve again', () => {
  // v2 failed on its second batch: v1 has 2 of 3 left, v2 has one up and one crashing.
  const rows = [inst('web', 1, 1), inst('web', 2, 1), inst('web', 1, 2), inst('web', 2, 2, 'crashed')];
  let plan = planRollout({ target: 1, formation: { web: 3 }, instances: rows, surge: 1 });
  const step = plan.steps[0];
  assert.deepEqual(step?.remove, ['app:web.2:v2'], 'the crashing one goes at once');
  assert.deepEqual(step?.drain, [], 'the healthy one keeps serving until v1 is back to 3');
  assert.deepEqual(step?.start, [3]);
  plan = planRollout({ target: 1, formation: { web: 3 }, instances: [...rows.slice(0, 3), inst('web', 3, 1)], surge: 1 });
  assert.deepEqual(plan.steps[0]?.drain, ['app:web.1:v2']);
});

test('a singleton is rolled out stop-then-start: the old one goes before the new one is placed', () => {
  const singletons = new Set(['clock']);
  const worker = inst('worker', 1, 1);
  // Start-then-stop for an ordinary type, stop-then-start for the singleton.
  let plan = planRollout({ target: 2, formation: { clock: 1, worker: 1 }, instances: [inst('clock', 1, 1), worker], surge: 1, singletons });
  const clock = plan.steps.find((s) => s.type === 'clock');
  assert.deepEqual([clock?.remove, clock?.start, clock?.done], [['app:clock.1:v1'], [], false]);
  assert.deepEqual(plan.steps.find((s) => s.type === 'worker')?.start, [1]);

  // A draining old copy (a web singleton) still holds the start back.
  plan = planRollout({ target: 2, formation: { clock: 1 }, instances: [inst('clock', 1, 1, 'up', 'drain')], surge: 1, singletons });
  assert.deepEqual(plan.steps[0]?.start, []);

  // Once no old row is left, the new one is placed; done once it is up.
  plan = planRollout({ target: 2, formation: { clock: 1 }, instances: [], surge: 1, singletons });
  assert.deepEqual(plan.steps[0]?.start, [1]);
  plan = planRollout({ target: 2, formation: { clock: 1 }, instances: [inst('clock', 1, 2, 'starting')], surge: 1, singletons });
  assert.deepEqual([plan.steps[0]?.start, plan.steps[0]?.pending, plan.done], [[], ['app:clock.1:v2'], false]);
  plan = planRollout({ target: 2, formation: { clock: 1 }, instances: [inst('clock', 1, 2)], surge: 1, singletons });
  assert.equal(plan.done, true);

  // Without the singleton flag the same rows are start-then-stop.
  plan = planRollout({ target: 2, formation: { clock: 1 }, instances: [inst('clock', 1, 1)], surge: 1 });
  assert.deepEqual([plan.steps[0]?.remove, plan.steps[0]?.start], [[], [1]]);
});
