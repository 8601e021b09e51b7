/**
 * Entry of the router process: `node router-main.js --data-dir DIR --config JSON [--takeover]`,
 * started by the agent (or, on an upgrade, by the router it replaces: then the listening sockets
 * and the state arrive over the IPC channel first, asked for with `receiving` once this process
 * listens for them, before it loads the router's code). Tells its starter `ready` or `failed` over
 * IPC and lets the channel go; then runs on its own until told to stop, SIGTERM, or its data dir
 * is removed. Logs (pino JSON) go to stdout, which its starter points at DATA/router/router.log.
 */
import type net from 'node:net';
import { describeError } from '../../common/errors.js';
import type { RouterHost, Takeover } from './router-host.js';
import type { SuccessorMessage } from './router-spawn.js';

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

/**
 * The predecessor's listeners and state, sent one handle per message before `takeover` once this
 * process said `receiving`: Node listens on a received socket the moment it arrives but holds the
 * message until there is a 'message' listener, so a socket that came while this process still
 * loaded its code would accept connections that no one serves.
 */
function receiveTakeover(): Promise<Takeover> {
  return new Promise((resolve, reject) => {
    if (!process.send) return reject(new Error('--takeover needs the IPC channel of the router that starts this one'));
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
    const receiving: SuccessorMessage = { type: 'receiving' };
    process.send(receiving);
  });
}

async function main(): Promise<void> {
  // Before the router's code loads (it takes a while): listen for the predecessor's sockets.
  const takeover = process.argv.includes('--takeover') ? receiveTakeover() : undefined;
  // Awaited below; a rejection meanwhile is not an unhandled one.
  takeover?.catch(() => undefined);
  const [{ createLogger }, { RouterHost }, { routerCodeVersion, routerProcessConfigSchema }] = await Promise.all([
    import('../../common/logger.js'),
    import('./router-host.js'),
    import('./router-protocol.js'),
  ]);
  const logger = createLogger({ level: process.env.HANGAR_LOG_LEVEL ?? 'info' }).child({ process: 'router' });
  // Computed before anything else: the code this process loaded, even if an upgrade replaces the files later.
  routerCodeVersion();
  const dataDir = argument('--data-dir');
  let host: RouterHost;
  try {
    if (!dataDir) throw new Error('give --data-dir');
    const config = routerProcessConfigSchema.parse(JSON.parse(argument('--config') ?? 'null'));
    const taken = takeover ? await takeover : undefined;
    host = new RouterHost({ dataDir, config, logger, ...(taken ? { takeover: taken } : {}) });
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
