import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { extract, list } from 'tar';
import { isHangarError } from '../../common/errors.js';
import { createSourceArchive, isIgnored, parseIgnoreRules } from '../../cli/source-archive.js';

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-cli-src-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function tree(root: string, files: Record<string, string>): Promise<void> {
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), content);
  }
}

async function entriesOf(archive: Buffer, t: TestContext): Promise<string[]> {
  const dir = await tempDir(t);
  const file = join(dir, 'a.tgz');
  await writeFile(file, archive);
  const names: string[] = [];
  await list({ file, onReadEntry: (entry) => void names.push(entry.path) });
  return names;
}

test('the default ignores leave out .git, caches, compiled files, node_modules and virtualenvs', async (t) => {
  const src = await tempDir(t);
  await tree(src, {
    'manage.py': 'print("hi")\n',
    'shop/wsgi.py': 'application = None\n',
    'shop/__pycache__/wsgi.cpython-311.pyc': 'x',
    'shop/old.pyc': 'x',
    '.git/HEAD': 'ref: refs/heads/main\n',
    'node_modules/x/index.js': '',
    '.venv/bin/python': '',
    'venv/bin/python': '',
    'requirements.txt': 'django\n',
    'static/venv.css': 'kept: only a directory named venv is ignored by name, not this file',
  });
  const archive = await createSourceArchive(src);
  assert.deepEqual(archive.files, ['manage.py', 'requirements.txt', 'shop/wsgi.py', 'static/venv.css']);
  const entries = await entriesOf(archive.data, t);
  for (const entry of entries) assert.doesNotMatch(entry, /\.git|__pycache__|\.pyc$|node_modules|venv\//, entry);
  assert.ok(entries.includes('manage.py'));
});

test('.hangarignore globs, directory-only rules, anchoring and negation are honoured', async (t) => {
  const src = await tempDir(t);
  await tree(src, {
    '.hangarignore': ['# local stuff', '', '*.log', 'media/', '/secrets.env', 'docs/**/*.md', '!keep.log', 'build'].join('\n'),
    'manage.py': '',
    'app.log': 'x',
    'keep.log': 'x',
    'sub/deep.log': 'x',
    'media/a.png': 'x',
    'sub/media/b.png': 'x',
    'secrets.env': 'x',
    'sub/secrets.env': 'kept: the rule is anchored at the top',
    'docs/a.md': 'x',
    'docs/x/y/b.md': 'x',
    'docs/c.txt': 'kept',
    'build/out.txt': 'x',
  });
  const archive = await createSourceArchive(src);
  assert.deepEqual(archive.files, ['.hangarignore', 'docs/c.txt', 'keep.log', 'manage.py', 'sub/secrets.env']);
});

test('the archive round-trips through tar with contents and executable bits intact', async (t) => {
  const src = await tempDir(t);
  await tree(src, { 'manage.py': '#!/usr/bin/env python\nprint("ok")\n', 'shop/settings.py': 'DEBUG = False\n' });
  await writeFile(join(src, 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  const archive = await createSourceArchive(src);
  assert.equal(archive.data[0], 0x1f, 'gzip magic');
  assert.equal(archive.data[1], 0x8b, 'gzip magic');

  const out = await tempDir(t);
  const file = join(out, 'src.tgz');
  await writeFile(file, archive.data);
  await extract({ file, cwd: out });
  assert.equal(await readFile(join(out, 'manage.py'), 'utf8'), '#!/usr/bin/env python\nprint("ok")\n');
  assert.equal(await readFile(join(out, 'shop/settings.py'), 'utf8'), 'DEBUG = False\n');
  const { mode } = await import('node:fs/promises').then((fs) => fs.stat(join(out, 'run.sh')));
  assert.equal(mode & 0o100, 0o100);
});

test('a missing folder, a file, or a folder with nothing to deploy is BAD_INPUT', async (t) => {
  const src = await tempDir(t);
  await assert.rejects(
    createSourceArchive(join(src, 'nope')),
    (err: unknown) => isHangarError(err, 'BAD_INPUT') && /hangar deploy PATH/.test(err.message),
  );
  await writeFile(join(src, 'f'), '');
  await assert.rejects(
    createSourceArchive(join(src, 'f')),
    (err: unknown) => isHangarError(err, 'BAD_INPUT') && /not a directory/.test(err.message),
  );
  const empty = join(src, 'empty');
  await mkdir(join(empty, '.git'), { recursive: true });
  await writeFile(join(empty, '.git', 'HEAD'), '');
  await assert.rejects(
    createSourceArchive(empty),
    (err: unknown) => isHangarError(err, 'BAD_INPUT') && /no files to deploy/.test(err.message),
  );
});

test('isIgnored: names match at any depth, patterns with a slash from the top', () => {
  const rules = parseIgnoreRules('*.pyc\nlogs/\n/top.txt\na/*/c\n');
  assert.equal(isIgnored('x/y/z.pyc', false, rules), true);
  assert.equal(isIgnored('logs', true, rules), true);
  assert.equal(isIgnored('x/logs', true, rules), true);
  assert.equal(isIgnored('logs', false, rules), false, 'directory-only rule');
  assert.equal(isIgnored('top.txt', false, rules), true);
  assert.equal(isIgnored('x/top.txt', false, rules), false);
  assert.equal(isIgnored('a/b/c', false, rules), true);
  assert.equal(isIgnored('a/b/d/c', false, rules), false);
});
