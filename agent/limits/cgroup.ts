/**
 * Control groups for app instances: each instance gets its own cgroup under `hangar/APP/`, with
 * its memory and CPU limits, created by the agent (root) before the instance's code runs and
 * removed when it stops. One interface, two layouts: cgroup v2 (the unified hierarchy, a
 * `cgroup.controllers` file at the root) and v1 (a hierarchy per controller: `memory/`,
 * `cpu/` or `cpu,cpuacct/`). {@link detectCgroups} picks the one the host has.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { readText } from './cgroup-files.js';
import { CgroupV1 } from './cgroup-v1.js';
import { CgroupV2 } from './cgroup-v2.js';

/** Limits of one instance; null = none. */
export interface CgroupLimits {
  /** Hard memory limit in bytes: past it the kernel's OOM killer ends a process of the group. */
  memoryBytes: number | null;
  /** The soft line in bytes: past it the instance exceeds its quota (R14). */
  softMemoryBytes: number | null;
  /** CPU time in cores (0.5 = half of one core per period). */
  cpu: number | null;
}

/** What a cgroup's counters say now. */
export interface CgroupUsage {
  /** Memory charged to the group, bytes. */
  memoryBytes: number;
  /** Processes of the group the OOM killer has ended since the cgroup was made. */
  oomKills: number;
  /** True when the group is past its soft line (v2: memory.high was hit since the last read). */
  overSoft: boolean;
}

/** One instance's cgroup (one directory per hierarchy on v1). */
export interface InstanceCgroup {
  /** `hangar/APP/NAME`, relative to each hierarchy's root. */
  readonly path: string;
  /** Makes the cgroup (idempotent) and writes its limits. */
  apply(limits: CgroupLimits): void;
  /** Moves process `pid` into the cgroup. */
  enter(pid: number): void;
  /** Reads its counters; null when the cgroup is gone. */
  usage(): CgroupUsage | null;
  /** Removes the cgroup once its processes are gone; true when nothing is left of it. */
  remove(): boolean;
}

/** The host's cgroup layout, as one interface. */
export interface CgroupHierarchy {
  readonly version: 'v1' | 'v2';
  /** The cgroup of instance `name` of `app` (nothing is made before {@link InstanceCgroup.apply}). */
  instance(app: string, name: string): InstanceCgroup;
}

/**
 * The cgroup layout mounted at `root` (default /sys/fs/cgroup): v2 when the root is the unified
 * hierarchy with the memory controller, v1 when it holds a memory hierarchy, else null (no
 * limits can be enforced there).
 */
export function detectCgroups(root = '/sys/fs/cgroup'): CgroupHierarchy | null {
  const controllers = readText(join(root, 'cgroup.controllers'));
  if (controllers !== null) {
    const list = controllers.split(/\s+/);
    return list.includes('memory') ? new CgroupV2(root, list.includes('cpu')) : null;
  }
  const memory = join(root, 'memory');
  if (!existsSync(join(memory, 'memory.limit_in_bytes'))) return null;
  // `cpu` alone, or co-mounted as `cpu,cpuacct` (a `cpu` link to it is common too).
  const cpu = listDir(root)
    .filter((name) => name.split(',').includes('cpu'))
    .map((name) => join(root, name))
    .find((dir) => existsSync(join(dir, 'cpu.cfs_quota_us')));
  return new CgroupV1(memory, cpu ?? null);
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
