import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isHangarError } from '../../common/errors.js';
import { StateMachine } from '../../common/state-machine.js';
import { SUPERVISOR_TRANSITIONS } from '../../agent/workloads/supervisor.js';
import { WORKLOAD_TRANSITIONS, workloadPhase } from '../../agent/workloads/workload-phase.js';

/** Every move a table lists works from a machine in that state; every other move throws and changes nothing. */
function checkTable<S extends string>(table: Record<S, readonly S[]>): void {
  const states = Object.keys(table) as S[];
  let legal = 0;
  let illegal = 0;
  for (const from of states) {
    for (const to of states) {
      const machine = new StateMachine<S>(from, table, 'thing');
      if (table[from].includes(to)) {
        machine.to(to);
        assert.equal(machine.state, to, `${from} -> ${to}`);
        legal++;
      } else {
        assert.throws(
          () => machine.to(to),
          (err: unknown) => isHangarError(err, 'INTERNAL') && err.message === `thing: illegal transition ${from} -> ${to}`,
        );
        assert.equal(machine.state, from);
        illegal++;
      }
    }
  }
  assert.ok(legal > 0 && illegal > 0);
}

describe('transition tables', () => {
  it('workload phases: every legal move works, every other throws', () => checkTable(WORKLOAD_TRANSITIONS));

  it('supervisor states: every legal move works, every other throws', () => checkTable(SUPERVISOR_TRANSITIONS));

  it('workload phases walk the lifecycles the runner uses', () => {
    const started = workloadPhase('shop:web.1:v3', 'preparing');
    for (const next of ['running', 'stopping', 'stopped'] as const) started.to(next);
    const failed = workloadPhase('shop:web.2:v3', 'preparing');
    for (const next of ['failed', 'stopping', 'stopped'] as const) failed.to(next);
    assert.throws(
      () => workloadPhase('shop:web.3:v3', 'stopped').to('preparing'),
      /workload shop:web.3:v3: illegal transition stopped -> preparing/,
    );
    assert.throws(() => workloadPhase('shop:web.4:v3', 'running').to('failed'));
  });
});
