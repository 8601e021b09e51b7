/**
 * Entry of the router process: `node router-main.js --data-dir DIR --config JSON [--takeover]`,
 * started by the agent (or, on an upgrade, by the router it replaces: then the listening sockets
 * and the state arrive over the IPC channel first). Tells its starter `ready` or `failed` over
 * IPC and lets the channel go; then runs on its own until told to stop, SIGTERM, or its data dir
 * is removed. Logs (pino JSON) go to stdout, which its starter points at DATA/router/router.log.
 */
import type net from 'node:net';
import { describeError } from '../../common/errors.js';
import { createLogger } from '../../common/logger.js';
import { RouterHost, type Takeover } from './router-host.js';
import type { SuccessorMessage } from './router-spawn.js';
import { routerCodeVersion, routerProcessConfigSchema } from './router-protocol.js';

function argument(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i === -1 ? undefined : process.argv[i + 1];
}

function tell(message: SuccessorMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve();
    process.send(message, undefined, {}, () => {
      if (process.connected) process.disconnect();
      resolve();
    });
  });
}

/** The predecessor's listeners and state, sent one handle per message before `takeover`. */
function receiveTakeover(): Promise<Takeover> {
  return new Promise((resolve, reject) => {
    const listeners: { http?: net.Server; https?: net.Server } = {};
    const early: Takeover['early'] = [];
    process.on('message', (m: { type?: string; which?: string }, handle: unknown) => {
      if (m.type === 'listener' && (m.which === 'http' || m.which === 'https')) {
        const server = handle as net.Server;
        listeners[m.which] = server;
        // Node listens on a received server at once: connections accepted before the router
        // serves wait here (unheld, they would hang), and are handed to it then.
        const which = m.which;
        server.on('connection', (socket: net.Socket) => early.push({ which, socket }));
      }
      if (m.type === 'takeover') {
        const t = m as Extract<SuccessorMessage, { type: 'takeover' }>;
        if (!listeners.http || (t.https && !listeners.https)) return reject(new Error('the listening sockets did not arrive'));
        resolve({
          http: listeners.http,
          ...(listeners.https ? { https: listeners.https } : {}),
          early,
          state: t.state,
          predecessorPid: t.predecessorPid,
        });
      }
    });
    process.once('disconnect', () => reject(new Error('the router that started this one went away before the takeover')));
  });
}

async function main(): Promise<void> {
  const logger = createLogger({ level: process.env.HANGAR_LOG_LEVEL ?? 'info' }).child({ process: 'router' });
  // Computed before anything else: the code this process loaded, even if an upgrade replaces the files later.
  routerCodeVersion();
  const dataDir = argument('--data-dir');
  let host: RouterHost;
  try {
    if (!dataDir) throw new Error('give --data-dir');
    const config = routerProcessConfigSchema.parse(JSON.parse(argument('--config') ?? 'null'));
    const takeover = process.argv.includes('--takeover') ? await receiveTakeover() : undefined;
    host = new RouterHost({ dataDir, config, logger, ...(takeover ? { takeover } : {}) });
    const ports = await host.start();
    await tell({ type: 'ready', ...ports });
  } catch (err) {
    logger.error({ err: describeError(err) }, 'the router process could not start');
    await tell({ type: 'failed', message: describeError(err) });
    process.exit(1);
  }
  // The agent's exit must not end the router; only these do.
  process.on('disconnect', () => undefined);
  process.on('SIGHUP', () => undefined);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => void host.stop(`${signal} received`));
  await host.done;
  logger.flush();
  process.exit(0);
}

void main();
