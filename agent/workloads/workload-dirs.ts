/** The per-workload directories a kind keeps under one root (DATA/instances, DATA/addons). */
import { readdir } from 'node:fs/promises';

/** Names of the entries under `root`; none when it does not exist (yet). */
export async function workloadDirNames(root: string): Promise<string[]> {
  try {
    return await readdir(root);
  } catch {
    return [];
  }
}
