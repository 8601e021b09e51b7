/**
 * Dashboard benchmark: how soon the first page is usable on the loopback, and the page weight.
 * A coordinator with `--apps` apps; Debian's Chromium (playwright-core) opens a one-time login
 * link in a fresh tab `--runs` times and waits until the overview lists every app. Then a reload
 * with the session already in the tab. Prints the medians beside the 1 s goal, and the bundle's
 * gzipped JavaScript beside its 150 KB budget. Figures, not a test.
 *
 *   npm run bench:dashboard [-- --apps 20 --runs 5]
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { pino } from 'pino';
import { startCoordinator } from '../coordinator/coordinator.js';
import { launchBrowser } from '../test/helpers/browser.js';

const GOAL_MS = 1000;
const BUDGET_BYTES = 150 * 1024;

const { values: args } = parseArgs({ options: { apps: { type: 'string', default: '20' }, runs: { type: 'string', default: '5' } } });
const apps = Number(args.apps);
const runs = Number(args.runs);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
};

const bundleDir = fileURLToPath(new URL('../dashboard/', import.meta.url));
let scriptGzip = 0;
for (const name of readdirSync(bundleDir)) {
  if (name.endsWith('.js')) scriptGzip += gzipSync(readFileSync(join(bundleDir, name)), { level: 9 }).length;
}

const dir = mkdtempSync(join(tmpdir(), 'hangar-bench-dashboard-'));
const coordinator = await startCoordinator(
  { dataDir: join(dir, 'coordinator'), httpPort: 0, httpHost: '127.0.0.1', grpcPort: 0, grpcHost: '127.0.0.1' },
  { logger: pino({ level: 'warn' }, pino.destination(2)) },
);
const browser = await launchBrowser();
try {
  const headers = { authorization: `Bearer ${coordinator.adminToken}`, 'content-type': 'application/json' };
  for (let i = 1; i <= apps; i++) {
    const res = await fetch(`${coordinator.url}/v1/apps`, { method: 'POST', headers, body: JSON.stringify({ name: `app-${i}` }) });
    if (res.status !== 201) throw new Error(`creating app-${i}: ${res.status}`);
  }
  const rowsShown = `tr[data-app="app-${apps}"]`;
  const cold: number[] = [];
  const warm: number[] = [];
  for (let r = 0; r < runs; r++) {
    const res = await fetch(`${coordinator.url}/v1/dashboard/login-links`, {
      method: 'POST',
      headers: { authorization: headers.authorization },
    });
    const { link } = (await res.json()) as { link: { path: string } };
    const page = await browser.context.newPage();
    await page.goto(`${coordinator.url}${link.path}`);
    await page.locator(rowsShown).waitFor({ timeout: 30_000 });
    cold.push(await page.evaluate(() => performance.now()));
    await page.reload();
    await page.locator(rowsShown).waitFor({ timeout: 30_000 });
    warm.push(await page.evaluate(() => performance.now()));
    await page.close();
  }
  const verdict = (ms: number) => (ms <= GOAL_MS ? 'met' : 'missed');
  const c = median(cold);
  const w = median(warm);
  console.log(`dashboard, ${apps} apps, median of ${runs} runs on the loopback (navigation start -> every app listed):`);
  console.log(`  first page usable, with a login link: ${c.toFixed(0).padStart(5)} ms   goal ${GOAL_MS} ms: ${verdict(c)}`);
  console.log(`  first page usable, reload in session: ${w.toFixed(0).padStart(5)} ms   goal ${GOAL_MS} ms: ${verdict(w)}`);
  console.log(
    `  JavaScript, gzipped:                  ${(scriptGzip / 1024).toFixed(1).padStart(5)} KB   budget ${BUDGET_BYTES / 1024} KB: ${scriptGzip <= BUDGET_BYTES ? 'met' : 'missed'}`,
  );
} finally {
  await browser.close();
  await coordinator.close();
  rmSync(dir, { recursive: true, force: true });
}
