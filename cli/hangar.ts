/**
 * Entry of the `hangar` binary: the user commands of {@link main} plus the server commands
 * (`coordinator`, `agent`, `dev`).
 */
import { main } from './main.js';
import { registerServerCommands } from './commands/server.js';

/** Runs `hangar` with `argv` (like `process.argv`) and returns the exit code. */
export function run(argv: string[]): Promise<number> {
  return main(argv, undefined, registerServerCommands);
}
