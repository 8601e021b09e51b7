/**
 * `hangar addons`, `addons:create KIND`, `addons:destroy NAME`, `addons:info`, and backups
 * (`addons:backup`, `addons:backups`, `addons:backups:verify`, `addons:backups:schedule`,
 * `addons:restore`). `addons:create` follows the add-on until
 * its server is up and its URL is in the app's config (with the rollout that made), then exits 0.
 */
import { Option, type Command } from 'commander';
import type { AddonBackupView, AddonView } from '../../common/api-types.js';
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
    .argument('[kind]', 'postgres, redis or memcached')
    .option('--agent <name>', 'run it on this agent (default: the least loaded one)')
    .option('--name <name>', 'its name (default: KIND-N)')
    .option(
      '--standby [mode]',
      'PostgreSQL: also a streaming standby on another agent, promoted if the primary is lost; --standby=sync: synchronous replication (no acknowledged commit lost while in force; async while the standby is away)',
    )
    .addOption(
      new Option('--timeout <seconds>', 'stop waiting after this many seconds (the add-on goes on)')
        .default(DEFAULT_ADDON_TIMEOUT_S)
        .argParser(parseTimeoutSeconds),
    )
    .action(
      async (
        kindArg: string | undefined,
        options: { agent?: string; name?: string; standby?: boolean | string; timeout: number },
        command: Command,
      ) => {
        const app = resolveApp(command, ctx);
        // `--standby postgres`: the optional mode swallowed the kind; it was the kind.
        if (kindArg === undefined && typeof options.standby === 'string' && isAddonKindName(options.standby)) {
          kindArg = options.standby;
          options.standby = true;
        }
        if (typeof options.standby === 'string' && options.standby !== 'sync' && options.standby !== 'async') {
          usageError(command, `--standby takes sync or async, not "${options.standby}"; e.g. --standby=sync, or --standby alone for async`);
        }
        if (kindArg === undefined)
          usageError(command, 'say which add-on: postgres, redis or memcached; e.g. hangar addons:create postgres -a APP');
        const kindName = kindArg;
        const kind = atEdge(command, () => parseAddonKind(kindName));
        if (options.standby && kind !== 'postgres') usageError(command, `--standby is for PostgreSQL add-ons; leave it out for ${kind}`);
        const client = await ctx.client();
        const started = ctx.clock.now();
        const addon = await client.createAddon(app, {
          kind,
          ...(options.agent === undefined ? {} : { agent: options.agent }),
          ...(options.name === undefined ? {} : { name: options.name }),
          ...(options.standby ? { standby: true } : {}),
          ...(options.standby === 'sync' ? { sync: true } : {}),
        });
        ctx.out(`Creating ${addon.name} (${kind}) on ${addon.agent} for ${app}...\n`);
        const deadline = started + options.timeout * 1000;
        const ready = await followAddon(ctx, client, app, addon, started, deadline);
        const seconds = ((ctx.clock.now() - started) / 1000).toFixed(1);
        ctx.out(`-----> ${ready.name} is up and ${ready.configVar} is set (${seconds} s): ${ready.url ?? ''}\n`);
        if (options.standby) await followStandby(ctx, client, app, ready.name, started, deadline);
      },
    );

  withAppOption(program.command('addons:standby:add'))
    .description('PostgreSQL: add a streaming standby on another agent (pg_basebackup), promoted if the primary is lost')
    .argument('<name>', 'the add-on')
    .option('--agent <name>', "run the standby on this agent (default: the least loaded one but the primary's)")
    .option('--sync', 'synchronous replication: no acknowledged commit lost while in force; async while the standby is away')
    .addOption(
      new Option('--timeout <seconds>', 'stop waiting after this many seconds (the standby goes on)')
        .default(DEFAULT_ADDON_TIMEOUT_S)
        .argParser(parseTimeoutSeconds),
    )
    .action(async (name: string, options: { agent?: string; sync?: boolean; timeout: number }, command: Command) => {
      const app = resolveApp(command, ctx);
      const client = await ctx.client();
      const started = ctx.clock.now();
      const info = await client.addAddonStandby(app, name, {
        ...(options.agent === undefined ? {} : { agent: options.agent }),
        ...(options.sync ? { sync: true } : {}),
      });
      const standby = info.servers.find((s) => s.role !== 'primary');
      ctx.out(`Adding a standby of ${name} on ${standby?.agent ?? '?'} (primary on ${info.agent})...\n`);
      await followStandby(ctx, client, app, name, started, started + options.timeout * 1000);
    });

  withAppOption(program.command('addons:failover'))
    .description(
      'PostgreSQL: planned failover to the standby (waits until it has every write: no data lost); the old primary becomes the standby',
    )
    .argument('<name>', 'the add-on')
    .action(async (name: string, _options: unknown, command: Command) => {
      const app = resolveApp(command, ctx);
      const client = await ctx.client();
      const started = ctx.clock.now();
      ctx.out(
        `Failing over ${name} of ${app}: writes stop until the standby has every one (usually seconds, at most 2 min; if it does not catch up, the primary serves again and nothing changes)...\n`,
      );
      const { addon, steps } = await client.failoverAddon(app, name);
      for (const step of steps) ctx.out(`-----> ${step}\n`);
      ctx.out(
        `-----> ${name} runs on ${addon.agent} (${((ctx.clock.now() - started) / 1000).toFixed(1)} s); a release sets ${addon.configVar}\n`,
      );
      if (addon.deploy)
        await followDeploy(ctx, client, app, await client.getDeploy(app, addon.deploy), { timeoutMs: DEFAULT_ADDON_TIMEOUT_S * 1000 });
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

  withAppOption(program.command('addons:info'))
    .description('show an add-on: its servers and roles, replication lag, schedule, last backup and last verified restore')
    .argument('<name>', 'the add-on')
    .option('--json', 'print {addon: {..., servers, schedule, lastBackup, lastVerifiedRestore, backups}}')
    .action(async (name: string, options: { json?: boolean }, command: Command) => {
      const app = resolveApp(command, ctx);
      const info = await (await ctx.client()).addonInfo(app, name);
      if (options.json) return ctx.out(formatJson({ addon: info }));
      ctx.out(heading(`${info.name} (${info.kind}) of ${app}`));
      ctx.out(`State:    ${info.state}${info.message ? ` (${info.message})` : ''}\n`);
      ctx.out(
        formatTable(
          info.servers.map((s) => [
            s.agent,
            s.role,
            s.state,
            s.lagBytes === null ? '-' : `${formatBytes(s.lagBytes)}, ${(s.lagSeconds ?? 0).toFixed(1)} s`,
          ]),
          ['AGENT', 'ROLE', 'STATE', 'LAG'],
        ),
      );
      const r = info.replication;
      if (r) {
        ctx.out(
          `Replication: ${
            r.mode === 'async'
              ? 'async (a failover loses commits the standby had not received)'
              : r.inForce
                ? 'sync, in force (every acknowledged commit is on the standby)'
                : 'sync, degraded to async (the standby is away or not streaming yet; sync comes back once it streams)'
          }\n`,
        );
      }
      const s = info.schedule;
      ctx.out(
        `Schedule: ${s ? (s.enabled ? `daily at ${s.at} UTC, ${s.keep} kept${s.dir ? `, copied to ${s.dir}` : ''}; next ${s.nextAt ?? '-'}` : 'off') : 'none'}\n`,
      );
      if (s?.lastError) ctx.out(`Last scheduled backup failed: ${s.lastError}\n`);
      const b = info.lastBackup;
      ctx.out(`Last backup: ${b ? `${b.name} (${b.createdAt}, ${formatBytes(b.size)}, ${describeStored(b)})` : 'none'}\n`);
      if (b?.copyError) ctx.out(`  ${b.copyError}\n`);
      const v = info.lastVerifiedRestore;
      ctx.out(`Last verified restore: ${v ? `${v.backup} at ${v.at}: ${v.ok ? 'good' : 'FAILED'} (${v.message})` : 'none yet'}\n`);
    });

  withAppOption(program.command('addons:backup'))
    .description('back up a PostgreSQL (pg_dump) or Redis (RDB) add-on now; the backup is copied to another agent with its SHA-256')
    .argument('<name>', 'the add-on')
    .option('--dir <dir>', "also copy it into this directory on the coordinator's host (e.g. a mounted NAS)")
    .action(async (name: string, options: { dir?: string }, command: Command) => {
      const app = resolveApp(command, ctx);
      ctx.out(`Backing up ${name}...\n`);
      const { backup } = await (await ctx.client()).createAddonBackup(app, name, options.dir ? { dir: options.dir } : {});
      if (backup.copyError) ctx.err(`hangar: ${backup.copyError}\n`);
      ctx.out(
        `-----> Backup ${backup.name} done (${formatBytes(backup.size)}, sha256 ${backup.sha256.slice(0, 12)}, ${describeStored(backup)}); restore it with \`hangar addons:restore ${name} ${backup.name} --to-new -a ${app}\`\n`,
      );
    });

  withAppOption(program.command('addons:backups'))
    .description("list an add-on's backups, newest first: size, where each is stored, verified or not")
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
          backups.map((b) => [
            b.name,
            formatBytes(b.size),
            b.createdAt,
            timeAgo(b.createdAt, now),
            b.origin,
            describeStored(b),
            b.verified,
          ]),
          ['NAME', 'SIZE', 'CREATED', 'AGE', 'ORIGIN', 'STORED ON', 'VERIFIED'],
        ),
      );
      for (const b of backups) if (b.verified === 'failed') ctx.out(`${b.name} FAILED verification: ${b.verifyMessage}\n`);
    });

  withAppOption(program.command('addons:backups:verify'))
    .description('restore a backup into a scratch server on the agent holding its copy and check it (tables and rows, or keys)')
    .argument('<name>', 'the add-on')
    .argument('<backup>', 'the backup, from `hangar addons:backups`')
    .action(async (name: string, backup: string, _options: unknown, command: Command) => {
      const app = resolveApp(command, ctx);
      ctx.out(`Verifying ${backup} of ${name}...\n`);
      const checked = await (await ctx.client()).verifyAddonBackup(app, name, backup);
      if (checked.verified !== 'verified') {
        throw new HangarError(
          'ADDON_FAILED',
          `Backup ${backup} is ${checked.verified === 'failed' ? 'NOT good' : 'not verified'}: ${checked.verifyMessage}`,
        );
      }
      ctx.out(`-----> ${backup} is good: ${checked.verifyMessage}\n`);
    });

  withAppOption(program.command('addons:backups:schedule'))
    .description('back up an add-on daily at HH:MM (UTC), keep the newest N, verify each by a restore on another agent')
    .argument('<name>', 'the add-on')
    .option('--at <HH:MM>', 'time of day, UTC', '03:00')
    .addOption(new Option('--keep <n>', 'scheduled backups kept').default(7).argParser(parsePositiveInt))
    .option('--dir <dir>', "also copy each into this directory on the coordinator's host")
    .option('--off', 'stop scheduled backups of this add-on')
    .action(async (name: string, options: { at: string; keep: number; dir?: string; off?: boolean }, command: Command) => {
      const app = resolveApp(command, ctx);
      if (!/^([01]\d|2[0-3]):[0-5]\d$/.test(options.at))
        usageError(command, `--at must be HH:MM (UTC), e.g. 03:00; "${options.at}" is not`);
      const schedule = await (
        await ctx.client()
      ).scheduleAddonBackups(app, name, {
        at: options.at,
        keep: options.keep,
        dir: options.dir ?? null,
        enabled: options.off !== true,
      });
      ctx.out(
        schedule.enabled
          ? `-----> ${name} is backed up daily at ${schedule.at} UTC (${schedule.keep} kept${schedule.dir ? `, copied to ${schedule.dir}` : ''}); next: ${schedule.nextAt ?? '-'}\n`
          : `-----> Scheduled backups of ${name} are off\n`,
      );
    });

  withAppOption(program.command('addons:restore'))
    .description(
      'restore a PostgreSQL or Redis backup into a new add-on (--to-new), or into the add-on itself (--confirm NAME; a safety backup is taken first)',
    )
    .argument('<name>', 'the add-on')
    .argument('<backup>', 'the backup, from `hangar addons:backups`')
    .option('--to-new', 'restore into a new add-on of the app (its URL goes into NAME_URL); the add-on is not touched')
    .option('--confirm <name>', "the add-on's name again: its data (tables, or keys) is replaced by the backup's")
    .action(async (name: string, backup: string, options: { toNew?: boolean; confirm?: string }, command: Command) => {
      const app = resolveApp(command, ctx);
      if (!options.toNew && options.confirm !== name) {
        usageError(
          command,
          `This replaces the data of ${name} with ${backup} (after a safety backup); to proceed, run \`hangar addons:restore ${name} ${backup} -a ${app} --confirm ${name}\`, or restore into a new add-on with --to-new`,
        );
      }
      ctx.out(options.toNew ? `Restoring ${backup} into a new add-on...\n` : `Restoring ${backup} into ${name}...\n`);
      const done = await (
        await ctx.client()
      ).restoreAddonBackup(app, name, backup, {
        toNew: options.toNew === true,
        ...(options.confirm === undefined ? {} : { confirm: options.confirm }),
      });
      if (done.safety) ctx.out(`-----> Safety backup ${done.safety.name} taken first\n`);
      ctx.out(
        options.toNew
          ? `-----> ${done.addon.name} holds ${backup}; its URL is in ${done.addon.configVar}\n`
          : `-----> ${name} restored from ${backup}\n`,
      );
    });
}

function describeStored(b: AddonBackupView): string {
  const where = b.stored.map((s) => s.agent ?? s.path ?? '?');
  return b.offHost ? `on ${where.join(', ')}` : `only on ${where.join(', ')}, not off the host`;
}

function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 1000) throw badInput(`--keep must be a whole number from 1 to 1000; "${value}" is not`);
  return n;
}

/**
 * Polls the add-on, printing each state it goes through, until it is up and attached (following
 * the rollout of the release that set its config var); throws when it failed or at `deadline`.
 */
/** Polls `addons:info` until the standby of `name` is up; prints its states. */
async function followStandby(
  ctx: CliContext,
  client: ApiClient,
  app: string,
  name: string,
  started: number,
  deadline: number,
): Promise<void> {
  let last = '';
  for (;;) {
    const info = await client.addonInfo(app, name);
    const standby = info.servers.find((s) => s.role !== 'primary');
    if (!standby) throw new HangarError('ADDON_NOT_FOUND', `${name} has no standby any more`);
    if (standby.state !== last) {
      last = standby.state;
      ctx.out(`-----> standby on ${standby.agent}: ${standby.state}\n`);
    }
    if (standby.role === 'standby' && standby.state === 'up') {
      ctx.out(`-----> ${name} streams to its standby on ${standby.agent} (${((ctx.clock.now() - started) / 1000).toFixed(1)} s)\n`);
      return;
    }
    if (ctx.clock.now() >= deadline) {
      throw new HangarError(
        'ADDON_FAILED',
        `Gave up waiting for the standby of ${name} (state ${standby.state}); it goes on: check it with \`hangar addons:info ${name} -a ${app}\``,
      );
    }
    await pause(ctx, 500);
  }
}

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

/** True when `value` names an add-on kind (or one of its aliases). */
function isAddonKindName(value: string): boolean {
  try {
    parseAddonKind(value);
    return true;
  } catch {
    return false;
  }
}
