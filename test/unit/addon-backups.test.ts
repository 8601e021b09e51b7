import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nextDaily } from '../../coordinator/addons/addon-backups.js';

test('nextDaily: the next HH:MM (UTC) strictly after the given time', () => {
  const at = (iso: string) => new Date(nextDaily('03:00', Date.parse(iso))).toISOString();
  assert.equal(at('2030-01-01T02:59:59Z'), '2030-01-01T03:00:00.000Z');
  assert.equal(at('2030-01-01T03:00:00Z'), '2030-01-02T03:00:00.000Z', 'a firing at its time is not due again');
  assert.equal(at('2030-12-31T23:30:00Z'), '2031-01-01T03:00:00.000Z');
  assert.equal(new Date(nextDaily('23:59', Date.parse('2030-03-01T00:00:00Z'))).toISOString(), '2030-03-01T23:59:00.000Z');
});
