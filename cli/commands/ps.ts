/**
 * `hangar ps -a APP`, `scale TYPE=N... -a APP`, `restart [TYPE|ID] -a APP`.
 */
import type { Command } from 'commander';
import type { PsRow } from '../../common/api-types.js';
import { formatMemorySize } from '../../common/resource-limits.js';
import { compareProcessTypes, formatJson, formatList, formatTable, heading, timeAgo } from '../output.js';
import { atEdge, badInput, resolveApp, withAppOption, type CliContext } from './context.js';
import { followDeploy, timeoutOption } from './deploy.js';

/** The most instances of one type `scale` accepts; the coordinator may allow fewer (capacity). */
export const MAX_SCALE = 1000;

const TYPE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;

/**
 * Parses `TYPE=N` arguments into a formation change; N is a whole number from 0 to
 * {@link MAX_SCALE}. Throws `BAD_INPUT` listing every bad argument.
 */
export function parseScaleArgs(args: readonly string[]): Record<string, number> {
  const formation: Record<string, number> = {};
  const problems: string[] = [];
  for (const arg of args) {
    const eq = arg.indexOf('=');
    const type = eq === -1 ? arg : arg.slice(0, eq);
    const count = eq === -1 ? undefined : arg.slice(eq + 1);
    if (!TYPE_PATTERN.test(type)) {
      problems.push(`"${type}" is not a process type: use the name from the Procfile, e.g. web=2`);
    } else if (count === undefined) {
      problems.push(`"${arg}" has no count: write TYPE=N, e.g. ${type}=2`);
    } else if (!/^\d+$/.test(count) || Number(count) > MAX_SCALE) {
      problems.push(`"${arg}": the count must be a whole number from 0 to ${MAX_SCALE}, e.g. ${type}=2`);
    } else if (type in formation) {
      problems.push(`${type} is given twice`);
    } else {
      formation[type] = Number(count);
    }
  }
  if (problems.length > 0) throw badInput(problems.join('; '));
  return formation;
}

/** Parses `restart`'s target: a process type (`web`) or an instance (`web.1`). */
export function parseRestartTarget(input: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]*(\.[1-9]\d*)?$/.test(input)) {
    throw badInput(`"${input}" is neither a process type nor an instance: write web or web.1 (\`hangar ps\` lists them)`);
  }
  return input;
}

/** The human `ps` output: one `=== TYPE (N)` section per process type, instances in order. */
export function formatPs(rows: readonly PsRow[], now: number): string {
  const byType = new Map<string, PsRow[]>();
  for (const row of rows) byType.set(row.type, [...(byType.get(row.type) ?? []), row]);
  const sections: string[] = [];
  for (const type of [...byType.keys()].sort(compareProcessTypes)) {
    const instances = (byType.get(type) ?? []).slice().sort((a, b) => instanceNumber(a.id) - instanceNumber(b.id));
    // Memory against its limit only where limits are enforced; an OOM kill is said beside the state.
    const limited = instances.some((row) => row.memoryLimitBytes !== null);
    const table = formatTable(
      instances.map((row) => [
        `${row.id}:`,
        row.reason === 'oom' ? `${row.state} (out of memory)` : row.state,
        row.release,
        row.agent,
        `pid ${row.pid ?? '-'}`,
        `port ${row.port ?? '-'}`,
        ...(limited ? [`mem ${memoryText(row)}`] : []),
        `restarts ${row.restarts}`,
        `since ${timeAgo(row.since, now)}`,
      ]),
    );
    sections.push(`${heading(`${type} (${instances.length})`)}${table}`);
  }
  return sections.join('\n');
}

function memoryText(row: PsRow): string {
  if (row.memoryLimitBytes === null) return '-';
  return `${row.memoryBytes === null ? '-' : formatMemorySize(row.memoryBytes)}/${formatMemorySize(row.memoryLimitBytes)}`;
}

function instanceNumber(id: string): number {
  const n = Number(id.slice(id.lastIndexOf('.') + 1));
  return Number.isNaN(n) ? 0 : n;
}

/** Registers `ps`, `scale` and `restart` on `program`. */
export function registerPsCommands(program: Command, ctx: CliContext): void {
  withAppOption(program.command('ps'))
    .description("list the app's processes (state, memory against its limit, an OOM kill)")
    .option('--json', 'print the API rows as a JSON array')
    .action(async (options: { json?: boolean }, command: Command) => {
      const app = resolveApp(command, ctx);
      const rows = await (await ctx.client()).listPs(app);
      if (options.json) return ctx.out(formatJson(rows));
      if (rows.length === 0) {
        return ctx.out(
          `No processes of ${app} are running; deploy with \`hangar deploy -a ${app}\` or scale with \`hangar scale web=1 -a ${app}\`.\n`,
        );
      }
      ctx.out(formatPs(rows, ctx.clock.now()));
    });

  withAppOption(program.command('scale'))
    .description('set how many instances of each process type run')
    .argument('<formation...>', 'TYPE=N pairs, e.g. web=2 worker=1')
    .action(async (args: string[], _options: unknown, command: Command) => {
      const app = resolveApp(command, ctx);
      const formation = atEdge(command, () => parseScaleArgs(args));
      await (await ctx.client()).scale(app, formation);
      const changes = Object.entries(formation).map(([type, n]) => `${type} to ${n}`);
      ctx.out(`Scaling ${changes.join(', ')}... done\n`);
    });

  withAppOption(program.command('restart'))
    .description('rolling restart of all processes, one type (web) or one instance (web.1); exits 0 only when healthy')
    .argument('[target]', 'a process type or an instance; all when omitted')
    .addOption(timeoutOption())
    .action(async (target: string | undefined, options: { timeout: number }, command: Command) => {
      const app = resolveApp(command, ctx);
      const parsed = target === undefined ? undefined : atEdge(command, () => parseRestartTarget(target));
      const client = await ctx.client();
      const { restarted, restart } = await client.restartRolling(app, parsed);
      const what = parsed === undefined ? `all processes of ${app}` : `${parsed} on ${app}`;
      if (restart === null || restarted.length === 0) {
        ctx.out(`Restarting ${what}... done${restarted.length > 0 ? ` (${formatList(restarted)})` : ' (none were running)'}\n`);
        return;
      }
      ctx.out(`Restarting ${what} one at a time (${formatList(restarted)})\n`);
      await followDeploy(ctx, client, app, restart, {
        timeoutMs: options.timeout * 1000,
        poll: (id, after) => client.getRestart(app, id, after),
        doneLine: (view, url) => `-----> ${app} restarted (${view.release ?? 'no release'}): ${url}`,
      });
    });
}
