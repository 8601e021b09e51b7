import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { appendFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DJANGO_NOTE_PREFIX, installErrorHook } from '../../agent/workloads/error-hook.js';

const run = promisify(execFile);
const root = await mkdtemp(join(tmpdir(), 'hangar-autopilot-'));
test.after(() => rm(root, { recursive: true, force: true }));
const hook = await installErrorHook(join(root, 'hook'));
// A real `startproject` (Debian's Django): ALLOWED_HOSTS = [], DEBUG = True, nothing about proxies.
await run('/usr/bin/django-admin', ['startproject', 'site1'], { cwd: root });

/** Loads the project's settings under the hook and prints what Django sees, and the notes. */
async function settingsWith(project: string, env: Record<string, string>): Promise<{ seen: Record<string, unknown>; notes: string[] }> {
  const script = String.raw`
import django, json
django.setup()
from django.conf import settings as s
print(json.dumps({'ALLOWED_HOSTS': list(s.ALLOWED_HOSTS), 'CSRF_TRUSTED_ORIGINS': list(s.CSRF_TRUSTED_ORIGINS),
                  'SECURE_PROXY_SSL_HEADER': s.SECURE_PROXY_SSL_HEADER}))
`;
  const { stdout } = await run('/usr/bin/python3', ['-c', script], {
    cwd: join(root, project),
    env: { PATH: '/usr/bin:/bin', PYTHONPATH: hook, DJANGO_SETTINGS_MODULE: `${project}.settings`, HANGAR_DJANGO_REPORT: '1', ...env },
  });
  const lines = stdout.trim().split('\n');
  return {
    seen: JSON.parse(lines.at(-1) ?? '{}') as Record<string, unknown>,
    notes: lines.filter((l) => l.startsWith(DJANGO_NOTE_PREFIX)).map((l) => l.slice(DJANGO_NOTE_PREFIX.length)),
  };
}

const DOMAINS = { HANGAR_DOMAINS: 'shop.example.com,www.shop.test' };

test("the app's domains join an empty ALLOWED_HOSTS (keeping DEBUG's localhost defaults), CSRF_TRUSTED_ORIGINS in Django 3.2's form, and the proxy header is set", async () => {
  const { seen, notes } = await settingsWith('site1', DOMAINS);
  assert.deepEqual(seen, {
    ALLOWED_HOSTS: ['.localhost', '127.0.0.1', '[::1]', 'shop.example.com', 'www.shop.test'],
    CSRF_TRUSTED_ORIGINS: ['shop.example.com', 'www.shop.test'],
    SECURE_PROXY_SSL_HEADER: ['HTTP_X_FORWARDED_PROTO', 'https'],
  });
  assert.deepEqual(notes.slice(0, 4), [
    'added shop.example.com to ALLOWED_HOSTS',
    'added www.shop.test to ALLOWED_HOSTS',
    'added shop.example.com to CSRF_TRUSTED_ORIGINS',
    'added www.shop.test to CSRF_TRUSTED_ORIGINS',
  ]);
  assert.match(notes[4] ?? '', /^set SECURE_PROXY_SSL_HEADER/);
});

test('what the settings already say is kept: a covering pattern, a wildcard, their own proxy header', async () => {
  await run('/usr/bin/django-admin', ['startproject', 'site2'], { cwd: root });
  await appendFile(
    join(root, 'site2', 'site2', 'settings.py'),
    "\nALLOWED_HOSTS = ['.example.com']\nCSRF_TRUSTED_ORIGINS = ['*']\nSECURE_PROXY_SSL_HEADER = ('HTTP_X_SCHEME', 'https')\n",
  );
  const { seen, notes } = await settingsWith('site2', DOMAINS);
  assert.deepEqual(seen, {
    ALLOWED_HOSTS: ['.example.com', 'www.shop.test'],
    CSRF_TRUSTED_ORIGINS: ['*', 'shop.example.com', 'www.shop.test'],
    SECURE_PROXY_SSL_HEADER: ['HTTP_X_SCHEME', 'https'],
  });
  assert.deepEqual(notes, [
    'added www.shop.test to ALLOWED_HOSTS',
    'added shop.example.com to CSRF_TRUSTED_ORIGINS',
    'added www.shop.test to CSRF_TRUSTED_ORIGINS',
  ]);
});

test('config vars switch the autopilot off, all of it or one setting', async () => {
  const off = await settingsWith('site1', { ...DOMAINS, HANGAR_DJANGO_AUTOPILOT: '0' });
  assert.deepEqual(off.seen, { ALLOWED_HOSTS: [], CSRF_TRUSTED_ORIGINS: [], SECURE_PROXY_SSL_HEADER: null });
  assert.deepEqual(off.notes, ['settings left as they are (HANGAR_DJANGO_AUTOPILOT=0)']);
  const one = await settingsWith('site1', { ...DOMAINS, HANGAR_DJANGO_ALLOWED_HOSTS: 'off' });
  assert.deepEqual(one.seen.ALLOWED_HOSTS, []);
  assert.deepEqual(one.seen.CSRF_TRUSTED_ORIGINS, ['shop.example.com', 'www.shop.test']);
  assert.ok(one.notes.includes('ALLOWED_HOSTS left as it is (HANGAR_DJANGO_ALLOWED_HOSTS=0)'), one.notes.join('\n'));
});
