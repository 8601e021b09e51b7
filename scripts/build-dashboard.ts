/**
 * Bundles the dashboard (`dashboard/`, Preact + uPlot) with esbuild into `dist/dashboard/`: one
 * hashed script, one hashed stylesheet, an icon and `index.html`, which the coordinator serves
 * itself (no CDN). Prints the gzipped sizes and fails when the script is over its budget.
 *
 *   node dist/scripts/build-dashboard.js       (run by `npm run build`)
 */
import { mkdir, readdir, readFile, rm, writeFile, copyFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

/** The budget of issue 14: the dashboard's JavaScript, gzipped. */
export const SCRIPT_BUDGET_BYTES = 150 * 1024;

const root = fileURLToPath(new URL('../../', import.meta.url));
const source = join(root, 'dashboard');
const out = join(root, 'dist', 'dashboard');

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const result = await build({
  entryPoints: [join(source, 'main.tsx')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  outdir: out,
  entryNames: 'app-[hash]',
  metafile: true,
  legalComments: 'none',
  logLevel: 'warning',
  define: { 'process.env.NODE_ENV': '"production"' },
});
const files = Object.keys(result.metafile.outputs).map((f) => basename(f));
const script = files.find((f) => f.endsWith('.js'));
const style = files.find((f) => f.endsWith('.css'));
if (!script || !style) throw new Error(`esbuild made no script or stylesheet: ${files.join(', ')}`);
await copyFile(join(source, 'icon.svg'), join(out, 'icon.svg'));
const template = await readFile(join(source, 'index.html'), 'utf8');
await writeFile(join(out, 'index.html'), template.replace('{{script}}', `/assets/${script}`).replace('{{style}}', `/assets/${style}`));

let scriptGzip = 0;
for (const name of await readdir(out)) {
  const body = await readFile(join(out, name));
  const gz = gzipSync(body, { level: 9 }).length;
  if (name.endsWith('.js')) scriptGzip += gz;
  console.log(
    `dashboard: ${name.padEnd(24)} ${(body.length / 1024).toFixed(1).padStart(6)} KB, ${(gz / 1024).toFixed(1).padStart(5)} KB gzipped`,
  );
}
const verdict = scriptGzip <= SCRIPT_BUDGET_BYTES ? 'within' : 'OVER';
console.log(`dashboard: JavaScript ${(scriptGzip / 1024).toFixed(1)} KB gzipped, ${verdict} the ${SCRIPT_BUDGET_BYTES / 1024} KB budget`);
if (scriptGzip > SCRIPT_BUDGET_BYTES) process.exitCode = 1;
