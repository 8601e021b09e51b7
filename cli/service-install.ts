/**
 * Installing Hangar as a systemd service: the service's system user (the coordinator's own,
 * `hangar-coordinator`; the agent runs as root), a data dir, a config file (mode 0600, it holds
 * the join token) and a unit, then `systemctl enable --now`. Planning is
 * pure ({@link planAgentInstall}, {@link planCoordinatorInstall}); {@link applyInstall} carries a
 * plan out idempotently (files are rewritten only when they differ), {@link describePlan} prints it.
 */
import { execFile } from 'node:child_process';
import { chmod, chown, lstat, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { HangarError } from '../common/errors.js';

const run = promisify(execFile);

/**
 * The coordinator's own system user: its data dir (admin token, CA key, secret key) is its alone,
 * closed to every app's user (`hangar-APP`, see agent/workloads/app-users.ts, which never hands
 * out this name).
 */
export const COORDINATOR_USER = 'hangar-coordinator';

/** One file of a plan. */
export interface PlannedFile {
  path: string;
  mode: number;
  content: string;
  /** Owned by the plan's user (else root). */
  ownedByServiceUser: boolean;
  /** Shown with secrets masked in dry runs. */
  secret: boolean;
}

/** What an install does. */
export interface InstallPlan {
  /** `hangar-agent` or `hangar-coordinator`. */
  service: string;
  /** The system user the service runs as, created when missing; null: root. */
  user: string | null;
  /** `tree`: everything already below it is given to the plan's user too (an upgrade from another owner). */
  dirs: { path: string; mode: number; ownedByServiceUser: boolean; tree?: boolean }[];
  files: PlannedFile[];
}

/** Where the program lives and where files go. */
export interface InstallPaths {
  /** Absolute path of node. */
  node: string;
  /** Absolute path of bin/hangar.js. */
  hangarBin: string;
  /** Prefix of every path written (tests and packaging); `/` on a server. */
  root: string;
}

/** Settings written to /etc/hangar/agent.json: what `hangar agent --config` reads. */
export interface AgentFileConfig {
  coordinator: string;
  joinToken: string;
  dataDir: string;
  name?: string;
  routerPort?: number;
  httpsPort?: number;
  advertise?: string;
  maxInstances?: number;
}

/** Settings written to /etc/hangar/coordinator.json: what `hangar coordinator --config` reads. */
export interface CoordinatorFileConfig {
  dataDir: string;
  /** PostgreSQL instead of SQLite in the data dir (several coordinators). */
  databaseUrl?: string;
  /** Where the others reach this coordinator, and its name among them. */
  advertise?: string;
  name?: string;
  httpPort?: number;
  grpcPort?: number;
  domain?: string;
  tlsCert?: string;
  tlsKey?: string;
}

const at = (paths: InstallPaths, path: string) => (paths.root === '/' ? path : join(paths.root, path));

function quoteArg(arg: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(arg) ? arg : `"${arg.replace(/(["\\$`])/g, '\\$1')}"`;
}

function unitFile(o: { description: string; exec: string[]; user: string | null; extra: string[] }): string {
  return [
    '[Unit]',
    `Description=${o.description}`,
    'After=network-online.target',
    'Wants=network-online.target',
    '',
    '[Service]',
    'Type=simple',
    ...(o.user ? [`User=${o.user}`, `Group=${o.user}`] : []),
    `ExecStart=${o.exec.map(quoteArg).join(' ')}`,
    'Restart=always',
    'RestartSec=2',
    'TimeoutStopSec=45',
    'LimitNOFILE=65536',
    'Environment=HANGAR_LOG_LEVEL=info',
    ...o.extra,
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/**
 * The agent's install: it runs as root (to bind port 80 and start apps as `hangar`), with
 * `KillMode=process` so restarting the agent leaves the apps running for the new agent to adopt.
 */
export function planAgentInstall(config: AgentFileConfig, paths: InstallPaths): InstallPlan {
  const configPath = '/etc/hangar/agent.json';
  return {
    service: 'hangar-agent',
    user: null,
    dirs: [
      { path: at(paths, '/etc/hangar'), mode: 0o755, ownedByServiceUser: false },
      // Traversable by the app user (its slugs and virtualenvs are below), not listable.
      { path: at(paths, config.dataDir), mode: 0o711, ownedByServiceUser: false },
    ],
    files: [
      {
        path: at(paths, configPath),
        mode: 0o600,
        content: `${JSON.stringify(config, null, 2)}\n`,
        ownedByServiceUser: false,
        secret: true,
      },
      {
        path: at(paths, '/etc/systemd/system/hangar-agent.service'),
        mode: 0o644,
        content: unitFile({
          description: "Hangar agent: runs and routes this server's apps",
          exec: [paths.node, paths.hangarBin, 'agent', '--config', configPath],
          user: null,
          // Apps run in their own sessions; an agent restart must not kill them.
          extra: ['KillMode=process', 'LimitNPROC=65536'],
        }),
        ownedByServiceUser: false,
        secret: false,
      },
    ],
  };
}

/**
 * The coordinator's install: it runs as its own unprivileged user {@link COORDINATOR_USER}, its
 * data dir 0700 and its alone (what an older install left there is given to it).
 */
export function planCoordinatorInstall(config: CoordinatorFileConfig, paths: InstallPaths): InstallPlan {
  const configPath = '/etc/hangar/coordinator.json';
  return {
    service: 'hangar-coordinator',
    user: COORDINATOR_USER,
    dirs: [
      { path: at(paths, '/etc/hangar'), mode: 0o755, ownedByServiceUser: false },
      { path: at(paths, config.dataDir), mode: 0o700, ownedByServiceUser: true, tree: true },
    ],
    files: [
      {
        path: at(paths, configPath),
        mode: 0o600,
        content: `${JSON.stringify(config, null, 2)}\n`,
        ownedByServiceUser: true,
        // A database URL may carry a password: a dry run hides it.
        secret: true,
      },
      {
        path: at(paths, '/etc/systemd/system/hangar-coordinator.service'),
        mode: 0o644,
        content: unitFile({
          description: 'Hangar coordinator: HTTP API and gRPC for agents',
          exec: [paths.node, paths.hangarBin, 'coordinator', '--config', configPath],
          user: COORDINATOR_USER,
          // Files it makes are its alone (tokens, keys), whatever it is asked to write.
          extra: ['NoNewPrivileges=yes', 'PrivateTmp=yes', 'ProtectSystem=full', 'UMask=0077'],
        }),
        ownedByServiceUser: false,
        secret: false,
      },
    ],
  };
}

function maskSecrets(content: string): string {
  return content.replace(/"(hgr_[a-z]+_)[^"]*"/g, '"$1…(hidden)"').replace(/(postgres(?:ql)?:\/\/[^:/@"\s]*:)[^@"\s]*@/gi, '$1…(hidden)@');
}

/** A dry run's text: every directory, every file with its content, every command. */
export function describePlan(plan: InstallPlan, options: { root: string }): string {
  const out: string[] = [];
  const owner = (mine: boolean) => (mine && plan.user ? `${plan.user}:${plan.user}` : 'root:root');
  if (options.root === '/' && plan.user) {
    out.push(`# would create the system user ${plan.user} unless it exists (useradd --system --no-create-home --user-group)`);
  }
  for (const d of plan.dirs) out.push(`# would create directory ${d.path} (mode ${d.mode.toString(8)}, ${owner(d.ownedByServiceUser)})`);
  for (const f of plan.files) {
    out.push(
      `# would write ${f.path} (mode ${f.mode.toString(8)}, ${owner(f.ownedByServiceUser)})${f.secret ? ' — tokens hidden here' : ''}`,
    );
    out.push(`--- ${f.path}`);
    out.push((f.secret ? maskSecrets(f.content) : f.content).trimEnd());
    out.push(`--- end of ${f.path}`);
  }
  if (options.root === '/') out.push('# would run: systemctl daemon-reload', `# would run: systemctl enable --now ${plan.service}.service`);
  return `${out.join('\n')}\n`;
}

async function userIds(user: string): Promise<{ uid: number; gid: number } | null> {
  try {
    const uid = Number((await run('id', ['-u', user])).stdout.trim());
    const gid = Number((await run('id', ['-g', user])).stdout.trim());
    return { uid, gid };
  } catch {
    return null;
  }
}

/**
 * Carries out a plan. Idempotent: the user is created only when missing, files are written only
 * when their content differs, and the service is restarted only when a file changed. With a
 * `root` other than `/`, only files are written (no systemctl), and no user or ownership unless
 * `accounts` (packaging tests).
 *
 * @returns the paths it changed.
 */
export async function applyInstall(plan: InstallPlan, options: { root: string; accounts?: boolean }): Promise<string[]> {
  const system = options.root === '/';
  let ids: { uid: number; gid: number } | null = null;
  if ((options.accounts ?? system) && plan.user) {
    const user = plan.user;
    ids = await userIds(user);
    if (!ids) {
      await run('useradd', ['--system', '--no-create-home', '--user-group', '--shell', '/usr/sbin/nologin', user]);
      ids = await userIds(user);
    }
    if (!ids) throw new HangarError('INTERNAL', `Could not create the system user ${user}; create it with useradd and try again.`);
  }
  const changed: string[] = [];
  for (const d of plan.dirs) {
    await mkdir(d.path, { recursive: true, mode: d.mode });
    await chmod(d.path, d.mode);
    if (ids && d.ownedByServiceUser) {
      if (d.tree) await chownTree(d.path, ids);
      else await chown(d.path, ids.uid, ids.gid);
    }
  }
  for (const f of plan.files) {
    await mkdir(dirname(f.path), { recursive: true });
    const current = await readFile(f.path, 'utf8').catch(() => null);
    if (current !== f.content) {
      await writeFile(`${f.path}.tmp`, f.content, { mode: f.mode });
      await chmod(`${f.path}.tmp`, f.mode);
      if (ids && f.ownedByServiceUser) await chown(`${f.path}.tmp`, ids.uid, ids.gid);
      await rename(`${f.path}.tmp`, f.path);
      changed.push(f.path);
    }
  }
  if (system) {
    await systemctl(['daemon-reload']);
    await systemctl(['enable', '--now', `${plan.service}.service`]);
    if (changed.length > 0) await systemctl(['restart', `${plan.service}.service`]);
  }
  return changed;
}

/** Stops and disables the service and removes its unit and config file; keeps the data dir. */
export async function applyUninstall(plan: InstallPlan, options: { root: string }): Promise<string[]> {
  if (options.root === '/') await systemctl(['disable', '--now', `${plan.service}.service`]).catch(() => undefined);
  const removed: string[] = [];
  for (const f of plan.files) {
    const exists = await readFile(f.path).then(
      () => true,
      () => false,
    );
    if (exists) {
      await rm(f.path, { force: true });
      removed.push(f.path);
    }
  }
  if (options.root === '/') await systemctl(['daemon-reload']).catch(() => undefined);
  return removed;
}

/** Gives `path` and everything below it to `ids`; symbolic links are not followed. */
async function chownTree(path: string, ids: { uid: number; gid: number }): Promise<void> {
  const info = await lstat(path);
  if (info.isSymbolicLink()) return;
  if (info.uid !== ids.uid || info.gid !== ids.gid) await chown(path, ids.uid, ids.gid);
  if (info.isDirectory()) for (const name of await readdir(path)) await chownTree(join(path, name), ids);
}

async function systemctl(args: string[]): Promise<void> {
  try {
    await run('systemctl', args, { timeout: 60_000 });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new HangarError(
      'INTERNAL',
      `systemctl ${args.join(' ')} failed${stderr ? `: ${stderr}` : ''}; is systemd running on this server?`,
      {
        cause: err,
      },
    );
  }
}
