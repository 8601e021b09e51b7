import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isHangarError } from '../../common/errors.js';
import { commandLine, parseRunArgs } from '../../cli/commands/run.js';

test("run's flags anywhere before `--`; other words, unknown flags included, are the command", () => {
  assert.deepEqual(parseRunArgs(['python', 'manage.py', 'createsuperuser', '-a', 'shop']), {
    detached: false,
    help: false,
    app: 'shop',
    command: ['python', 'manage.py', 'createsuperuser'],
  });
  assert.deepEqual(parseRunArgs(['--detached', 'python', 'manage.py', 'migrate', '--plan', '--app=shop', '--timeout', '60']), {
    detached: true,
    help: false,
    app: 'shop',
    timeoutSeconds: 60,
    command: ['python', 'manage.py', 'migrate', '--plan'],
  });
  assert.deepEqual(parseRunArgs(['-a', 'shop', '--release', 'v2', '--agent', 'web-1', '--', 'ls', '-a', '--detached', '--', 'x']), {
    detached: false,
    help: false,
    app: 'shop',
    release: 2,
    agent: 'web-1',
    command: ['ls', '-a', '--detached', '--', 'x'],
  });
  assert.equal(parseRunArgs(['--help']).help, true);
});

test('bad flags are listed together', () => {
  assert.throws(
    () => parseRunArgs(['--release', 'latest', '--timeout', '0', '--agent', 'no way', 'ls', '-a']),
    (err) =>
      isHangarError(err, 'BAD_INPUT') &&
      /--release "latest"/.test(err.message) &&
      /--timeout "0"/.test(err.message) &&
      /--agent "no way"/.test(err.message) &&
      /-a needs a value/.test(err.message),
  );
});

test('the command line: one word is shell as it is, several are quoted where needed', () => {
  assert.equal(commandLine(['echo $HOME; ls']), 'echo $HOME; ls');
  assert.equal(commandLine(['python', '-c', 'print(1)']), "python -c 'print(1)'");
  assert.equal(commandLine(['sh', '-c', "echo 'hi'"]), `sh -c 'echo '\\''hi'\\'''`);
  assert.equal(commandLine(['python', 'manage.py', 'migrate', '--plan']), 'python manage.py migrate --plan');
});
