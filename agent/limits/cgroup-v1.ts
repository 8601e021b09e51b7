/**
 * cgroup v1: a hierarchy per controller. An instance's cgroup is `memory/hangar/APP/NAME` and,
 * when the cpu controller is mounted, `cpu/hangar/APP/NAME` (or `cpu,cpuacct/...`).
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CgroupHierarchy, CgroupLimits, CgroupUsage, InstanceCgroup } from './cgroup.js';
import { CFS_PERIOD_US, HANGAR_CGROUP, keyedValue, readText, removeDir } from './cgroup-files.js';

/** The v1 layout: a memory hierarchy and maybe a cpu one. */
export class CgroupV1 implements CgroupHierarchy {
  readonly version = 'v1';
  readonly #memory: string;
  readonly #cpu: string | null;

  /**
   * @param memory the memory hierarchy's root (`/sys/fs/cgroup/memory`)
   * @param cpu the cpu hierarchy's root, or null when there is none (no CPU limits then)
   */
  constructor(memory: string, cpu: string | null) {
    this.#memory = memory;
    this.#cpu = cpu;
  }

  instance(app: string, name: string): InstanceCgroup {
    return new InstanceCgroupV1(join(HANGAR_CGROUP, app, name), this.#memory, this.#cpu);
  }
}

class InstanceCgroupV1 implements InstanceCgroup {
  readonly path: string;
  readonly #memory: string;
  readonly #cpu: string | null;
  readonly #roots: string[];
  #soft: number | null = null;

  constructor(path: string, memoryRoot: string, cpuRoot: string | null) {
    this.path = path;
    this.#roots = cpuRoot === null ? [memoryRoot] : [memoryRoot, cpuRoot];
    this.#memory = join(memoryRoot, path);
    this.#cpu = cpuRoot === null ? null : join(cpuRoot, path);
  }

  apply(limits: CgroupLimits): void {
    mkdirSync(this.#memory, { recursive: true });
    const limit = limits.memoryBytes === null ? '-1' : String(limits.memoryBytes);
    // memsw (memory + swap) is at least memory: raise it after memory when lowering, before when raising.
    const memsw = join(this.#memory, 'memory.memsw.limit_in_bytes');
    const hasMemsw = existsSync(memsw);
    if (hasMemsw && limits.memoryBytes === null) writeFileSync(memsw, '-1');
    writeFileSync(join(this.#memory, 'memory.limit_in_bytes'), limit);
    // With swap, the limit would only push the excess out to swap: memory + swap gets the same limit.
    if (hasMemsw && limits.memoryBytes !== null) writeFileSync(memsw, limit);
    writeFileSync(
      join(this.#memory, 'memory.soft_limit_in_bytes'),
      limits.softMemoryBytes === null ? '-1' : String(limits.softMemoryBytes),
    );
    this.#soft = limits.softMemoryBytes;
    if (this.#cpu !== null) {
      mkdirSync(this.#cpu, { recursive: true });
      writeFileSync(join(this.#cpu, 'cpu.cfs_period_us'), String(CFS_PERIOD_US));
      writeFileSync(
        join(this.#cpu, 'cpu.cfs_quota_us'),
        limits.cpu === null ? '-1' : String(Math.max(1000, Math.round(limits.cpu * CFS_PERIOD_US))),
      );
    }
  }

  enter(pid: number): void {
    writeFileSync(join(this.#memory, 'cgroup.procs'), String(pid));
    if (this.#cpu !== null) writeFileSync(join(this.#cpu, 'cgroup.procs'), String(pid));
  }

  usage(): CgroupUsage | null {
    const text = readText(join(this.#memory, 'memory.usage_in_bytes'));
    if (text === null) return null;
    const memoryBytes = Number(text.trim()) || 0;
    if (this.#soft === null) {
      const soft = Number(readText(join(this.#memory, 'memory.soft_limit_in_bytes'))?.trim());
      // An unset soft limit reads as a huge number.
      this.#soft = Number.isSafeInteger(soft) ? soft : null;
    }
    return {
      memoryBytes,
      oomKills: keyedValue(readText(join(this.#memory, 'memory.oom_control')), 'oom_kill'),
      overSoft: this.#soft !== null && memoryBytes >= this.#soft,
    };
  }

  remove(): boolean {
    let gone = true;
    for (const dir of [this.#memory, this.#cpu]) if (dir !== null && !removeDir(dir)) gone = false;
    // The app's parent goes with its last instance (it stays while another one runs).
    for (const root of this.#roots) removeDir(join(root, this.path, '..'));
    return gone;
  }
}
