import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { systemClock } from '../../common/clock.js';
import { silentLogger } from '../../common/logger.js';
import type { Recovered, Started, WorkloadChange, WorkloadDriver, WorkloadView } from '../../agent/workloads/workload-driver.js';
import { WorkloadRunner } from '../../agent/workloads/workload-runner.js';

// Compiled to dist/test/unit/; the fixtures stay in the source tree.
const FIXTURES = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../test/fixtures/procs');

interface Spec {
  name: string;
  nonce: number;
  /** Makes start() throw. */
  fail?: boolean;
}

interface Status {
  name: string;
  state: string;
  pid: number;
  restarts: number;
}

/** A driver that runs a sleeping node process per spec, in a fresh directory. */
function fakeDriver(t: TestContext) {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-runner-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const starts: string[] = [];
  const changes: string[] = [];
  const driver: WorkloadDriver<Spec, null, Status> = {
    names: { field: 'test', noun: 'test workload', preparing: 'preparing' },
    key: (spec) => spec.name,
    replaces: () => false,
    restartToken: (spec) => spec.nonce,
    async start(spec): Promise<Started<null>> {
      starts.push(spec.name);
      if (spec.fail) throw new Error('no such thing');
      return {
        supervision: {
          key: spec.name,
          command: `'${process.execPath}' '${join(FIXTURES, 'sleeper.mjs')}'`,
          cwd: dir,
          env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
          stdoutPath: join(dir, spec.name, 'stdout.log'),
          stderrPath: join(dir, spec.name, 'stderr.log'),
          pidfilePath: join(dir, spec.name, 'pid.json'),
          graceMs: 300,
          settleMs: 100,
          logger: silentLogger(),
        },
        data: null,
      };
    },
    async *recover(): AsyncIterable<Recovered<Spec, null>> {
      return;
    },
    async beforeStop() {},
    describeFailure: (error) => `could not start: ${String(error)}`,
    inspect: (view: WorkloadView<Spec, null>) => ({
      name: view.key,
      state: view.state,
      pid: view.vitals.pid,
      restarts: view.vitals.restarts,
    }),
    report: (status: Status, change: WorkloadChange) => {
      changes.push(`${status.name}:${change.kind === 'event' ? change.event.type : change.kind}`);
    },
  };
  return { driver, starts, changes };
}

function runner(t: TestContext, driver: WorkloadDriver<Spec, null, Status>, retryByTimer = false) {
  const r = new WorkloadRunner(driver, { retryMs: 100, retryByTimer, startAfterStop: true, clock: systemClock, logger: silentLogger() });
  t.after(() => r.close({ stopInstances: true }));
  return r;
}

async function until<T>(what: string, fn: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = fn();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('WorkloadRunner', () => {
  it('starts what is wanted once, restarts on a new token, stops what is no longer wanted', async (t) => {
    const { driver, starts, changes } = fakeDriver(t);
    const r = runner(t, driver);
    r.apply([{ name: 'a', nonce: 1 }]);
    r.apply([{ name: 'a', nonce: 1 }]);
    const up = await until('a up', () => r.statuses().find((s) => s.state === 'up'));
    assert.deepEqual(starts, ['a'], 'applying the same snapshot again starts nothing');
    assert.ok(up.pid > 0);

    r.apply([{ name: 'a', nonce: 2 }]);
    await until('a restarted', () => r.statuses().find((s) => s.state === 'up' && s.pid !== up.pid));
    assert.deepEqual(starts, ['a'], 'a restart keeps the prepared workload');

    r.apply([]);
    await until('a gone', () => (r.statuses().length === 0 ? true : undefined));
    assert.equal(changes[0], 'a:preparing');
    assert.ok(changes.includes('a:started'));
    assert.equal(changes.at(-1), 'a:stopped');
  });

  it('reports a failed start and tries again on its own with retryByTimer', async (t) => {
    const { driver, starts } = fakeDriver(t);
    const r = runner(t, driver, true);
    r.apply([{ name: 'b', nonce: 1, fail: true }]);
    const failed = await until('b failed', () => r.statuses().find((s) => s.state === 'failed'));
    assert.equal(failed.name, 'b');
    assert.equal(r.get('b')?.vitals.message, 'could not start: Error: no such thing');
    await until('a second attempt', () => (starts.length >= 2 ? true : undefined));
  });
});
