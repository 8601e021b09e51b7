import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { choosePython, readPythonRequest } from '../../agent/build/python-runtime.js';
import { HangarError } from '../../common/errors.js';

const PYTHON = '/usr/bin/python3';
const versionOf = (python: string): Promise<string> =>
  Promise.resolve(execFileSync(python, ['-c', 'import sys; print("%d.%d.%d" % sys.version_info[:3])'], { encoding: 'utf8' }).trim());
const HOST = await versionOf(PYTHON);
const [MAJOR, MINOR, PATCH] = HOST.split('.');
const HOST_MINOR = `${MAJOR}.${MINOR}`;

/** An app folder with these files; removed after the test. */
async function app(t: { after: (fn: () => Promise<void>) => void }, files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-python-runtime-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  return dir;
}

const choose = (appDir: string) => choosePython({ appDir, fallback: PYTHON, dirs: ['/usr/bin'], versionOf });

test('without runtime.txt or .python-version the default interpreter is used', async (t) => {
  const choice = await choose(await app(t, {}));
  assert.deepEqual(choice, { python: PYTHON, version: HOST, request: null, warning: null });
});

test("runtime.txt naming this server's exact version builds with it, without a warning", async (t) => {
  const choice = await choose(await app(t, { 'runtime.txt': `python-${HOST}\n` }));
  assert.equal(choice.version, HOST);
  assert.equal(choice.request?.file, 'runtime.txt');
  assert.equal(choice.warning, null);
});

test('.python-version with only the minor version takes any patch of it', async (t) => {
  const choice = await choose(await app(t, { '.python-version': `# pinned\n${HOST_MINOR}\n` }));
  assert.equal(choice.version, HOST);
  assert.deepEqual(choice.request, { file: '.python-version', asked: HOST_MINOR, minor: HOST_MINOR, patch: null });
  assert.equal(choice.warning, null);
});

test('a patch this server lacks builds with its own patch and says so', async (t) => {
  const choice = await choose(await app(t, { 'runtime.txt': `python-${HOST_MINOR}.${Number(PATCH) + 50}` }));
  assert.equal(choice.version, HOST);
  assert.match(
    choice.warning ?? '',
    new RegExp(`asks for Python ${HOST_MINOR}\\.\\d+; this server has ${HOST.replace(/\./g, '\\.')}, used instead`),
  );
});

test('runtime.txt is read before .python-version, as Heroku does', async (t) => {
  const dir = await app(t, { 'runtime.txt': `python-${HOST}`, '.python-version': '3.4' });
  assert.equal((await readPythonRequest(dir))?.file, 'runtime.txt');
});

test('a minor version this server lacks fails the build naming the versions it has', async (t) => {
  await assert.rejects(choose(await app(t, { '.python-version': '3.4' })), (err: unknown) => {
    assert.ok(err instanceof HangarError);
    assert.equal(err.code, 'BUILD_FAILED');
    assert.match(
      err.message,
      new RegExp(`asks for Python 3\\.4, which this server does not have \\(it has ${HOST_MINOR.replace('.', '\\.')}\\)`),
    );
    assert.match(err.message, /install python3\.4/);
    return true;
  });
});

test('a runtime.txt that names no Python version fails the build with what to write', async (t) => {
  await assert.rejects(choose(await app(t, { 'runtime.txt': 'ruby-3.2' })), (err: unknown) => {
    assert.ok(err instanceof HangarError);
    assert.equal(err.code, 'BUILD_FAILED');
    assert.match(err.message, /runtime\.txt says "ruby-3\.2", which is not a Python version: write it as python-3\.11\.2/);
    return true;
  });
});

test('a runtime.txt that is a link is not followed (the slug is the app’s)', async (t) => {
  const dir = await app(t, {});
  await symlink('/etc/passwd', join(dir, 'runtime.txt'));
  assert.equal(await readPythonRequest(dir), null);
});
