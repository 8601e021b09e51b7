/**
 * `hangar addons`, `addons:create KIND`, `addons:destroy NAME`, and PostgreSQL backups
 * (`addons:backup`, `addons:backups`, `addons:restore`). `addons:create` follows the add-on until
 * its server is up and its URL is in the app's config (with the rollout that made), then exits 0.
 */
import { Option, type Command } from 'commander';
import type { AddonView } from '../../common/api-types.js';
import type { AddonKind } from '../../common/vocabulary.js';
import { HangarError } from '../../common/errors.js';
import type { ApiClient } from '../api-client.js';
import { formatBytes, formatJson, formatTable, heading, timeAgo } from '../output.js';
import { atEdge, badInput, pause, resolveApp, usageError, withAppOption, type CliContext } from './context.js';
import { followDeploy, parseTimeoutSeconds } from './deploy.js';

/** Default of `addons:create --timeout`, in seconds. */
export const DEFAULT_ADDON_TIMEOUT_S = 300;

const KIND_ALIASES: Record<string, AddonKind> = {
  postgres: 'postgres',
  postgresql: 'postgres',
  'heroku-postgresql': 'postgres',
  redis: 'redis',
  'heroku-redis': 'redis',
  memcached: 'memcached',
  memcache: 'memcached',
};

/** Parses the kind argument of `addons:create` (`postgres`, `redis`, `memcached`, and a few aliases). */
export function parseAddonKind(value: string): AddonKind {
  const kind = KIND_ALIASES[value.toLowerCase()];
  if (!kind) throw badInput(`"${value}" is not a kind of add-on: use postgres, redis or memcached`);
  return kind;
}

/** Registers the add-on commands on `program`. */
export function registerAddonsCommands(program: Command, ctx: CliContext): void {
  withAppOption(program.command('addons'))
    .description("list the app's add-ons (PostgreSQL, Redis, memcached)")
    .option('--json', 'print the API objects as a JSON array')
    .option('--reveal', 'show passwords in URLs')
    .action(async (options: { json?: boolean; reveal?: boolean }, command: Command) => {
      const app = resolveApp(command, ctx);
      const addons = await (await ctx.client()).listAddons(app, { reveal: options.reveal === true });
      if (options.json) return ctx.out(formatJson(addons));
      if (addons.length === 0) {
        return ctx.out(`${app} has no add-ons; add one with \`hangar addons:create postgres -a ${app}\`.\n`);
      }
      ctx.out(heading(`${app} Add-ons`));
      ctx.out(
        formatTable(
          addons.map((a) => [a.name, a.kind, a.agent, a.state, a.state === 'destroyed' ? '-' : a.configVar, a.url ?? '-']),
          ['NAME', 'KIND', 'AGENT', 'STATE', 'CONFIG VAR', 'URL'],
        ),
      );
    });

  withAppOption(program.command('addons:create'))
    .description('provision an add-on server; its URL goes into the app config (DATABASE_URL, REDIS_URL, MEMCACHED_URL)')
    .argument('<kind>', 'postgres, redis or memcached')
    .option('--agent <name>', 'run it on this agent (default: the least loaded one)')
    .option('--name <name>', 'its name (default: KIND-N)')
    .addOption(
      new Option('--timeout <seconds>', 'stop waiting after this many seconds (the add-on goes on)')
        .default(DEFAULT_ADDON_TIMEOUT_S)
        .argParser(parseTimeoutSeconds),
    )
    .action(async (kindArg: string, options: { agent?: string; name?: string; timeout: number }, command: Command) => {
      const app = resolveApp(command, ctx);
      const kind = atEdge(command, () => parseAddonKind(kindArg));
      const client = await ctx.client();
      const started = ctx.clock.now();
      const addon = await client.createAddon(app, {
        kind,
        ...(options.agent === undefined ? {} : { agent: options.agent }),
        ...(options.name === undefined ? {} : { name: options.name }),
      });
      ctx.out(`Creating ${addon.name} (${kind}) on ${addon.agent} for ${app}...\n`);
      const ready = await followAddon(ctx, client, app, addon, started, started + options.timeout * 1000);
      const seconds = ((ctx.clock.now() - started) / 1000).toFixed(1);
      ctx.out(`-----> ${ready.name} is up and ${ready.configVar} is set (${seconds} s): ${ready.url ?? ''}\n`);
    });

  withAppOption(program.command('addons:destroy'))
    .description('stop an add-on and unset its config var; its data is kept unless --purge')
    .argument('<name>', 'the add-on')
    .option('--confirm <name>', "the add-on's name again, to confirm")
    .option('--purge', 'also delete its data on the agent')
    .action(async (name: string, options: { confirm?: string; purge?: boolean }, command: Command) => {
      const app = resolveApp(command, ctx);
      if (options.confirm !== name) {
        usageError(
          command,
          `This stops ${name} and unsets its config var${options.purge ? ' and deletes its data' : ''}; to proceed, run \`hangar addons:destroy ${name} -a ${app} --confirm ${name}${options.purge ? ' --purge' : ''}\``,
        );
      }
      const client = await ctx.client();
      const result = await client.destroyAddon(app, name, { confirm: options.confirm, purge: options.purge === true });
      ctx.out(`Destroying ${name}... done${options.purge ? ', data deleted' : `, data kept on ${result.addon.agent}`}\n`);
      if (result.deploy) await followDeploy(ctx, client, app, result.deploy, { timeoutMs: DEFAULT_ADDON_TIMEOUT_S * 1000 });
    });

  withAppOption(program.command('addons:backup'))
    .description('back up a PostgreSQL add-on now (pg_dump, kept on its agent)')
    .argument('<name>', 'the add-on')
    .action(async (name: string, _options: unknown, command: Command) => {
      const app = resolveApp(command, ctx);
      ctx.out(`Backing up ${name}...\n`);
      const { backup } = await (await ctx.client()).createAddonBackup(app, name);
      ctx.out(
        `-----> Backup ${backup.name} done (${formatBytes(backup.size)}); restore it with \`hangar addons:restore ${name} ${backup.name} -a ${app}\`\n`,
      );
    });

  withAppOption(program.command('addons:backups'))
    .description("list a PostgreSQL add-on's backups, newest first")
    .argument('<name>', 'the add-on')
    .option('--json', 'print the API objects as a JSON array')
    .action(async (name: string, options: { json?: boolean }, command: Command) => {
      const app = resolveApp(command, ctx);
      const backups = await (await ctx.client()).listAddonBackups(app, name);
      if (options.json) return ctx.out(formatJson(backups));
      if (backups.length === 0) return ctx.out(`${name} has no backups; make one with \`hangar addons:backup ${name} -a ${app}\`.\n`);
      const now = ctx.clock.now();
      ctx.out(heading(`${name} Backups`));
      ctx.out(
        formatTable(
          backups.map((b) => [b.name, formatBytes(b.size), b.createdAt, timeAgo(b.createdAt, now)]),
          ['NAME', 'SIZE', 'CREATED', 'AGE'],
        ),
      );
    });

  withAppOption(program.command('addons:restore'))
    .description('restore a backup into a PostgreSQL add-on (pg_restore --clean: its tables are replaced)')
    .argument('<name>', 'the add-on')
    .argument('<backup>', 'the backup, from `hangar addons:backups`')
    .action(async (name: string, backup: string, _options: unknown, command: Command) => {
      const app = resolveApp(command, ctx);
      ctx.out(`Restoring ${backup} into ${name}...\n`);
      await (await ctx.client()).restoreAddonBackup(app, name, backup);
      ctx.out(`-----> ${name} restored from ${backup}\n`);
    });
}

/**
 * Polls the add-on, printing each state it goes through, until it is up and attached (following
 * the rollout of the release that set its config var); throws when it failed or at `deadline`.
 */
async function followAddon(
  ctx: CliContext,
  client: ApiClient,
  app: string,
  first: AddonView,
  started: number,
  deadline: number,
): Promise<AddonView> {
  let addon = first;
  let lastState = '';
  for (;;) {
    if (addon.state !== lastState) {
      lastState = addon.state;
      const detail = addon.state === 'up' ? `${((ctx.clock.now() - started) / 1000).toFixed(1)} s` : addon.message;
      ctx.out(`-----> ${addon.name}: ${addon.state}${detail ? ` (${detail})` : ''}\n`);
    }
    if (addon.state === 'failed') {
      throw new HangarError('ADDON_FAILED', `${addon.name} could not be provisioned: ${addon.message}`);
    }
    if (addon.state === 'destroyed') throw new HangarError('ADDON_NOT_FOUND', `${addon.name} was destroyed meanwhile`);
    if (addon.attached) break;
    if (ctx.clock.now() >= deadline) {
      throw new HangarError(
        'ADDON_FAILED',
        `Gave up waiting for ${addon.name} (state ${addon.state}); it goes on: check it with \`hangar addons -a ${app}\``,
      );
    }
    await pause(ctx, 250);
    addon = await client.getAddon(app, addon.name);
  }
  if (addon.deploy) {
    ctx.out(`-----> Setting ${addon.configVar} on ${app}\n`);
    const deploy = await client.getDeploy(app, addon.deploy);
    await followDeploy(ctx, client, app, deploy, { timeoutMs: Math.max(1000, deadline - ctx.clock.now()) });
  } else {
    ctx.out(`-----> ${addon.configVar} set on ${app} (it applies from the first deploy)\n`);
  }
  return addon;
}
