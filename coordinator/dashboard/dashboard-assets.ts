/**
 * The dashboard's built files (`npm run build` bundles `dashboard/` into `dist/dashboard/`), read
 * once into memory: a handful of small files, served with their hash as ETag.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** One built file. */
export interface DashboardAsset {
  body: Buffer;
  contentType: string;
  etag: string;
}

/** Where the build puts the bundle: `dist/dashboard/` beside `dist/coordinator/`. */
export const DEFAULT_DASHBOARD_DIR = fileURLToPath(new URL('../../dashboard/', import.meta.url));

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
};

/** The files of a built dashboard by name (`index.html`, `app-HASH.js`...); empty when it was not built. */
export function loadDashboardAssets(dir: string = DEFAULT_DASHBOARD_DIR): Map<string, DashboardAsset> {
  const assets = new Map<string, DashboardAsset>();
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return assets;
  }
  for (const name of names) {
    const type = TYPES[extname(name)];
    if (!type || !/^[A-Za-z0-9._-]+$/.test(name)) continue;
    const body = readFileSync(join(dir, name));
    assets.set(name, { body, contentType: type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` });
  }
  return assets;
}
