/**
 * Reads Linux `/proc/PID/stat`: process state, process group and start time. The start time
 * (field 22, clock ticks since boot) never changes for a process and differs for a later process
 * that reuses the pid, which is what makes pidfiles safe to trust after an agent restart.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The fields of `/proc/PID/stat` Hangar uses. */
export interface ProcStat {
  pid: number;
  /** One letter: R running, S sleeping, D disk wait, Z zombie, T stopped, X dead… */
  state: string;
  ppid: number;
  /** Process group id. */
  pgrp: number;
  /** Session id. */
  session: number;
  /** Field 22: start time in clock ticks after boot. */
  startTime: number;
}

/** Parses the text of a `/proc/PID/stat` file; null when it is not in the expected shape. */
export function parseProcStat(text: string): ProcStat | null {
  // The command name (field 2) sits in parentheses and may itself hold spaces and ')'.
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return null;
  const pid = Number(text.slice(0, open).trim());
  const rest = text
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  // rest[0] is field 3, so field N is rest[N - 3].
  const state = rest[0];
  const numbers = [rest[1], rest[2], rest[3], rest[19]].map((field) => Number(field));
  const [ppid, pgrp, session, startTime] = numbers;
  if (state === undefined || ppid === undefined || pgrp === undefined || session === undefined) return null;
  if (startTime === undefined || !Number.isInteger(pid) || numbers.some((n) => !Number.isFinite(n))) return null;
  return { pid, state, ppid, pgrp, session, startTime };
}

/** Reads and parses `/proc/PID/stat`; null when the process does not exist (or cannot be read). */
export function readProcStat(pid: number, procRoot = '/proc'): ProcStat | null {
  try {
    return parseProcStat(readFileSync(join(procRoot, String(pid), 'stat'), 'utf8'));
  } catch {
    return null;
  }
}

/**
 * True when `pid` exists and is not a zombie, and (when `startTime` is given) it is the same
 * process that had that start time rather than a later one reusing the pid.
 */
export function isProcessRunning(pid: number, startTime?: number, procRoot = '/proc'): boolean {
  const stat = readProcStat(pid, procRoot);
  if (stat === null || stat.state === 'Z' || stat.state === 'X') return false;
  return startTime === undefined || stat.startTime === startTime;
}

/**
 * Pids of the live (non-zombie) members of process group `pgid`. Zombies are left out: once
 * dead they hold nothing, and an orphan's zombie waits on init, which some containers never run.
 */
export function listProcessGroup(pgid: number, procRoot = '/proc'): number[] {
  let entries: string[];
  try {
    entries = readdirSync(procRoot);
  } catch {
    return [];
  }
  const members: number[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readProcStat(Number(entry), procRoot);
    if (stat !== null && stat.pgrp === pgid && stat.state !== 'Z' && stat.state !== 'X') members.push(stat.pid);
  }
  return members;
}
