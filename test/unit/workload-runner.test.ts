import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
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

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
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

  it('pause stops the process but keeps the workload (a re-applied snapshot starts nothing); resume starts it again', async (t) => {
    const { driver, starts } = fakeDriver(t);
    const r = runner(t, driver);
    assert.throws(() => r.resume('p'), /cannot resume p: it is not here/);
    r.apply([{ name: 'p', nonce: 1 }]);
    const up = await until('p up', () => r.statuses().find((s) => s.state === 'up'));
    await r.pause('p');
    assert.equal(alive(up.pid), false);
    r.apply([{ name: 'p', nonce: 1 }]);
    await new Promise((res) => setTimeout(res, 300));
    assert.equal(r.get('p')?.state, 'stopping', 'paused: still there, not running');
    assert.equal(r.get('p')?.vitals.pid, 0);
    r.resume('p');
    const again = await until('p up again', () => r.statuses().find((s) => s.state === 'up'));
    assert.notEqual(again.pid, up.pid);
    assert.deepEqual(starts, ['p'], 'resumed, not prepared again');
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

  it('closed while stopping, leaves the process to the next runner, which finishes the stop', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'hangar-runner-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const graceMs = 2500;
    const supervision = (name: string) => ({
      key: name,
      command: `'${process.execPath}' '${join(FIXTURES, 'ignore-sigterm.mjs')}'`,
      cwd: dir,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      stdoutPath: join(dir, name, 'stdout.log'),
      stderrPath: join(dir, name, 'stderr.log'),
      pidfilePath: join(dir, name, 'pid.json'),
      graceMs,
      settleMs: 100,
      logger: silentLogger(),
    });
    const { driver: base } = fakeDriver(t);
    const driver: WorkloadDriver<Spec, null, Status> = {
      ...base,
      start: (spec) => Promise.resolve({ supervision: supervision(spec.name), data: null }),
      async *recover(specs): AsyncIterable<Recovered<Spec, null>> {
        for (const name of readdirSync(dir)) {
          yield { key: name, spec: specs.find((s) => s.name === name) ?? null, supervision: supervision(name), port: 0, data: null };
        }
      },
    };
    const options = { retryMs: 100, retryByTimer: false, startAfterStop: true, clock: systemClock, logger: silentLogger() };
    const pids: number[] = [];
    t.after(() => {
      for (const pid of pids) {
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          // Gone, as it should be.
        }
      }
    });

    const first = new WorkloadRunner(driver, options);
    first.apply([{ name: 'a', nonce: 1 }]);
    const up = await until('a up', () => first.statuses().find((s) => s.state === 'up'));
    pids.push(up.pid);
    const out = join(dir, 'a', 'stdout.log');
    const grandchild = Number(await until('its grandchild', () => /grandchild=(\d+)/.exec(readFileSync(out, 'utf8'))?.[1]));
    // SIGTERM goes to the whole group: the grandchild (a plain sleeper) goes, its parent stays.
    first.apply([]);
    await until('SIGTERM ignored', () => (readFileSync(out, 'utf8').includes('SIGTERM ignored') ? true : undefined));
    assert.equal(first.statuses()[0]?.state, 'stopping');

    const closing = Date.now();
    await first.close({ stopInstances: false });
    assert.ok(Date.now() - closing < 1000, `close() took ${Date.now() - closing} ms`);
    const record = JSON.parse(readFileSync(join(dir, 'a', 'pid.json'), 'utf8')) as { pid: number; stopping?: boolean };
    assert.deepEqual([record.pid, record.stopping], [up.pid, true], 'the pidfile stays, marked stopping');
    // Past the grace period: the closed runner sent no SIGKILL.
    await new Promise((r) => setTimeout(r, graceMs + 500));
    assert.ok(alive(up.pid), 'the process outlives the runner that was stopping it');

    const second = new WorkloadRunner(driver, options);
    t.after(() => second.close({ stopInstances: true }));
    const adopting = Date.now();
    await second.adopt([]);
    assert.deepEqual(second.statuses(), [], 'adopting does not wait for the stop');
    await until('the stop finished', () => (!alive(up.pid) && !alive(grandchild) ? true : undefined), graceMs + 6000);
    const tookMs = Date.now() - adopting;
    assert.ok(tookMs >= graceMs - 200, `SIGKILL came after the grace period (${tookMs} ms)`);
    await until('the pidfile removed', () => (existsSync(join(dir, 'a', 'pid.json')) ? undefined : true), 2000);
  });

  it('an instance left stopping but still wanted is stopped, then started afresh', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'hangar-runner-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const supervision = (name: string) => ({
      key: name,
      command: `'${process.execPath}' '${join(FIXTURES, 'sleeper.mjs')}'`,
      cwd: dir,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      stdoutPath: join(dir, name, 'stdout.log'),
      stderrPath: join(dir, name, 'stderr.log'),
      pidfilePath: join(dir, name, 'pid.json'),
      graceMs: 300,
      settleMs: 100,
      logger: silentLogger(),
    });
    const { driver: base, starts } = fakeDriver(t);
    const driver: WorkloadDriver<Spec, null, Status> = {
      ...base,
      start: (spec) => {
        starts.push(spec.name);
        return Promise.resolve({ supervision: supervision(spec.name), data: null });
      },
      async *recover(specs): AsyncIterable<Recovered<Spec, null>> {
        for (const name of readdirSync(dir)) {
          yield { key: name, spec: specs.find((s) => s.name === name) ?? null, supervision: supervision(name), port: 0, data: null };
        }
      },
    };
    const options = { retryMs: 100, retryByTimer: false, startAfterStop: true, clock: systemClock, logger: silentLogger() };
    // What an agent that went away during a restart leaves: a live process, its pidfile marked stopping.
    const first = new WorkloadRunner(driver, options);
    first.apply([{ name: 'a', nonce: 1 }]);
    const up = await until('a up', () => first.statuses().find((s) => s.state === 'up'));
    await first.close({ stopInstances: false });
    const pidfile = join(dir, 'a', 'pid.json');
    writeFileSync(pidfile, JSON.stringify({ ...(JSON.parse(readFileSync(pidfile, 'utf8')) as object), stopping: true }));

    const second = runner(t, driver);
    await second.adopt([{ name: 'a', nonce: 1 }]);
    second.apply([{ name: 'a', nonce: 1 }]);
    const fresh = await until('a fresh one up', () => second.statuses().find((s) => s.state === 'up' && s.pid !== up.pid));
    assert.ok(!alive(up.pid), 'the old process was stopped first');
    assert.ok(fresh.pid > 0);
    assert.deepEqual(starts, ['a', 'a']);
  });
});
