import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT, type Cluster } from './cluster.js';

/** Settings of {@link agentProcess}. */
export interface AgentProcessOptions {
  name: string;
  dataDir: string;
  /** Default 0 (a free port). */
  routerPort?: number;
  /** More flags of `hangar agent`. */
  args?: string[];
}

/** `hangar agent` as a child process of its own (to be killed with -9, restarted, upgraded). */
export interface AgentProcess {
  /** The process of the last start; null before the first. */
  readonly child: ChildProcess | null;
  /** Starts it (again), from `root`'s bin/hangar.js (default: this build); output goes to DIR/agent-NAME-N.log. */
  start(root?: string): void;
  /** Resolves when the last started process has exited. */
  exited(): Promise<void>;
  /**
   * Kills the agent and what it leaves running on purpose for the next one to adopt (its router,
   * instances and add-on servers): every process group named by a pidfile under its data dir.
   */
  stopAll(): Promise<void>;
}

/** An agent of `cluster` in its own process, with `--advertise 127.0.0.1` and no HTTPS port. */
export function agentProcess(cluster: Cluster, o: AgentProcessOptions): AgentProcess {
  let child: ChildProcess | null = null;
  let runs = 0;
  return {
    get child() {
      return child;
    },
    start(root = ROOT) {
      const args = [
        join(root, 'bin', 'hangar.js'),
        'agent',
        '--coordinator',
        cluster.coordinator.grpcAddress,
        '--join-token',
        cluster.coordinator.joinToken,
        '--data-dir',
        o.dataDir,
        '--name',
        o.name,
        '--router-port',
        String(o.routerPort ?? 0),
        '--https-port',
        '0',
        '--advertise',
        '127.0.0.1',
        ...(o.args ?? []),
      ];
      child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      const out = createWriteStream(join(cluster.dir, `agent-${o.name}-${++runs}.log`));
      child.stdout?.pipe(out);
      child.stderr?.pipe(out);
    },
    exited() {
      const c = child;
      return new Promise((resolve) => {
        if (c === null || c.exitCode !== null || c.signalCode !== null) return resolve();
        c.once('exit', () => resolve());
      });
    },
    async stopAll() {
      child?.kill('SIGKILL');
      await this.exited();
      const files = (await readdir(o.dataDir, { recursive: true }).catch(() => [] as string[])).filter(
        (f) => f.endsWith('pid.json') || f.endsWith('router.pid'),
      );
      for (const file of files) {
        const text = (await readFile(join(o.dataDir, file), 'utf8').catch(() => '')).trim();
        const pid = text.startsWith('{') ? (JSON.parse(text) as { pid?: number }).pid : Number(text);
        if (pid !== undefined && Number.isInteger(pid) && pid > 1) {
          try {
            process.kill(-pid, 'SIGKILL');
          } catch {
            // Gone already.
          }
        }
      }
    },
  };
}
