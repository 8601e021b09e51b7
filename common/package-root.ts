/**
 * Where this installation lives: the directory of Hangar's package.json. Files found relative to
 * it (hangar.proto, the router's entry, bin/hangar.js) are the same whether a module runs from
 * dist/ as tsc wrote it or from the agent's bundle in dist/bundle/, where `import.meta.url` is a
 * chunk's and a path relative to it would point elsewhere.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findPackageRoot(from: string): { dir: string; version: string } {
  for (let dir = from; ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      try {
        const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown; version?: unknown };
        if (pkg.name === 'hangar') return { dir, version: typeof pkg.version === 'string' ? pkg.version : '0.0.0' };
      } catch {
        // Not ours (or unreadable): keep walking up.
      }
    }
    if (dirname(dir) === dir) throw new Error(`Hangar's package.json was not found above ${from}`);
  }
}

const found = findPackageRoot(dirname(fileURLToPath(import.meta.url)));

/** The package root, e.g. /usr/lib/hangar (holds package.json, bin/, dist/, proto/). */
export const PACKAGE_ROOT = found.dir;

/** The version in that package.json (what `hangar --version` prints). */
export const PACKAGE_VERSION = found.version;
