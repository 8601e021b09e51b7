import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isHangarError } from '../../common/errors.js';
import { WORKLOAD_TRANSITIONS, workloadPhase, type WorkloadPhase } from '../../agent/workloads/workload-phase.js';

const PHASES = Object.keys(WORKLOAD_TRANSITIONS) as WorkloadPhase[];

describe('workload phases', () => {
  it('allows every move of the table', () => {
    for (const from of PHASES) {
      for (const to of WORKLOAD_TRANSITIONS[from]) {
        const phase = workloadPhase('shop:web.1:v3', from);
        phase.to(to);
        assert.equal(phase.state, to, `${from} -> ${to}`);
      }
    }
  });

  it('throws on every move the table does not list', () => {
    let illegal = 0;
    for (const from of PHASES) {
      for (const to of PHASES.filter((p) => !WORKLOAD_TRANSITIONS[from].includes(p))) {
        const phase = workloadPhase('shop:web.1:v3', from);
        assert.throws(
          () => phase.to(to),
          (err: unknown) =>
            isHangarError(err, 'INTERNAL') && err.message.includes(`workload shop:web.1:v3: illegal transition ${from} -> ${to}`),
        );
        assert.equal(phase.state, from);
        illegal++;
      }
    }
    assert.ok(illegal > 0);
  });

  it('walks the lifecycles the runner uses', () => {
    const started = workloadPhase('a', 'preparing');
    for (const next of ['running', 'stopping', 'stopped'] as const) started.to(next);
    const failed = workloadPhase('b', 'preparing');
    for (const next of ['failed', 'stopping', 'stopped'] as const) failed.to(next);
    assert.throws(() => workloadPhase('c', 'stopped').to('preparing'));
    assert.throws(() => workloadPhase('d', 'running').to('preparing'));
  });
});
