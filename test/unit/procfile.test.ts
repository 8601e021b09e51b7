import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HangarError } from '../../common/errors.js';
import { parseProcfile, processTypes, releaseCommand, RELEASE_PROCESS_TYPE } from '../../common/procfile.js';

/** Runs `fn`, asserts it throws a BAD_INPUT HangarError, and returns it. */
function badInput(fn: () => unknown): HangarError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof HangarError, `expected a HangarError, got ${String(err)}`);
    assert.equal(err.code, 'BAD_INPUT');
    return err;
  }
  assert.fail('expected BAD_INPUT');
}

test('parses name: command lines in order, trimming whitespace', () => {
  const procfile = parseProcfile(
    'web: gunicorn mysite.wsgi --bind 0.0.0.0:$PORT\nworker:python worker.py\n  release:   python manage.py migrate --noinput  \n',
  );
  assert.deepEqual(procfile, {
    web: 'gunicorn mysite.wsgi --bind 0.0.0.0:$PORT',
    worker: 'python worker.py',
    release: 'python manage.py migrate --noinput',
  });
  assert.deepEqual(Object.keys(procfile), ['web', 'worker', 'release']);
});

test('skips comments and blank lines, accepts CRLF, CR and a byte-order mark', () => {
  const text =
    '\uFEFF# my app\r\n\r\n   \r\nweb: gunicorn a.wsgi\r\n  # indented comment\r\nclock: python clock.py\rurgent_jobs-2: ./run.sh # shell comment stays\n';
  assert.deepEqual(parseProcfile(text), {
    web: 'gunicorn a.wsgi',
    clock: 'python clock.py',
    'urgent_jobs-2': './run.sh # shell comment stays',
  });
});

test('keeps colons inside the command', () => {
  assert.deepEqual(parseProcfile('web: gunicorn app:application --bind 0.0.0.0:$PORT'), {
    web: 'gunicorn app:application --bind 0.0.0.0:$PORT',
  });
});

test('a name like __proto__ stays an ordinary key', () => {
  const procfile = parseProcfile('__proto__: echo hi\n');
  assert.equal(Object.getPrototypeOf(procfile), Object.prototype);
  assert.deepEqual(Object.keys(procfile), ['__proto__']);
});

test('accepts a 63-character name and rejects a 64-character one', () => {
  const ok = 'a'.repeat(63);
  assert.deepEqual(Object.keys(parseProcfile(`${ok}: run`)), [ok]);
  const err = badInput(() => parseProcfile(`web: run\n${'b'.repeat(64)}: run`));
  assert.match(err.message, /line 2/);
  assert.match(err.message, /longer than 63/);
});

test('a malformed line is named by its line number', () => {
  const err = badInput(() => parseProcfile('web: gunicorn a.wsgi\n\njust some text\n'));
  assert.match(err.message, /line 3: expected "name: command"/);
  assert.deepEqual(err.details, [{ line: 3, message: 'expected "name: command"' }]);
});

test('bad names, a missing name, empty commands and duplicates are all reported', () => {
  const err = badInput(() => parseProcfile(['web: a', 'my worker: b', ': c', 'empty:', 'web: again', 'web.1: d', 'ok: e'].join('\n')));
  const problems = err.details as { line: number; message: string }[];
  assert.deepEqual(
    problems.map((p) => p.line),
    [2, 3, 4, 5, 6],
  );
  assert.match(err.message, /line 2: process type "my worker" may only contain/);
  assert.match(err.message, /line 3: missing process type name/);
  assert.match(err.message, /line 4: process type "empty" has an empty command/);
  assert.match(err.message, /line 5: process type "web" is already declared on line 1/);
  assert.match(err.message, /line 6: process type "web.1" may only contain/);
});

test('an empty Procfile or one with only comments is refused', () => {
  for (const text of ['', '\n\n', '# nothing here\r\n']) {
    const err = badInput(() => parseProcfile(text));
    assert.match(err.message, /declares no process types/);
  }
});

test('processTypes excludes release and keeps file order; releaseCommand finds it', () => {
  const procfile = parseProcfile('release: python manage.py migrate\nworker: python w.py\nweb: gunicorn a.wsgi\n');
  assert.deepEqual(processTypes(procfile), ['worker', 'web']);
  assert.equal(releaseCommand(procfile), 'python manage.py migrate');
  assert.equal(RELEASE_PROCESS_TYPE, 'release');

  const noRelease = parseProcfile('web: gunicorn a.wsgi');
  assert.deepEqual(processTypes(noRelease), ['web']);
  assert.equal(releaseCommand(noRelease), null);

  assert.deepEqual(processTypes(parseProcfile('release: ./migrate.sh')), []);
});
