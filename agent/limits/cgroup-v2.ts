/**
 * cgroup v2: the unified hierarchy. An instance's cgroup is `hangar/APP/NAME`; the memory and
 * cpu controllers are enabled down to it through `cgroup.subtree_control` of each parent (the
 * parents hold no process, as v2 requires).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CgroupHierarchy, CgroupLimits, CgroupUsage, InstanceCgroup } from './cgroup.js';
import { CFS_PERIOD_US, HANGAR_CGROUP, keyedValue, readText, removeDir } from './cgroup-files.js';

/** The v2 layout. */
export class CgroupV2 implements CgroupHierarchy {
  readonly version = 'v2';
  readonly #root: string;
  readonly #cpu: boolean;

  /**
   * @param root the unified hierarchy's root (`/sys/fs/cgroup`)
   * @param cpu whether the cpu controller is available (no CPU limits otherwise)
   */
  constructor(root: string, cpu: boolean) {
    this.#root = root;
    this.#cpu = cpu;
  }

  instance(app: string, name: string): InstanceCgroup {
    return new InstanceCgroupV2(this.#root, [HANGAR_CGROUP, app, name], this.#cpu);
  }
}

class InstanceCgroupV2 implements InstanceCgroup {
  readonly path: string;
  readonly #root: string;
  readonly #parts: string[];
  readonly #dir: string;
  readonly #cpu: boolean;
  #soft: number | null = null;
  #highEvents: number | null = null;

  constructor(root: string, parts: string[], cpu: boolean) {
    this.#root = root;
    this.#parts = parts;
    this.path = join(...parts);
    this.#dir = join(root, this.path);
    this.#cpu = cpu;
  }

  apply(limits: CgroupLimits): void {
    const controllers = this.#cpu ? ['memory', 'cpu'] : ['memory'];
    // Enable the controllers in the root, hangar/ and hangar/APP/ so the leaf gets them.
    let dir = this.#root;
    for (const part of this.#parts) {
      enableControllers(dir, controllers);
      dir = join(dir, part);
      mkdirSync(dir, { recursive: true });
    }
    writeFileSync(join(this.#dir, 'memory.max'), limits.memoryBytes === null ? 'max' : String(limits.memoryBytes));
    writeFileSync(join(this.#dir, 'memory.high'), limits.softMemoryBytes === null ? 'max' : String(limits.softMemoryBytes));
    // Without swap the limit cannot be dodged by swapping out.
    if (limits.memoryBytes !== null && existsSync(join(this.#dir, 'memory.swap.max')))
      writeFileSync(join(this.#dir, 'memory.swap.max'), '0');
    this.#soft = limits.softMemoryBytes;
    if (this.#cpu) {
      const quota = limits.cpu === null ? 'max' : String(Math.max(1000, Math.round(limits.cpu * CFS_PERIOD_US)));
      writeFileSync(join(this.#dir, 'cpu.max'), `${quota} ${CFS_PERIOD_US}`);
    }
  }

  enter(pid: number): void {
    writeFileSync(join(this.#dir, 'cgroup.procs'), String(pid));
  }

  usage(): CgroupUsage | null {
    const current = readText(join(this.#dir, 'memory.current'));
    if (current === null) return null;
    const memoryBytes = Number(current.trim()) || 0;
    const events = readText(join(this.#dir, 'memory.events'));
    const high = keyedValue(events, 'high');
    // memory.high throttles the group near the line: a new `high` event says it was reached.
    const hitHigh = this.#highEvents !== null && high > this.#highEvents;
    this.#highEvents = high;
    return {
      memoryBytes,
      oomKills: keyedValue(events, 'oom_kill'),
      overSoft: hitHigh || (this.#soft !== null && memoryBytes >= this.#soft),
    };
  }

  remove(): boolean {
    const gone = removeDir(this.#dir);
    removeDir(join(this.#dir, '..'));
    return gone;
  }
}

function enableControllers(dir: string, controllers: string[]): void {
  const file = join(dir, 'cgroup.subtree_control');
  let enabled: string[] = [];
  try {
    enabled = readFileSync(file, 'utf8').split(/\s+/);
  } catch {
    // Not there yet (a fake tree) or unreadable: writing it says what is wrong.
  }
  const missing = controllers.filter((c) => !enabled.includes(c));
  if (missing.length > 0) writeFileSync(file, missing.map((c) => `+${c}`).join(' '));
}
