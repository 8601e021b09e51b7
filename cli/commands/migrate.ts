/**
 * `hangar coordinator migrate --from FILE --to URL`: copies a stopped coordinator's SQLite file
 * into PostgreSQL (coordinator/store/migrate-database.ts), with progress per table on stderr and
 * a summary (or `--json`) on stdout. The URL's password is never printed.
 */
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import type { MigrateResult } from '../../coordinator/store/migrate-database.js';
import { formatJson, formatTable } from '../output.js';
import { usageError, type CliContext } from './context.js';

interface MigrateFlags {
  from?: string;
  to?: string;
  json?: boolean;
}

/** Progress lines are printed at most every this many rows of one table (and when it is done). */
const PROGRESS_EVERY_ROWS = 100_000;

/** The `--json` object: the result with the target's URL masked. */
export function migrateJson(result: MigrateResult, maskedUrl: string): Record<string, unknown> {
  return {
    to: maskedUrl,
    tables: result.tables,
    rows: result.rows,
    seconds: Math.round(result.seconds * 1000) / 1000,
    skipped: result.skipped,
    droppedColumns: result.droppedColumns,
  };
}

/** The summary for people: counts per table, totals, and what to do next. */
export function migrateSummary(result: MigrateResult, options: { from: string; maskedUrl: string }): string {
  const dataDir = dirname(options.from);
  const rows = result.tables.map((t) => [t.table, String(t.sqliteRows), String(t.postgresRows), t.keysChecked ? 'keys match' : '']);
  const skipped = result.skipped.map((s) => `  ${s.table}: ${s.reason}\n`).join('');
  const dropped =
    result.droppedColumns.length === 0
      ? ''
      : `Columns PostgreSQL does not have (left out): ${result.droppedColumns.map((c) => `${c.table}.${c.column}`).join(', ')}\n`;
  return (
    formatTable(rows, ['Table', 'SQLite', 'PostgreSQL', 'Checked']) +
    (skipped === '' ? '' : `Not copied:\n${skipped}`) +
    dropped +
    `\nCopied ${result.rows} rows of ${result.tables.length} tables into ${options.maskedUrl} in ${result.seconds.toFixed(1)} s; ` +
    `${options.from} is unchanged.\n` +
    `Config values, add-on passwords and certificate keys are still sealed with ${join(dataDir, 'secret-key')}: ` +
    `copy that file to the --data-dir of every coordinator that will use this database.\n` +
    `The log grep index (log-search.db) is not copied; it is derived from the log lines.\n` +
    `next: hangar coordinator --data-dir ${dataDir} --database-url ${options.maskedUrl}` +
    (options.maskedUrl.includes('****') ? '  (with the password in place of ****, or set HANGAR_DATABASE_URL)\n' : '\n')
  );
}

/** Registers `migrate` under `coordinator`. */
export function registerMigrateCommand(coordinator: Command, ctx: CliContext): void {
  coordinator
    .command('migrate')
    .description("copy a stopped coordinator's SQLite state into an empty PostgreSQL database (the SQLite file is left as it is)")
    .option('--from <file>', "the coordinator's SQLite file, e.g. /var/lib/hangar/hangar.db")
    .option('--to <url>', 'the empty PostgreSQL database, postgres://user:password@host/db (or HANGAR_DATABASE_URL)')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      '\nStop the coordinator first; agents keep running their apps meanwhile. Then start it with\n' +
        '--database-url on the same --data-dir (its secret-key opens the copied config values).',
    )
    .action(async (flags: MigrateFlags, command: Command) => {
      if (!flags.from) return usageError(command, "Give --from FILE: the coordinator's SQLite file (DATA_DIR/hangar.db).");
      const to = flags.to ?? ctx.io.env.HANGAR_DATABASE_URL;
      if (!to)
        return usageError(
          command,
          'Give --to postgres://user:password@host/db (or set HANGAR_DATABASE_URL): an empty PostgreSQL database.',
        );
      // Loaded on demand: other commands (`hangar agent`) never load the store's modules.
      const { maskDatabaseUrl, migrateSqliteToPostgres } = await import('../../coordinator/store/migrate-database.js');
      const { isPostgresUrl } = await import('../../coordinator/store/sql.js');
      const maskedUrl = maskDatabaseUrl(to);
      if (!isPostgresUrl(to))
        return usageError(command, `--to must be a postgres:// URL (postgres://user:password@host/db), not "${maskedUrl}".`);
      const from = resolve(ctx.io.cwd ?? '.', flags.from);
      ctx.err(`Copying ${from} into ${maskedUrl}…\n`);
      const printed = new Map<string, number>();
      const result = migrateSqliteToPostgres({
        from,
        to,
        onProgress: ({ table, copied, total }) => {
          const last = printed.get(table) ?? -1;
          if (copied === total || copied - Math.max(0, last) >= PROGRESS_EVERY_ROWS) {
            if (copied === last) return;
            printed.set(table, copied);
            ctx.err(`  ${table}: ${copied === total ? `${total} row${total === 1 ? '' : 's'}` : `${copied} of ${total} rows…`}\n`);
          }
        },
      });
      ctx.out(flags.json ? formatJson(migrateJson(result, maskedUrl)) : migrateSummary(result, { from, maskedUrl }));
    });
}
