import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { isHangarError } from '../../common/errors.js';
import {
  credentialsPath,
  parseCoordinatorUrl,
  readCredentials,
  removeCredentials,
  resolveCredentials,
  writeCredentials,
} from '../../cli/credentials.js';

const TOKEN = 'tok-file-secret-123';

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-cli-creds-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('the path is HANGAR_CREDENTIALS, else XDG_CONFIG_HOME, else ~/.config', () => {
  assert.equal(credentialsPath({ HANGAR_CREDENTIALS: '/x/c.json', XDG_CONFIG_HOME: '/xdg', HOME: '/h' }), '/x/c.json');
  assert.equal(credentialsPath({ XDG_CONFIG_HOME: '/xdg', HOME: '/h' }), '/xdg/hangar/credentials.json');
  assert.equal(credentialsPath({ HOME: '/h' }), '/h/.config/hangar/credentials.json');
  // A relative XDG_CONFIG_HOME is invalid per the spec and ignored.
  assert.equal(credentialsPath({ XDG_CONFIG_HOME: 'rel', HOME: '/h' }), '/h/.config/hangar/credentials.json');
});

test('written credentials are mode 0600 in a 0700 directory, and read back', async (t) => {
  const home = await tempDir(t);
  const path = credentialsPath({ XDG_CONFIG_HOME: home });
  await writeCredentials(path, { url: 'http://10.0.0.5:7080', token: TOKEN }, { ownDirectory: true });
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.equal((await stat(join(home, 'hangar'))).mode & 0o777, 0o700);
  assert.deepEqual(await readCredentials(path), { url: 'http://10.0.0.5:7080', token: TOKEN });
});

test('overwriting a too-open file leaves it 0600, and tightens our own directory', async (t) => {
  const home = await tempDir(t);
  const dir = join(home, 'hangar');
  await mkdir(dir, { mode: 0o755 });
  const path = join(dir, 'credentials.json');
  await writeFile(path, '{}', { mode: 0o644 });
  await writeCredentials(path, { url: 'http://h:1', token: TOKEN }, { ownDirectory: true });
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.equal((await stat(dir)).mode & 0o777, 0o700);
});

test('the environment wins over the file; the file is used when the environment is empty', async (t) => {
  const home = await tempDir(t);
  const path = join(home, 'creds.json');
  await writeCredentials(path, { url: 'http://file:7080', token: TOKEN }, { ownDirectory: false });

  const fromEnv = await resolveCredentials({ HANGAR_CREDENTIALS: path, HANGAR_URL: 'http://env:7080/', HANGAR_TOKEN: 'envtok' });
  assert.deepEqual(fromEnv, { url: 'http://env:7080', token: 'envtok', source: 'env' });

  const fromFile = await resolveCredentials({ HANGAR_CREDENTIALS: path });
  assert.deepEqual(fromFile, { url: 'http://file:7080', token: TOKEN, source: 'file', path });
});

test('half of the environment is refused rather than mixed with the file', async (t) => {
  const home = await tempDir(t);
  const path = join(home, 'creds.json');
  await writeCredentials(path, { url: 'http://file:7080', token: TOKEN }, { ownDirectory: false });
  await assert.rejects(resolveCredentials({ HANGAR_CREDENTIALS: path, HANGAR_URL: 'http://other:7080' }), (err: unknown) => {
    assert.ok(isHangarError(err, 'BAD_INPUT'));
    assert.match(err.message, /HANGAR_TOKEN is not/);
    assert.ok(!err.message.includes(TOKEN));
    return true;
  });
});

test('no credentials at all says how to log in', async (t) => {
  const home = await tempDir(t);
  await assert.rejects(resolveCredentials({ HANGAR_CREDENTIALS: join(home, 'none.json') }), (err: unknown) => {
    assert.ok(isHangarError(err, 'UNAUTHORIZED'));
    assert.match(err.message, /hangar login --url/);
    assert.match(err.message, /HANGAR_URL and HANGAR_TOKEN/);
    assert.match(err.message, /hangar dev/);
    return true;
  });
});

test('a malformed file is an error naming the file and the fix, never the token', async (t) => {
  const home = await tempDir(t);
  const path = join(home, 'creds.json');
  await writeFile(path, JSON.stringify({ url: 'ftp://x', token: TOKEN, extra: 1 }));
  await assert.rejects(readCredentials(path), (err: unknown) => {
    assert.ok(isHangarError(err, 'BAD_INPUT'));
    assert.ok(err.message.includes(path));
    assert.match(err.message, /url/);
    assert.match(err.message, /extra/);
    assert.match(err.message, /hangar login/);
    assert.ok(!err.message.includes(TOKEN));
    return true;
  });
  await writeFile(path, 'not json');
  await assert.rejects(readCredentials(path), (err: unknown) => isHangarError(err, 'BAD_INPUT') && /not JSON/.test(err.message));
});

test('removeCredentials reports whether there was a file', async (t) => {
  const home = await tempDir(t);
  const path = join(home, 'creds.json');
  await writeCredentials(path, { url: 'http://h:1', token: TOKEN }, { ownDirectory: false });
  assert.equal(await removeCredentials(path), true);
  assert.equal(await removeCredentials(path), false);
  await assert.rejects(readFile(path), { code: 'ENOENT' });
});

test('coordinator URLs are normalised and unsafe ones refused', () => {
  assert.equal(parseCoordinatorUrl('http://h:7080/'), 'http://h:7080');
  assert.equal(parseCoordinatorUrl('https://h/hangar/'), 'https://h/hangar');
  for (const bad of ['h:7080', 'ftp://h', 'http://u:p@h', 'http://h/?token=x']) {
    assert.throws(
      () => parseCoordinatorUrl(bad),
      (err: unknown) => isHangarError(err, 'BAD_INPUT'),
      bad,
    );
  }
});
