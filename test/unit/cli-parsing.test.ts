import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isHangarError } from '../../common/errors.js';
import { parseConfigAssignments, parseConfigKeys } from '../../cli/commands/config.js';
import { parseTimeoutSeconds } from '../../cli/commands/deploy.js';
import { formatPs, parseRestartTarget, parseScaleArgs } from '../../cli/commands/ps.js';
import { parseReleaseVersion } from '../../cli/commands/releases.js';
import { formatBytes, formatDuration, formatTable, shellQuote } from '../../cli/output.js';

const badInput = (pattern: RegExp) => (err: unknown) => isHangarError(err, 'BAD_INPUT') && pattern.test(err.message);

test('scale: TYPE=N pairs become a formation', () => {
  assert.deepEqual(parseScaleArgs(['web=2', 'worker=0', 'clock-2=1']), { web: 2, worker: 0, 'clock-2': 1 });
});

test('scale: every bad pair is listed in one error', () => {
  assert.throws(() => parseScaleArgs(['web=x']), badInput(/"web=x": the count must be a whole number/));
  assert.throws(() => parseScaleArgs(['web=-1']), badInput(/"web=-1"/));
  assert.throws(() => parseScaleArgs(['web=1.5']), badInput(/whole number/));
  assert.throws(() => parseScaleArgs(['web=']), badInput(/whole number/));
  assert.throws(() => parseScaleArgs(['web']), badInput(/has no count: write TYPE=N, e.g. web=2/));
  assert.throws(() => parseScaleArgs(['=2']), badInput(/not a process type/));
  assert.throws(() => parseScaleArgs(['web=1', 'web=2']), badInput(/web is given twice/));
  assert.throws(() => parseScaleArgs(['web=100000']), badInput(/from 0 to 1000/));
  assert.throws(() => parseScaleArgs(['web=x', 'worker']), badInput(/"web=x".*; "worker" has no count/));
});

test('config:set: KEY=VALUE pairs, values may hold = and be empty', () => {
  assert.deepEqual(parseConfigAssignments(['SECRET_KEY=a=b=c', 'EMPTY=', '_X1=y z']), { SECRET_KEY: 'a=b=c', EMPTY: '', _X1: 'y z' });
});

test('config:set: missing =, bad keys and duplicates are refused together', () => {
  assert.throws(() => parseConfigAssignments(['FOO']), badInput(/"FOO" has no "=": write KEY=VALUE, e.g. FOO=value/));
  assert.throws(() => parseConfigAssignments(['1A=x']), badInput(/"1A" is not a valid key/));
  assert.throws(() => parseConfigAssignments(['=x']), badInput(/"" is not a valid key/));
  assert.throws(() => parseConfigAssignments(['A=1', 'A=2']), badInput(/A is given twice/));
  assert.throws(() => parseConfigAssignments(['FOO', 'BAR-BAZ=1']), badInput(/"FOO" has no "=".*"BAR-BAZ" is not a valid key/));
});

test('config:unset and config:get keys', () => {
  assert.deepEqual(parseConfigKeys(['A', 'B', 'A']), ['A', 'B']);
  assert.throws(() => parseConfigKeys(['A=1']), badInput(/"A=1" is not a valid key \(give only the key/));
  assert.throws(() => parseConfigKeys(['x-y', '2']), badInput(/"x-y" and "2" are not valid keys/));
});

test('rollback versions: v3 or 3', () => {
  assert.equal(parseReleaseVersion('v3'), 3);
  assert.equal(parseReleaseVersion('12'), 12);
  for (const bad of ['v0', 'vx', 'V3', '-1', 'v3.1', '']) assert.throws(() => parseReleaseVersion(bad), badInput(/is not a release/), bad);
});

test('restart targets: a type or an instance', () => {
  assert.equal(parseRestartTarget('web'), 'web');
  assert.equal(parseRestartTarget('worker.12'), 'worker.12');
  for (const bad of ['web.', 'web.0', 'web.x', '.1', 'a b'])
    assert.throws(() => parseRestartTarget(bad), badInput(/neither a process type/), bad);
});

test('--timeout must be a positive number of seconds', () => {
  assert.equal(parseTimeoutSeconds('900'), 900);
  assert.equal(parseTimeoutSeconds('0.5'), 0.5);
  for (const bad of ['0', '-1', 'x', '']) assert.throws(() => parseTimeoutSeconds(bad), /greater than 0/, bad);
});

test('ps groups instances by type, web first, in instance order', () => {
  const now = Date.parse('2026-01-02T03:06:05Z');
  const row = (id: string, extra: object = {}) => ({
    id,
    type: id.split('.')[0] ?? '',
    release: 'v3',
    agent: 'agent-a',
    state: 'up' as const,
    pid: 1234,
    port: 5000,
    restarts: 0,
    since: '2026-01-02T03:04:05Z',
    reason: null,
    memoryBytes: null,
    memoryLimitBytes: null,
    cpuLimit: null,
    ...extra,
  });
  const text = formatPs([row('worker.1', { pid: null, port: null, state: 'crashed', restarts: 3 }), row('web.10'), row('web.2')], now);
  assert.equal(
    text,
    [
      '=== web (2)',
      'web.2:   up  v3  agent-a  pid 1234  port 5000  restarts 0  since 2m ago',
      'web.10:  up  v3  agent-a  pid 1234  port 5000  restarts 0  since 2m ago',
      '',
      '=== worker (1)',
      'worker.1:  crashed  v3  agent-a  pid -  port -  restarts 3  since 2m ago',
      '',
    ].join('\n'),
  );
});

test('ps shows memory against the limit and an OOM kill beside the state', () => {
  const now = Date.parse('2026-01-02T03:06:05Z');
  const base = { type: 'worker', release: 'v3', agent: 'agent-a', pid: 7, port: null, since: '2026-01-02T03:04:05Z', cpuLimit: 0.5 };
  const text = formatPs(
    [
      { ...base, id: 'worker.1', state: 'crashed', restarts: 1, reason: 'oom', memoryBytes: 0, memoryLimitBytes: 64 * 1024 ** 2 },
      { ...base, id: 'worker.2', state: 'up', restarts: 0, reason: null, memoryBytes: 12 * 1024 ** 2, memoryLimitBytes: 64 * 1024 ** 2 },
    ],
    now,
  );
  assert.equal(
    text,
    [
      '=== worker (2)',
      'worker.1:  crashed (out of memory)  v3  agent-a  pid 7  port -  mem 0B/64M   restarts 1  since 2m ago',
      'worker.2:  up                       v3  agent-a  pid 7  port -  mem 12M/64M  restarts 0  since 2m ago',
      '',
    ].join('\n'),
  );
});

test('output helpers: durations, sizes, tables, shell quoting', () => {
  assert.equal(formatDuration(45_000), '45s');
  assert.equal(formatDuration(120_000), '2m');
  assert.equal(formatDuration(3 * 3600_000), '3h');
  assert.equal(formatDuration(5 * 86400_000), '5d');
  assert.equal(formatDuration(-5), '0s');
  assert.equal(formatBytes(512), '512 B');
  assert.equal(formatBytes(1_234_567), '1.2 MB');
  assert.equal(
    formatTable(
      [
        ['a', 'bb'],
        ['ccc', 'd'],
      ],
      ['X', 'Y'],
    ),
    'X    Y\n-    -\na    bb\nccc  d\n',
  );
  assert.equal(shellQuote("it's"), `'it'\\''s'`);
});
