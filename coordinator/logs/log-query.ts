import { z } from 'zod';
import { HangarError } from '../../common/errors.js';
import type { LogQuery } from './log-store.js';
import { parseDuration } from '../api/duration.js';
import { parseInput } from '../api/validation.js';

/** Most lines one query returns. */
export const MAX_LOG_LINES = 50_000;

/** `10m`, `2h`, `30s`, `1d` (before `now`) or an ISO time → Unix ms; null when neither. */
export function parseSince(value: string, now: number): number | null {
  const ago = parseDuration(value);
  if (ago !== null) return now - ago;
  if (/^\d{4}-\d{2}-\d{2}/.test(value)) {
    const t = Date.parse(value);
    return Number.isNaN(t) ? null : t;
  }
  return null;
}

const logQuerySchema = z
  .object({
    n: z.coerce.number().int().min(0).max(MAX_LOG_LINES).default(100),
    source: z
      .string()
      .regex(
        /^(?:[A-Za-z0-9_-]{1,63}(\.[0-9]{1,4})?|addon\[[a-z0-9-]{1,63}\])$/,
        'must be a process type (web), an instance (web.1), router, build, release, hangar or addon[NAME]',
      )
      .optional(),
    since: z.string().max(40).optional(),
    grep: z.string().min(1).max(1000).optional(),
  })
  .strict();

/** Validates the query string of the log routes (GET and websocket). */
export function parseLogQuery(app: string, query: unknown, now: number): LogQuery {
  const q = parseInput(logQuerySchema, query ?? {}, 'log query');
  const out: LogQuery = { app, n: q.n };
  if (q.source) out.source = q.source;
  if (q.grep) out.grep = q.grep;
  if (q.since) {
    const since = parseSince(q.since, now);
    if (since === null)
      throw new HangarError('BAD_INPUT', `Bad log query: since "${q.since}" is neither like 10m, 2h, 1d nor an ISO time.`);
    out.since = since;
  }
  return out;
}
