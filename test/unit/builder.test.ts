import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile, appendFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { Header, create } from 'tar';
import { buildRelease, VenvBuilds, type BuildOptions, type BuildResult } from '../../agent/build/builder.js';
import { parseSyntaxReport } from '../../agent/build/python-syntax-check.js';
import { HangarError } from '../../common/errors.js';
import { silentLogger } from '../../common/logger.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../../..');
const DJANGO_FIXTURE = join(ROOT, 'test/fixtures/django-app');
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

const root = await mkdtemp(join(tmpdir(), 'hangar-builder-'));
const dataDir = join(root, 'data');
let artifactCount = 0;

test.after(() => rm(root, { recursive: true, force: true }));

/** A copy of the Django fixture, changed by `edit`, packed as an artifact; returns path and sha256. */
async function djangoArtifact(edit?: (dir: string) => Promise<void>): Promise<{ file: string; sha256: string }> {
  artifactCount += 1;
  const dir = join(root, `src-${artifactCount}`);
  await cp(DJANGO_FIXTURE, dir, {
    recursive: true,
    filter: (src) => !['__pycache__', 'db.sqlite3'].includes(basename(src)),
  });
  await writeFile(join(dir, 'BUILD_ID'), `${artifactCount}\n`);
  await edit?.(dir);
  const file = join(root, `artifact-${artifactCount}.tar.gz`);
  await create({ gzip: true, file, cwd: dir, portable: true }, ['.']);
  return {
    file,
    sha256: createHash('sha256')
      .update(await readFile(file))
      .digest('hex'),
  };
}

/** Runs a build, collecting its output lines. */
async function build(
  artifact: { file: string; sha256: string },
  extra: Partial<BuildOptions> = {},
): Promise<{ result: BuildResult; output: string[] }> {
  const output: string[] = [];
  const result = await buildRelease({
    dataDir,
    artifactPath: artifact.file,
    sha256: artifact.sha256,
    python: PYTHON,
    logger: silentLogger(),
    onOutput: (line) => output.push(line),
    ...extra,
  });
  return { result, output };
}

async function buildFails(promise: Promise<unknown>, code: string, message: RegExp): Promise<HangarError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof HangarError, `expected a HangarError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected ${code}`);
}

function run(command: string, args: string[], env: Record<string, string>, cwd: string): { status: number | null; out: string } {
  const r = spawnSync(command, args, { cwd, env: { ...env }, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

let first: BuildResult | undefined;

test('the first build unpacks the Django fixture and creates its virtualenv', { timeout: 120_000 }, async () => {
  const artifact = await djangoArtifact();
  const { result, output } = await build(artifact);
  first = result;

  assert.equal(result.cached, false);
  assert.equal(result.appDir, join(dataDir, 'slugs', artifact.sha256));
  assert.ok(result.venvDir.startsWith(join(dataDir, 'venvs') + '/'));
  assert.deepEqual(Object.keys(result.env).sort(), ['PATH', 'PYTHONUNBUFFERED', 'VIRTUAL_ENV']);
  assert.ok(result.env.PATH?.startsWith(`${result.venvDir}/bin:`));
  assert.equal(result.env.VIRTUAL_ENV, result.venvDir);
  assert.equal(result.env.PYTHONUNBUFFERED, '1');

  const headers = output.filter((line) => line.startsWith('-----> '));
  assert.equal(headers[0], '-----> Unpacking');
  assert.match(
    headers[1] ?? '',
    /^-----> Python 3\.\d+\.\d+ \(.*python3.*, this server's default; ask for another with \.python-version\)$/,
  );
  assert.match(headers[2] ?? '', /^-----> Creating virtualenv \(python 3\.\d+\.\d+\)$/);
  assert.equal(headers[3], '-----> Installing requirements');
  assert.ok(
    output.some((line) => /Requirement already satisfied: Django/i.test(line)),
    output.join('\n'),
  );

  assert.ok((await stat(join(result.appDir, 'manage.py'))).isFile());
  assert.equal(await readFile(join(result.appDir, 'Procfile'), 'utf8'), await readFile(join(DJANGO_FIXTURE, 'Procfile'), 'utf8'));
  assert.ok((await stat(join(result.venvDir, '.complete'))).isFile());

  const env = { ...result.env, HOME: root, SECRET_KEY: 'test-secret' };
  const django = run('python', ['-c', 'import sys, django; print(sys.prefix); print(django.get_version())'], env, result.appDir);
  assert.equal(django.status, 0, django.out);
  assert.equal(django.out.split('\n')[0], result.venvDir);
  const direct = run(join(result.venvDir, 'bin/python'), ['-c', 'import django'], env, result.appDir);
  assert.equal(direct.status, 0, direct.out);

  // `gunicorn` in the Procfile must resolve to the venv, whether pip installed it or the shim did.
  const gunicorn = run('gunicorn', ['--version'], env, result.appDir);
  assert.equal(gunicorn.status, 0, gunicorn.out);
  assert.match(gunicorn.out, /\(version \d+\.\d+/);
  const which = run('sh', ['-c', 'command -v gunicorn'], env, result.appDir);
  assert.equal(which.out.trim(), join(result.venvDir, 'bin/gunicorn'));

  const check = run('python', ['manage.py', 'check'], env, result.appDir);
  assert.equal(check.status, 0, check.out);
});

test(
  'another artifact with the same requirements reuses the virtualenv; the same artifact reuses its slug',
  { timeout: 120_000 },
  async () => {
    assert.ok(first !== undefined, 'needs the first build');
    const artifact = await djangoArtifact();
    const { result, output } = await build(artifact);
    assert.equal(result.cached, true);
    assert.equal(result.venvDir, first.venvDir);
    assert.notEqual(result.appDir, first.appDir);
    assert.ok(output.includes('-----> Using cached virtualenv'), output.join('\n'));
    assert.ok(!output.some((line) => line.startsWith('-----> Creating virtualenv')));
    assert.equal(await readFile(join(result.appDir, 'BUILD_ID'), 'utf8'), `${artifactCount}\n`);

    const again = await build(artifact);
    assert.equal(again.result.appDir, result.appDir);
    assert.equal(again.result.cached, true);
    assert.ok(
      again.output.some((line) => /Using the slug unpacked by an earlier build/.test(line)),
      again.output.join('\n'),
    );
    // Only complete slugs are left: no temporary directories.
    assert.deepEqual(
      (await readdir(join(dataDir, 'slugs'))).filter((name) => name.startsWith('.')),
      [],
    );
  },
);

test('concurrent builds of one virtualenv share one build (with and without a VenvBuilds)', { timeout: 180_000 }, async () => {
  for (const shared of [new VenvBuilds(), undefined]) {
    const marker = `# variant ${shared === undefined ? 'lock' : 'shared'}\n`;
    const a = await djangoArtifact((dir) => appendFile(join(dir, 'requirements.txt'), marker));
    const b = await djangoArtifact((dir) => appendFile(join(dir, 'requirements.txt'), marker));
    const [ra, rb] = await Promise.all([build(a, { venvBuilds: shared }), build(b, { venvBuilds: shared })]);
    assert.equal(ra.result.venvDir, rb.result.venvDir);
    assert.notEqual(ra.result.venvDir, first?.venvDir);
    assert.deepEqual([ra.result.cached, rb.result.cached].sort(), [false, true]);
    const outputs = [ra.output, rb.output];
    assert.equal(outputs.filter((o) => o.some((line) => line.startsWith('-----> Creating virtualenv'))).length, 1);
    assert.equal(outputs.filter((o) => o.includes('-----> Waiting for a concurrent build of the same virtualenv')).length, 1);
    assert.equal(existsSync(`${ra.result.venvDir}.lock`), false);
    if (shared !== undefined) assert.equal(shared.size, 0);
  }
});

test('a requirement that cannot be installed fails the build and leaves no partial virtualenv', { timeout: 120_000 }, async () => {
  const artifact = await djangoArtifact((dir) => writeFile(join(dir, 'requirements.txt'), 'Django\nhangar-no-such-package-xyz==1.0\n'));
  const before = await readdir(join(dataDir, 'venvs'));
  const started = Date.now();
  const output: string[] = [];
  const err = await buildFails(
    build(artifact, { env: { PIP_RETRIES: '0', PIP_TIMEOUT: '5' }, onOutput: (line) => output.push(line) }),
    'BUILD_FAILED',
    /Could not install requirements\.txt: .* exited with code 1; last output:\n[\s\S]*hangar-no-such-package-xyz/,
  );
  assert.ok(Date.now() - started < 60_000, 'pip fails fast offline');
  assert.ok(output.includes('-----> Installing requirements'));
  assert.ok(
    output.some((line) => line.includes('hangar-no-such-package-xyz')),
    'pip output was streamed',
  );
  assert.deepEqual((await readdir(join(dataDir, 'venvs'))).sort(), before.sort(), err.message);
});

test('an aborted build kills its step and leaves no partial virtualenv', { timeout: 60_000 }, async () => {
  const artifact = await djangoArtifact((dir) => appendFile(join(dir, 'requirements.txt'), '# abort\n'));
  const before = await readdir(join(dataDir, 'venvs'));
  const controller = new AbortController();
  await buildFails(
    build(artifact, {
      signal: controller.signal,
      onOutput: (line) => {
        if (line.startsWith('-----> Creating virtualenv')) setTimeout(() => controller.abort(), 300);
      },
    }),
    'BUILD_FAILED',
    /aborted/,
  );
  assert.deepEqual((await readdir(join(dataDir, 'venvs'))).sort(), before.sort());
  // Had `python -m venv` survived the abort it would go on writing the venv: give it the chance.
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual((await readdir(join(dataDir, 'venvs'))).sort(), before.sort());
});

test('unsafe artifacts are refused and nothing is written outside dataDir', async (t) => {
  const box = await mkdtemp(join(root, 'unsafe-'));
  t.after(() => rm(box, { recursive: true, force: true }));
  const data = join(box, 'data');
  const artifacts = join(box, 'artifacts');
  await mkdir(artifacts);
  const outside = join(box, 'outside');
  await mkdir(outside);

  const raw = (entries: { path: string; type?: 'File' | 'SymbolicLink' | 'FIFO'; body?: string; linkpath?: string }[]): Buffer => {
    const blocks: Buffer[] = [];
    for (const e of entries) {
      const body = Buffer.from(e.body ?? '');
      const block = Buffer.alloc(512);
      new Header({
        path: e.path,
        type: e.type ?? 'File',
        size: e.type === undefined ? body.length : 0,
        mode: 0o644,
        linkpath: e.linkpath,
        mtime: new Date(0),
      }).encode(block, 0);
      blocks.push(block);
      if (e.type === undefined && body.length > 0) blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
    }
    blocks.push(Buffer.alloc(1024));
    return gzipSync(Buffer.concat(blocks));
  };
  const procfile = { path: 'Procfile', body: 'web: run\n' };
  const cases = [
    { name: 'dotdot', entries: [procfile, { path: '../../../outside/evil', body: 'x' }], message: /"\.\.\/\.\.\/\.\.\/outside\/evil"/ },
    { name: 'absolute', entries: [procfile, { path: join(outside, 'evil'), body: 'x' }], message: /absolute path/ },
    {
      name: 'symlink',
      entries: [procfile, { path: 'out', type: 'SymbolicLink' as const, linkpath: outside }, { path: 'out/evil', body: 'x' }],
      message: /"out": symbolic link to an absolute path/,
    },
    {
      name: 'relative-symlink',
      entries: [procfile, { path: 'out', type: 'SymbolicLink' as const, linkpath: '../../../outside' }, { path: 'out/evil', body: 'x' }],
      message: /"out\/evil": it lies below the symbolic link "out"/,
    },
    {
      name: 'passwd',
      entries: [procfile, { path: 'passwd', type: 'SymbolicLink' as const, linkpath: '/etc/passwd' }],
      message: /"passwd"/,
    },
    { name: 'fifo', entries: [procfile, { path: 'pipe', type: 'FIFO' as const }], message: /FIFOs are not allowed/ },
  ];
  for (const c of cases) {
    const file = join(artifacts, `${c.name}.tar.gz`);
    const bytes = raw(c.entries);
    await writeFile(file, bytes);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    await buildFails(
      buildRelease({ dataDir: data, artifactPath: file, sha256, python: PYTHON, logger: silentLogger() }),
      'BAD_INPUT',
      c.message,
    );
  }
  assert.deepEqual(await readdir(outside), []);
  // Refused before anything is unpacked: dataDir itself may not even exist yet.
  assert.deepEqual((await readdir(box)).filter((name) => name !== 'data').sort(), ['artifacts', 'outside']);
  assert.equal(existsSync(join(data, 'venvs')), false);
  assert.deepEqual(existsSync(join(data, 'slugs')) ? await readdir(join(data, 'slugs')) : [], []);
});

test('an oversized artifact is PAYLOAD_TOO_LARGE and a wrong checksum is BAD_INPUT', async () => {
  const artifact = await djangoArtifact();
  await buildFails(build(artifact, { maxBytes: 4096 }), 'PAYLOAD_TOO_LARGE', /larger than 4 KiB uncompressed/);
  await buildFails(build({ file: artifact.file, sha256: 'a'.repeat(64) }), 'BAD_INPUT', /checksum/);
  await buildFails(build({ file: artifact.file, sha256: 'not-a-digest' }), 'BAD_INPUT', /not a SHA-256 digest/);
  await buildFails(build({ file: join(root, 'missing.tar.gz'), sha256: 'b'.repeat(64) }), 'ARTIFACT_NOT_FOUND', /does not exist/);
  assert.equal(existsSync(join(dataDir, 'slugs', artifact.sha256)), false);
});

test('a missing interpreter fails the build with BUILD_FAILED', async () => {
  const artifact = await djangoArtifact();
  await buildFails(
    build(artifact, { python: join(root, 'no-such-python') }),
    'BUILD_FAILED',
    /cannot run .*no-such-python \(spawn .* ENOENT\)/,
  );
});

test(
  'a syntax error in the app fails the build with its file and line; a venv inside the source is not checked',
  { timeout: 120_000 },
  async () => {
    const artifact = await djangoArtifact(async (dir) => {
      await appendFile(join(dir, 'notes', 'views.py'), '\n\ndef broken(:\n    pass\n');
      // A virtualenv committed by mistake is skipped (site-packages hold files of other Pythons).
      await mkdir(join(dir, 'venv', 'lib'), { recursive: true });
      await writeFile(join(dir, 'venv', 'pyvenv.cfg'), 'home = /usr/bin\n');
      await writeFile(join(dir, 'venv', 'lib', 'old.py'), 'print "python 2"\n');
    });
    const lines = (await readFile(join(DJANGO_FIXTURE, 'notes', 'views.py'), 'utf8')).split('\n').length;
    const output: string[] = [];
    const err = await buildFails(
      build(artifact, { onOutput: (line) => output.push(line) }),
      'BUILD_FAILED',
      /notes\/views\.py, line \d+: SyntaxError/,
    );
    assert.ok(output.includes('-----> Checking that the Python source compiles'));
    assert.match(err.message, new RegExp(`line ${lines + 2}:`), err.message);
    assert.doesNotMatch(err.message, /old\.py/);
    assert.match(err.message, /nothing was started/);
  },
);

test('the syntax report names file, line, message and source text', () => {
  assert.deepEqual(parseSyntaxReport('noise\nHANGAR-SYNTAX a/b.py\t3\tSyntaxError: invalid syntax\tdef f(:\n'), [
    { file: 'a/b.py', line: 3, message: 'SyntaxError: invalid syntax', text: 'def f(:' },
  ]);
});
