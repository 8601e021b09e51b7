/**
 * What every `hangar` command runs with: where output goes, the environment, a clock, and a
 * lazily made {@link ApiClient}. Also the two edge helpers all command groups share: `-a/--app`
 * resolution and turning bad input into a usage error (exit 2) before any request is sent.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { CommanderError, type Command } from 'commander';
import { sleep, systemClock, type Clock } from '../../common/clock.js';
import { HangarError, isHangarError } from '../../common/errors.js';
import type { ApiClient } from '../api-client.js';
import { resolveCredentials, type Env } from '../credentials.js';

/** Something text can be written to (`process.stdout`, a test buffer). */
export interface TextSink {
  write(text: string | Uint8Array): unknown;
}

/** The outside world of one CLI run. `main` fills it from `process`; tests pass their own. */
export interface CliIo {
  /** Command output. */
  stdout: TextSink;
  /** Errors and progress notes. */
  stderr: TextSink;
  /** Environment variables (HANGAR_URL, HANGAR_TOKEN, HANGAR_APP, HANGAR_CREDENTIALS, XDG_CONFIG_HOME, HOME). */
  env: Env;
  /** Directory relative paths are resolved against. Default: the process's working directory. */
  cwd?: string;
  /** Clock for ages (`2m ago`) and deploy polling. Default: the system clock. */
  clock?: Clock;
  /** Input for `hangar run` (a terminal makes the run interactive). Default: none (empty input). */
  stdin?: TerminalInput;
  /** Signals of the CLI's process (`hangar run` passes Ctrl-C and window sizes on). Default: none. */
  signals?: SignalSource;
}

/** The CLI's stdin as `hangar run` uses it (`process.stdin`). */
export interface TerminalInput extends NodeJS.ReadableStream {
  isTTY?: boolean;
  setRawMode?(mode: boolean): unknown;
}

/** Where the CLI hears its process's signals (`process`). */
export interface SignalSource {
  on(signal: 'SIGINT' | 'SIGTERM' | 'SIGHUP' | 'SIGWINCH', listener: () => void): unknown;
  off(signal: 'SIGINT' | 'SIGTERM' | 'SIGHUP' | 'SIGWINCH', listener: () => void): unknown;
}

/** Handed to every command's registration function. */
export interface CliContext {
  readonly io: CliIo;
  readonly clock: Clock;
  /** Writes to stdout. */
  out(text: string): void;
  /** Writes to stderr. */
  err(text: string): void;
  /**
   * The API client for the configured coordinator, made on first use (so `hangar --help` and
   * input errors need no credentials). Throws with a sentence on how to log in when there are none.
   */
  client(): Promise<ApiClient>;
  /** Closes the client if one was made. Idempotent. */
  close(): Promise<void>;
  /** The exit code of a command that passes one through (`hangar run`); unset: 0 on success. */
  exitCode: number | undefined;
}

/** Builds the context of one CLI run. */
export function createContext(io: CliIo): CliContext {
  const clock = io.clock ?? systemClock;
  let client: Promise<ApiClient> | undefined;
  return {
    io,
    clock,
    exitCode: undefined,
    out: (text) => void io.stdout.write(text),
    err: (text) => void io.stderr.write(text),
    client() {
      // Loaded on first use: the server commands (`hangar agent`) never load the HTTP and websocket clients.
      client ??= resolveCredentials(io.env).then(async (credentials) => new (await import('../api-client.js')).ApiClient(credentials));
      return client;
    },
    async close() {
      if (!client) return;
      const made = client;
      client = undefined;
      try {
        await (await made).close();
      } catch {
        // No client was made (bad credentials): nothing to close.
      }
    },
  };
}

/** Options every app-scoped command has. */
export interface AppOptions {
  app?: string;
}

/** Adds `-a, --app <app>` to a command. */
export function withAppOption(command: Command): Command {
  return command.option('-a, --app <app>', 'the app (default: $HANGAR_APP)');
}

/** The file in a project folder (or a folder above it) that names its app: `app=NAME`. */
export const APP_FILE = '.hangar';

/**
 * The app named by a project's `.hangar` file (`app=shop`, `HANGAR_APP=shop`, or just `shop`;
 * `#` starts a comment) or by a `HANGAR_APP=` line of its `.env`, looked for in `dir` and then in
 * each folder above it; null when none names one.
 */
export function appFromProjectFiles(dir: string): string | null {
  for (let at = resolve(dir); ; at = dirname(at)) {
    for (const [file, bare] of [
      [APP_FILE, true],
      ['.env', false],
    ] as const) {
      let text: string;
      try {
        text = readFileSync(join(at, file), 'utf8');
      } catch {
        continue;
      }
      for (const raw of text.split('\n')) {
        const line = raw.replace(/#.*$/, '').trim();
        const m = /^(?:export\s+)?(app|HANGAR_APP)\s*[=:]\s*["']?([^"'\s]+)["']?$/.exec(line);
        if (m && (m[1] === 'HANGAR_APP' || bare)) return m[2] ?? null;
        if (bare && /^[a-z][a-z0-9-]*$/.test(line)) return line;
      }
    }
    if (dirname(at) === at) return null;
  }
}

/**
 * The app a command is about: `-a/--app`, else HANGAR_APP, else the project's `.hangar` file (see
 * {@link appFromProjectFiles}); a usage error (exit 2) when none names one.
 */
export function resolveApp(command: Command, ctx: CliContext): string {
  const { app } = command.opts<AppOptions>();
  const name = app ?? ctx.io.env.HANGAR_APP ?? (ctx.io.cwd === undefined ? null : appFromProjectFiles(ctx.io.cwd));
  if (!name) {
    return usageError(
      command,
      'No app given: pass -a APP or set HANGAR_APP, or write `app=APP` in a .hangar file in the project folder (`hangar apps` lists your apps)',
    );
  }
  return name;
}

/**
 * Runs an input parser at the edge: a `BAD_INPUT` {@link HangarError} it throws becomes a usage
 * error printed as `error: <message>` with exit code 2, before any request is sent.
 */
export function atEdge<T>(command: Command, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (isHangarError(err, 'BAD_INPUT')) return usageError(command, err.message);
    throw err;
  }
}

/**
 * Prints `error: <message>` and ends the run with exit code 2, as commander's own usage errors do
 * (but without the `--help` hint: these messages already say what to do).
 */
export function usageError(command: Command, message: string): never {
  const output = command.configureOutput();
  if (!output.writeErr) command.error(`error: ${message}`, { exitCode: 2, code: 'hangar.usage' });
  output.writeErr(`error: ${message}\n`);
  throw new CommanderError(2, 'hangar.usage', message);
}

/** Pauses between polls on the context's clock. */
export function pause(ctx: CliContext, ms: number): Promise<void> {
  return sleep(ms, ctx.clock);
}

/** A `BAD_INPUT` error, for parsers used with {@link atEdge}. */
export function badInput(message: string): HangarError {
  return new HangarError('BAD_INPUT', message);
}
