/**
 * Debian's Chromium (`apt-get install chromium`) driven by playwright-core: no browser download.
 * Each launch gets a fresh profile in a temporary directory of its own.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

/** A running Chromium; `close()` ends it and removes its profile (idempotent). */
export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

/**
 * Launches Chromium with a fresh profile. Close it before the servers it talks to (a page that
 * polls keeps their connections busy), e.g. in a `finally` of the test body.
 */
export async function launchBrowser(): Promise<Browser> {
  const profile = await mkdtemp(join(tmpdir(), 'hangar-chromium-'));
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 800 },
      timeout: 60_000,
    });
  } catch (err) {
    await rm(profile, { recursive: true, force: true });
    throw err;
  }
  let closed: Promise<void> | null = null;
  return {
    context,
    close() {
      closed ??= (async () => {
        try {
          await context.close();
        } finally {
          await rm(profile, { recursive: true, force: true });
        }
      })();
      return closed;
    },
  };
}
