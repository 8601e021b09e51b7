import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SecretBox } from '../../common/secret-box.js';
import { Store } from '../../coordinator/store/store.js';

/** Runs SQL on the file with Python's sqlite3, outside the store (as an older Hangar would have written it). */
function sqlite(path: string, sql: string): string {
  return execFileSync(
    '/usr/bin/python3',
    ['-c', 'import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nfor r in c.execute(sys.argv[2]): print(*r)\nc.commit()', path, sql],
    { encoding: 'utf8' },
  );
}

test('config vars and release configs are sealed at rest; clear rows from before are sealed on open', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-store-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'hangar.db');
  const secrets = await SecretBox.fromKeyFile(join(dir, 'secret-key'));

  const store = new Store({ path, secrets });
  store.createApp('shop', 1);
  store.patchConfig('shop', { PASSWORD: 'sealed-one' });
  store.createRelease({
    app: 'shop',
    artifactSha256: 'a'.repeat(64),
    procfile: { web: 'gunicorn x' },
    config: { PASSWORD: 'sealed-one' },
    appJson: null,
    status: 'succeeded',
    description: 'Deploy',
    createdBy: 'admin',
    createdAt: 2,
  });
  store.close();
  const raw = sqlite(path, 'SELECT value FROM config_vars UNION ALL SELECT config FROM releases');
  assert.ok(!raw.includes('sealed-one'), raw);
  assert.equal(
    raw
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('enc:v1:')).length,
    2,
  );

  // Rows in clear, as written before encryption at rest existed.
  sqlite(path, `UPDATE config_vars SET value = 'clear-one' WHERE key = 'PASSWORD'`);
  sqlite(path, `UPDATE releases SET config = '{"PASSWORD":"clear-one"}'`);
  const reopened = new Store({ path, secrets });
  t.after(() => reopened.close());
  assert.deepEqual(reopened.getConfig('shop'), { PASSWORD: 'clear-one' });
  assert.deepEqual(reopened.getRelease('shop', 1)?.config, { PASSWORD: 'clear-one' });
  reopened.close();
  const after = sqlite(path, 'SELECT value FROM config_vars UNION ALL SELECT config FROM releases');
  assert.ok(!after.includes('clear-one'), after);
  for (const name of ['hangar.db', 'hangar.db-wal']) {
    const bytes = await readFile(join(dir, name)).catch(() => Buffer.alloc(0));
    assert.ok(!bytes.includes('sealed-one') && !bytes.includes('clear-one'), `${name} holds a value in clear`);
  }
});
