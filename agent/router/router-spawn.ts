/**
 * Starting a router process (router-main.ts): detached, in its own process group, its output in
 * DATA/router/router.log, with an IPC channel only until it says `ready` or `failed`. Used by the
 * agent (a first start) and by a router handing its listeners to its successor (an upgrade). Kept
 * apart from router-host.ts so that the agent, which only starts and talks to the router, does not
 * load the router's own code (router.ts and its HTTP client).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import type net from 'node:net';
import type { RouterProcessConfig, RouterStateFrame } from './router-protocol.js';

/** How long a new router process may take to take the listeners over, ms. */
const SUCCESSOR_TIMEOUT_MS = 30_000;

/** Messages between a router and the successor it starts (IPC). */
export type SuccessorMessage =
  /**
   * Successor → starter: it listens for messages now; the listening sockets may come. Node listens
   * on a received socket at once but holds the message until the process has a 'message'
   * listener: sockets sent earlier (while the successor loads its code) would accept connections
   * nobody serves.
   */
  | { type: 'receiving' }
  | { type: 'takeover'; state: RouterStateFrame; predecessorPid: number; https: boolean }
  | { type: 'ready'; port: number; httpsPort: number }
  | { type: 'failed'; message: string };

/**
 * Starts a router process from `entry` that takes over the listeners (IPC handle passing) and
 * the state; resolves once it serves (its pidfile and control socket are in place).
 */
export function spawnRouterProcess(
  entry: string,
  dataDir: string,
  config: RouterProcessConfig,
  logFile: string,
  takeover?: { state: RouterStateFrame; http: net.Server; https: net.Server | undefined },
): Promise<{ child: ChildProcess; port: number; httpsPort: number }> {
  const logFd = openSync(logFile, 'a', 0o600);
  let child: ChildProcess;
  try {
    child = spawn(
      process.execPath,
      [entry, '--data-dir', dataDir, '--config', JSON.stringify(config), ...(takeover ? ['--takeover'] : [])],
      // Its own process group: neither the agent's exit nor a signal to the agent's group reaches it.
      { detached: true, stdio: ['ignore', logFd, logFd, 'ipc'] },
    );
  } finally {
    closeSync(logFd);
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      finish(new Error(`the router process did not start within ${SUCCESSOR_TIMEOUT_MS / 1000} s (see ${logFile})`));
      child.kill('SIGKILL');
    }, SUCCESSOR_TIMEOUT_MS);
    const finish = (err: Error | null, ready?: { port: number; httpsPort: number }): void => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      child.off('error', onError);
      if (child.connected) child.disconnect();
      child.unref();
      if (err) reject(err);
      else resolve({ child, port: ready?.port ?? 0, httpsPort: ready?.httpsPort ?? 0 });
    };
    const onMessage = (m: SuccessorMessage): void => {
      if (m.type === 'receiving' && takeover) sendTakeover(takeover);
      else if (m.type === 'ready') finish(null, m);
      else if (m.type === 'failed') finish(new Error(m.message));
    };
    const onExit = (code: number | null, signal: string | null): void =>
      finish(new Error(`the router process exited at start (${signal ?? `code ${code}`}); see ${logFile}`));
    const onError = (err: Error): void => finish(err);
    child.on('message', onMessage);
    child.once('exit', onExit);
    child.once('error', onError);
    let sent = false;
    // One handle per message, once the successor listens for them; it starts once it has them all.
    const sendTakeover = (t: NonNullable<typeof takeover>): void => {
      if (sent) return;
      sent = true;
      child.send({ type: 'listener', which: 'http' }, t.http);
      if (t.https) child.send({ type: 'listener', which: 'https' }, t.https);
      const message: SuccessorMessage = { type: 'takeover', state: t.state, predecessorPid: process.pid, https: t.https !== undefined };
      child.send(message);
    };
  });
}
