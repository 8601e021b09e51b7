/**
 * `hangar releases -a APP` and `hangar rollback [vN] -a APP`. A rollback is a new release with
 * an earlier release's build and config; the command follows its rollout like `hangar deploy`.
 */
import type { Command } from 'commander';
import { formatJson, formatTable, heading, timeAgo } from '../output.js';
import { atEdge, badInput, resolveApp, withAppOption, type CliContext } from './context.js';
import { followDeploy, timeoutOption } from './deploy.js';

/** Parses a release given as `v3` or `3` into its number; throws `BAD_INPUT` otherwise. */
export function parseReleaseVersion(input: string): number {
  const match = /^v?(\d{1,9})$/.exec(input);
  const version = match ? Number(match[1]) : Number.NaN;
  if (!(version >= 1)) {
    throw badInput(`"${input}" is not a release: write it as v3 (\`hangar releases\` lists them)`);
  }
  return version;
}

/** Registers `releases` and `rollback` on `program`. */
export function registerReleasesCommands(program: Command, ctx: CliContext): void {
  withAppOption(program.command('releases'))
    .description("list the app's releases, newest first")
    .option('--json', 'print the API objects as a JSON array')
    .action(async (options: { json?: boolean }, command: Command) => {
      const app = resolveApp(command, ctx);
      const releases = await (await ctx.client()).listReleases(app);
      if (options.json) return ctx.out(formatJson(releases));
      if (releases.length === 0) {
        return ctx.out(`${app} has no releases yet; deploy with \`hangar deploy -a ${app}\`.\n`);
      }
      const current = releases.find((release) => release.current);
      const now = ctx.clock.now();
      ctx.out(heading(`${app} Releases${current ? ` - Current: ${current.name}` : ''}`));
      ctx.out(
        formatTable(
          releases.map((release) => [
            release.name,
            release.description,
            release.status,
            release.createdBy,
            timeAgo(release.createdAt, now),
          ]),
        ),
      );
    });

  withAppOption(program.command('rollback'))
    .description('roll back to release vN (default: the previous one) as a new release')
    .argument('[release]', 'the release to go back to, e.g. v3')
    .addOption(timeoutOption())
    .action(async (target: string | undefined, options: { timeout: number }, command: Command) => {
      const app = resolveApp(command, ctx);
      const version = target === undefined ? undefined : atEdge(command, () => parseReleaseVersion(target));
      const client = await ctx.client();
      const { release, deploy } = await client.rollback(app, version);
      const to = version === undefined ? '' : ` to v${version}`;
      ctx.out(`Rolling back ${app}${to}... done, ${release.name} (${release.description})\n`);
      await followDeploy(ctx, client, app, deploy, { timeoutMs: options.timeout * 1000 });
    });
}
