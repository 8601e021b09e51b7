import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isHangarError } from '../../common/errors.js';
import { formatJoinToken, parseJoinToken } from '../../common/join-token.js';
import { SecretBox } from '../../common/secret-box.js';
import { hashToken, presentedToken, scopeAllows, selectWebsocketProtocol } from '../../coordinator/api/auth.js';

test('SecretBox seals with AES-256-GCM: fresh IVs, tamper-evident, clear text passes through', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hangar-secret-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const keyPath = join(dir, 'secret-key');
  const box = await SecretBox.fromKeyFile(keyPath);
  assert.equal((await stat(keyPath)).mode & 0o777, 0o600);
  assert.equal((await readFile(keyPath)).length, 32);

  const a = box.seal('hunter2');
  const b = box.seal('hunter2');
  assert.notEqual(a, b, 'a fresh IV per value');
  assert.ok(SecretBox.isSealed(a) && !a.includes('hunter2'));
  assert.equal(box.open(a), 'hunter2');
  assert.equal(box.open('{"plain": "json"}'), '{"plain": "json"}', 'rows from before encryption still read');
  assert.equal((await SecretBox.fromKeyFile(keyPath)).open(a), 'hunter2', 'the key file is reused');

  const tampered = `${a.slice(0, -2)}${a.endsWith('A') ? 'B' : 'A'}${a.slice(-1)}`;
  assert.throws(
    () => box.open(tampered),
    (err) => isHangarError(err, 'INTERNAL'),
  );
  assert.throws(
    () => new SecretBox(randomBytes(32)).open(a),
    (err) => isHangarError(err, 'INTERNAL'),
    'another key cannot open it',
  );

  await writeFile(join(dir, 'short-key'), 'short');
  await assert.rejects(SecretBox.fromKeyFile(join(dir, 'short-key')), /damaged/);
});

test('join tokens carry the CA fingerprint', () => {
  const fp = 'ab'.repeat(32);
  const token = formatJoinToken({ secret: 'hgr_join_0123456789abcdefXYZ_-', caFingerprint: fp.toUpperCase() });
  assert.equal(token, `hgr_join_0123456789abcdefXYZ_-.${fp}`);
  assert.deepEqual(parseJoinToken(` ${token}\n`), { secret: 'hgr_join_0123456789abcdefXYZ_-', caFingerprint: fp });
  for (const bad of ['', 'hgr_join_0123456789abcdef', `hgr_join_short.${fp}`, `hgr_join_0123456789abcdef.${fp.slice(1)}`, `x_${token}`]) {
    assert.throws(
      () => parseJoinToken(bad),
      (err) => isHangarError(err, 'BAD_INPUT') && /join-token/.test(err.message),
      bad,
    );
  }
});

test('API token helpers: header or subprotocol, never the URL; scopes nest', () => {
  assert.equal(presentedToken({ authorization: 'Bearer abc' }), 'abc');
  assert.equal(presentedToken({ 'sec-websocket-protocol': 'hangar.v1, hangar.token.xyz' }), 'xyz');
  assert.equal(presentedToken({ authorization: 'Basic abc' }), null);
  assert.equal(presentedToken({}), null);
  assert.equal(selectWebsocketProtocol(new Set(['hangar.token.xyz', 'hangar.v1'])), 'hangar.v1');
  assert.equal(selectWebsocketProtocol(new Set(['hangar.token.xyz'])), false);
  assert.ok(scopeAllows('admin', 'deploy') && scopeAllows('deploy', 'read') && scopeAllows('read', 'read'));
  assert.ok(!scopeAllows('read', 'deploy') && !scopeAllows('deploy', 'admin'));
  assert.match(hashToken('x'), /^[0-9a-f]{64}$/);
});
