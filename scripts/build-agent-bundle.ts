/**
 * Bundles the CLI for `hangar agent` with esbuild into `dist/bundle/`: `hangar.js` and the chunks
 * of what it imports on demand (the agent's own code is one of them). bin/hangar.js loads it for
 * the `agent` command only; every other command runs dist/ as tsc wrote it.
 *
 * Why: an agent runs on every server for months, and most of its resident memory at start is
 * module loading — ~200 files of Hangar, gRPC, protobufjs, pino and commander, each with its
 * source text, module record and loader bookkeeping. One minified file per chunk holds the same
 * code in ~13 MB less (bench/agent-footprint.ts). Identifiers are kept (no renaming), so stack
 * traces in the agent's log still name the functions; the source maps beside the chunks map the
 * lines back to the TypeScript.
 *
 * Packages with native parts or files of their own found at run time (better-sqlite3, node-pty,
 * pg-native, tar, …) stay external: they are loaded from node_modules as before, and only when used.
 *
 *   node dist/scripts/build-agent-bundle.js       (run by `npm run build`)
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('../../', import.meta.url));
const out = join(root, 'dist', 'bundle');

/** Bundled: what the agent loads at start. Every other dependency is left external. */
const BUNDLED = new Set(['@grpc/grpc-js', '@grpc/proto-loader', 'pino', 'commander']);

const manifest = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
const external = Object.keys(manifest.dependencies).filter((name) => !BUNDLED.has(name));

await rm(out, { recursive: true, force: true });
const result = await build({
  entryPoints: [join(root, 'dist', 'cli', 'hangar.js')],
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: 'linked',
  outdir: out,
  chunkNames: 'chunk-[hash]',
  external,
  metafile: true,
  legalComments: 'none',
  logLevel: 'warning',
  // The CommonJS packages inside (gRPC, protobufjs, pino) call require() for Node's built-ins and
  // read __dirname; an ES module has neither.
  banner: {
    js: [
      "import { createRequire as __hangarRequire } from 'node:module';",
      "import { dirname as __hangarDirname } from 'node:path';",
      "import { fileURLToPath as __hangarPath } from 'node:url';",
      'const require = __hangarRequire(import.meta.url);',
      'const __filename = __hangarPath(import.meta.url);',
      'const __dirname = __hangarDirname(__filename);',
    ].join('\n'),
  },
});
const bytes = Object.entries(result.metafile.outputs)
  .filter(([name]) => name.endsWith('.js'))
  .reduce((sum, [, o]) => sum + o.bytes, 0);
console.log(
  `agent bundle: ${Object.keys(result.metafile.outputs).filter((n) => n.endsWith('.js')).length} files, ${(bytes / 1024).toFixed(0)} KB in dist/bundle/`,
);
