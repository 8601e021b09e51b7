/**
 * `hangar login --url URL --token TOKEN`, `hangar logout`, `hangar whoami`: the credentials file
 * the other commands fall back to when HANGAR_URL/HANGAR_TOKEN are not set.
 */
import type { Command } from 'commander';
import { HangarError, isHangarError } from '../../common/errors.js';
import {
  credentialsPath,
  parseCoordinatorUrl,
  parseToken,
  removeCredentials,
  resolveCredentials,
  writeCredentials,
} from '../credentials.js';
import { formatJson } from '../output.js';
import { atEdge, type CliContext } from './context.js';

/** Registers `login`, `logout` and `whoami` on `program`. */
export function registerLoginCommands(program: Command, ctx: CliContext): void {
  program
    .command('login')
    .description('check a coordinator URL and token, and save them for the other commands')
    .requiredOption('--url <url>', "the coordinator's HTTP API, e.g. http://10.0.0.5:7080")
    .requiredOption('--token <token>', 'the admin token (DATA_DIR/admin-token on the coordinator)')
    .action(async (options: { url: string; token: string }, command: Command) => {
      const credentials = atEdge(command, () => ({ url: parseCoordinatorUrl(options.url), token: parseToken(options.token) }));
      const { ApiClient } = await import('../api-client.js');
      const client = new ApiClient(credentials);
      try {
        await client.listApps();
      } catch (err) {
        if (isHangarError(err, 'UNAUTHORIZED') || isHangarError(err, 'FORBIDDEN')) {
          throw new HangarError(
            'UNAUTHORIZED',
            `The coordinator at ${credentials.url} refused the token; copy it again from DATA_DIR/admin-token (or from \`hangar dev\`'s output)`,
            { cause: err },
          );
        }
        throw err;
      } finally {
        await client.close();
      }
      const path = credentialsPath(ctx.io.env);
      await writeCredentials(path, credentials, { ownDirectory: !ctx.io.env.HANGAR_CREDENTIALS });
      ctx.out(`Logged in to ${credentials.url}; credentials saved in ${path}\n`);
      if (ctx.io.env.HANGAR_URL || ctx.io.env.HANGAR_TOKEN) {
        ctx.err('warning: HANGAR_URL/HANGAR_TOKEN are set and take precedence over the saved credentials; unset them to use these\n');
      }
    });

  program
    .command('logout')
    .description('delete the saved credentials')
    .action(async () => {
      const path = credentialsPath(ctx.io.env);
      const removed = await removeCredentials(path);
      ctx.out(removed ? `Logged out: removed ${path}\n` : `Not logged in: there is no ${path}\n`);
      if (ctx.io.env.HANGAR_URL || ctx.io.env.HANGAR_TOKEN) {
        ctx.err('warning: HANGAR_URL/HANGAR_TOKEN are still set in your environment and still apply\n');
      }
    });

  program
    .command('whoami')
    .description('show which coordinator the commands talk to, and check the token')
    .option('--json', 'print {url, version, source, path}')
    .action(async (options: { json?: boolean }) => {
      const credentials = await resolveCredentials(ctx.io.env);
      const client = await ctx.client();
      const health = await client.health();
      // Health needs no token: listing apps is what proves the token works.
      await client.listApps();
      if (options.json) {
        return ctx.out(
          formatJson({ url: credentials.url, version: health.version, source: credentials.source, path: credentials.path ?? null }),
        );
      }
      const from = credentials.source === 'env' ? 'HANGAR_URL and HANGAR_TOKEN' : (credentials.path ?? 'the credentials file');
      ctx.out(`Logged in to ${credentials.url} (coordinator ${health.version}); credentials from ${from}\n`);
    });
}
