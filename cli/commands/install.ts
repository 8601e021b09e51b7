/**
 * `hangar agent install`, `hangar agent uninstall` and `hangar coordinator install`: run Hangar
 * as a systemd service on this server (see `cli/service-install.ts`).
 */
import { join } from 'node:path';
import type { Command } from 'commander';
import { HangarError } from '../../common/errors.js';
import { parseJoinToken } from '../../common/join-token.js';
import {
  applyInstall,
  applyUninstall,
  describePlan,
  planAgentInstall,
  planCoordinatorInstall,
  type AgentFileConfig,
  type InstallPaths,
} from '../service-install.js';
import type { CliContext } from './context.js';
import { PACKAGE_ROOT } from '../../common/package-root.js';

/** bin/hangar.js of this installation. */
const HANGAR_BIN = join(PACKAGE_ROOT, 'bin', 'hangar.js');

interface CommonFlags {
  dryRun?: boolean;
  root: string;
}

function paths(flags: CommonFlags): InstallPaths {
  return { node: process.execPath, hangarBin: HANGAR_BIN, root: flags.root };
}

function requireRoot(flags: CommonFlags): void {
  if (!flags.dryRun && flags.root === '/' && process.getuid?.() !== 0) {
    throw new HangarError('FORBIDDEN', 'Installing a service needs root: run it with sudo (or look first with --dry-run).');
  }
}

function intFlag(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new HangarError('BAD_INPUT', `${name} must be a whole number, not "${value}".`);
  return n;
}

function databaseUrlFlag(value: string): string {
  if (!/^postgres(ql)?:\/\//i.test(value))
    throw new HangarError('BAD_INPUT', `--database-url must be a postgres:// URL (postgres://user@host/db), not "${value}".`);
  return value;
}

/** Registers `install`/`uninstall` under `agent` and `install` under `coordinator`. */
export function registerInstallCommands(agent: Command, coordinator: Command, ctx: CliContext): void {
  const agentPlan = (flags: AgentInstallFlags) => {
    const joinToken = flags.joinToken ?? ctx.io.env.HANGAR_JOIN_TOKEN ?? '';
    if (!flags.coordinator || !/^[^\s:]+:\d{1,5}$/.test(flags.coordinator)) {
      throw new HangarError('BAD_INPUT', 'Give --coordinator HOST:PORT: the gRPC address of the coordinator (port 7081 by default).');
    }
    parseJoinToken(joinToken);
    const config: AgentFileConfig = {
      coordinator: flags.coordinator,
      joinToken,
      dataDir: flags.dataDir,
      ...(flags.name ? { name: flags.name } : {}),
      ...(flags.routerPort ? { routerPort: intFlag(flags.routerPort, '--router-port') } : {}),
      ...(flags.httpsPort ? { httpsPort: intFlag(flags.httpsPort, '--https-port') } : {}),
      ...(flags.advertise ? { advertise: flags.advertise } : {}),
    };
    return planAgentInstall(config, paths(flags));
  };

  agent
    .command('install')
    .description(
      'install the agent as a systemd service (as root, which runs each app as its own user; /etc/hangar/agent.json, hangar-agent.service)',
    )
    .option('--coordinator <host:port>', "the coordinator's gRPC address")
    .option('--join-token <token>', "the coordinator's join token (or HANGAR_JOIN_TOKEN)")
    .option('--data-dir <dir>', 'where builds and instances live', '/var/lib/hangar-agent')
    .option('--name <name>', 'name shown in `hangar agents` (default: the host name)')
    .option('--router-port <port>', 'port of the HTTP router (default 80)')
    .option('--https-port <port>', "port of the router's HTTPS listener (default 443)")
    .option('--advertise <addr>', "address other agents reach this one's instances on")
    .option('--dry-run', 'print every file and command instead of doing it')
    .option('--root <dir>', 'write the files below this directory, without useradd or systemctl (packaging)', '/')
    .action(async (flags: AgentInstallFlags) => {
      const plan = agentPlan(flags);
      if (flags.dryRun) return ctx.out(describePlan(plan, { root: flags.root }));
      requireRoot(flags);
      const changed = await applyInstall(plan, { root: flags.root });
      ctx.out(
        changed.length === 0
          ? 'The Hangar agent was already installed this way; nothing changed.\n'
          : `Installed the Hangar agent (${changed.join(', ')}).\n` +
              (flags.root === '/' ? 'It runs now and at every boot: journalctl -u hangar-agent -f\n' : ''),
      );
    });

  agent
    .command('uninstall')
    .description('stop and remove the hangar-agent service and its config file (the data dir is kept)')
    .option('--dry-run', 'print what would be removed')
    .option('--root <dir>', 'remove the files below this directory, without systemctl', '/')
    .action(async (flags: CommonFlags) => {
      const plan = planAgentInstall({ coordinator: 'x:1', joinToken: '', dataDir: '/var/lib/hangar-agent' }, paths(flags));
      if (flags.dryRun) {
        return ctx.out(
          plan.files.map((f) => `# would remove ${f.path}\n`).join('') + '# would run: systemctl disable --now hangar-agent.service\n',
        );
      }
      requireRoot(flags);
      const removed = await applyUninstall(plan, { root: flags.root });
      ctx.out(removed.length === 0 ? 'The Hangar agent was not installed; nothing to remove.\n' : `Removed ${removed.join(', ')}.\n`);
    });

  coordinator
    .command('install')
    .description('install the coordinator as a systemd service running as its own user, hangar-coordinator')
    .option('--data-dir <dir>', 'where state, tokens and artifacts live', '/var/lib/hangar')
    .option('--database-url <url>', 'keep the state in PostgreSQL (postgres://user@host/db) instead of SQLite')
    .option('--advertise <host[:port]>', 'address the other coordinators, agents and the CLI reach this one on')
    .option('--name <name>', 'name of this coordinator among several')
    .option('--http-port <port>', 'HTTP API port (default 7080)')
    .option('--grpc-port <port>', 'gRPC port agents connect to (default 7081)')
    .option('--domain <domain>', 'apps are served at APP.<domain>')
    .option('--tls-cert <file>', 'serve the HTTP API over HTTPS with this certificate')
    .option('--tls-key <file>', 'private key of --tls-cert')
    .option('--dry-run', 'print every file and command instead of doing it')
    .option('--root <dir>', 'write the files below this directory, without useradd or systemctl (packaging)', '/')
    .action(async (flags: CoordinatorInstallFlags) => {
      const plan = planCoordinatorInstall(
        {
          dataDir: flags.dataDir,
          ...(flags.databaseUrl ? { databaseUrl: databaseUrlFlag(flags.databaseUrl) } : {}),
          ...(flags.advertise ? { advertise: flags.advertise } : {}),
          ...(flags.name ? { name: flags.name } : {}),
          ...(flags.httpPort ? { httpPort: intFlag(flags.httpPort, '--http-port') } : {}),
          ...(flags.grpcPort ? { grpcPort: intFlag(flags.grpcPort, '--grpc-port') } : {}),
          ...(flags.domain ? { domain: flags.domain } : {}),
          ...(flags.tlsCert ? { tlsCert: flags.tlsCert } : {}),
          ...(flags.tlsKey ? { tlsKey: flags.tlsKey } : {}),
        },
        paths(flags),
      );
      if (flags.dryRun) return ctx.out(describePlan(plan, { root: flags.root }));
      requireRoot(flags);
      const changed = await applyInstall(plan, { root: flags.root });
      ctx.out(
        changed.length === 0
          ? 'The Hangar coordinator was already installed this way; nothing changed.\n'
          : `Installed the Hangar coordinator (${changed.join(', ')}).\n`,
      );
    });
}

interface AgentInstallFlags extends CommonFlags {
  coordinator?: string;
  joinToken?: string;
  dataDir: string;
  name?: string;
  routerPort?: string;
  httpsPort?: string;
  advertise?: string;
}

interface CoordinatorInstallFlags extends CommonFlags {
  dataDir: string;
  databaseUrl?: string;
  advertise?: string;
  name?: string;
  httpPort?: string;
  grpcPort?: string;
  domain?: string;
  tlsCert?: string;
  tlsKey?: string;
}
