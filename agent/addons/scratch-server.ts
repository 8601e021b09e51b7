/**
 * A server started for one job on a backup (a verification restore, or the conversion of a Redis
 * RDB into an append-only file before a restore): in its own process group, its output in
 * DIR/server.log, stopped with its group whatever happens.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../../common/errors.js';
import type { RunAs } from '../workloads/run-as.js';

/** Polls `ready` until it is true; throws when the server exits first or after `timeoutMs`. */
export async function waitUntil(what: string, server: ScratchServer, ready: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (server.exited) throw new HangarError('ADDON_FAILED', `the scratch server exited before ${what}: ${await server.logTail()}`);
    if (await ready()) return;
    if (Date.now() > deadline) throw new HangarError('ADDON_FAILED', `gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** See the module comment. */
export class ScratchServer {
  exited = false;
  readonly #child: ChildProcess;
  readonly #log: string;
  readonly #stopSignal: NodeJS.Signals;
  readonly #closed: Promise<void>;

  private constructor(child: ChildProcess, log: string, stopSignal: NodeJS.Signals) {
    this.#child = child;
    this.#log = log;
    this.#stopSignal = stopSignal;
    this.#closed = new Promise((resolve) => {
      child.on('close', () => {
        this.exited = true;
        resolve();
      });
    });
  }

  static async start(file: string, args: string[], dir: string, runAs: RunAs | null, stopSignal: NodeJS.Signals): Promise<ScratchServer> {
    const log = join(dir, 'server.log');
    const out = await open(log, 'a', 0o600);
    try {
      if (runAs) await out.chown(runAs.uid, runAs.gid);
      const child = spawn(file, args, {
        cwd: dir,
        detached: true,
        env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' },
        stdio: ['ignore', out.fd, out.fd],
        ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
      });
      const server = new ScratchServer(child, log, stopSignal);
      child.on('error', () => (server.exited = true));
      return server;
    } finally {
      await out.close();
    }
  }

  async logTail(): Promise<string> {
    try {
      const fh = await open(this.#log, 'r');
      try {
        return (await fh.readFile('utf8')).trim().split('\n').slice(-3).join(' ');
      } finally {
        await fh.close();
      }
    } catch {
      return '';
    }
  }

  /** Its stop signal to the group, SIGKILL after 15 s. */
  async stop(): Promise<void> {
    const pid = this.#child.pid;
    if (this.exited || pid === undefined) return;
    const signal = (s: NodeJS.Signals) => {
      try {
        process.kill(-pid, s);
      } catch {
        // Already gone.
      }
    };
    signal(this.#stopSignal);
    const timer = setTimeout(() => signal('SIGKILL'), 15_000);
    await this.#closed;
    clearTimeout(timer);
  }
}
