/**
 * Debian's Chromium (`apt-get install chromium`) driven by playwright-core: no browser download.
 * Each launch gets a fresh profile in `dir`, closed after the test.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { chromium, type BrowserContext } from 'playwright-core';
import { ROOT } from './cluster.js';

/** Debian's Chromium. */
export const CHROMIUM = '/usr/bin/chromium';

/** Flags for a quiet, offline, sandbox-less headless Chromium (tests run as root). */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Where tests save screenshots (git-ignored). */
export const SCREENSHOT_DIR = join(ROOT, 'test-output', 'dashboard');

/** Launches Chromium with a fresh profile under `dir`; closed after the test when `t` is given. */
export async function launchBrowser(dir: string, t?: TestContext): Promise<BrowserContext> {
  const profile = join(dir, `chromium-profile-${Date.now()}`);
  await mkdir(profile, { recursive: true });
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 800 },
    timeout: 60_000,
  });
  t?.after(() => context.close());
  return context;
}
