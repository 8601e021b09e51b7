/**
 * `hangar run [--detached] [--release vN] [--agent NAME] [--timeout S] -a APP -- COMMAND...`,
 * `hangar runs -a APP [--json]`, `hangar run:stop run.N -a APP` and `hangar console -a APP`.
 *
 * Argument rules are Heroku's: `-a/--app` and run's own flags are recognised anywhere before a
 * `--`; every other word (unknown flags too) is part of the command, and everything after `--` is
 * the command, untouched. With a terminal on stdin the run is interactive (a pseudo-terminal on
 * the agent: raw keys, Ctrl-C, window sizes); without one, stdin is streamed to the command. The
 * run's exit status is the CLI's.
 */
import type { Command } from 'commander';
import type { RunRequest, RunStreamMessage, RunView } from '../../common/api-types.js';
import { HangarError } from '../../common/errors.js';
import { formatDuration, formatJson, formatTable, shellQuote, timeAgo } from '../output.js';
import {
  atEdge,
  badInput,
  resolveApp,
  usageError,
  withAppOption,
  type CliContext,
  type SignalSource,
  type TerminalInput,
} from './context.js';

/** What the words after `hangar run` say. */
export interface RunArgs {
  app?: string;
  detached: boolean;
  release?: number;
  agent?: string;
  timeoutSeconds?: number;
  help: boolean;
  /** The command's words, in order. */
  command: string[];
}

const FLAGS_WITH_VALUE = new Set(['-a', '--app', '--release', '--agent', '--timeout']);

/**
 * Splits the words after `hangar run` into run's flags and the command (see the module comment).
 * Throws `BAD_INPUT` listing every bad flag.
 */
export function parseRunArgs(words: readonly string[]): RunArgs {
  const out: RunArgs = { detached: false, help: false, command: [] };
  const problems: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const word = words[i] as string;
    if (word === '--') {
      out.command.push(...words.slice(i + 1));
      break;
    }
    const eq = word.startsWith('--') ? word.indexOf('=') : -1;
    const flag = eq > 0 ? word.slice(0, eq) : word;
    if (word === '--detached') {
      out.detached = true;
      continue;
    }
    if (word === '-h' || word === '--help') {
      out.help = true;
      continue;
    }
    if (!FLAGS_WITH_VALUE.has(flag)) {
      out.command.push(word);
      continue;
    }
    let value: string | undefined;
    if (eq > 0) value = word.slice(eq + 1);
    else {
      value = words[i + 1];
      if (value === undefined || value === '--') {
        problems.push(`${flag} needs a value`);
        continue;
      }
      i++;
    }
    switch (flag) {
      case '-a':
      case '--app':
        out.app = value;
        break;
      case '--release': {
        const m = /^v?([1-9]\d{0,8})$/.exec(value);
        if (m) out.release = Number(m[1]);
        else problems.push(`--release "${value}" is not a release: write v3 (\`hangar releases\` lists them)`);
        break;
      }
      case '--agent':
        if (/^[a-z0-9][a-z0-9.-]{0,62}$/i.test(value)) out.agent = value;
        else problems.push(`--agent "${value}" is not an agent name (\`hangar agents\` lists them)`);
        break;
      case '--timeout':
        if (/^[1-9]\d{0,7}$/.test(value)) out.timeoutSeconds = Number(value);
        else problems.push(`--timeout "${value}" must be a whole number of seconds, e.g. 3600`);
        break;
    }
  }
  if (problems.length > 0) throw badInput(problems.join('; '));
  return out;
}

/**
 * The command line the agent's shell runs: one word as it is (`hangar run 'echo $HOME'` is shell),
 * several joined with each quoted where the shell would split or expand it.
 */
export function commandLine(words: readonly string[]): string {
  if (words.length === 1) return words[0] as string;
  return words.map((w) => (/^[A-Za-z0-9_./:=@%+,-]+$/.test(w) ? w : shellQuote(w))).join(' ');
}

/** `hangar runs`: one line a run, newest first. */
export function formatRuns(runs: readonly RunView[], now: number): string {
  return formatTable(
    runs.map((r) => [
      r.name,
      r.status,
      r.exitCode === null ? '-' : `exit ${r.exitCode}`,
      r.release,
      r.agent,
      r.durationMs === null ? (r.startedAt ? `up ${timeAgo(r.startedAt, now).replace(' ago', '')}` : '-') : formatDuration(r.durationMs),
      `by ${r.createdBy}`,
      timeAgo(r.createdAt, now),
      r.command.length > 60 ? `${r.command.slice(0, 57)}...` : r.command,
    ]),
    ['RUN', 'STATUS', 'EXIT', 'RELEASE', 'AGENT', 'TOOK', 'WHO', 'STARTED', 'COMMAND'],
  );
}

const RUN_HELP = `
Options (anywhere before a \`--\`; every other word is the command):
  -a, --app <app>      the app (default: $HANGAR_APP)
  --detached           run in the background; its output goes to \`hangar logs --source run.N\`
  --release <vN>       run in this release (default: the current one)
  --agent <name>       run on this agent (default: the scheduler's choice)
  --timeout <s>        stop it after this many seconds (default: none, 24 h detached)
  -h, --help           show this help

With a terminal, the run is interactive (Ctrl-C, Ctrl-D and window size reach it); without one,
stdin goes to the command. The command's exit code is hangar's.

Examples:
  hangar run python manage.py createsuperuser -a shop
  hangar run -a shop -- python manage.py migrate --plan
  echo 'print(42)' | hangar run -a shop -- python manage.py shell
  hangar run --detached python manage.py rebuild_index -a shop
`;

/** Registers `run`, `runs`, `run:stop` and `console` on `program`. */
export function registerRunCommands(program: Command, ctx: CliContext): void {
  program
    .command('run')
    .description("run a one-off command in the app's release (its slug, virtualenv and config)")
    .usage('[--detached] [--release vN] [--agent NAME] [--timeout S] -a APP -- COMMAND...')
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .passThroughOptions()
    .argument('[command...]', 'the command and its arguments')
    .addHelpText('after', RUN_HELP)
    .action(async (words: string[], _options: unknown, command: Command) => {
      const args = atEdge(command, () => parseRunArgs(words));
      if (args.help) return ctx.out(`${command.helpInformation()}${RUN_HELP}`);
      if (args.app !== undefined) command.setOptionValue('app', args.app);
      const app = resolveApp(command, ctx);
      if (args.command.length === 0) {
        usageError(command, `No command given: write it after the flags, e.g. \`hangar run -a ${app} -- python manage.py migrate\``);
      }
      await runOneOff(ctx, app, { command: commandLine(args.command) }, args);
    });

  withAppOption(program.command('console'))
    .description("open the app's console: app.json hangar.console, else python manage.py shell")
    .option('--release <vN>', 'run it in this release (default: the current one)')
    .option('--agent <name>', 'run it on this agent (default: the scheduler’s choice)')
    .action(async (flags: { release?: string; agent?: string }, command: Command) => {
      const app = resolveApp(command, ctx);
      const args = atEdge(command, () =>
        parseRunArgs([...(flags.release ? ['--release', flags.release] : []), ...(flags.agent ? ['--agent', flags.agent] : [])]),
      );
      await runOneOff(ctx, app, { console: true }, args);
    });

  withAppOption(program.command('runs'))
    .description("list the app's one-off runs, newest first")
    .option('--json', 'print the API rows as a JSON array')
    .action(async (options: { json?: boolean }, command: Command) => {
      const app = resolveApp(command, ctx);
      const runs = await (await ctx.client()).listRuns(app);
      if (options.json) return ctx.out(formatJson(runs));
      if (runs.length === 0) return ctx.out(`${app} has no runs yet; start one with \`hangar run -a ${app} -- COMMAND\`.\n`);
      ctx.out(formatRuns(runs, ctx.clock.now()));
    });

  withAppOption(program.command('run:stop'))
    .description('stop a one-off run (SIGHUP and SIGTERM to its process group, then SIGKILL)')
    .argument('<run>', 'the run, e.g. run.3 (`hangar runs` lists them)')
    .action(async (name: string, _options: unknown, command: Command) => {
      const app = resolveApp(command, ctx);
      atEdge(command, () => {
        if (!/^run\.[1-9]\d{0,9}$/.test(name)) throw badInput(`"${name}" is not a run: write run.3 (\`hangar runs -a ${app}\` lists them)`);
      });
      ctx.err(`Stopping ${name} on ${app}... `);
      await (await ctx.client()).stopRun(app, name);
      ctx.err('done\n');
    });
}

/** Starts a run and, unless detached, attaches to it until it exits; sets the CLI's exit code to the run's. */
async function runOneOff(ctx: CliContext, app: string, what: Pick<RunRequest, 'command' | 'console'>, args: RunArgs): Promise<void> {
  const stdin = ctx.io.stdin;
  const tty = !args.detached && stdin?.isTTY === true && typeof stdin.setRawMode === 'function';
  const out = ctx.io.stdout as { columns?: number; rows?: number };
  const size = () => ({ cols: Math.max(1, out.columns ?? 80), rows: Math.max(1, out.rows ?? 24) });
  const client = await ctx.client();
  const run = await client.createRun(app, {
    ...what,
    detached: args.detached,
    tty,
    ...(tty ? { ...size(), term: /^[A-Za-z0-9._+-]{1,64}$/.test(ctx.io.env.TERM ?? '') ? ctx.io.env.TERM : 'xterm-256color' } : {}),
    ...(args.release !== undefined ? { release: args.release } : {}),
    ...(args.agent !== undefined ? { agent: args.agent } : {}),
    ...(args.timeoutSeconds !== undefined ? { timeoutSeconds: args.timeoutSeconds } : {}),
  });
  ctx.err(`Running ${run.command} on ${app} (${run.release}, ${run.agent})... `);
  if (args.detached) {
    ctx.err(
      `up, ${run.name}\nIts output: \`hangar logs --source ${run.name} -a ${app}\`; stop it with \`hangar run:stop ${run.name} -a ${app}\`.\n`,
    );
    return;
  }
  const outcome: { exit: { code: number; signal: string | null; message: string } | null; failure: HangarError | null } = {
    exit: null,
    failure: null,
  };
  const cleanups: (() => void)[] = [];
  const connection = client.attachRun(app, run.name, {
    onOutput: (stream, data) => void (stream === 'stderr' ? ctx.io.stderr : ctx.io.stdout).write(data),
    onMessage: (m: RunStreamMessage) => {
      if ('status' in m) {
        if (!tty) ctx.err(`up, ${run.name}\n`);
        else ctx.err(`up, ${run.name}\r\n`);
      } else if ('exit' in m) outcome.exit = m.exit;
      else outcome.failure = new HangarError('BAD_INPUT', m.error.message);
    },
    onOpen: () => cleanups.push(...wireInput(stdin, ctx.io.signals, tty, connection, size)),
  });
  try {
    await connection.done;
  } finally {
    for (const clean of cleanups.splice(0).reverse()) clean();
  }
  if (outcome.failure) throw outcome.failure;
  const ended = outcome.exit;
  if (!ended) {
    throw new HangarError(
      'UNREACHABLE',
      `The connection to the coordinator was lost, so ${run.name} was stopped; \`hangar runs -a ${app}\` shows how it ended.`,
    );
  }
  if (ended.message) ctx.err(`${run.name} ${ended.message}\n`);
  ctx.exitCode = ended.code;
}

/** Passes stdin, window sizes and signals to the run; returns how to undo it. */
function wireInput(
  stdin: TerminalInput | undefined,
  signals: SignalSource | undefined,
  tty: boolean,
  connection: ReturnType<Awaited<ReturnType<CliContext['client']>>['attachRun']>,
  size: () => { cols: number; rows: number },
): (() => void)[] {
  const undo: (() => void)[] = [];
  if (stdin) {
    if (tty) {
      stdin.setRawMode?.(true);
      undo.push(() => stdin.setRawMode?.(false));
    }
    const onData = (chunk: Buffer | string) => connection.input(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    const onEnd = () => connection.control({ eof: true });
    stdin.on('data', onData);
    stdin.on('end', onEnd);
    stdin.resume();
    undo.push(() => {
      stdin.off('data', onData);
      stdin.off('end', onEnd);
      stdin.pause();
    });
  } else {
    connection.control({ eof: true });
  }
  if (signals) {
    const onResize = () => connection.control({ resize: size() });
    // With a terminal, Ctrl-C is a key the agent's terminal turns into SIGINT; without one, the CLI's own SIGINT is passed on.
    const onInterrupt = () => connection.control({ signal: 'SIGINT' });
    const onTerm = () => connection.control({ signal: 'SIGTERM' });
    const onHangup = () => connection.close();
    signals.on('SIGWINCH', onResize);
    signals.on('SIGINT', onInterrupt);
    signals.on('SIGTERM', onTerm);
    signals.on('SIGHUP', onHangup);
    undo.push(() => {
      signals.off('SIGWINCH', onResize);
      signals.off('SIGINT', onInterrupt);
      signals.off('SIGTERM', onTerm);
      signals.off('SIGHUP', onHangup);
    });
  }
  return undo;
}
