import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bindCommand, dialAddress } from '../../agent/workloads/bind-address.js';

test('a Procfile bind to every address becomes the instance address', () => {
  const cases: [string, string][] = [
    ['gunicorn mysite.wsgi --bind 0.0.0.0:$PORT --workers 2', 'gunicorn mysite.wsgi --bind 10.0.0.5:$PORT --workers 2'],
    ['gunicorn mysite.wsgi -b 0.0.0.0:${PORT}', 'gunicorn mysite.wsgi -b 10.0.0.5:${PORT}'],
    ['gunicorn mysite.wsgi --bind=0.0.0.0:$PORT', 'gunicorn mysite.wsgi --bind=10.0.0.5:$PORT'],
    ["gunicorn mysite.wsgi --bind '0.0.0.0:$PORT'", "gunicorn mysite.wsgi --bind '10.0.0.5:$PORT'"],
    ['python manage.py runserver 0.0.0.0:$PORT', 'python manage.py runserver 10.0.0.5:$PORT'],
    ['uvicorn app:app --host 0.0.0.0 --port $PORT', 'uvicorn app:app --host 10.0.0.5 --port $PORT'],
    ['gunicorn app --bind [::]:$PORT', 'gunicorn app --bind 10.0.0.5:$PORT'],
  ];
  for (const [command, bound] of cases) assert.equal(bindCommand(command, '10.0.0.5'), bound, command);
  assert.equal(bindCommand('gunicorn app --bind 0.0.0.0:$PORT', 'fd00::5'), 'gunicorn app --bind [fd00::5]:$PORT');
});

test('other binds, and "every address" itself, are left alone', () => {
  for (const command of [
    'gunicorn app --bind 127.0.0.1:$PORT',
    'gunicorn app --bind unix:/tmp/app.sock',
    'python worker.py --url http://10.0.0.0:8000',
    'gunicorn app --bind 0.0.0.0:8000',
    'echo 10.0.0.0:$PORT',
  ]) {
    assert.equal(bindCommand(command, '10.0.0.5'), command);
  }
  assert.equal(bindCommand('gunicorn app --bind 0.0.0.0:$PORT', '0.0.0.0'), 'gunicorn app --bind 0.0.0.0:$PORT');
  assert.equal(dialAddress('0.0.0.0'), '127.0.0.1');
  assert.equal(dialAddress('10.0.0.5'), '10.0.0.5');
});
