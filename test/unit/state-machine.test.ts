import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isHangarError } from '../../common/errors.js';
import { StateMachine } from '../../common/state-machine.js';

type Light = 'red' | 'green' | 'amber';
const TABLE: Record<Light, readonly Light[]> = { red: ['green'], green: ['amber'], amber: ['red'] };

describe('StateMachine', () => {
  it('starts in the initial state and follows legal moves', () => {
    const light = new StateMachine<Light>('red', TABLE, 'light');
    assert.equal(light.state, 'red');
    light.to('green');
    light.to('amber');
    light.to('red');
    assert.equal(light.state, 'red');
  });

  it('throws INTERNAL on an illegal move and keeps its state', () => {
    const light = new StateMachine<Light>('red', TABLE, 'light');
    assert.equal(light.can('amber'), false);
    assert.throws(
      () => light.to('amber'),
      (err: unknown) => isHangarError(err, 'INTERNAL') && /light: illegal transition red -> amber/.test(err.message),
    );
    assert.equal(light.state, 'red');
  });
});
