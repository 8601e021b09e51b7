#!/usr/bin/env node
// The one `hangar` binary: a thin shim over the compiled CLI (run `npm run build` first).
import { run } from '../dist/cli/hangar.js';

const SERVER_COMMANDS = new Set(['coordinator', 'agent', 'dev']);
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code !== 'EPIPE') throw err;
    // The reader went away (`hangar logs | head`): stop quietly, as Unix tools do. A server keeps
    // running (its apps must not stop because a terminal closed); its output is lost, not fatal.
    if (!SERVER_COMMANDS.has(process.argv[2] ?? '')) process.exit(process.exitCode ?? 0);
  });
}

process.exitCode = await run(process.argv);
