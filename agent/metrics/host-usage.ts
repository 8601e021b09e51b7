/**
 * Host figures for metrics: CPU busy %, load, memory, disk usage of the data dir's filesystem,
 * disk and network throughput, read from /proc/stat, /proc/meminfo, /proc/diskstats,
 * /proc/net/dev and statfs(2) directly. Not through systeminformation: its Linux CPU, disk-I/O and
 * network functions spawn shell pipelines on every call, and merely loading it adds ~10 MB to the
 * agent's resident memory (the agent's budget is 60 MB) for figures that are one file read each.
 */
import { readFile, stat, statfs } from 'node:fs/promises';
import { loadavg } from 'node:os';

interface Counters {
  at: number;
  cpuBusy: number;
  cpuTotal: number;
  diskRead: number;
  diskWrite: number;
  netRx: number;
  netTx: number;
}

const WHOLE_DISK = /^(sd[a-z]+|vd[a-z]+|xvd[a-z]+|hd[a-z]+|nvme\d+n\d+|mmcblk\d+)$/;

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'latin1');
  } catch {
    return '';
  }
}

/** Samples host figures; rates cover the time since the previous {@link sample}. */
export class HostUsage {
  readonly #dataDir: string;
  readonly #procRoot: string;
  #device: { major: number; minor: number } | null | undefined;
  #previous: Counters | null = null;

  /** `dataDir`: the filesystem whose usage and I/O are reported. */
  constructor(dataDir: string, procRoot = '/proc') {
    this.#dataDir = dataDir;
    this.#procRoot = procRoot;
  }

  async #counters(now: number): Promise<Counters> {
    const [cpuText, diskText, netText] = await Promise.all([
      readText(`${this.#procRoot}/stat`),
      readText(`${this.#procRoot}/diskstats`),
      readText(`${this.#procRoot}/net/dev`),
    ]);
    const c: Counters = { at: now, cpuBusy: 0, cpuTotal: 0, diskRead: 0, diskWrite: 0, netRx: 0, netTx: 0 };
    const cpuLine = cpuText.slice(0, cpuText.indexOf('\n')).trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    const idle = (cpuLine[3] ?? 0) + (cpuLine[4] ?? 0);
    c.cpuTotal = cpuLine.slice(0, 8).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
    c.cpuBusy = c.cpuTotal - idle;

    if (this.#device === undefined) {
      try {
        const dev = (await stat(this.#dataDir)).dev;
        // Linux dev_t: major in bits 8-19, minor in bits 0-7 and 20-31.
        this.#device = { major: (dev >> 8) & 0xfff, minor: (dev & 0xff) | ((dev >> 12) & 0xfff00) };
      } catch {
        this.#device = null;
      }
    }
    let own: string[] | null = null;
    let sumRead = 0;
    let sumWrite = 0;
    for (const line of diskText.split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      if (this.#device && Number(f[0]) === this.#device.major && Number(f[1]) === this.#device.minor) own = f;
      if (WHOLE_DISK.test(f[2] ?? '')) {
        sumRead += Number(f[5]) * 512;
        sumWrite += Number(f[9]) * 512;
      }
    }
    // Overlay and tmpfs data dirs have no block device of their own: count every disk.
    c.diskRead = own ? Number(own[5]) * 512 : sumRead;
    c.diskWrite = own ? Number(own[9]) * 512 : sumWrite;

    for (const line of netText.split('\n').slice(2)) {
      const colon = line.indexOf(':');
      if (colon < 0 || line.slice(0, colon).trim() === 'lo') continue;
      const f = line
        .slice(colon + 1)
        .trim()
        .split(/\s+/);
      c.netRx += Number(f[0]) || 0;
      c.netTx += Number(f[8]) || 0;
    }
    return c;
  }

  /** Host figures by name (see MetricsReport.host in hangar.proto). */
  async sample(now: number): Promise<Record<string, number>> {
    const [counters, meminfo, fs] = await Promise.all([
      this.#counters(now),
      readText(`${this.#procRoot}/meminfo`),
      statfs(this.#dataDir).catch(() => null),
    ]);
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(meminfo)?.[1] ?? 0) * 1024;
    const out: Record<string, number> = {};
    const [l1, l5, l15] = loadavg();
    out.load1 = l1 ?? 0;
    out.load5 = l5 ?? 0;
    out.load15 = l15 ?? 0;
    const total = kb('MemTotal');
    if (total > 0) {
      out.mem_total_bytes = total;
      out.mem_used_bytes = total - kb('MemAvailable');
    }
    if (fs) {
      out.disk_total_bytes = fs.blocks * fs.bsize;
      out.disk_used_bytes = (fs.blocks - fs.bfree) * fs.bsize;
    }
    const p = this.#previous;
    this.#previous = counters;
    if (p) {
      const seconds = (counters.at - p.at) / 1000;
      const rate = (a: number, b: number) => (seconds > 0 && a >= b ? Math.round((a - b) / seconds) : 0);
      const total = counters.cpuTotal - p.cpuTotal;
      out.cpu_pct = total > 0 ? Math.round(((counters.cpuBusy - p.cpuBusy) / total) * 1000) / 10 : 0;
      out.disk_read_bps = rate(counters.diskRead, p.diskRead);
      out.disk_write_bps = rate(counters.diskWrite, p.diskWrite);
      out.net_rx_bps = rate(counters.netRx, p.netRx);
      out.net_tx_bps = rate(counters.netTx, p.netTx);
    }
    return out;
  }
}
