/**
 * Cron schedules in the five standard fields (minute hour day-of-month month day-of-week), as
 * Vixie cron, Dokku and Heroku Scheduler users write them: `*`, `5`, `1-5`, `* /15` (without the
 * space), `1-30/10`, lists `1,15`, month and day names (`JAN`, `MON`), `7` for Sunday, and the
 * macros `@hourly`, `@daily`/`@midnight`, `@weekly`, `@monthly`, `@yearly`/`@annually`. When both
 * day fields are restricted a day matching either one fires (Vixie's rule). A time zone (IANA,
 * e.g. `Europe/Paris`) is read through `Intl`; default UTC.
 *
 * No cron library is installed in this project, so this is a small parser of the standard
 * fields only (no seconds, `L`, `W`, `#` or `?`).
 */
import { HangarError } from './errors.js';

/** A parsed schedule: the allowed values of each field. */
export interface CronSchedule {
  /** The text it was parsed from. */
  source: string;
  minutes: ReadonlySet<number>;
  hours: ReadonlySet<number>;
  days: ReadonlySet<number>;
  months: ReadonlySet<number>;
  /** 0 = Sunday. */
  weekdays: ReadonlySet<number>;
  /** The day-of-month field was `*`. */
  anyDay: boolean;
  /** The day-of-week field was `*`. */
  anyWeekday: boolean;
}

const MACROS: Record<string, string> = {
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
  '@monthly': '0 0 1 * *',
  '@weekly': '0 0 * * 0',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@hourly': '0 * * * *',
};

const MONTHS = ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'];
const WEEKDAYS = ['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'];

interface FieldSpec {
  name: string;
  min: number;
  max: number;
  names?: readonly string[];
  /** First value the names stand for (JAN = 1, SUN = 0). */
  nameBase?: number;
}

const FIELDS: readonly FieldSpec[] = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day of month', min: 1, max: 31 },
  { name: 'month', min: 1, max: 12, names: MONTHS, nameBase: 1 },
  { name: 'day of week', min: 0, max: 7, names: WEEKDAYS, nameBase: 0 },
];

/**
 * Parses a schedule.
 *
 * @throws HangarError `BAD_INPUT` saying which field is wrong and how to write it.
 */
export function parseCronSchedule(text: string): CronSchedule {
  const source = text.trim();
  const expanded = MACROS[source.toLowerCase()] ?? source;
  const parts = expanded.split(/\s+/);
  if (parts.length !== 5) {
    throw new HangarError(
      'BAD_INPUT',
      `"${source}" is not a cron schedule: write five fields (minute hour day-of-month month day-of-week), e.g. "0 3 * * *", or @daily`,
    );
  }
  const sets = parts.map((part, i) => parseField(part, FIELDS[i] as FieldSpec, source));
  const weekdays = new Set([...(sets[4] as Set<number>)].map((d) => (d === 7 ? 0 : d)));
  return {
    source,
    minutes: sets[0] as Set<number>,
    hours: sets[1] as Set<number>,
    days: sets[2] as Set<number>,
    months: sets[3] as Set<number>,
    weekdays,
    anyDay: parts[2] === '*',
    anyWeekday: parts[4] === '*',
  };
}

function parseField(part: string, field: FieldSpec, source: string): Set<number> {
  const bad = (why: string) => new HangarError('BAD_INPUT', `"${source}" is not a cron schedule: the ${field.name} field "${part}" ${why}`);
  const value = (v: string): number => {
    const upper = v.toUpperCase();
    const named = field.names?.indexOf(upper) ?? -1;
    if (named >= 0) return named + (field.nameBase ?? 0);
    if (!/^\d{1,2}$/.test(v)) throw bad(`has "${v}", which is not a number${field.names ? ' or a name' : ''}`);
    const n = Number(v);
    if (n < field.min || n > field.max) throw bad(`has ${n}, outside ${field.min}-${field.max}`);
    return n;
  };
  const out = new Set<number>();
  for (const item of part.split(',')) {
    const [range = '', stepText, extra] = item.split('/');
    if (extra !== undefined || range === '') throw bad('is not written like 5, 1-5, */15 or 1,15');
    let step = 1;
    if (stepText !== undefined) {
      if (!/^\d{1,2}$/.test(stepText) || Number(stepText) === 0) throw bad(`has a step "/${stepText}" that is not a whole number above 0`);
      step = Number(stepText);
    }
    let from: number;
    let to: number;
    if (range === '*') {
      from = field.min;
      to = field.max === 7 ? 6 : field.max;
    } else if (range.includes('-')) {
      const [a = '', b = ''] = range.split('-');
      from = value(a);
      to = value(b);
      if (from > to) throw bad(`has a range ${range} that runs backwards`);
    } else {
      from = value(range);
      // `5/15` means from 5 to the end, every 15.
      to = stepText === undefined ? from : field.max;
    }
    for (let n = from; n <= to; n += step) out.add(n);
  }
  return out;
}

/** The wall-clock fields of an instant in a time zone. */
interface Fields {
  minute: number;
  hour: number;
  day: number;
  month: number;
  weekday: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** Whether `zone` is an IANA time zone this runtime knows. */
export function isTimeZone(zone: string): boolean {
  try {
    formatterFor(zone);
    return true;
  } catch {
    return false;
  }
}

function formatterFor(zone: string): Intl.DateTimeFormat {
  let f = formatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      minute: 'numeric',
      hour: 'numeric',
      day: 'numeric',
      month: 'numeric',
      weekday: 'short',
    });
    formatters.set(zone, f);
  }
  return f;
}

function fieldsAt(ms: number, zone: string): Fields {
  if (zone === 'UTC') {
    const d = new Date(ms);
    return { minute: d.getUTCMinutes(), hour: d.getUTCHours(), day: d.getUTCDate(), month: d.getUTCMonth() + 1, weekday: d.getUTCDay() };
  }
  const parts: Record<string, string> = {};
  for (const p of formatterFor(zone).formatToParts(ms)) parts[p.type] = p.value;
  return {
    minute: Number(parts.minute),
    hour: Number(parts.hour),
    day: Number(parts.day),
    month: Number(parts.month),
    weekday: WEEKDAYS.indexOf((parts.weekday ?? '').toUpperCase()),
  };
}

function dayMatches(s: CronSchedule, f: Fields): boolean {
  if (!s.months.has(f.month)) return false;
  const byDay = s.days.has(f.day);
  const byWeekday = s.weekdays.has(f.weekday);
  if (s.anyDay && s.anyWeekday) return true;
  if (s.anyDay) return byWeekday;
  if (s.anyWeekday) return byDay;
  return byDay || byWeekday;
}

const MINUTE = 60_000;
/** How far ahead a firing is looked for (a schedule such as 29 Feb may be years away). */
const HORIZON_MS = 5 * 366 * 86_400_000;

/**
 * The first minute strictly after `afterMs` at which the schedule fires, Unix ms; null when none
 * comes within five years (e.g. "0 0 30 2 *").
 */
export function nextFiring(s: CronSchedule, afterMs: number, zone = 'UTC'): number | null {
  let t = Math.floor(afterMs / MINUTE) * MINUTE + MINUTE;
  const end = afterMs + HORIZON_MS;
  while (t <= end) {
    const f = fieldsAt(t, zone);
    // Skip whole hours that cannot match (to the next wall-clock hour), else minute by minute.
    if (!dayMatches(s, f) || !s.hours.has(f.hour)) {
      t += (60 - f.minute) * MINUTE;
      continue;
    }
    if (s.minutes.has(f.minute)) return t;
    t += MINUTE;
  }
  return null;
}
