/**
 * The `hangar` command: a thin layer over {@link ApiClient} (user commands) and, registered by
 * the server side through {@link buildProgram}'s `extraCommands`, `coordinator`, `agent` and `dev`.
 *
 * {@link main} is the only place that reads `process`; everything else gets a {@link CliIo}.
 */
import { Command, CommanderError } from 'commander';
import { isHangarError } from '../common/errors.js';
import { registerAddonsCommands } from './commands/addons.js';
import { registerAgentsCommands } from './commands/agents.js';
import { registerAppsCommands } from './commands/apps.js';
import { registerMaintenanceCommands } from './commands/maintenance.js';
import { registerAutoscaleCommands } from './commands/autoscale.js';
import { registerConfigCommands } from './commands/config.js';
import { createContext, type CliContext, type CliIo } from './commands/context.js';
import { registerDashboardCommands } from './commands/dashboard.js';
import { registerDeployCommands } from './commands/deploy.js';
import { registerDomainsCommands } from './commands/domains.js';
import { registerLoginCommands } from './commands/login.js';
import { registerMetricsCommands } from './commands/metrics.js';
import { registerLogsCommands } from './commands/logs.js';
import { registerPsCommands } from './commands/ps.js';
import { registerReleasesCommands } from './commands/releases.js';
import { registerRunCommands } from './commands/run.js';
import { registerCronCommands } from './commands/cron.js';
import { registerTokensCommands } from './commands/tokens.js';
import { PACKAGE_VERSION } from '../common/package-root.js';

export type { CliContext, CliIo } from './commands/context.js';

/**
 * Adds commands to the program, e.g. `coordinator`, `agent`, `dev`. Add them with
 * `program.command(NAME)` so they inherit the output, exit handling and help settings. An action
 * that fails throws (a {@link HangarError} with a sentence saying what to do); `main` prints it as
 * `error: <message>` and returns 1. A long-running action resolves when it has shut down.
 */
export type ExtraCommands = (program: Command, ctx: CliContext) => void;

/**
 * Builds the `hangar` commander program: every user command of the DESIGN.md contract, then
 * `extraCommands`. Output goes to `io`; errors throw {@link CommanderError} (exitOverride) instead
 * of exiting. Parse with `program.parseAsync(argv)`; {@link main} does that and maps the outcome
 * to an exit code.
 *
 * @param ctx The run's context; made from `io` when omitted. Pass one to close its client after.
 */
export function buildProgram(io: CliIo, extraCommands?: ExtraCommands, ctx: CliContext = createContext(io)): Command {
  const program = new Command('hangar')
    .description("Heroku's workflow on your own servers: deploy, scale and watch Django apps")
    .version(PACKAGE_VERSION, '-v, --version', 'print the version')
    .exitOverride()
    .configureOutput({
      writeOut: (text) => void io.stdout.write(text),
      writeErr: (text) => void io.stderr.write(text),
    })
    // `hangar run` passes every word after its own flags to the command (see commands/run.ts).
    .enablePositionalOptions()
    .showHelpAfterError('(add --help for usage)')
    .showSuggestionAfterError()
    .addHelpText(
      'after',
      '\nConnection: HANGAR_URL and HANGAR_TOKEN, else the credentials saved by `hangar login`.\n' +
        'App: -a/--app, else HANGAR_APP.\n' +
        'Django: every process gets HANGAR_DOMAINS, and the settings autopilot adds them to ALLOWED_HOSTS and\n' +
        'CSRF_TRUSTED_ORIGINS and sets SECURE_PROXY_SSL_HEADER; config var HANGAR_DJANGO_AUTOPILOT=0 turns it off\n' +
        '(or one part: HANGAR_DJANGO_ALLOWED_HOSTS=0, HANGAR_DJANGO_CSRF_TRUSTED_ORIGINS=0, HANGAR_DJANGO_SECURE_PROXY_SSL_HEADER=0).\n' +
        'Deploys honour runtime.txt / .python-version and app.json scripts.dokku.predeploy, scripts.postdeploy, scripts.dokku.postdeploy.\n',
    );

  registerAgentsCommands(program, ctx);
  registerAppsCommands(program, ctx);
  registerMaintenanceCommands(program, ctx);
  registerDeployCommands(program, ctx);
  registerReleasesCommands(program, ctx);
  registerPsCommands(program, ctx);
  registerConfigCommands(program, ctx);
  registerAddonsCommands(program, ctx);
  registerDomainsCommands(program, ctx);
  registerLoginCommands(program, ctx);
  registerMetricsCommands(program, ctx);
  registerAutoscaleCommands(program, ctx);
  registerLogsCommands(program, ctx);
  registerRunCommands(program, ctx);
  registerCronCommands(program, ctx);
  registerTokensCommands(program, ctx);
  registerDashboardCommands(program, ctx);
  extraCommands?.(program, ctx);
  return program;
}

/**
 * Runs the `hangar` command and returns its exit code: 0 on success, 1 when a command failed
 * (`error: <message>` on stderr), 2 on a usage error (bad arguments or input, nothing sent).
 * Never calls `process.exit`.
 *
 * @param argv Like `process.argv`: node, script, then the arguments.
 * @param io Where output goes and which environment to read. Default: the process's.
 * @param extraCommands Registers more commands (the server side's `coordinator`, `agent`, `dev`).
 */
export async function main(argv: string[], io: CliIo = processIo(), extraCommands?: ExtraCommands): Promise<number> {
  const ctx = createContext(io);
  const program = buildProgram(io, extraCommands, ctx);
  try {
    await program.parseAsync(argv, { from: 'node' });
    return ctx.exitCode ?? 0;
  } catch (err) {
    // Commander already printed its message (help, version, or `error: ...`).
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    io.stderr.write(`error: ${messageFor(err)}\n`);
    if (io.env.HANGAR_DEBUG && err instanceof Error && err.stack) io.stderr.write(`${err.stack}\n`);
    return 1;
  } finally {
    await ctx.close();
  }
}

function messageFor(err: unknown): string {
  if (isHangarError(err, 'UNAUTHORIZED') && !err.message.includes('hangar login')) {
    return `${err.message}; check HANGAR_TOKEN, or log in again with \`hangar login --url URL --token TOKEN\``;
  }
  return err instanceof Error ? err.message : String(err);
}

function processIo(): CliIo {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    cwd: process.cwd(),
    // Made on first use: only `hangar run` reads stdin.
    get stdin() {
      return process.stdin;
    },
    signals: process,
  };
}
