import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isHangarError } from '../../common/errors.js';
import { isTimeZone, nextFiring, parseCronSchedule } from '../../common/cron-schedule.js';

const at = (iso: string) => Date.parse(iso);
const next = (schedule: string, after: string, zone?: string) => {
  const t = nextFiring(parseCronSchedule(schedule), at(after), zone);
  return t === null ? null : new Date(t).toISOString();
};

test('the next firing of common schedules', () => {
  assert.equal(next('0 3 * * *', '2026-01-02T01:00:00Z'), '2026-01-02T03:00:00.000Z');
  assert.equal(next('0 3 * * *', '2026-01-02T03:00:00Z'), '2026-01-03T03:00:00.000Z', 'strictly after');
  assert.equal(next('* * * * *', '2026-01-02T03:04:59.999Z'), '2026-01-02T03:05:00.000Z');
  assert.equal(next('*/15 * * * *', '2026-01-02T03:16:00Z'), '2026-01-02T03:30:00.000Z');
  assert.equal(next('5/20 * * * *', '2026-01-02T03:26:00Z'), '2026-01-02T03:45:00.000Z');
  assert.equal(next('0 9-17/4 * * MON-FRI', '2026-01-02T18:00:00Z'), '2026-01-05T09:00:00.000Z', 'Friday evening → Monday 9:00');
  assert.equal(next('30 2 1,15 * *', '2026-01-02T00:00:00Z'), '2026-01-15T02:30:00.000Z');
  assert.equal(next('0 0 1 jan *', '2026-03-01T00:00:00Z'), '2027-01-01T00:00:00.000Z');
  assert.equal(next('@hourly', '2026-01-02T03:04:00Z'), '2026-01-02T04:00:00.000Z');
  assert.equal(next('@daily', '2026-01-02T03:04:00Z'), '2026-01-03T00:00:00.000Z');
  assert.equal(next('0 0 * * 7', '2026-01-01T00:00:00Z'), '2026-01-04T00:00:00.000Z', '7 is Sunday');
  assert.equal(next('0 0 29 2 *', '2026-01-01T00:00:00Z'), '2028-02-29T00:00:00.000Z');
  assert.equal(next('0 0 30 2 *', '2026-01-01T00:00:00Z'), null);
});

test('both day fields restricted: either one fires (Vixie cron)', () => {
  // 2026-01-13 is a Tuesday; the 15th is a Thursday.
  assert.equal(next('0 0 15 * TUE', '2026-01-12T12:00:00Z'), '2026-01-13T00:00:00.000Z');
  assert.equal(next('0 0 15 * TUE', '2026-01-13T12:00:00Z'), '2026-01-15T00:00:00.000Z');
});

test('time zones, including half-hour offsets and daylight saving', () => {
  assert.equal(next('0 3 * * *', '2026-01-02T00:00:00Z', 'Europe/Paris'), '2026-01-02T02:00:00.000Z');
  assert.equal(next('0 3 * * *', '2026-07-02T00:00:00Z', 'Europe/Paris'), '2026-07-02T01:00:00.000Z');
  assert.equal(next('0 9 * * *', '2026-01-02T00:00:00Z', 'Asia/Kolkata'), '2026-01-02T03:30:00.000Z');
  assert.equal(isTimeZone('Europe/Paris'), true);
  assert.equal(isTimeZone('Mars/Olympus'), false);
});

test('bad schedules name the field and how to write it', () => {
  const cases: [string, RegExp][] = [
    ['0 3 * *', /five fields/],
    ['60 * * * *', /minute field "60" has 60, outside 0-59/],
    ['0 24 * * *', /hour field/],
    ['0 0 0 * *', /day of month field/],
    ['0 0 * 13 *', /month field/],
    ['0 0 * * FUNDAY', /day of week field .* not a number or a name/],
    ['*/0 * * * *', /step "\/0"/],
    ['5-1 * * * *', /runs backwards/],
    ['1,,2 * * * *', /written like/],
    ['@sometimes', /five fields/],
  ];
  for (const [text, message] of cases) {
    assert.throws(
      () => parseCronSchedule(text),
      (err) => isHangarError(err, 'BAD_INPUT') && message.test(err.message),
      text,
    );
  }
});
