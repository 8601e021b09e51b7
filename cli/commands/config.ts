/**
 * `hangar config`, `config:set K=V...`, `config:unset K...`, `config:get K`. Setting or unsetting
 * makes a new release; when it rolls out, the command follows it like `hangar deploy`.
 */
import { Option, type Command } from 'commander';
import { HangarError } from '../../common/errors.js';
import type { ConfigUpdate } from '../api-client.js';
import { formatJson, formatList, formatPairs, heading, shellQuote } from '../output.js';
import { atEdge, badInput, resolveApp, withAppOption, type CliContext } from './context.js';
import { followDeploy, timeoutOption } from './deploy.js';

const MASK = '********';

const KEY_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Parses `KEY=VALUE` arguments (the value may contain `=` and may be empty). Throws `BAD_INPUT`
 * listing every bad argument.
 */
export function parseConfigAssignments(args: readonly string[]): Record<string, string> {
  const result: Record<string, string> = {};
  const problems: string[] = [];
  for (const arg of args) {
    const eq = arg.indexOf('=');
    if (eq === -1) {
      problems.push(`"${arg}" has no "=": write KEY=VALUE, e.g. ${KEY_PATTERN.test(arg) ? arg : 'SECRET_KEY'}=value`);
      continue;
    }
    const key = arg.slice(0, eq);
    if (!KEY_PATTERN.test(key)) {
      problems.push(`"${key}" is not a valid key: use letters, digits and _, not starting with a digit`);
    } else if (key in result) {
      problems.push(`${key} is given twice`);
    } else {
      result[key] = arg.slice(eq + 1);
    }
  }
  if (problems.length > 0) throw badInput(problems.join('; '));
  return result;
}

/** Parses config keys (for `config:unset` and `config:get`); throws `BAD_INPUT` listing bad ones. */
export function parseConfigKeys(args: readonly string[]): string[] {
  const bad = args.filter((key) => !KEY_PATTERN.test(key));
  if (bad.length > 0) {
    const hint = bad.some((key) => key.includes('=')) ? ' (give only the key, without =VALUE)' : '';
    throw badInput(
      `${formatList(bad.map((key) => `"${key}"`))} ${bad.length === 1 ? 'is not a valid key' : 'are not valid keys'}${hint}: ` +
        'use letters, digits and _, not starting with a digit',
    );
  }
  return [...new Set(args)];
}

/** Registers the config commands on `program`. */
export function registerConfigCommands(program: Command, ctx: CliContext): void {
  withAppOption(program.command('config'))
    .description("show the app's config vars (values masked unless --reveal)")
    .addOption(new Option('--json', 'print the config as a JSON object, values included').conflicts('shell'))
    .option('--shell', "print KEY='value' lines for a shell or a .env file, values included")
    .option('--reveal', 'show the values in the table')
    .action(async (options: { json?: boolean; shell?: boolean; reveal?: boolean }, command: Command) => {
      const app = resolveApp(command, ctx);
      const config = await (await ctx.client()).getConfig(app);
      if (options.json) return ctx.out(formatJson(config));
      const entries = Object.entries(config).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      if (options.shell) return ctx.out(entries.map(([key, value]) => `${key}=${shellQuote(value)}\n`).join(''));
      if (entries.length === 0) {
        return ctx.out(`${app} has no config vars; set some with \`hangar config:set KEY=VALUE -a ${app}\`.\n`);
      }
      ctx.out(heading(`${app} Config Vars`));
      // Values are secrets: a table on a screen (or a shared terminal log) shows them only on request.
      ctx.out(formatPairs(options.reveal ? entries : entries.map(([key]) => [key, MASK] as [string, string])));
      if (!options.reveal) ctx.out(`(values hidden: add --reveal, or \`hangar config:get KEY -a ${app}\`)\n`);
    });

  withAppOption(program.command('config:set'))
    .description('set config vars (makes a new release and restarts the app)')
    .argument('<assignments...>', 'KEY=VALUE pairs')
    .addOption(timeoutOption())
    .action(async (args: string[], options: { timeout: number }, command: Command) => {
      const app = resolveApp(command, ctx);
      const changes = atEdge(command, () => parseConfigAssignments(args));
      const client = await ctx.client();
      const update = await client.updateConfig(app, changes);
      ctx.out(`${summary('Setting', Object.keys(changes), app, update)}\n`);
      if (update.deploy) await followDeploy(ctx, client, app, update.deploy, { timeoutMs: options.timeout * 1000 });
    });

  withAppOption(program.command('config:unset'))
    .description('unset config vars (makes a new release and restarts the app)')
    .argument('<keys...>', 'the keys to unset')
    .addOption(timeoutOption())
    .action(async (args: string[], options: { timeout: number }, command: Command) => {
      const app = resolveApp(command, ctx);
      const keys = atEdge(command, () => parseConfigKeys(args));
      const client = await ctx.client();
      const update = await client.updateConfig(app, Object.fromEntries(keys.map((key) => [key, null])));
      ctx.out(`${summary('Unsetting', keys, app, update)}\n`);
      if (update.deploy) await followDeploy(ctx, client, app, update.deploy, { timeoutMs: options.timeout * 1000 });
    });

  withAppOption(program.command('config:get'))
    .description("print one config var's value")
    .argument('<key>', 'the key')
    .option('--json', 'print {"key": ..., "value": ...}')
    .action(async (key: string, options: { json?: boolean }, command: Command) => {
      const app = resolveApp(command, ctx);
      atEdge(command, () => parseConfigKeys([key]));
      const config = await (await ctx.client()).getConfig(app);
      const value = config[key];
      if (value === undefined) {
        throw new HangarError('NOT_FOUND', `${key} is not set on ${app}; \`hangar config -a ${app}\` lists what is`);
      }
      ctx.out(options.json ? formatJson({ key, value }) : `${value}\n`);
    });
}

function summary(verb: string, keys: readonly string[], app: string, update: ConfigUpdate): string {
  if (update.release) return `${verb} ${keys.join(', ')} and restarting ${app}... done, ${update.release.name}`;
  return `${verb} ${keys.join(', ')} on ${app}... done (it applies from the first deploy)`;
}
