/**
 * `hangar logs -a APP [-f] [-n N] [--source S] [--since 10m] [--until 5m] [--grep TEXT] [--json]` and
 * `hangar errors -a APP [--json]`.
 */
import type { Command } from 'commander';
import type { ErrorGroupView, LogLineView } from '../../common/api-types.js';
import type { LogsQuery } from '../api-client.js';
import { formatJson, heading, timeAgo } from '../output.js';
import { atEdge, badInput, resolveApp, withAppOption, type CliContext } from './context.js';

/** Most lines `hangar logs -f` shows before following (the live stream's backfill limit). */
export const MAX_LOG_LINES = 50_000;

/** Most lines `hangar logs` fetches, page by page (the coordinator's limit across pages). */
export const MAX_PAGED_LOG_LINES = 10_000_000;

interface LogsFlags {
  follow?: boolean;
  num?: string;
  source?: string;
  since?: string;
  until?: string;
  grep?: string;
  json?: boolean;
}

/** Validates the flags of `hangar logs` into a query; throws `BAD_INPUT` listing every bad one. */
export function parseLogsFlags(flags: LogsFlags): LogsQuery {
  const problems: string[] = [];
  const query: LogsQuery = {};
  if (flags.num !== undefined) {
    const max = flags.follow ? MAX_LOG_LINES : MAX_PAGED_LOG_LINES;
    if (!/^\d+$/.test(flags.num) || Number(flags.num) > max)
      problems.push(`-n must be a whole number from 0 to ${max}${flags.follow ? ' with -f' : ''}`);
    else query.n = Number(flags.num);
  }
  if (flags.source !== undefined) {
    if (!/^(?:[A-Za-z0-9_-]{1,63}(\.[0-9]{1,4})?|addon\[[a-z0-9-]{1,63}\])$/.test(flags.source)) {
      problems.push(`--source "${flags.source}" is not a source: write web, web.1, router, build, release, hangar or addon[NAME]`);
    } else query.source = flags.source;
  }
  for (const key of ['since', 'until'] as const) {
    const value = flags[key];
    if (value === undefined) continue;
    if (!/^\d{1,9}[smhd]$/.test(value) && Number.isNaN(Date.parse(value))) {
      problems.push(`--${key} "${value}" is neither a duration like 10m, 2h, 1d nor an ISO time`);
    } else query[key] = value;
  }
  if (flags.until !== undefined && flags.follow) problems.push('--until cannot be used with -f: live lines have no end');
  if (flags.grep !== undefined) {
    if (flags.grep === '' || flags.grep.length > 1000) problems.push('--grep needs 1 to 1000 characters of text');
    else query.grep = flags.grep;
  }
  if (problems.length > 0) throw badInput(problems.join('; '));
  return query;
}

/** Heroku's format: `2026-01-02T03:04:05.678Z app[web.1]: message`. */
export function formatLogLine(l: LogLineView): string {
  const label = /^[A-Za-z0-9_-]+\.\d+$/.test(l.source) ? `app[${l.source}]` : l.source;
  return `${l.ts} ${label}: ${l.line}\n`;
}

/** `--json`: one object a line with exactly `{ts, source, stream, agent, line}`. */
export function formatLogJson(l: LogLineView): string {
  return `${JSON.stringify({ ts: l.ts, source: l.source, stream: l.stream, agent: l.agent, line: l.line })}\n`;
}

/** The human `errors` output: one block per group, its last traceback indented. */
export function formatErrors(app: string, groups: readonly ErrorGroupView[], now: number): string {
  let out = heading(`${app} Errors`);
  for (const g of groups) {
    out +=
      `\n${g.type} at ${g.location}\n` +
      `  ${g.count} time${g.count === 1 ? '' : 's'}, last ${timeAgo(g.lastSeen, now)}, first ${timeAgo(g.firstSeen, now)}` +
      `${g.release ? `, release ${g.release}` : ''}\n` +
      `  ${g.message}\n` +
      g.traceback
        .trimEnd()
        .split('\n')
        .map((line) => `    ${line}\n`)
        .join('');
  }
  return out;
}

/** Registers `logs` and `errors` on `program`. */
export function registerLogsCommands(program: Command, ctx: CliContext): void {
  withAppOption(program.command('logs'))
    .description("show the app's logs (process output, router, build, release, hangar events)")
    .option('-f, --follow', 'keep printing new lines as they come')
    .option('-n, --num <n>', 'how many recent lines (default 100; up to 10,000,000, fetched 50,000 a page; at most 50,000 with -f)')
    .option('--source <source>', 'only lines of web, web.1, run.3, router, build, release, hangar or addon[NAME]')
    .option('--since <when>', 'only lines newer than this: 10m, 2h, 1d or an ISO time')
    .option('--until <when>', 'only lines older than this: 10m (ago), 2h, 1d or an ISO time')
    .option('--grep <text>', 'only lines containing this text (case-insensitive; answered from an index)')
    .option('--json', 'one JSON object a line: {ts, source, stream, agent, line}')
    .action(async (flags: LogsFlags, command: Command) => {
      const app = resolveApp(command, ctx);
      const query = atEdge(command, () => parseLogsFlags(flags));
      const print = flags.json ? formatLogJson : formatLogLine;
      const client = await ctx.client();
      if (!flags.follow) {
        // Page by page, each printed before the next is fetched: -n 1000000 never holds them all.
        await client.eachLogPage(app, query, (lines) => ctx.out(lines.map(print).join('')));
        return;
      }
      await client.streamLogs(app, query, (message) => {
        if ('lines' in message) ctx.out(message.lines.map(print).join(''));
        else if ('missed' in message && message.missed > 0) {
          ctx.err(`(skipped ${message.missed} lines: they came faster than this terminal read them)\n`);
        }
      });
      ctx.err('The log stream ended (the coordinator stopped or restarted).\n');
    });

  withAppOption(program.command('errors'))
    .description('show Python exceptions raised in the app, grouped by type and place')
    .option('--json', 'print the API objects as a JSON array')
    .action(async (flags: { json?: boolean }, command: Command) => {
      const app = resolveApp(command, ctx);
      const groups = await (await ctx.client()).errors(app);
      if (flags.json) return ctx.out(formatJson(groups));
      if (groups.length === 0) return ctx.out(`No errors recorded for ${app}.\n`);
      ctx.out(formatErrors(app, groups, ctx.clock.now()));
    });
}
