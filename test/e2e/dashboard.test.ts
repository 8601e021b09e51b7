/**
 * The web dashboard in real Chromium against a real fleet: one-time login link, overview, scale
 * with the control, rollback with the button, live logs, error groups, charts, deploy by drop and
 * by folder, what a read token sees (and that the API refuses it anyway), CSP and no CORS.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import type { ReleaseView } from '../../common/api-types.js';
import { createSourceArchive } from '../../cli/source-archive.js';
import { launchBrowser, SCREENSHOT_DIR } from '../helpers/browser.js';
import { FIXTURES, startCluster, waitFor, type Cluster } from '../helpers/cluster.js';
import { deployFixture, ps } from '../helpers/deploy-fixture.js';

/**
 * The browser globals the callbacks run in the page use (this Node program has no DOM types;
 * each callback casts `globalThis` itself, since it is sent to the page as source).
 */
interface PageElement {
  tagName: string;
  className: string;
  getBoundingClientRect(): { right: number };
}

interface PageGlobals {
  sessionStorage: { getItem(key: string): string | null };
  localStorage: { length: number };
  document: {
    body: unknown;
    activeElement: { textContent: string | null } | null;
    documentElement: { scrollWidth: number };
    querySelector(selector: string): { dispatchEvent(event: unknown): boolean } | null;
    querySelectorAll(selector: string): Iterable<PageElement>;
  };
  innerWidth: number;
  getComputedStyle(element: unknown): { backgroundColor: string };
  DataTransfer: new () => { items: { add(file: unknown): void } };
  DragEvent: new (type: string, init: unknown) => unknown;
  File: new (parts: unknown[], name: string, options: unknown) => unknown;
  atob(text: string): string;
}

/** Page errors and CSP violations seen on a page: both must stay empty. */
function watch(page: Page): string[] {
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 40[13]/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  return problems;
}

async function shot(page: Page, name: string): Promise<void> {
  await mkdir(SCREENSHOT_DIR, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`), fullPage: true });
}

async function releases(cluster: Cluster, app: string): Promise<ReleaseView[]> {
  const res = await cluster.cli(['releases', '-a', app, '--json']);
  assert.equal(res.code, 0, res.stderr);
  return JSON.parse(res.stdout) as ReleaseView[];
}

test(
  'dashboard: login link, overview, scale, rollback, live logs, errors, charts, deploy by drop, read scope',
  { timeout: 900_000 },
  async (t) => {
    const cluster = await startCluster(t, { agents: 1, coordinator: { metricsIntervalMs: 1000 } });
    const agent = cluster.agents[0];
    assert.ok(agent);
    const base = cluster.coordinator.url;
    await deployFixture(cluster, 'shop');
    // A second release to roll back from.
    const set = await cluster.cli(['config:set', 'GREETING=hello', '-a', 'shop'], { timeoutMs: 300_000 });
    assert.equal(set.code, 0, set.stderr);

    // The page is public and locked down; the API stays closed to other origins.
    const index = await fetch(`${base}/`, { headers: { origin: 'http://evil.example' } });
    assert.equal(index.status, 200);
    const csp = index.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/, 'no inline scripts');
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.equal(index.headers.get('access-control-allow-origin'), null);
    const html = await index.text();
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, 'every script is a file');
    const preflight = await fetch(`${base}/v1/apps`, {
      method: 'OPTIONS',
      headers: { origin: 'http://evil.example', 'access-control-request-method': 'GET' },
    });
    assert.equal(preflight.headers.get('access-control-allow-origin'), null);
    assert.equal((await fetch(`${base}/v1/apps`)).status, 401, 'data needs a token');

    // hangar dashboard prints the URL and a one-time link.
    const printed = await cluster.cli(['dashboard']);
    assert.equal(printed.code, 0, printed.stderr);
    assert.match(printed.stdout, new RegExp(`^Dashboard: ${base}/\\n`));
    assert.match(printed.stdout, /#login=hgr_login_/);
    const linkRes = await cluster.cli(['dashboard', '--json']);
    assert.equal(linkRes.code, 0, linkRes.stderr);
    const link = JSON.parse(linkRes.stdout) as { url: string; loginUrl: string; expiresAt: string };
    assert.equal(link.url, `${base}/`);
    assert.ok(Date.parse(link.expiresAt) - Date.now() <= 61_000, 'short-lived');

    const browser = await launchBrowser();
    try {
      const page = await browser.context.newPage();
      const problems = watch(page);

      // Log in with the link: the code leaves the URL, the session lives in sessionStorage only.
      await page.goto(link.loginUrl);
      const row = page.locator('tr[data-app="shop"]');
      await row.waitFor({ timeout: 15_000 });
      assert.doesNotMatch(page.url(), /login=/);
      const stored = await page.evaluate(() => {
        const w = globalThis as unknown as PageGlobals;
        return { session: w.sessionStorage.getItem('hangar.session'), local: w.localStorage.length };
      });
      assert.equal(stored.local, 0);
      const sessionToken = (JSON.parse(stored.session ?? '{}') as { token?: string }).token ?? '';
      assert.match(sessionToken, /^hgr_sess_/);
      await waitFor('the overview to show shop up on v2', async () => (await row.innerText()).match(/up[\s\S]*v2[\s\S]*web=1/), 15_000);
      assert.match(await page.locator('tr[data-agent="agent-1"]').innerText(), /agent-1\s+up/);
      await shot(page, 'overview');

      // The link worked once: again, it is refused.
      const again = await browser.context.newPage();
      await again.goto(link.loginUrl);
      await again.getByText(/used already or has expired/).waitFor({ timeout: 10_000 });
      assert.equal(await again.evaluate(() => (globalThis as unknown as PageGlobals).sessionStorage.getItem('hangar.session')), null);
      await again.close();

      // Keyboard: the first Tab reaches the skip link.
      await page.keyboard.press('Tab');
      assert.equal(
        await page.evaluate(() => (globalThis as unknown as PageGlobals).document.activeElement?.textContent),
        'Skip to content',
      );

      // App page: scale web 1 -> 2 with the control and watch web.2 come up.
      await page.getByRole('link', { name: 'shop', exact: true }).click();
      const quantity = page.getByLabel('web instances');
      await quantity.waitFor({ timeout: 10_000 });
      assert.equal(await quantity.inputValue(), '1');
      await page.getByRole('button', { name: 'One web more' }).click();
      await page.locator('li[data-type="web"]').getByRole('button', { name: 'Scale' }).click();
      await page.locator('tr[data-instance="web.2"][data-state="up"]').waitFor({ timeout: 120_000 });
      assert.equal((await ps(cluster, 'shop')).filter((r) => r.type === 'web' && r.state === 'up').length, 2);

      // Config values are masked until clicked.
      const greeting = page.locator('[data-key="GREETING"] button');
      assert.equal(await greeting.innerText(), '••••••••');
      await greeting.click();
      assert.equal(await greeting.innerText(), 'hello');
      await shot(page, 'app');

      // Rollback: Enter opens the confirmation, Esc cancels it, then confirm.
      const rollbackButton = page.getByRole('button', { name: 'Roll back to v1' });
      await rollbackButton.focus();
      await page.keyboard.press('Enter');
      const dialog = page.getByRole('dialog');
      await dialog.waitFor({ timeout: 5000 });
      await page.keyboard.press('Escape');
      await dialog.waitFor({ state: 'hidden', timeout: 5000 });
      assert.equal((await releases(cluster, 'shop'))[0]?.name, 'v2', 'cancelling does nothing');
      await rollbackButton.click();
      await dialog.getByRole('button', { name: 'Roll back to v1' }).click();
      await page.locator('.deploy[data-status="succeeded"]').waitFor({ timeout: 180_000 });
      const afterRollback = await releases(cluster, 'shop');
      assert.equal(afterRollback[0]?.name, 'v3');
      assert.equal(afterRollback[0]?.description, 'Rollback to v1');
      assert.equal(afterRollback[0]?.current, true);
      await page.locator('tr[data-release="v3"].current').waitFor({ timeout: 10_000 });

      // Live logs: a request's router line shows up within a second or two.
      await page.getByRole('link', { name: 'Logs' }).click();
      await page.locator('[data-stream="live"]').waitFor({ timeout: 10_000 });
      const probe = `probe-${Date.now()}`;
      const sent = Date.now();
      assert.equal((await cluster.get(agent, 'shop', `/?${probe}`)).status, 200);
      await page.locator('.log .line', { hasText: probe }).first().waitFor({ timeout: 10_000 });
      const latency = Date.now() - sent;
      assert.ok(latency < 2000, `the live line took ${latency} ms`);

      // Text filter (server-side) and pause.
      await page.getByLabel('Text').fill(probe);
      await page.getByRole('button', { name: 'Filter' }).click();
      await page.locator('[data-stream="live"]').waitFor({ timeout: 10_000 });
      await waitFor('only matching lines', async () => {
        const texts = await page.locator('.log .line').allInnerTexts();
        return texts.length > 0 && texts.every((l) => l.includes(probe));
      });
      await page.getByRole('button', { name: 'Pause' }).click();
      const shown = await page.locator('.log .line').count();
      assert.equal((await cluster.get(agent, 'shop', `/?${probe}-paused`)).status, 200);
      await page.getByRole('button', { name: /^Resume \(\d+ new\)$/ }).waitFor({ timeout: 10_000 });
      assert.equal(await page.locator('.log .line').count(), shown, 'paused: nothing added');
      await page.getByRole('button', { name: /^Resume/ }).click();
      await page
        .locator('.log .line', { hasText: `${probe}-paused` })
        .first()
        .waitFor({ timeout: 5000 });
      await page.getByLabel('Text').fill('');
      await page.getByRole('button', { name: 'Filter' }).click();

      // An exception: its log line opens its group.
      for (let i = 0; i < 2; i++) assert.equal((await cluster.get(agent, 'shop', '/boom/')).status, 500);
      const errorLink = page.locator('.log a.err-link', { hasText: 'ValueError' }).first();
      await errorLink.waitFor({ timeout: 15_000 });
      await shot(page, 'logs');
      await errorLink.click();
      const group = page.locator('details.error-group[open]');
      await group.waitFor({ timeout: 10_000 });
      assert.match((await group.getAttribute('data-error')) ?? '', /^ValueError notes\/views\.py:\d+:boom$/);
      await group.locator('.traceback', { hasText: 'boom: this view always fails' }).waitFor({ timeout: 5000 });
      await waitFor('both occurrences counted', async () => /2 ×/.test(await group.locator('summary').innerText()), 15_000);
      await shot(page, 'errors');

      // Charts: after this traffic, points.
      for (let i = 0; i < 20; i++) await cluster.get(agent, 'shop', '/');
      await page.getByRole('link', { name: 'Metrics' }).click();
      const requestsChart = page.locator('.chart[aria-label^="Requests"]');
      await waitFor('a requests chart with points', async () => Number(await requestsChart.getAttribute('data-points')) >= 1, 30_000);
      await requestsChart.locator('canvas').waitFor({ timeout: 5000 });
      await waitFor('traffic in the summary', async () => !/of 0 requests/.test(await page.locator('.summary').innerText()), 30_000);
      await waitFor(
        'releases marked on the charts',
        async () => Number(await page.locator('[data-marks]').getAttribute('data-marks')) >= 3,
        20_000,
      );
      await shot(page, 'metrics');
      // Dark and light follow the system.
      const background = () =>
        page.evaluate(() => {
          const w = globalThis as unknown as PageGlobals;
          return w.getComputedStyle(w.document.body).backgroundColor;
        });
      const light = await background();
      await page.emulateMedia({ colorScheme: 'dark' });
      const dark = await background();
      assert.notEqual(dark, light);
      assert.equal(dark, 'rgb(18, 20, 26)');
      await page.reload();
      await page.locator('.chart canvas').first().waitFor({ timeout: 15_000 });
      await shot(page, 'metrics-dark');
      await page.emulateMedia({ colorScheme: 'light' });

      // Deploy by dropping a .tar.gz, as `hangar deploy` packs it.
      await page.getByRole('link', { name: 'Overview', exact: true }).last().click();
      const archive = await createSourceArchive(join(FIXTURES, 'django-app'));
      await page.locator('.drop').waitFor({ timeout: 10_000 });
      await page.evaluate((b64) => {
        const w = globalThis as unknown as PageGlobals;
        const bytes = Uint8Array.from(w.atob(b64), (c) => c.charCodeAt(0));
        const data = new w.DataTransfer();
        data.items.add(new w.File([bytes], 'shop.tar.gz', { type: 'application/gzip' }));
        w.document.querySelector('.drop')?.dispatchEvent(new w.DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
      }, archive.data.toString('base64'));
      await page.locator('#deploy-h ~ .deploy[data-status="succeeded"]').waitFor({ timeout: 300_000 });
      assert.match(await page.locator('#deploy-h ~ .deploy pre').innerText(), /v4 is up/);
      assert.equal((await releases(cluster, 'shop'))[0]?.name, 'v4');

      // And a folder, packed by the page itself.
      await page.locator('.drop input[type=file]').setInputFiles(join(FIXTURES, 'django-app'));
      await waitFor(
        'the folder deploy to finish',
        async () => {
          const status = await page.locator('#deploy-h ~ .deploy').getAttribute('data-status');
          const lines = await page.locator('#deploy-h ~ .deploy pre').innerText();
          return status === 'succeeded' && /v5 is up/.test(lines);
        },
        300_000,
      );
      const v5 = (await releases(cluster, 'shop'))[0];
      assert.equal(v5?.name, 'v5');
      assert.equal(v5?.current, true);
      await shot(page, 'deployed');

      // On a phone: nothing wider than the screen.
      await page.setViewportSize({ width: 390, height: 844 });
      await page.waitForTimeout(300);
      const overflowing = () =>
        page.evaluate(() => {
          const w = globalThis as unknown as PageGlobals;
          if (w.document.documentElement.scrollWidth <= w.innerWidth + 1) return [];
          return [
            `scrollWidth ${w.document.documentElement.scrollWidth} > ${w.innerWidth}`,
            ...[...w.document.querySelectorAll('body *')]
              .filter((el) => el.getBoundingClientRect().right > w.innerWidth + 1)
              .slice(-10)
              .map((el) => `${el.tagName.toLowerCase()}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`),
          ];
        });
      await shot(page, 'app-phone');
      const wide = await overflowing();
      assert.deepEqual(wide, [], 'no sideways scrolling');
      await page.setViewportSize({ width: 1280, height: 800 });

      // A read token, pasted: it sees the app but no control that would fail.
      const created = await cluster.cli(['tokens:create', '--scope', 'read', '--json']);
      assert.equal(created.code, 0, created.stderr);
      const readToken = (JSON.parse(created.stdout) as { token: string }).token;
      const reader = await browser.context.newPage();
      const readerProblems = watch(reader);
      await reader.goto(`${base}/#/apps/shop`);
      await reader.getByLabel('API token').fill(readToken);
      await reader.getByRole('button', { name: 'Log in' }).click();
      await reader.locator('tr[data-instance="web.1"]').waitFor({ timeout: 15_000 });
      assert.equal(await reader.locator('.who strong').innerText(), 'read');
      assert.match(await reader.locator('li[data-type="web"]').innerText(), /web\s+2/);
      assert.equal(await reader.getByRole('button', { name: 'Scale' }).count(), 0);
      assert.equal(await reader.getByLabel('web instances').count(), 0);
      assert.equal(await reader.getByRole('button', { name: /Roll back/ }).count(), 0);
      assert.equal(await reader.locator('.drop').count(), 0);
      await reader.getByText('Config values need a deploy token.').waitFor({ timeout: 5000 });
      const readerStored = await reader.evaluate(
        () => (globalThis as unknown as PageGlobals).sessionStorage.getItem('hangar.session') ?? '',
      );
      assert.doesNotMatch(readerStored, /hgr_tok_/, 'the pasted token is not kept');
      await shot(reader, 'app-read-token');
      // The API refuses the read session anyway.
      const refused = await reader.evaluate(async () => {
        const w = globalThis as unknown as PageGlobals;
        const token = (JSON.parse(w.sessionStorage.getItem('hangar.session') ?? '{}') as { token: string }).token;
        const call = async (method: string, path: string, body: unknown) => {
          const res = await fetch(path, {
            method,
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
            body: JSON.stringify(body),
          });
          return { status: res.status, code: ((await res.json()) as { code: string }).code };
        };
        return {
          scale: await call('PATCH', '/v1/apps/shop/formation', { formation: { web: 3 } }),
          rollback: await call('POST', '/v1/apps/shop/releases', { rollback: 1 }),
          link: await call('POST', '/v1/dashboard/login-links', {}),
        };
      });
      assert.deepEqual(refused.scale, { status: 403, code: 'FORBIDDEN' });
      assert.deepEqual(refused.rollback, { status: 403, code: 'FORBIDDEN' });
      assert.deepEqual(refused.link, { status: 403, code: 'FORBIDDEN' }, 'a session cannot mint login links');
      assert.equal((await ps(cluster, 'shop')).filter((r) => r.type === 'web').length, 2, 'nothing was scaled');
      assert.equal((await releases(cluster, 'shop'))[0]?.name, 'v5', 'nothing was rolled back');

      // Logging out ends the session on the server too.
      await page.getByRole('button', { name: 'Log out' }).click();
      await page.getByLabel('API token').waitFor({ timeout: 5000 });
      const dead = await fetch(`${base}/v1/apps`, { headers: { authorization: `Bearer ${sessionToken}` } });
      assert.equal(dead.status, 401);

      assert.deepEqual(problems, []);
      assert.deepEqual(readerProblems, []);
    } finally {
      await browser.close();
    }
  },
);
