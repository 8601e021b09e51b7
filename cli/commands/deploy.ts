/**
 * `hangar deploy [DIR] -a APP`: packs the source, uploads it, and follows the build, release
 * phase and rollout until the new release is healthy (exit 0) or the deploy failed (exit 1).
 * {@link followDeploy} is shared with `config:set` and `rollback`, which start deploys too.
 */
import { resolve } from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import type { DeployView } from '../../common/api-types.js';
import { HangarError, isHangarError, type ErrorCode } from '../../common/errors.js';
import type { ApiClient } from '../api-client.js';
import { formatBytes } from '../output.js';
import { createSourceArchive } from '../source-archive.js';
import { atEdge, pause, resolveApp, withAppOption, type CliContext } from './context.js';

/** Default of `--timeout`, in seconds. */
export const DEFAULT_DEPLOY_TIMEOUT_S = 900;

/** Time between two polls of a deploy, in ms. */
export const DEPLOY_POLL_INTERVAL_MS = 300;

/** Options of {@link followDeploy}. */
export interface FollowOptions {
  /** The app's URL for the final line; fetched when omitted. */
  url?: string;
  /** Give up after this long, in ms (the deploy itself goes on). */
  timeoutMs: number;
  /** Time between polls, in ms. Default: {@link DEPLOY_POLL_INTERVAL_MS}. */
  intervalMs?: number;
  /** Fetches the next view (lines after `after`). Default: `GET /v1/apps/APP/deploys/ID`. */
  poll?: (id: string, after: number) => Promise<DeployView>;
  /** The last line printed on success. Default: `-----> vN deployed: URL`. */
  doneLine?: (view: DeployView, url: string) => string;
}

/**
 * Prints a deploy's output lines as they come, polling `GET /v1/apps/APP/deploys/ID?after=N`,
 * then `-----> vN deployed: URL` when it succeeded. Throws a {@link HangarError} with
 * the deploy's error when it failed, and one saying how to check on it when `timeoutMs` passed.
 * A coordinator that is briefly unreachable is polled again until the deadline.
 */
export async function followDeploy(
  ctx: CliContext,
  client: ApiClient,
  app: string,
  first: DeployView,
  options: FollowOptions,
): Promise<DeployView> {
  const interval = options.intervalMs ?? DEPLOY_POLL_INTERVAL_MS;
  const deadline = ctx.clock.now() + options.timeoutMs;
  let deploy = first;
  let after = 0;
  let warnedUnreachable = false;
  for (;;) {
    for (const line of deploy.lines) {
      if (line.seq > after) ctx.out(`${line.line}\n`);
    }
    after = Math.max(after, deploy.next);
    if (deploy.status === 'succeeded' || deploy.status === 'failed') break;
    if (ctx.clock.now() >= deadline) {
      throw new HangarError(
        'ROLLOUT_IN_PROGRESS',
        `Gave up waiting after ${options.timeoutMs / 1000} s, but deploy ${deploy.id} goes on; ` +
          `check it with \`hangar releases -a ${app}\` and \`hangar ps -a ${app}\``,
      );
    }
    await pause(ctx, interval);
    try {
      deploy = await (options.poll ?? ((id, n) => client.getDeploy(app, id, n)))(deploy.id, after);
      warnedUnreachable = false;
    } catch (err) {
      // The coordinator restarting, or (with several) an election going on: the deploy goes on.
      if (!isHangarError(err, 'UNREACHABLE') && !isHangarError(err, 'NOT_LEADER')) throw err;
      if (!warnedUnreachable) ctx.err(`warning: ${err.message}; still trying\n`);
      warnedUnreachable = true;
      deploy = { ...deploy, lines: [] };
    }
  }

  if (deploy.status === 'failed') {
    throw new HangarError(
      (deploy.errorCode ?? 'INTERNAL') as ErrorCode,
      deploy.error ?? `Deploy ${deploy.id} failed; see \`hangar releases -a ${app}\``,
    );
  }
  const url = options.url ?? (await client.getApp(app)).url;
  ctx.out(options.doneLine ? `${options.doneLine(deploy, url)}\n` : `-----> ${deploy.release ?? 'release'} deployed: ${url}\n`);
  return deploy;
}

/** Parses `--timeout SECONDS`: a positive number. */
export function parseTimeoutSeconds(value: string): number {
  const seconds = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value) || !(seconds > 0)) {
    throw new InvalidArgumentError('Give a number of seconds greater than 0, e.g. --timeout 600.');
  }
  return seconds;
}

/** The `--timeout` option of every command that waits for a deploy. */
export function timeoutOption(): Option {
  return new Option('--timeout <seconds>', 'stop waiting after this many seconds (the deploy goes on)')
    .default(DEFAULT_DEPLOY_TIMEOUT_S)
    .argParser(parseTimeoutSeconds);
}

/** Registers `deploy` on `program`. */
export function registerDeployCommands(program: Command, ctx: CliContext): void {
  withAppOption(program.command('deploy'))
    .description(
      'upload DIR, build it (Python from runtime.txt/.python-version), run the release phase (app.json predeploy, release:), roll it out, then the app.json postdeploy scripts; exits 0 only when all succeeded',
    )
    .argument('[dir]', "the app's source folder", '.')
    .addOption(timeoutOption())
    .action(async (dir: string, options: { timeout: number }, command: Command) => {
      const app = resolveApp(command, ctx);
      const source = resolve(ctx.io.cwd ?? '.', dir);
      // A missing or empty folder is bad input: exit 2 before any request.
      const archive = await atEdgeAsync(command, () => createSourceArchive(source));
      const client = await ctx.client();
      // Asking for the app before uploading fails fast on an unknown app or a bad token.
      const { url } = await client.getApp(app);
      ctx.out(`-----> Uploading ${formatBytes(archive.data.length)}\n`);
      const deploy = await client.createBuild(app, archive.data);
      await followDeploy(ctx, client, app, deploy, { url, timeoutMs: options.timeout * 1000 });
    });
}

async function atEdgeAsync<T>(command: Command, make: () => Promise<T>): Promise<T> {
  try {
    return await make();
  } catch (err) {
    return atEdge(command, () => {
      throw err;
    });
  }
}
