/** Reading and writing the files of a cgroup tree, shared by the v1 and v2 layouts. */
import { readFileSync, rmdirSync } from 'node:fs';

/** Name of the parent cgroup of everything Hangar runs. */
export const HANGAR_CGROUP = 'hangar';

/** CFS period of CPU limits, microseconds (the kernel's default). */
export const CFS_PERIOD_US = 100_000;

/** A file's text, or null when it cannot be read. */
export function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/** The value of `key` in a flat-keyed cgroup file (`oom_kill 3`), or 0. */
export function keyedValue(text: string | null, key: string): number {
  const line = text?.split('\n').find((l) => l.startsWith(`${key} `));
  const value = Number(line?.slice(key.length + 1));
  return Number.isFinite(value) ? value : 0;
}

/** Removes a cgroup directory; true when it is gone. A busy or non-empty one stays. */
export function removeDir(dir: string): boolean {
  try {
    rmdirSync(dir);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT';
  }
}
