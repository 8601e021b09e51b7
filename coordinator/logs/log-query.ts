import { z } from 'zod';
import { HangarError } from '../../common/errors.js';
import type { LogCursor, LogQuery } from './log-store.js';
import { parseDuration } from '../../common/duration.js';
import { parseInput } from '../api/validation.js';

/** Most lines one answer (a page, or the live stream's backfill) carries. */
export const MAX_LOG_LINES = 50_000;

/** Most lines a paged query (`n` across pages) asks for. */
export const MAX_PAGED_LOG_LINES = 10_000_000;

/** A cursor as the API hands it out: opaque to clients. */
export function formatLogCursor(c: LogCursor): string {
  return Buffer.from(`${c.after}.${c.to}.${c.left}`).toString('base64url');
}

/** The cursor of a `next` the API gave out; null when it is not one. */
export function parseLogCursor(text: string): LogCursor | null {
  const m = /^(\d{1,15})\.(\d{1,15})\.(\d{1,9})$/.exec(Buffer.from(text, 'base64url').toString('latin1'));
  if (!m) return null;
  const [after, to, left] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return after <= to && left > 0 ? { after, to, left } : null;
}

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
    n: z.coerce.number().int().min(0).max(MAX_PAGED_LOG_LINES).default(100),
    source: z
      .string()
      .regex(
        /^(?:[A-Za-z0-9_-]{1,63}(\.[0-9]{1,4})?|addon\[[a-z0-9-]{1,63}\])$/,
        'must be a process type (web), an instance (web.1), router, build, release, hangar or addon[NAME]',
      )
      .optional(),
    since: z.string().max(40).optional(),
    until: z.string().max(40).optional(),
    grep: z.string().min(1).max(1000).optional(),
    cursor: z.string().min(1).max(100).optional(),
  })
  .strict();

/** A validated log query, and where its page starts (a `next` cursor of an earlier page). */
export interface ParsedLogQuery extends LogQuery {
  cursor?: LogCursor;
}

/**
 * Validates the query string of the log routes. `live`: the websocket stream, whose backfill is
 * one message train of at most {@link MAX_LOG_LINES} and which takes no `until` or `cursor`.
 */
export function parseLogQuery(app: string, query: unknown, now: number, options: { live?: boolean } = {}): ParsedLogQuery {
  const q = parseInput(logQuerySchema, query ?? {}, 'log query');
  const out: ParsedLogQuery = { app, n: q.n };
  if (options.live) {
    const bad = [
      ...(q.n > MAX_LOG_LINES ? [`n must be at most ${MAX_LOG_LINES} when following`] : []),
      ...(q.until !== undefined ? ['until cannot be used when following (live lines have no end)'] : []),
      ...(q.cursor !== undefined ? ['cursor is for GET /v1/apps/APP/logs, not the live stream'] : []),
    ];
    if (bad.length > 0) throw new HangarError('BAD_INPUT', `Bad log query: ${bad.join('; ')}.`);
  }
  if (q.source) out.source = q.source;
  if (q.grep) out.grep = q.grep;
  for (const key of ['since', 'until'] as const) {
    const text = q[key];
    if (text === undefined) continue;
    const t = parseSince(text, now);
    if (t === null) throw new HangarError('BAD_INPUT', `Bad log query: ${key} "${text}" is neither like 10m, 2h, 1d nor an ISO time.`);
    out[key] = t;
  }
  if (q.cursor !== undefined) {
    const cursor = parseLogCursor(q.cursor);
    if (!cursor) throw new HangarError('BAD_INPUT', `Bad log query: cursor "${q.cursor}" is not a next cursor this API gave out.`);
    out.cursor = cursor;
  }
  return out;
}
