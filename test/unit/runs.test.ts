import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { RunStreamMessage } from '../../common/api-types.js';
import { systemClock } from '../../common/clock.js';
import { isHangarError } from '../../common/errors.js';
import { SecretBox } from '../../common/secret-box.js';
import { Runs, runSpecsFor } from '../../coordinator/runs/runs.js';
import { newInstanceRow, Store } from '../../coordinator/store/store.js';
import type { RunInput } from '../../proto/loader.js';

/** A store with app `shop` (v1 current) and agents a and b of one slot each; web.1 runs on a. */
async function fixture(t: { after(fn: () => unknown): void }) {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-runs-'));
  const store = new Store({ path: join(dir, 'hangar.db'), secrets: new SecretBox(randomBytes(32)) });
  t.after(() => {
    store.close();
    return rm(dir, { recursive: true, force: true });
  });
  const now = Date.now();
  store.createApp('shop', now);
  store.createRelease({
    app: 'shop',
    artifactSha256: 'a'.repeat(64),
    procfile: { web: 'gunicorn x' },
    config: { SECRET: 's3cret' },
    appJson: null,
    status: 'succeeded',
    description: 'Deploy',
    createdBy: 'admin',
    createdAt: now,
  });
  store.setCurrentRelease('shop', 1);
  for (const name of ['a', 'b']) {
    store.upsertAgent({
      name,
      address: '127.0.0.1',
      routerPort: 80,
      cpus: 1,
      memoryMb: 512,
      maxInstances: 1,
      singletonLeaseMs: 30_000,
      version: '0',
      lastSeen: now,
      createdAt: now,
    });
  }
  store.insertInstance(newInstanceRow({ key: 'shop:web.1:v1', app: 'shop', type: 'web', idx: 1, release: 1, agent: 'a' }, now));
  const connected = new Set(['a', 'b']);
  const sent: RunInput[] = [];
  const events: string[] = [];
  const runs = new Runs({
    store,
    hub: { isConnected: (agent) => connected.has(agent), sendRunInput: (_agent, input) => sent.push(input) > 0 },
    sync: { requestSync: () => undefined },
    clock: systemClock,
    logger: pino({ level: 'silent' }),
    recordEvent: (_app, line) => events.push(line),
  });
  return { store, runs, connected, sent, events };
}

test('runs take agent slots: placed where there is room, refused when every agent is full', async (t) => {
  const { runs } = await fixture(t);
  const first = runs.create('shop', { command: 'sleep 60', detached: true }, 'admin');
  assert.equal(first.agent, 'b', 'a is full with web.1');
  assert.equal(first.number, 1);
  assert.equal(first.timeoutSeconds, 24 * 3600, 'detached runs default to 24 h');
  assert.throws(
    () => runs.create('shop', { command: 'true' }, 'admin'),
    (err) => isHangarError(err, 'NO_CAPACITY'),
  );
});

test('bad requests: unknown release, unknown or down agent; nothing is recorded', async (t) => {
  const { runs, connected } = await fixture(t);
  assert.throws(
    () => runs.create('shop', { command: 'true', release: 9 }, 'admin'),
    (err) => isHangarError(err, 'RELEASE_NOT_FOUND'),
  );
  assert.throws(
    () => runs.create('shop', { command: 'true', agent: 'zz' }, 'admin'),
    (err) => isHangarError(err, 'AGENT_NOT_FOUND'),
  );
  connected.delete('b');
  assert.throws(
    () => runs.create('shop', { command: 'true', agent: 'b' }, 'admin'),
    (err) => isHangarError(err, 'AGENT_DOWN'),
  );
  assert.throws(
    () => runs.create('nope', { command: 'true' }, 'admin'),
    (err) => isHangarError(err, 'APP_NOT_FOUND'),
  );
  assert.deepEqual(runs.store.list('shop'), []);
});

test('an attached run: sent once attached, early input held until it runs, its exit reaches the client, a gone client stops it', async (t) => {
  const { store, runs, sent, events } = await fixture(t);
  const releaseOf = (app: string, v: number) => store.getRelease(app, v);
  const run = runs.create('shop', { command: 'python manage.py shell', tty: true, cols: 100, rows: 30 }, 'alice');
  assert.equal(run.status, 'pending');
  assert.deepEqual(
    runSpecsFor(runs.store, 'b', releaseOf, () => ['shop.localhost']),
    [],
    'not sent before a client is attached',
  );
  const got: RunStreamMessage[] = [];
  const output: string[] = [];
  let ended = false;
  const attached = runs.attach(run, {
    output: (_s, d) => output.push(d.toString()),
    message: (m) => got.push(m),
    end: () => (ended = true),
  });
  assert.throws(() =>
    runs.attach(runs.store.get(run.id) ?? run, { output: () => undefined, message: () => undefined, end: () => undefined }),
  );
  const [spec] = runSpecsFor(runs.store, 'b', releaseOf, () => ['shop.localhost']);
  assert.equal(spec?.name, 'run.1');
  assert.equal(spec?.tty, true);
  assert.equal(spec?.cols, 100);
  assert.equal(spec?.env?.DYNO, 'run.1');
  assert.equal(spec?.env?.SECRET, 's3cret');
  attached.input(Buffer.from('print(1)\n'));
  assert.equal(sent.length, 0, 'held until the process runs');
  runs.onStatus('b', { runId: run.id, state: 'running', pid: 42, exitCode: 0, signal: '', message: '', at: Date.now() });
  assert.equal(sent.length, 1);
  assert.deepEqual(got, [{ status: 'running', pid: 42 }]);
  attached.control({ resize: { cols: 90, rows: 20 } });
  assert.deepEqual([sent[1]?.cols, sent[1]?.rows], [90, 20]);
  runs.onOutput('b', { runId: run.id, stream: 'stdout', data: Buffer.from('1\n') });
  runs.onOutput('a', { runId: run.id, stream: 'stdout', data: Buffer.from('not from its agent') });
  assert.deepEqual(output, ['1\n']);
  runs.onStatus('b', { runId: run.id, state: 'exited', pid: 42, exitCode: 3, signal: '', message: '', at: Date.now() });
  assert.deepEqual(got[1], { exit: { code: 3, signal: null, message: '' } });
  assert.equal(ended, true);
  const done = runs.store.get(run.id);
  assert.equal(done?.status, 'exited');
  assert.equal(done?.exitCode, 3);
  assert.equal(done?.createdBy, 'alice');
  assert.deepEqual(
    runSpecsFor(runs.store, 'b', releaseOf, () => ['shop.localhost']),
    [],
  );
  assert.match(events.join('\n'), /run\.1 exited with code 3/);

  const second = runs.create('shop', { command: 'sleep 100' }, 'alice');
  const gone = runs.attach(second, { output: () => undefined, message: () => undefined, end: () => undefined });
  runs.onStatus('b', { runId: second.id, state: 'running', pid: 43, exitCode: 0, signal: '', message: '', at: Date.now() });
  gone.detach();
  assert.equal(runs.store.get(second.id)?.desired, 'stop');
  assert.deepEqual(
    runSpecsFor(runs.store, 'b', releaseOf, () => ['shop.localhost']),
    [],
    'a stopped run leaves desired state: its agent stops it',
  );
});
