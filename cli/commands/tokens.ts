/**
 * `hangar tokens`, `tokens:create --scope read|deploy|admin [--name N]`, `tokens:revoke ID`:
 * API tokens. A token is shown once, when created; the coordinator keeps only its hash.
 */
import { Option, type Command } from 'commander';
import type { TokenScopeName } from '../../common/api-types.js';
import { formatJson, formatTable, heading } from '../output.js';
import { atEdge, badInput, type CliContext } from './context.js';

const SCOPES: readonly TokenScopeName[] = ['read', 'deploy', 'admin'];

/** Registers the token commands on `program`. */
export function registerTokensCommands(program: Command, ctx: CliContext): void {
  program
    .command('tokens')
    .description('list the API tokens (never the tokens themselves)')
    .option('--json', 'print the API objects as a JSON array')
    .action(async (options: { json?: boolean }) => {
      const tokens = await (await ctx.client()).listTokens();
      if (options.json) return ctx.out(formatJson(tokens));
      ctx.out(heading('API tokens'));
      ctx.out(
        formatTable(
          tokens.map((t) => [t.id, t.scope, t.name, t.createdAt]),
          ['ID', 'SCOPE', 'NAME', 'CREATED'],
        ),
      );
    });

  program
    .command('tokens:create')
    .description('create an API token: read (look), deploy (also deploy, config, scale), admin (everything)')
    .addOption(new Option('--scope <scope>', 'what the token may do').choices(SCOPES).makeOptionMandatory())
    .option('--name <name>', 'a label shown in `hangar tokens`')
    .option('--json', 'print the API object (with the token) as JSON')
    .action(async (options: { scope: TokenScopeName; name?: string; json?: boolean }, command: Command) => {
      atEdge(command, () => {
        if (options.name !== undefined && !/^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,62}$/.test(options.name)) {
          throw badInput('--name must be 1-63 letters, digits, spaces, dots, dashes, underscores or @');
        }
      });
      const created = await (await ctx.client()).createToken(options.scope, options.name);
      if (options.json) return ctx.out(formatJson(created));
      ctx.out(
        `Created ${created.id} (${created.scope}). This is the only time the token is shown; keep it somewhere safe:\n` +
          `${created.token}\n`,
      );
    });

  program
    .command('tokens:revoke')
    .description('revoke an API token at once')
    .argument('<id>', 'the token id (tok_...), from `hangar tokens`')
    .action(async (id: string) => {
      await (await ctx.client()).revokeToken(id);
      ctx.out(`Revoked ${id}.\n`);
    });
}
