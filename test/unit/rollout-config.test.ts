import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { instanceLogTail, tailLines } from '../../agent/logs/log-tail.js';
import { parseAppJson } from '../../common/app-json.js';
import { isHangarError } from '../../common/errors.js';
import { healthCheckOf } from '../../coordinator/fleet/health-check.js';
import { initialQuantity } from '../../coordinator/releases/rollout.js';
import { surgeOf } from '../../coordinator/releases/rollout-planner.js';

test('app.json: hangar.surge is a count or a share; anything else is refused with its path', () => {
  assert.equal(surgeOf(parseAppJson('{"hangar": {"surge": 2}}')), 2);
  assert.equal(surgeOf(parseAppJson('{"hangar": {"surge": "50%"}}')), '50%');
  assert.equal(surgeOf(parseAppJson('{}')), '25%');
  for (const bad of ['0', '"0%"', '"150%"', '"fast"', '1.5']) {
    assert.throws(
      () => parseAppJson(`{"hangar": {"surge": ${bad}}}`),
      (err: unknown) => isHangarError(err, 'BAD_INPUT') && /hangar\.surge/.test(err.message),
      bad,
    );
  }
});

test('app.json: health-check timing and the first formation', () => {
  assert.deepEqual(healthCheckOf(null), { timeoutMs: 2000, inARow: 2 });
  assert.deepEqual(healthCheckOf(parseAppJson('{"healthchecks": {"web": {"path": "/up", "timeout": 5, "attempts": 3}}}')), {
    timeoutMs: 5000,
    inARow: 3,
  });
  assert.deepEqual(healthCheckOf(parseAppJson('{"healthchecks": {"web": [{"type": "startup", "path": "/up", "attempts": 4}]}}')), {
    timeoutMs: 2000,
    inARow: 4,
  });
  const appJson = parseAppJson('{"formation": {"web": {"quantity": 3}, "worker": {"quantity": 1}}}');
  assert.equal(initialQuantity(appJson, 'web'), 3);
  assert.equal(initialQuantity(appJson, 'worker'), 1);
  assert.equal(initialQuantity(null, 'web'), 1);
  assert.equal(initialQuantity(null, 'worker'), 0);
});

test('log tail: the last lines, stderr first topped up with stdout, cut lines dropped', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-log-tail-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const out = join(dir, 'stdout.log');
  const err = join(dir, 'stderr.log');
  assert.equal(instanceLogTail(out, err), '', 'missing files give nothing');
  await writeFile(out, 'starting\nlistening\n');
  await writeFile(err, 'Traceback (most recent call last):\nValueError: boom\n');
  assert.equal(instanceLogTail(out, err), 'starting\nlistening\nTraceback (most recent call last):\nValueError: boom');
  assert.equal(instanceLogTail(out, err, 2), 'Traceback (most recent call last):\nValueError: boom');
  const long = Array.from({ length: 2000 }, (_, i) => `line ${i}`).join('\n');
  await writeFile(out, `${long}\n`);
  const last = tailLines(out, 3);
  assert.deepEqual(last, ['line 1997', 'line 1998', 'line 1999']);
  const many = tailLines(out, 5000);
  assert.ok(
    many.every((l) => /^line \d+$/.test(l)),
    'the first, cut line of the window is dropped',
  );
});
