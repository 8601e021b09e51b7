import { test } from 'node:test';
import assert from 'node:assert/strict';
import { freeIndexes, placeInstances, type SchedulerAgent } from '../../coordinator/fleet/scheduler.js';
import { isHangarError } from '../../common/errors.js';

const agent = (name: string, load = 0, maxInstances = 10, up = true): SchedulerAgent => ({ name, load, maxInstances, up });

test('spreads instances of one process type over agents before stacking', () => {
  const placed = placeInstances(
    [agent('a'), agent('b')],
    [],
    [
      { app: 'shop', type: 'web' },
      { app: 'shop', type: 'web' },
      { app: 'shop', type: 'web' },
    ],
  );
  assert.deepEqual(placed, ['a', 'b', 'a']);
});

test('spread counts what is already placed for the same app and type', () => {
  const placed = placeInstances(
    [agent('a', 1), agent('b', 3)],
    [
      { agent: 'a', app: 'shop', type: 'web' },
      { agent: 'b', app: 'blog', type: 'web' },
      { agent: 'b', app: 'blog', type: 'web' },
      { agent: 'b', app: 'shop', type: 'worker' },
    ],
    [{ app: 'shop', type: 'web' }],
  );
  // b is busier overall but has no shop web yet: spread wins over load.
  assert.deepEqual(placed, ['b']);
});

test('among equally spread agents the least loaded wins, then the name', () => {
  assert.deepEqual(placeInstances([agent('b', 2), agent('a', 5), agent('c', 2)], [], [{ app: 'x', type: 'web' }]), ['b']);
  assert.deepEqual(placeInstances([agent('b', 0), agent('a', 0)], [], [{ app: 'x', type: 'web' }]), ['a']);
});

test('respects capacity and skips agents that are down', () => {
  const placed = placeInstances(
    [agent('a', 1, 2), agent('b', 0, 10, false), agent('c', 0, 1)],
    [],
    [
      { app: 'x', type: 'web' },
      { app: 'x', type: 'web' },
    ],
  );
  assert.deepEqual(placed.sort(), ['a', 'c']);
});

test('throws NO_CAPACITY when every agent is full and NO_AGENTS when none is up', () => {
  assert.throws(
    () => placeInstances([agent('a', 2, 2)], [], [{ app: 'x', type: 'web' }]),
    (err) => isHangarError(err, 'NO_CAPACITY'),
  );
  assert.throws(
    () => placeInstances([agent('a', 0, 2, false)], [], [{ app: 'x', type: 'web' }]),
    (err) => isHangarError(err, 'NO_AGENTS'),
  );
  assert.throws(
    () => placeInstances([], [], [{ app: 'x', type: 'web' }]),
    (err) => isHangarError(err, 'NO_AGENTS'),
  );
});

test('placing nothing needs no agent capacity', () => {
  assert.deepEqual(placeInstances([agent('a', 2, 2)], [], []), []);
});

test('freeIndexes fills gaps first, like dyno names', () => {
  assert.deepEqual(freeIndexes([], 3), [1, 2, 3]);
  assert.deepEqual(freeIndexes([1, 3], 2), [2, 4]);
  assert.deepEqual(freeIndexes([2, 1], 0), []);
});
