/**
 * `hangar apps`, `apps:create NAME`, `apps:destroy NAME --confirm NAME`, `apps:info -a APP`.
 */
import type { Command } from 'commander';
import { formatFormation, formatJson, formatPairs, formatTable, heading, timeAgo } from '../output.js';
import { resolveApp, usageError, withAppOption, type CliContext } from './context.js';

interface JsonOptions {
  json?: boolean;
}

/** Registers the app commands on `program`. */
export function registerAppsCommands(program: Command, ctx: CliContext): void {
  program
    .command('apps')
    .description('list apps')
    .option('--json', 'print the API objects as a JSON array')
    .action(async (options: JsonOptions) => {
      const apps = await (await ctx.client()).listApps();
      if (options.json) return ctx.out(formatJson(apps));
      if (apps.length === 0) return ctx.out('No apps yet; create one with `hangar apps:create NAME`.\n');
      const now = ctx.clock.now();
      ctx.out(heading('Apps'));
      ctx.out(
        formatTable(
          apps.map((app) => [app.name, app.release ?? '-', formatFormation(app.formation), app.domain, timeAgo(app.createdAt, now)]),
          ['NAME', 'RELEASE', 'FORMATION', 'DOMAIN', 'CREATED'],
        ),
      );
    });

  program
    .command('apps:create')
    .description('create an app')
    .argument('<name>', "the new app's name; its domain is NAME.<coordinator domain>")
    .action(async (name: string) => {
      const app = await (await ctx.client()).createApp(name);
      ctx.out(`Creating ${app.name}... done\n`);
      ctx.out(`${app.url}\n`);
      ctx.out(`Deploy it with \`hangar deploy -a ${app.name}\` from the app's folder.\n`);
    });

  program
    .command('apps:destroy')
    .description('destroy an app with its releases, config and processes')
    .argument('<name>', 'the app to destroy')
    .option('--confirm <name>', "the app's name again, to confirm")
    .action(async (name: string, options: { confirm?: string }, command: Command) => {
      if (options.confirm !== name) {
        const got = options.confirm === undefined ? '' : ` (--confirm ${options.confirm} does not match)`;
        usageError(
          command,
          `This destroys ${name} with all its releases, config and processes${got}; to proceed, run \`hangar apps:destroy ${name} --confirm ${name}\``,
        );
      }
      await (await ctx.client()).destroyApp(name, options.confirm);
      ctx.out(`Destroying ${name}... done\n`);
    });

  withAppOption(program.command('apps:info'))
    .description("show an app's domain, release and formation")
    .option('--json', 'print the API object')
    .action(async (options: JsonOptions, command: Command) => {
      const name = resolveApp(command, ctx);
      const app = await (await ctx.client()).getApp(name);
      if (options.json) return ctx.out(formatJson(app));
      ctx.out(heading(app.name));
      ctx.out(
        formatPairs([
          ['Domain', app.domain],
          ['URL', app.url],
          ['Release', app.release ?? 'none yet (deploy with `hangar deploy -a ' + app.name + '`)'],
          ['Formation', formatFormation(app.formation)],
          ['Maintenance', app.maintenance ? `on (see \`hangar maintenance -a ${app.name}\`)` : 'off'],
          ['Created', `${app.createdAt} (${timeAgo(app.createdAt, ctx.clock.now())})`],
        ]),
      );
    });
}
