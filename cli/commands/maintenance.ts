/**
 * `hangar maintenance -a APP [--json]`, `maintenance:on -a APP [--page FILE] [--bypass-header]
 * [--retry-after S]`, `maintenance:off -a APP`: while on, every router answers the app's requests
 * with a 503 page, except those that carry the bypass header's secret.
 */
import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import type { MaintenanceView } from '../../common/api-types.js';
import type { MaintenanceChange } from '../api-client.js';
import { formatJson, formatPairs, heading, timeAgo } from '../output.js';
import { atEdge, badInput, resolveApp, usageError, withAppOption, type CliContext } from './context.js';

/** `--retry-after` as whole seconds (0–86400); throws `BAD_INPUT` otherwise. */
export function parseRetryAfter(text: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 86_400) {
    throw badInput(`--retry-after takes whole seconds from 0 to 86400 (got "${text}"), e.g. --retry-after 300`);
  }
  return Number(text);
}

function describe(m: MaintenanceView, now: number): string {
  if (!m.enabled) return `Maintenance mode is off for ${m.app}: the routers send its requests to the app.\n`;
  return (
    heading(`${m.app}: maintenance mode on`) +
    formatPairs([
      ['Since', m.since === null ? '-' : `${m.since} (${timeAgo(m.since, now)})`],
      ['Page', m.page === 'custom' ? 'custom (from --page)' : "the router's default"],
      ['Retry-After', `${m.retryAfter ?? 0} s`],
      ['Bypass header', m.bypassHeader ?? 'none (add one with `maintenance:on --bypass-header`)'],
    ])
  );
}

/** Registers the maintenance commands on `program`. */
export function registerMaintenanceCommands(program: Command, ctx: CliContext): void {
  withAppOption(program.command('maintenance'))
    .description('show whether the app is in maintenance mode')
    .option('--json', 'print the API object')
    .action(async (options: { json?: boolean }, command: Command) => {
      const app = resolveApp(command, ctx);
      const m = await (await ctx.client()).getMaintenance(app);
      if (options.json) return ctx.out(formatJson(m));
      ctx.out(describe(m, ctx.clock.now()));
    });

  withAppOption(program.command('maintenance:on'))
    .description('answer every request with a 503 maintenance page (the app keeps running)')
    .addOption(
      new Option('--page <file>', 'an HTML file to answer with instead of the default page (at most 64 KiB)').conflicts('defaultPage'),
    )
    .option('--default-page', 'go back to the default page after a custom one')
    .option(
      '--bypass-header',
      'make a new secret value for the X-Hangar-Maintenance-Bypass header that still reaches the app (printed once)',
    )
    .option('--retry-after <seconds>', 'seconds sent in the Retry-After header (default 120)')
    .action(async (options: { page?: string; defaultPage?: boolean; bypassHeader?: boolean; retryAfter?: string }, command: Command) => {
      const app = resolveApp(command, ctx);
      const retryAfter = options.retryAfter === undefined ? undefined : atEdge(command, () => parseRetryAfter(options.retryAfter ?? ''));
      let page: string | undefined;
      if (options.page !== undefined) {
        try {
          page = await readFile(options.page, 'utf8');
        } catch (err) {
          usageError(
            command,
            `cannot read the page ${options.page} (${(err as NodeJS.ErrnoException).code ?? String(err)}); give an HTML file with --page FILE`,
          );
        }
      }
      const change: MaintenanceChange = {
        enabled: true,
        ...(page !== undefined ? { page } : {}),
        ...(options.defaultPage ? { defaultPage: true as const } : {}),
        ...(options.bypassHeader ? { bypass: true } : {}),
        ...(retryAfter !== undefined ? { retryAfter } : {}),
      };
      ctx.out(`Enabling maintenance mode for ${app}... `);
      const { maintenance, bypassHeader } = await (await ctx.client()).setMaintenance(app, change);
      ctx.out('done\n');
      ctx.out(
        `Every router now answers ${app}'s requests with 503 and ${maintenance.page === 'custom' ? 'your page' : 'the default page'} (Retry-After: ${maintenance.retryAfter ?? 0} s). Turn it off with \`hangar maintenance:off -a ${app}\`.\n`,
      );
      if (bypassHeader !== null) {
        ctx.out(`To reach the app anyway, send this header (shown only now; --bypass-header again makes a new one):\n`);
        ctx.out(`  ${bypassHeader.name}: ${bypassHeader.value}\n`);
      }
    });

  withAppOption(program.command('maintenance:off'))
    .description('send requests to the app again')
    .action(async (_options: unknown, command: Command) => {
      const app = resolveApp(command, ctx);
      ctx.out(`Disabling maintenance mode for ${app}... `);
      await (await ctx.client()).setMaintenance(app, { enabled: false });
      ctx.out('done\n');
    });
}
