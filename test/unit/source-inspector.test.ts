import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile, symlink, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { Header, create } from 'tar';
import { HangarError } from '../../common/errors.js';
import { inspectSource } from '../../coordinator/releases/source-inspector.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../../..');
const DJANGO_FIXTURE = join(ROOT, 'test/fixtures/django-app');
const HELLO_EXAMPLE = join(ROOT, 'examples/hello-django');

/** One entry of a hand-made archive: anything the tar format allows, unsafe ones included. */
interface RawEntry {
  path: string;
  type?: 'File' | 'Directory' | 'SymbolicLink' | 'Link' | 'CharacterDevice' | 'BlockDevice' | 'FIFO';
  body?: string;
  linkpath?: string;
}

/** Writes a gzipped tar made block by block with tar's Header, bypassing tar's own safety. */
async function rawTarGz(dir: string, name: string, entries: RawEntry[]): Promise<string> {
  const blocks: Buffer[] = [];
  for (const entry of entries) {
    const body = Buffer.from(entry.body ?? '');
    const type = entry.type ?? 'File';
    const header = new Header({
      path: entry.path,
      type,
      size: type === 'File' ? body.length : 0,
      mode: type === 'Directory' ? 0o755 : 0o644,
      linkpath: entry.linkpath,
      mtime: new Date(0),
      uid: 0,
      gid: 0,
    });
    const block = Buffer.alloc(512);
    header.encode(block, 0);
    blocks.push(block);
    if (type === 'File' && body.length > 0) {
      blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
    }
  }
  blocks.push(Buffer.alloc(1024));
  const file = join(dir, name);
  await writeFile(file, gzipSync(Buffer.concat(blocks)));
  return file;
}

/** Packs a directory the way `hangar deploy` does (`tar czf` of its contents). */
async function packDir(dir: string, file: string, entries: string[] = ['.']): Promise<string> {
  await create({ gzip: true, file, cwd: dir, portable: true }, entries);
  return file;
}

async function rejectsWith(promise: Promise<unknown>, code: string, message: RegExp): Promise<HangarError> {
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

async function scratch(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-inspector-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('the Django fixture: Procfile types, release command, Django project', async (t) => {
  const dir = await scratch(t);
  const info = await inspectSource(await packDir(DJANGO_FIXTURE, join(dir, 'src.tar.gz')));
  assert.deepEqual(info.procfile, {
    web: 'gunicorn mysite.wsgi --bind 0.0.0.0:$PORT --workers 2 --access-logfile -',
    worker: 'python worker.py',
    release: 'python manage.py migrate --noinput',
  });
  assert.deepEqual(info.processTypes, ['web', 'worker']);
  assert.equal(info.releaseCommand, 'python manage.py migrate --noinput');
  assert.equal(info.framework, 'procfile');
  assert.equal(info.djangoProject, 'mysite');
  assert.equal(info.appJson, null);
});

test('zero-config Django (examples/hello-django): a web process from the wsgi module', async (t) => {
  const dir = await scratch(t);
  const info = await inspectSource(await packDir(HELLO_EXAMPLE, join(dir, 'src.tar.gz')));
  assert.deepEqual(info, {
    procfile: { web: 'gunicorn hello.wsgi --bind 0.0.0.0:$PORT' },
    processTypes: ['web'],
    releaseCommand: null,
    appJson: null,
    framework: 'django',
    djangoProject: 'hello',
  });
});

test('a Procfile project with app.json, packed without a leading ./', async (t) => {
  const dir = await scratch(t);
  const src = join(dir, 'src');
  await mkdir(join(src, 'lib'), { recursive: true });
  await writeFile(join(src, 'Procfile'), 'web: python -m http.server $PORT\r\nrelease: ./migrate.sh\r\n');
  await writeFile(join(src, 'app.json'), JSON.stringify({ healthchecks: { web: { path: '/up' } }, keywords: ['x'] }));
  await writeFile(join(src, 'lib', 'wsgi.py'), '');
  await symlink('lib', join(src, 'current'));
  const info = await inspectSource(await packDir(src, join(dir, 'src.tar.gz'), ['Procfile', 'app.json', 'lib', 'current']));
  assert.deepEqual(info.procfile, { web: 'python -m http.server $PORT', release: './migrate.sh' });
  assert.deepEqual(info.processTypes, ['web']);
  assert.equal(info.releaseCommand, './migrate.sh');
  assert.deepEqual(info.appJson, { healthchecks: { web: { path: '/up' } }, keywords: ['x'] });
  assert.equal(info.framework, 'procfile');
  // No manage.py: a wsgi.py alone does not make a Django project.
  assert.equal(info.djangoProject, null);
});

test('manage.py picks the project its settings name among several wsgi.py', async (t) => {
  const dir = await scratch(t);
  const managePy = "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings.production')\n";
  const file = await rawTarGz(dir, 'a.tar.gz', [
    { path: './', type: 'Directory' },
    { path: './manage.py', body: managePy },
    { path: './config/wsgi.py', body: '' },
    { path: './other/wsgi.py', body: '' },
    { path: './not-an-identifier/wsgi.py', body: '' },
  ]);
  const info = await inspectSource(file);
  assert.equal(info.djangoProject, 'config');
  assert.deepEqual(info.procfile, { web: 'gunicorn config.wsgi --bind 0.0.0.0:$PORT' });

  const ambiguous = await rawTarGz(dir, 'b.tar.gz', [
    { path: 'manage.py', body: 'print(1)\n' },
    { path: 'one/wsgi.py' },
    { path: 'two/wsgi.py' },
  ]);
  await rejectsWith(inspectSource(ambiguous), 'BAD_INPUT', /several Django projects with a wsgi\.py \(one, two\); add a Procfile/);
});

test('neither a Procfile nor a Django project is BAD_INPUT with advice', async (t) => {
  const dir = await scratch(t);
  const file = await rawTarGz(dir, 'a.tar.gz', [{ path: 'README.md', body: 'hi' }, { path: 'mysite/wsgi.py' }]);
  await rejectsWith(
    inspectSource(file),
    'BAD_INPUT',
    /^No Procfile and no Django project \(manage\.py \+ wsgi\.py\) found; add a Procfile/,
  );

  const nested = await rawTarGz(dir, 'b.tar.gz', [{ path: 'myapp/Procfile', body: 'web: x' }]);
  await rejectsWith(inspectSource(nested), 'BAD_INPUT', /found myapp\/Procfile: deploy from inside that directory/);

  // An archive without entries is not recognised as a tar at all; either way the user is told.
  const empty = await rawTarGz(dir, 'c.tar.gz', []);
  await rejectsWith(inspectSource(empty), 'BAD_INPUT', /No Procfile|not a valid gzipped tar/);
});

test('a bad Procfile or app.json fails the inspection with their own messages', async (t) => {
  const dir = await scratch(t);
  const procfile = await rawTarGz(dir, 'a.tar.gz', [{ path: 'Procfile', body: 'web: ok\nweb: again\n' }]);
  await rejectsWith(inspectSource(procfile), 'BAD_INPUT', /line 2: process type "web" is already declared on line 1/);

  const onlyRelease = await rawTarGz(dir, 'b.tar.gz', [{ path: 'Procfile', body: 'release: migrate\n' }]);
  await rejectsWith(inspectSource(onlyRelease), 'BAD_INPUT', /only a release command/);

  const appJson = await rawTarGz(dir, 'c.tar.gz', [
    { path: 'Procfile', body: 'web: ok\n' },
    { path: 'app.json', body: '{"formation":{"web":{"quantity":"two"}}}' },
  ]);
  await rejectsWith(inspectSource(appJson), 'BAD_INPUT', /Invalid app\.json: formation\.web\.quantity/);

  const linked = await rawTarGz(dir, 'd.tar.gz', [
    { path: 'procfile.real', body: 'web: ok\n' },
    { path: 'Procfile', type: 'SymbolicLink', linkpath: 'procfile.real' },
  ]);
  await rejectsWith(inspectSource(linked), 'BAD_INPUT', /Procfile must be a regular file/);

  const huge = await rawTarGz(dir, 'e.tar.gz', [{ path: 'Procfile', body: `web: ${'x'.repeat(1024 * 1024)}\n` }]);
  await rejectsWith(inspectSource(huge), 'BAD_INPUT', /Procfile is larger than/);
});

test('unsafe entries are refused and named', async (t) => {
  const dir = await scratch(t);
  const procfile: RawEntry = { path: 'Procfile', body: 'web: run\n' };
  const cases: { name: string; entries: RawEntry[]; message: RegExp }[] = [
    { name: 'dotdot', entries: [procfile, { path: '../evil', body: 'x' }], message: /"\.\.\/evil": path contains "\.\."/ },
    { name: 'dotdot-inner', entries: [procfile, { path: 'a/../../evil', body: 'x' }], message: /"a\/\.\.\/\.\.\/evil"/ },
    { name: 'absolute', entries: [procfile, { path: '/etc/cron.d/evil', body: 'x' }], message: /"\/etc\/cron\.d\/evil": absolute path/ },
    {
      name: 'symlink-absolute',
      entries: [procfile, { path: 'passwd', type: 'SymbolicLink', linkpath: '/etc/passwd' }],
      message: /"passwd": symbolic link to an absolute path \(\/etc\/passwd\)/,
    },
    {
      name: 'symlink-relative-escape',
      entries: [procfile, { path: 'a/up', type: 'SymbolicLink', linkpath: '../../etc' }],
      message: /"a\/up": symbolic link pointing outside the archive/,
    },
    {
      name: 'symlink-chain',
      entries: [
        procfile,
        { path: 'sub/b', type: 'SymbolicLink', linkpath: '..' },
        { path: 'c', type: 'SymbolicLink', linkpath: 'sub/b/..' },
      ],
      message: /"c": symbolic link pointing outside the archive \(sub\/b\/\.\.\)/,
    },
    {
      name: 'through-symlink',
      entries: [procfile, { path: 'tmp', type: 'SymbolicLink', linkpath: 'sub' }, { path: 'tmp/evil', body: 'x' }],
      message: /"tmp\/evil": it lies below the symbolic link "tmp"/,
    },
    {
      name: 'hardlink-outside',
      entries: [procfile, { path: 'shadow', type: 'Link', linkpath: '/etc/shadow' }],
      message: /"shadow": hard link to a path outside the archive/,
    },
    {
      name: 'hardlink-dotdot',
      entries: [procfile, { path: 'h', type: 'Link', linkpath: '../x' }],
      message: /"h": hard link to a path outside the archive/,
    },
    {
      name: 'hardlink-missing',
      entries: [procfile, { path: 'h', type: 'Link', linkpath: 'nothing' }],
      message: /"h": hard link to "nothing", which is not a file earlier/,
    },
    { name: 'chardev', entries: [procfile, { path: 'null', type: 'CharacterDevice' }], message: /"null": device files are not allowed/ },
    { name: 'blockdev', entries: [procfile, { path: 'sda', type: 'BlockDevice' }], message: /"sda": device files are not allowed/ },
    { name: 'fifo', entries: [procfile, { path: 'pipe', type: 'FIFO' }], message: /"pipe": FIFOs are not allowed/ },
  ];
  for (const c of cases) {
    const file = await rawTarGz(dir, `${c.name}.tar.gz`, c.entries);
    await rejectsWith(inspectSource(file), 'BAD_INPUT', c.message);
  }
});

test('links that stay inside the tree are accepted', async (t) => {
  const dir = await scratch(t);
  const file = await rawTarGz(dir, 'ok.tar.gz', [
    { path: 'Procfile', body: 'web: run\n' },
    { path: 'assets/app.css', body: 'a{}' },
    { path: 'static', type: 'SymbolicLink', linkpath: 'assets' },
    { path: 'assets/self', type: 'SymbolicLink', linkpath: '../assets/./app.css' },
    { path: 'copy.css', type: 'Link', linkpath: 'assets/app.css' },
  ]);
  const info = await inspectSource(file);
  assert.deepEqual(info.processTypes, ['web']);
});

test('an archive over maxBytes is PAYLOAD_TOO_LARGE', async (t) => {
  const dir = await scratch(t);
  const file = await rawTarGz(dir, 'big.tar.gz', [
    { path: 'Procfile', body: 'web: run\n' },
    { path: 'data.bin', body: 'x'.repeat(64 * 1024) },
  ]);
  await rejectsWith(inspectSource(file, { maxBytes: 32 * 1024 }), 'PAYLOAD_TOO_LARGE', /larger than 32 KiB uncompressed/);
  const info = await inspectSource(file, { maxBytes: 128 * 1024 });
  assert.deepEqual(info.processTypes, ['web']);
});

test('a file that is not a gzipped tar is BAD_INPUT', async (t) => {
  const dir = await scratch(t);
  const file = join(dir, 'junk.tar.gz');
  await writeFile(file, gzipSync(Buffer.from('this is not a tar archive at all '.repeat(100))));
  await rejectsWith(inspectSource(file), 'BAD_INPUT', /not a valid gzipped tar archive/);
  const truncated = join(dir, 'truncated.tar.gz');
  const good = await rawTarGz(dir, 'good.tar.gz', [{ path: 'Procfile', body: 'web: run\n'.repeat(200) }]);
  const { readFile } = await import('node:fs/promises');
  await writeFile(truncated, (await readFile(good)).subarray(0, 40));
  await rejectsWith(inspectSource(truncated), 'BAD_INPUT', /not a valid gzipped tar archive/);
});

test('an aborted inspection rejects with the abort reason', async (t) => {
  const dir = await scratch(t);
  const file = await rawTarGz(dir, 'a.tar.gz', [{ path: 'Procfile', body: 'web: run\n' }]);
  const controller = new AbortController();
  controller.abort(new Error('stop'));
  await assert.rejects(inspectSource(file, { signal: controller.signal }), /stop|abort/i);
  // Nothing is extracted: the scratch directory holds only the archive.
  assert.deepEqual(await readdir(dir), ['a.tar.gz']);
});
