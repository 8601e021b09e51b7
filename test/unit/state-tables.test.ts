import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isHangarError } from '../../common/errors.js';
import { ADDON_TRANSITIONS } from '../../coordinator/addons/addon-phase.js';
import { DEPLOY_TRANSITIONS, RELEASE_TRANSITIONS, isFinished } from '../../coordinator/releases/deploy-status.js';
import { assertTransition, type TransitionTable } from '../../coordinator/store/transition-table.js';

/** Every move the table lists works; every other move between two different states throws. */
function checkTable<S extends string>(name: string, table: TransitionTable<S>): void {
  const states = Object.keys(table) as S[];
  for (const from of states) {
    for (const to of states) {
      if (from === to || table[from].includes(to)) {
        assert.doesNotThrow(() => assertTransition(table, from, to, name), `${name}: ${from} → ${to}`);
      } else {
        assert.throws(
          () => assertTransition(table, from, to, name),
          (err: unknown) => isHangarError(err, 'INTERNAL') && err.message.includes(`from ${from} to ${to}`),
          `${name}: ${from} → ${to}`,
        );
      }
    }
  }
}

test('deploy status: every legal move works, every other one throws', () => {
  checkTable('deploy', DEPLOY_TRANSITIONS);
  assert.doesNotThrow(() => assertTransition(DEPLOY_TRANSITIONS, 'building', 'releasing', 'deploy'));
  assert.doesNotThrow(() => assertTransition(DEPLOY_TRANSITIONS, 'rolling_out', 'rolling_back', 'deploy'));
  assert.throws(() => assertTransition(DEPLOY_TRANSITIONS, 'succeeded', 'rolling_out', 'deploy'), /Illegal deploy transition/);
  assert.throws(() => assertTransition(DEPLOY_TRANSITIONS, 'rolling_back', 'succeeded', 'deploy'), /Illegal deploy transition/);
  // A live release's postdeploy scripts end the deploy either way; nothing rolls back from there.
  assert.doesNotThrow(() => assertTransition(DEPLOY_TRANSITIONS, 'rolling_out', 'postdeploy', 'deploy'));
  assert.doesNotThrow(() => assertTransition(DEPLOY_TRANSITIONS, 'postdeploy', 'failed', 'deploy'));
  assert.throws(() => assertTransition(DEPLOY_TRANSITIONS, 'postdeploy', 'rolling_back', 'deploy'), /Illegal deploy transition/);
  assert.equal(isFinished('succeeded'), true);
  assert.equal(isFinished('failed'), true);
  assert.equal(isFinished('rolling_out'), false);
});

test('release status: every legal move works, every other one throws', () => {
  checkTable('release', RELEASE_TRANSITIONS);
  assert.doesNotThrow(() => assertTransition(RELEASE_TRANSITIONS, 'pending', 'running', 'release'));
  assert.doesNotThrow(() => assertTransition(RELEASE_TRANSITIONS, 'running', 'succeeded', 'release'));
  assert.throws(() => assertTransition(RELEASE_TRANSITIONS, 'succeeded', 'running', 'release'), /Illegal release transition/);
});

test('add-on phase: any reported state moves to any other, destroyed is final', () => {
  checkTable('add-on', ADDON_TRANSITIONS);
  assert.doesNotThrow(() => assertTransition(ADDON_TRANSITIONS, 'provisioning', 'up', 'add-on'));
  assert.doesNotThrow(() => assertTransition(ADDON_TRANSITIONS, 'up', 'destroyed', 'add-on'));
  assert.throws(() => assertTransition(ADDON_TRANSITIONS, 'destroyed', 'up', 'add-on'), /Illegal add-on transition/);
});
