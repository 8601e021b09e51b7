/**
 * `hangar dashboard`: prints the web dashboard's URL and a one-time login link (it works once,
 * for about a minute, and opens a session of this token's scope that ends with the browser tab).
 */
import type { Command } from 'commander';
import { formatJson } from '../output.js';
import type { CliContext } from './context.js';

/** What `hangar dashboard --json` prints. */
export interface DashboardLinkOutput {
  /** The dashboard: the coordinator's URL. */
  url: string;
  /** `URL/#login=CODE`: logs a browser in once. */
  loginUrl: string;
  /** ISO time the login link stops working. */
  expiresAt: string;
}

/** Registers `dashboard` on `program`. */
export function registerDashboardCommands(program: Command, ctx: CliContext): void {
  program
    .command('dashboard')
    .description('print the web dashboard URL and a one-time login link')
    .option('--json', 'print {url, loginUrl, expiresAt} as JSON')
    .action(async (options: { json?: boolean }) => {
      const client = await ctx.client();
      const link = await client.createDashboardLoginLink();
      const url = `${client.url}/`;
      const output: DashboardLinkOutput = { url, loginUrl: `${client.url}${link.path}`, expiresAt: link.expiresAt };
      if (options.json) return ctx.out(formatJson(output));
      const seconds = Math.max(0, Math.round((Date.parse(link.expiresAt) - ctx.clock.now()) / 1000));
      ctx.out(
        `Dashboard: ${output.url}\n` +
          `Log in once within ${seconds} s with:\n${output.loginUrl}\n` +
          '(or open the dashboard and paste an API token)\n',
      );
    });
}
