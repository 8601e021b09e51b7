import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { generateSecretKey } from '../../coordinator/releases/secret-key.js';

test('a generated SECRET_KEY passes Django W009: ≥ 50 characters, ≥ 5 distinct, no insecure prefix', () => {
  for (let i = 0; i < 200; i++) {
    const key = generateSecretKey();
    assert.ok(key.length >= 50, `${key.length} characters`);
    assert.ok(new Set(key).size >= 5);
    assert.ok(!key.startsWith('django-insecure-'));
    assert.match(key, /^[A-Za-z0-9_-]+$/);
  }
});

test('a draw with too few distinct characters is drawn again', () => {
  let calls = 0;
  const key = generateSecretKey((n) => (++calls === 1 ? Buffer.alloc(n) : randomBytes(n)));
  assert.equal(calls, 2);
  assert.ok(new Set(key).size >= 5);
});
