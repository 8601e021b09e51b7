/**
 * CPU and resident memory of instances' process groups (gunicorn master + workers), read from
 * `/proc/PID/stat` and `/proc/PID/statm` of the group's members only. The members are found by a
 * scan of /proc when an instance is new, when a member died, and then at doubling intervals up to
 * `rescanMs` (workers a young gunicorn forks are seen at once; one it respawns later joins within
 * `rescanMs`) — never on every sample, and one scan serves every group.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** Options of {@link ProcessGroupUsage}. */
export interface ProcessGroupUsageOptions {
  /** Default `/proc`. */
  procRoot?: string;
  /** Kernel clock ticks per second (`getconf CLK_TCK`). Default 100, Linux's user-space ABI. */
  clockTicks?: number;
  /** Bytes per memory page (`getconf PAGESIZE`). Default 4096. */
  pageSize?: number;
  /** Longest time between two discoveries of a group's members, ms. Default 60 s. */
  rescanMs?: number;
}

/** One instance's usage over the last interval. */
export interface GroupUsage {
  /** Percent of one core (200 = two cores busy). */
  cpuPct: number;
  rssBytes: number;
  processes: number;
}

interface Group {
  leader: number;
  /** Member pid → CPU ticks (utime + stime) at the last sample. */
  ticks: Map<number, number>;
  firstSeen: number;
  scannedAt: number;
  lastSampleAt: number;
}

/** utime + stime (fields 14, 15) and the process group (field 5) of a /proc/PID/stat text. */
function parseStat(text: string): { pgrp: number; ticks: number; zombie: boolean } | null {
  const close = text.lastIndexOf(')');
  if (close < 0) return null;
  const f = text.slice(close + 2).split(' ');
  // f[0] is field 3.
  const pgrp = Number(f[2]);
  const ticks = Number(f[11]) + Number(f[12]);
  if (!Number.isFinite(pgrp) || !Number.isFinite(ticks)) return null;
  return { pgrp, ticks, zombie: f[0] === 'Z' || f[0] === 'X' };
}

/** Samples the usage of process groups; keep one per agent and call {@link sample} each interval. */
export class ProcessGroupUsage {
  readonly #root: string;
  readonly #hz: number;
  readonly #page: number;
  readonly #rescanMs: number;
  readonly #groups = new Map<string, Group>();

  constructor(options: ProcessGroupUsageOptions = {}) {
    this.#root = options.procRoot ?? '/proc';
    this.#hz = options.clockTicks ?? 100;
    this.#page = options.pageSize ?? 4096;
    this.#rescanMs = options.rescanMs ?? 60_000;
  }

  #read(pid: number, file: 'stat' | 'statm'): string | null {
    try {
      return readFileSync(`${this.#root}/${pid}/${file}`, 'latin1');
    } catch {
      return null;
    }
  }

  /** Pids of the live members of each wanted process group, from one pass over /proc. */
  #scan(pgids: ReadonlySet<number>): Map<number, number[]> {
    const found = new Map<number, number[]>();
    let entries: string[] = [];
    try {
      entries = readdirSync(this.#root);
    } catch {
      return found;
    }
    for (const entry of entries) {
      const c = entry.charCodeAt(0);
      if (c < 48 || c > 57) continue;
      const pid = Number(entry);
      const text = this.#read(pid, 'stat');
      const stat = text === null ? null : parseStat(text);
      if (!stat || stat.zombie || !pgids.has(stat.pgrp)) continue;
      const list = found.get(stat.pgrp);
      if (list) list.push(pid);
      else found.set(stat.pgrp, [pid]);
    }
    return found;
  }

  /**
   * Usage of each instance since the previous sample. `instances` maps instance key → pid of the
   * group leader (its own process group, as the supervisor starts it); instances without a pid
   * are left out. The first sample of an instance reports 0 % CPU.
   */
  sample(instances: ReadonlyMap<string, number>, now: number): Map<string, GroupUsage> {
    for (const key of this.#groups.keys()) if (!instances.has(key)) this.#groups.delete(key);
    const stale = new Set<number>();
    for (const [key, pid] of instances) {
      let g = this.#groups.get(key);
      if (!g || g.leader !== pid) {
        g = { leader: pid, ticks: new Map(), firstSeen: now, scannedAt: -Infinity, lastSampleAt: now };
        this.#groups.set(key, g);
      }
      // Doubling gaps from the group's start: 0, its age at the first scan, ... up to rescanMs.
      const gap = Math.min(this.#rescanMs, Math.max(1, g.scannedAt - g.firstSeen));
      if (now - g.scannedAt >= gap) stale.add(pid);
    }
    const out = new Map<string, GroupUsage>();
    const readings = new Map<string, Map<number, { ticks: number; rss: number }>>();
    for (const [key, g] of this.#groups) {
      const r = new Map<number, { ticks: number; rss: number }>();
      const members = g.ticks.size > 0 ? [...g.ticks.keys()] : [g.leader];
      for (const pid of members) {
        const reading = this.#readMember(pid, g.leader);
        if (reading) r.set(pid, reading);
        else stale.add(g.leader);
      }
      readings.set(key, r);
    }
    if (stale.size > 0) {
      // One pass over /proc costs the same for one group as for all (it reads every process's
      // stat): every group takes its members from it, so the groups' rescans fall together
      // instead of one pass per sample for groups started at different times.
      const scanned = this.#scan(new Set([...this.#groups.values()].map((g) => g.leader)));
      for (const [key, g] of this.#groups) {
        g.scannedAt = now;
        const r = readings.get(key) ?? new Map<number, { ticks: number; rss: number }>();
        const members = new Set(scanned.get(g.leader) ?? []);
        for (const pid of r.keys()) if (!members.has(pid)) r.delete(pid);
        for (const pid of members) {
          if (r.has(pid)) continue;
          const reading = this.#readMember(pid, g.leader);
          if (reading) r.set(pid, reading);
        }
        readings.set(key, r);
      }
    }
    for (const [key, g] of this.#groups) {
      const r = readings.get(key) ?? new Map<number, { ticks: number; rss: number }>();
      const elapsedS = (now - g.lastSampleAt) / 1000;
      let busy = 0;
      let rss = 0;
      for (const [pid, reading] of r) {
        const before = g.ticks.get(pid);
        if (before !== undefined && reading.ticks >= before) busy += reading.ticks - before;
        rss += reading.rss;
      }
      g.ticks = new Map([...r].map(([pid, reading]) => [pid, reading.ticks]));
      g.lastSampleAt = now;
      const cpuPct = elapsedS > 0 ? Math.round((busy / this.#hz / elapsedS) * 1000) / 10 : 0;
      out.set(key, { cpuPct, rssBytes: rss, processes: r.size });
    }
    return out;
  }

  #readMember(pid: number, pgid: number): { ticks: number; rss: number } | null {
    const text = this.#read(pid, 'stat');
    const stat = text === null ? null : parseStat(text);
    if (!stat || stat.zombie || stat.pgrp !== pgid) return null;
    const statm = this.#read(pid, 'statm');
    const pages = statm === null ? 0 : Number(statm.split(' ')[1]);
    return { ticks: stat.ticks, rss: Number.isFinite(pages) ? pages * this.#page : 0 };
  }
}
