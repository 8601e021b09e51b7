/**
 * The README's command table and `hangar --help` describe the same CLI: every command the program
 * has is in the table, every command in the table is in the program, and every flag a table row
 * spells is one its command takes.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Command } from 'commander';
import { registerServerCommands } from '../../cli/commands/server.js';
import { buildProgram } from '../../cli/main.js';

const ROOT = join(import.meta.dirname, '..', '..', '..');

/** Every command of the program by its full name (`addons:create`, `agent install`), with its long flags. */
function commandsOf(program: Command): Map<string, Set<string>> {
  const found = new Map<string, Set<string>>();
  const walk = (command: Command, prefix: string) => {
    for (const sub of command.commands) {
      if (sub.name() === 'help') continue;
      const name = prefix ? `${prefix} ${sub.name()}` : sub.name();
      // `run` reads its own flags (every other word is the command): its help lists them.
      const helped = [...sub.helpInformation().matchAll(/(?<![\w-])--[a-z][a-z0-9-]*/g)].map((m) => m[0]);
      found.set(name, new Set([...sub.options.map((o) => o.long).filter((l): l is string => Boolean(l)), ...helped]));
      walk(sub, name);
    }
  };
  walk(program, '');
  return found;
}

/** The command table's first column: each backquoted command of a row, with the flags it spells. */
async function tableCommands(known: Map<string, Set<string>>): Promise<{ row: string; name: string; flags: string[] }[]> {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
  const rows = readme.split('\n').filter((line) => line.startsWith('| `hangar '));
  const found: { row: string; name: string; flags: string[] }[] = [];
  for (const row of rows) {
    const first = row.split(/(?<!\\)\|/)[1] ?? '';
    let previous = '';
    for (const [, spelled] of first.matchAll(/`([^`]+)`/g)) {
      const words = (spelled ?? '').replace(/^hangar /, '').split(/\s+/);
      // `… --confirm NAME` repeats the command before it with other flags.
      let name = words[0] === '…' ? previous : (words[0] ?? '');
      // `agent install`: a subcommand is the longest known name the words start with.
      if (words[0] !== '…' && words[1] && known.has(`${name} ${words[1]}`)) name = `${name} ${words[1]}`;
      previous = name;
      const flags = [...spelled!.matchAll(/(?<![\w-])--[a-z][a-z0-9-]*/g)].map((m) => m[0]);
      found.push({ row: spelled!, name, flags });
    }
  }
  return found;
}

test('the README command table and hangar --help name the same commands and flags', async () => {
  const io = { stdout: { write: () => true }, stderr: { write: () => true }, env: {} };
  const commands = commandsOf(buildProgram(io, registerServerCommands));
  const table = await tableCommands(commands);
  assert.ok(table.length > 40, `only ${table.length} commands read from the README's table`);

  const unknown = table.filter((t) => !commands.has(t.name)).map((t) => t.row);
  assert.deepEqual(unknown, [], 'README rows naming a command hangar does not have');

  const inTable = new Set(table.map((t) => t.name));
  const missing = [...commands.keys()].filter((name) => !inTable.has(name));
  assert.deepEqual(missing, [], 'commands of hangar --help without a README row');

  const badFlags = table.flatMap((t) =>
    t.flags.filter((flag) => !commands.get(t.name)?.has(flag) && flag !== '--help').map((flag) => `${t.name} ${flag}`),
  );
  assert.deepEqual(badFlags, [], 'flags in the README its command does not take');
});
