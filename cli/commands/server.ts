/**
 * The server side of the one `hangar` binary: `hangar coordinator`, `hangar agent` and
 * `hangar dev` (both in one process). Each runs until SIGINT/SIGTERM, then shuts down cleanly.
 */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { mkdir, readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import type { AgentConfig, RunningAgent } from '../../agent/agent.js';
import { parseDuration } from '../../common/duration.js';
import { HangarError } from '../../common/errors.js';
import { createLogger, type Logger } from '../../common/logger.js';
import { MAX_CPU_CORES, MAX_MEMORY_BYTES, MIN_CPU_CORES, MIN_MEMORY_BYTES, parseMemorySize } from '../../common/resource-limits.js';
import type { CoordinatorConfig, RunningCoordinator } from '../../coordinator/coordinator.js';
import { credentialsPath, readCredentials, writeCredentials } from '../credentials.js';
import { formatJson, formatTable, heading } from '../output.js';
import type { CliContext } from './context.js';
import { registerInstallCommands } from './install.js';
import { registerMigrateCommand } from './migrate.js';

/** Resolves when the process is asked to stop (SIGINT or SIGTERM). */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolveSignal) => {
    const done = (signal: NodeJS.Signals) => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolveSignal(signal);
    };
    process.on('SIGINT', done);
    process.on('SIGTERM', done);
  });
}

function port(value: string, name: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new HangarError('BAD_INPUT', `${name} must be a port number (0-65535), not "${value}".`);
  return n;
}

function positiveInt(value: string, name: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new HangarError('BAD_INPUT', `${name} must be a positive whole number, not "${value}".`);
  return n;
}

function rootLogger(ctx: CliContext): Logger {
  return createLogger({ level: ctx.io.env.HANGAR_LOG_LEVEL ?? 'info' });
}

interface CoordinatorFlags {
  dataDir: string;
  databaseUrl?: string;
  httpPort: string;
  grpcPort: string;
  domain: string;
  config?: string;
  tlsCert?: string;
  logRetentionDays?: string;
  logRetentionMb?: string;
  tlsKey?: string;
  acmeDirectory?: string;
  acmeCa?: string;
  acmeEmail?: string;
  advertise?: string;
  name?: string;
  leaseMs?: string;
  renewMs?: string;
  leaseMarginMs?: string;
  addonFailoverAfter?: string;
}

/**
 * `--addon-failover-after` (or HANGAR_ADDON_FAILOVER_AFTER): a duration of the API's grammar
 * (`30s`, `2m`) or bare seconds → ms.
 *
 * @throws HangarError `BAD_INPUT` for anything else.
 */
export function parseFailoverAfter(text: string): number {
  const ms = /^\d{1,6}$/.test(text.trim()) ? Number(text.trim()) * 1000 : (parseDuration(text) ?? 0);
  if (ms <= 0) throw new HangarError('BAD_INPUT', `--addon-failover-after must be a duration like 30s or 2m, not "${text}"`);
  return ms;
}

/** The ACME settings of `coordinator` and `dev` flags. */
function acmeSettings(flags: CoordinatorFlags): Record<string, unknown> {
  return {
    acmeDirectory: flags.acmeDirectory,
    acmeCaFile: flags.acmeCa === undefined ? undefined : resolve(flags.acmeCa),
    acmeEmail: flags.acmeEmail,
  };
}

/** Adds `--acme-directory`, `--acme-ca` and `--acme-email`. */
function withAcmeOptions(command: Command): Command {
  return command
    .option('--acme-directory <url>', "ACME directory that issues apps' certificates (default: Let's Encrypt production)")
    .option('--acme-ca <file>', "PEM CA certificates to trust for the ACME directory's HTTPS (an internal ACME server)")
    .option('--acme-email <address>', 'contact address of the ACME account (expiry notices)');
}

/** Reads a JSON settings file (`--config`), e.g. /etc/hangar/agent.json written by `install`. */
async function readConfigFile(path: string): Promise<Record<string, unknown>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new HangarError('BAD_INPUT', `Could not read the config file ${path}: ${(err as Error).message}.`, { cause: err });
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new HangarError('BAD_INPUT', `The config file ${path} must hold a JSON object of settings.`);
  }
  return parsed as Record<string, unknown>;
}

/**
 * Settings from `--config FILE`, overridden by flags given on the command line; flags left at
 * their defaults fill only what the file does not set.
 */
async function mergedSettings(command: Command, fromFlags: Record<string, unknown>, configPath: string | undefined) {
  const file = configPath ? await readConfigFile(configPath) : {};
  const merged: Record<string, unknown> = { ...file };
  for (const [key, value] of Object.entries(fromFlags)) {
    if (value === undefined) continue;
    if (command.getOptionValueSource(key) === 'cli' || merged[key] === undefined) merged[key] = value;
  }
  return merged;
}

interface AgentFlags {
  config?: string;
  coordinator?: string;
  joinToken?: string;
  dataDir: string;
  name?: string;
  routerPort: string;
  httpsPort: string;
  advertise?: string;
  maxInstances: string;
  singletonLease?: string;
  logSpoolMb?: string;
  trustedProxy: string[];
  defaultMemory?: string;
  defaultCpu?: string;
}

/** A memory size flag (`512M`) in bytes. */
function memorySize(value: string, flag: string): number {
  const bytes = parseMemorySize(value);
  if (bytes === null || bytes < MIN_MEMORY_BYTES || bytes > MAX_MEMORY_BYTES) {
    throw new HangarError('BAD_INPUT', `${flag} takes a size between 32M and 1T such as 512M or 1G, not "${value}".`);
  }
  return bytes;
}

/** A CPU limit flag in cores (`0.5`). */
function cores(value: string, flag: string): number {
  // A plain check, not app.json's zod schema: `hangar agent` parses this flag and loads no zod.
  const cpu = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value) || !(cpu >= MIN_CPU_CORES && cpu <= MAX_CPU_CORES)) {
    throw new HangarError('BAD_INPUT', `${flag} takes a number of cores from 0.01 to 1024 such as 0.5 or 2, not "${value}".`);
  }
  return cpu;
}

/** Collects a repeatable flag whose values may also be comma-separated. */
function collectList(value: string, previous: string[]): string[] {
  return [
    ...previous,
    ...value
      .split(',')
      .map((v) => v.trim())
      .filter((v) => v !== ''),
  ];
}

/** Registers `coordinator`, `agent` and `dev`. */
export function registerServerCommands(program: Command, ctx: CliContext): void {
  // `hangar agent install --coordinator X` must give --coordinator to install, not to agent.
  program.enablePositionalOptions();
  const coordinatorCommand = withAcmeOptions(program.command('coordinator'))
    .enablePositionalOptions()
    .description('run the coordinator: HTTP API, gRPC for agents, state in SQLite (default) or PostgreSQL')
    .option('--data-dir <dir>', 'where state, tokens and artifacts live', '/var/lib/hangar')
    .option(
      '--database-url <url>',
      'keep the state in PostgreSQL (postgres://user@host/db) instead of SQLite in --data-dir; several coordinators may share it (or HANGAR_DATABASE_URL)',
    )
    .option('--http-port <port>', 'HTTP API port', '7080')
    .option('--grpc-port <port>', 'gRPC port agents connect to', '7081')
    .option('--domain <domain>', 'apps are served at APP.<domain>', 'localhost')
    .option('--tls-cert <file>', 'serve the HTTP API over HTTPS with this PEM certificate (chain)')
    .option('--tls-key <file>', 'private key (PEM) of --tls-cert')
    .option('--log-retention-days <days>', 'log lines older than this are deleted (default 7)')
    .option(
      '--log-retention-mb <mb>',
      'beyond this many MB of stored log lines the oldest are deleted (default 1024; other data does not count)',
    )
    .option(
      '--addon-failover-after <duration>',
      "promote a PostgreSQL add-on's standby once its primary's agent has been disconnected this long, e.g. 30s, 2m (default 30s; or HANGAR_ADDON_FAILOVER_AFTER)",
    )
    .option('--config <file>', 'read settings from this JSON file (what `hangar coordinator install` writes); flags override it')
    .option(
      '--advertise <host[:port]>',
      'address the other coordinators, agents and the CLI reach this one on (when several share a --database-url or --data-dir)',
    )
    .option('--name <name>', 'name of this coordinator among several (default HOSTNAME:HTTP_PORT)')
    .addOption(new Option('--lease-ms <ms>', "length of the leader's lease (tests)").hideHelp())
    .addOption(new Option('--renew-ms <ms>', 'how often the leader renews it (tests)').hideHelp())
    .addOption(new Option('--lease-margin-ms <ms>', 'the leader steps down this long before its lease could expire (tests)').hideHelp())
    .addHelpText(
      'after',
      '\nSeveral coordinators may share one --database-url (one on each server: each its own --data-dir with a\n' +
        "copy of the first one's secret-key) or one --data-dir on one host: one leads, the others forward the API\n" +
        'to it and take over when it stops or dies. See `hangar coordinator status`.',
    )
    .action(async (flags: CoordinatorFlags, command: Command) => {
      const logger = rootLogger(ctx);
      const { startCoordinatorNode } = await import('../../coordinator/ha/coordinator-node.js');
      const settings = await mergedSettings(
        command,
        {
          dataDir: resolve(flags.dataDir),
          databaseUrl: flags.databaseUrl ?? ctx.io.env.HANGAR_DATABASE_URL,
          httpPort: port(flags.httpPort, '--http-port'),
          grpcPort: port(flags.grpcPort, '--grpc-port'),
          domain: flags.domain,
          tlsCert: flags.tlsCert === undefined ? undefined : resolve(flags.tlsCert),
          tlsKey: flags.tlsKey === undefined ? undefined : resolve(flags.tlsKey),
          logRetentionDays: flags.logRetentionDays === undefined ? undefined : positiveInt(flags.logRetentionDays, '--log-retention-days'),
          logRetentionBytes:
            flags.logRetentionMb === undefined ? undefined : positiveInt(flags.logRetentionMb, '--log-retention-mb') * 1024 * 1024,
          addonFailoverAfterMs: ((v) => (v === undefined ? undefined : parseFailoverAfter(v)))(
            flags.addonFailoverAfter ?? ctx.io.env.HANGAR_ADDON_FAILOVER_AFTER,
          ),
          ...acmeSettings(flags),
        },
        flags.config,
      );
      // Where the others reach it and its name: flags, else the config file (`coordinator install`).
      const { advertise, name, ...coordinatorSettings } = settings;
      const coordinator = await startCoordinatorNode(
        coordinatorSettings as unknown as CoordinatorConfig,
        {
          advertise: flags.advertise ?? (advertise as string | undefined),
          name: flags.name ?? (name as string | undefined),
          leaseMs: flags.leaseMs === undefined ? undefined : positiveInt(flags.leaseMs, '--lease-ms'),
          renewMs: flags.renewMs === undefined ? undefined : positiveInt(flags.renewMs, '--renew-ms'),
          marginMs: flags.leaseMarginMs === undefined ? undefined : positiveInt(flags.leaseMarginMs, '--lease-margin-ms'),
        },
        { logger },
      );
      const dataDir = String(settings.dataDir);
      ctx.out(
        `Hangar coordinator ${coordinator.name} is running (${coordinator.role()}; \`hangar coordinator status\` says who leads).\n` +
          `  API:    ${coordinator.url}  (admin token in ${join(dataDir, 'admin-token')})\n` +
          `  Agents: hangar agent --coordinator ${coordinator.grpcAddress} --join-token "$(cat ${join(dataDir, 'join-token')})"\n`,
      );
      await untilSignal();
      await coordinator.close();
    });

  coordinatorCommand
    .command('status')
    .description('the leading coordinator, its epoch and lease, and the followers')
    .option('--json', 'print the API object')
    .action(async (options: { json?: boolean }) => {
      const view = await (await ctx.client()).coordinators();
      if (options.json) return ctx.out(formatJson(view));
      const now = ctx.clock.now();
      const { leader } = view;
      const lease =
        leader.leaseExpiresAt === null
          ? 'no lease: alone on its data dir'
          : `lease for ${Math.max(0, Math.round((leader.leaseExpiresAt - now) / 1000))} s more`;
      ctx.out(heading('Leader'));
      ctx.out(formatTable([[leader.name, `epoch ${leader.epoch}`, lease, leader.url, `agents: ${leader.address}`]]));
      ctx.out(heading('Followers'));
      if (view.followers.length === 0) ctx.out('None: start another `hangar coordinator` on the same --data-dir for a standby.\n');
      else
        ctx.out(
          formatTable(
            view.followers.map((f) => [
              f.name,
              f.url,
              `agents: ${f.address}`,
              `seen ${Math.max(0, Math.round((now - f.lastSeen) / 1000))} s ago`,
            ]),
          ),
        );
    });

  const agentCommand = program
    .command('agent')
    .enablePositionalOptions()
    .description('run an agent on this server: supervises app processes and routes their traffic')
    .option('--coordinator <host:port>', "the coordinator's gRPC address (several coordinators: comma-separated)")
    .option('--join-token <token>', "the coordinator's join token (or HANGAR_JOIN_TOKEN)")
    .option('--data-dir <dir>', 'where builds and instances live', '/var/lib/hangar-agent')
    .option('--name <name>', 'name shown in `hangar agents` (default: the host name)')
    .option('--router-port <port>', 'port of the HTTP router', '80')
    .option('--https-port <port>', "port of the router's HTTPS listener (0: a free one)", '443')
    .option('--advertise <addr>', "address other agents reach this one's instances on")
    .option('--max-instances <n>', 'most instances placed on this agent', '50')
    .option(
      '--trusted-proxy <cidr>',
      'believe X-Forwarded-* from this load balancer range (repeatable, or comma-separated)',
      collectList,
      [],
    )
    .option(
      '--singleton-lease <seconds>',
      'without the coordinator for this long, stop singleton instances (clock, beat) so they never run twice (default 30)',
    )
    .option('--log-spool-mb <mb>', 'largest on-disk spool of log lines not yet stored by the coordinator (default 256)')
    .option('--default-memory <size>', 'memory limit of instances whose app.json sets none, e.g. 512M (default: none)')
    .option('--default-cpu <cores>', 'CPU limit in cores of instances whose app.json sets none, e.g. 0.5 (default: none)')
    .option('--config <file>', 'read settings from this JSON file (what `hangar agent install` writes); flags override it')
    .addHelpText(
      'after',
      '\nOn SIGTERM the agent exits and leaves apps and its router process running (the router serves on); the next start adopts them,\n' +
        'and an agent of a new version replaces the router without dropping a request. Router files: DATA/router/.',
    )
    .action(async (flags: AgentFlags, command: Command) => {
      const settings = await mergedSettings(
        command,
        {
          coordinator: flags.coordinator,
          joinToken: flags.joinToken ?? ctx.io.env.HANGAR_JOIN_TOKEN,
          dataDir: resolve(flags.dataDir),
          name: flags.name,
          routerPort: port(flags.routerPort, '--router-port'),
          httpsPort: port(flags.httpsPort, '--https-port'),
          advertise: flags.advertise,
          maxInstances: positiveInt(flags.maxInstances, '--max-instances'),
          singletonLeaseMs: flags.singletonLease === undefined ? undefined : positiveInt(flags.singletonLease, '--singleton-lease') * 1000,
          logSpoolBytes: flags.logSpoolMb === undefined ? undefined : positiveInt(flags.logSpoolMb, '--log-spool-mb') * 1024 * 1024,
          trustedProxies: flags.trustedProxy.length > 0 ? flags.trustedProxy : undefined,
          defaultMemoryBytes: flags.defaultMemory === undefined ? undefined : memorySize(flags.defaultMemory, '--default-memory'),
          defaultCpu: flags.defaultCpu === undefined ? undefined : cores(flags.defaultCpu, '--default-cpu'),
        },
        flags.config,
      );
      // The flag's name differs from the setting's: given on the command line, it wins over the file.
      if (command.getOptionValueSource('trustedProxy') === 'cli') settings.trustedProxies = flags.trustedProxy;
      if (!settings.coordinator || !settings.joinToken) {
        throw new HangarError(
          'BAD_INPUT',
          'Give --coordinator HOST:PORT and --join-token TOKEN (the join token is in the coordinator data dir, file join-token), or --config FILE.',
        );
      }
      // Loaded on demand: an agent process never holds the coordinator's modules (memory footprint).
      const { startAgent } = await import('../../agent/agent.js');
      const agent = await startAgent(settings as unknown as AgentConfig, { logger: rootLogger(ctx) });
      ctx.out(`Hangar agent ${agent.name} is running; router on port ${agent.routerPort} (HTTPS ${agent.httpsPort}).\n`);
      await untilSignal();
      await agent.close({ stopInstances: false });
    });

  registerInstallCommands(agentCommand, coordinatorCommand, ctx);
  registerMigrateCommand(coordinatorCommand, ctx);

  withAcmeOptions(program.command('dev'))
    .description('coordinator + agent in one process (embedded SQLite), for a laptop or a single server')
    // As root, apps run as the hangar user, which cannot enter root's home.
    .option('--data-dir <dir>', 'where state lives', process.getuid?.() === 0 ? '/var/lib/hangar-dev' : join(homedir(), '.hangar', 'dev'))
    .option('--http-port <port>', 'HTTP API port', '7080')
    .option('--grpc-port <port>', 'gRPC port', '7081')
    .option('--router-port <port>', 'port of the HTTP router', '8080')
    .option('--https-port <port>', "port of the router's HTTPS listener (0: a free one)", '8443')
    .option('--domain <domain>', 'apps are served at APP.<domain>', 'localhost')
    .addHelpText('after', '\nCtrl-C stops everything, the router process and apps included.')
    .action(async (flags: CoordinatorFlags & { routerPort: string; httpsPort: string }) => {
      const logger = rootLogger(ctx);
      const dataDir = resolve(flags.dataDir);
      // Searchable, not listable: apps running as the hangar user reach their files below it.
      await mkdir(dataDir, { recursive: true, mode: 0o711 });
      const { startCoordinator } = await import('../../coordinator/coordinator.js');
      const { startAgent } = await import('../../agent/agent.js');
      let coordinator: RunningCoordinator | null = null;
      let agent: RunningAgent | null = null;
      try {
        coordinator = await startCoordinator(
          {
            dataDir: join(dataDir, 'coordinator'),
            httpPort: port(flags.httpPort, '--http-port'),
            httpHost: '127.0.0.1',
            grpcPort: port(flags.grpcPort, '--grpc-port'),
            grpcHost: '127.0.0.1',
            domain: flags.domain,
            webPort: port(flags.routerPort, '--router-port') || 80,
            ...(acmeSettings(flags) as Partial<CoordinatorConfig>),
          },
          { logger },
        );
        agent = await startAgent(
          {
            coordinator: coordinator.grpcAddress,
            joinToken: coordinator.joinToken,
            dataDir: join(dataDir, 'agent'),
            name: 'dev',
            routerPort: port(flags.routerPort, '--router-port'),
            httpsPort: port(flags.httpsPort, '--https-port'),
            advertise: '127.0.0.1',
          },
          { logger },
        );
        const credsPath = credentialsPath(ctx.io.env);
        const existing = await readCredentials(credsPath).catch(() => null);
        const loggedIn = !existing || existing.url === coordinator.url;
        if (loggedIn) {
          await writeCredentials(
            credsPath,
            { url: coordinator.url, token: coordinator.adminToken },
            { ownDirectory: !ctx.io.env.HANGAR_CREDENTIALS },
          );
        }
        const routerPort = agent.routerPort;
        ctx.out(
          `Hangar dev is running (data in ${dataDir}).\n` +
            `  API:       ${coordinator.url}\n` +
            `  Dashboard: ${coordinator.url}/  (\`hangar dashboard\` prints a one-time login link)\n` +
            `  Router:    http://APP.${flags.domain}:${routerPort}/\n` +
            `  HTTPS:     https://DOMAIN:${agent.httpsPort}/ (custom domains with a certificate: hangar domains:add, certs:add)\n\n` +
            `  export HANGAR_URL=${coordinator.url}\n` +
            `  export HANGAR_TOKEN=${coordinator.adminToken}\n\n` +
            (loggedIn
              ? `The hangar CLI is logged in to it (${credsPath}). Try:\n`
              : `Your saved login points elsewhere; export the two variables above, then try:\n`) +
            `  hangar apps:create hello\n` +
            `  hangar deploy examples/hello-django -a hello\n` +
            `  curl http://hello.${flags.domain}:${routerPort}/\n\n` +
            `Ctrl-C stops Hangar and every app it runs.\n`,
        );
        await untilSignal();
      } finally {
        await agent?.close({ stopInstances: true });
        await coordinator?.close();
      }
    });
}
