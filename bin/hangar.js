#!/usr/bin/env node
// The one `hangar` binary: a thin shim over the compiled CLI (run `npm run build` first).
import { setFlagsFromString } from 'node:v8';

const SERVER_COMMANDS = new Set(['coordinator', 'agent', 'dev']);
if (process.argv[2] === 'agent') {
  // The agent's allocations are small and short-lived (log lines, heartbeats, relayed chunks): a
  // young generation kept at its first size (1 MiB semi-spaces) instead of growing to 16 MiB ones
  // saves ~30 MB of resident memory for more, smaller scavenges (bench/agent-footprint.ts). Set
  // before any module loads: it only stops growth, it never shrinks what grew.
  setFlagsFromString('--semi-space-growth-factor=1');
}
// The agent runs from its bundle (scripts/build-agent-bundle.ts): the same code in one file per
// chunk, ~13 MB less resident memory than ~200 modules loaded one by one.
const entry = process.argv[2] === 'agent' ? '../dist/bundle/hangar.js' : '../dist/cli/hangar.js';
const { run } = await import(entry).catch((err) => {
  if (err?.code !== 'ERR_MODULE_NOT_FOUND' || !String(err.message).includes(entry.slice(3))) throw err;
  process.stderr.write(
    `hangar: ${entry.slice(3)} is missing: build Hangar first with \`npm run build\` (in ${new URL('..', import.meta.url).pathname}).\n`,
  );
  process.exit(1);
});
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code !== 'EPIPE') throw err;
    // The reader went away (`hangar logs | head`): stop quietly, as Unix tools do. A server keeps
    // running (its apps must not stop because a terminal closed); its output is lost, not fatal.
    if (!SERVER_COMMANDS.has(process.argv[2] ?? '')) process.exit(process.exitCode ?? 0);
  });
}

process.exitCode = await run(process.argv);
