/**
 * The router process around a {@link Router}: it outlives the agent (restarts, crashes, upgrades),
 * serving with the last state the agent gave it. It takes that state, drains and stops over the
 * control socket (router-protocol.ts), appends access entries to the journal the agent reads
 * (access-journal.ts), and on an upgrade hands its listening sockets to a new router process
 * started from the new code, then stops accepting, finishes what is in flight and exits — no
 * connection is refused and no request is cut.
 */
import { mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import type http from 'node:http';
import type { Logger } from '../../common/logger.js';
import { describeError } from '../../common/errors.js';
import { AccessJournalWriter } from './access-journal.js';
import { Router } from './router.js';
import { spawnRouterProcess } from './router-spawn.js';
import {
  FrameReader,
  LOAD_REPORT_MS,
  encodeFrame,
  processAlive,
  routerCodeVersion,
  routerPaths,
  type RouterFrame,
  type RouterProcessConfig,
  type RouterStateFrame,
} from './router-protocol.js';

/** A replaced router lets its requests and websockets finish for at most this long, ms. */
export const HANDOVER_DRAIN_MS = 30_000;
/** A replaced router keeps idle keep-alive connections this long at least, so clients see `Connection: close` on a response instead of a closed socket. */
const IDLE_GRACE_MS = 2_000;
/** How often the router looks whether its data dir still exists (it exits when it is gone). */
const DATA_DIR_CHECK_MS = 2_000;

/** What a router started by its predecessor gets from it (over the IPC channel). */
export interface Takeover {
  http: net.Server;
  https?: net.Server;
  /** Connections accepted on the received sockets before the router served them. */
  early: { which: 'http' | 'https'; socket: net.Socket }[];
  state: RouterStateFrame;
  predecessorPid: number;
}

/** Options of {@link RouterHost}. */
export interface RouterHostOptions {
  dataDir: string;
  config: RouterProcessConfig;
  logger: Logger;
  takeover?: Takeover;
}

export type RouterHostState = 'new' | 'up' | 'handing-over' | 'stopping' | 'done';

/** See the module comment. */
export class RouterHost {
  readonly #o: RouterHostOptions;
  readonly #log: Logger;
  readonly #paths: ReturnType<typeof routerPaths>;
  readonly #version = routerCodeVersion();
  #state: RouterHostState = 'new';
  #router: Router | null = null;
  #journal: AccessJournalWriter | null = null;
  #control: net.Server | null = null;
  readonly #agents = new Set<net.Socket>();
  #last: RouterStateFrame = { routes: [], certificates: [], challenges: [] };
  #ports = { port: 0, httpsPort: 0 };
  #loadTimer: NodeJS.Timeout | null = null;
  #dirTimer: NodeJS.Timeout | null = null;
  #lastLoad = '';
  #done!: () => void;
  /** Resolves when the process may exit (stopped, or handed over and drained). */
  readonly done = new Promise<void>((resolve) => (this.#done = resolve));

  constructor(options: RouterHostOptions) {
    this.#o = options;
    this.#log = options.logger.child({ component: 'router-host' });
    this.#paths = routerPaths(options.dataDir);
  }

  get state(): RouterHostState {
    return this.#state;
  }

  /** Listens (or takes the predecessor's listeners), opens the control socket, writes the pidfile. */
  async start(): Promise<{ port: number; httpsPort: number }> {
    if (this.#state !== 'new') throw new Error(`router host cannot start when ${this.#state}`);
    const { config, takeover } = this.#o;
    mkdirSync(this.#paths.dir, { recursive: true, mode: 0o700 });
    const predecessor = takeover?.predecessorPid;
    this.#journal = new AccessJournalWriter({
      dir: this.#paths.accessDir,
      logger: this.#log,
      mayRotate: () => predecessor === undefined || !processAlive(predecessor),
    });
    const journal = this.#journal;
    const router = new Router({
      port: config.port,
      ...(config.httpsPort === null ? {} : { httpsPort: config.httpsPort }),
      host: config.host,
      trustedProxies: config.trustedProxies,
      logger: this.#o.logger,
      onAccess: (e) => journal.append(e),
      ...(takeover ? { inherited: { http: takeover.http, ...(takeover.https ? { https: takeover.https } : {}) } } : {}),
    });
    this.#router = router;
    if (takeover) this.#apply(takeover.state);
    this.#ports = await router.start();
    // A replaced router answers its last requests with `Connection: close` (see #handOver).
    const { http: httpServer, https: httpsServer } = router.listeners();
    for (const srv of [httpServer, httpsServer]) {
      srv?.prependListener('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
        if (this.#state === 'handing-over' || this.#state === 'stopping') res.shouldKeepAlive = false;
      });
    }
    if (takeover) {
      for (const l of [takeover.http, takeover.https]) l?.removeAllListeners('connection');
      for (const { which, socket } of takeover.early.splice(0)) (which === 'http' ? httpServer : httpsServer)?.emit('connection', socket);
    }
    await this.#listenControl();
    writeFileAtomic(this.#paths.pidFile, `${process.pid}\n`);
    this.#state = 'up';
    this.#loadTimer = setInterval(() => this.#reportLoad(), LOAD_REPORT_MS);
    this.#loadTimer.unref();
    this.#dirTimer = setInterval(() => this.#checkDataDir(), DATA_DIR_CHECK_MS);
    this.#dirTimer.unref();
    this.#log.info({ ...this.#ports, version: this.#version, takeover: predecessor }, 'router process up');
    return this.#ports;
  }

  /** Stops for good: closes the listeners (cutting what is in flight), the control socket, and removes the pidfile. */
  async stop(why: string): Promise<void> {
    if (this.#state === 'stopping' || this.#state === 'done') return;
    const handingOver = this.#state === 'handing-over';
    this.#state = 'stopping';
    this.#log.info({ why }, 'router process stopping');
    this.#clearTimers();
    for (const s of this.#agents) s.destroy();
    if (!handingOver) {
      this.#control?.close();
      rmSync(this.#paths.control, { force: true });
      rmSync(this.#paths.pidFile, { force: true });
    }
    await this.#router?.close();
    this.#journal?.close();
    this.#state = 'done';
    this.#done();
  }

  #apply(state: RouterStateFrame): void {
    this.#last = state;
    this.#router?.setRoutes(state.routes);
    this.#router?.setTls({ certificates: state.certificates, challenges: new Map(state.challenges) });
  }

  /** Binds the control socket next to its final path, then renames it over any old one (a stale file or a predecessor's). */
  async #listenControl(): Promise<void> {
    const temp = `${this.#paths.control}.${process.pid}`;
    rmSync(temp, { force: true });
    const server = net.createServer((socket) => this.#onAgent(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // Only the agent (the same user) may connect: 0600 from the start.
      const mask = process.umask(0o177);
      try {
        server.listen(temp, () => {
          server.off('error', reject);
          resolve();
        });
      } finally {
        process.umask(mask);
      }
    });
    server.on('error', (err) => this.#log.warn({ err }, 'control socket error'));
    renameSync(temp, this.#paths.control);
    this.#control = server;
  }

  #onAgent(socket: net.Socket): void {
    if (this.#state !== 'up') return void socket.destroy();
    this.#agents.add(socket);
    socket.on('close', () => this.#agents.delete(socket));
    socket.on('error', (err) => this.#log.debug({ err: describeError(err) }, 'agent connection error'));
    const reader = new FrameReader((frame) => this.#onFrame(socket, frame));
    socket.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (err) {
        this.#log.warn({ err: describeError(err) }, 'bad frame from the agent; closing its connection');
        socket.destroy();
      }
    });
    send(socket, {
      type: 'hello',
      version: this.#version,
      pid: process.pid,
      port: this.#ports.port,
      httpsPort: this.#ports.httpsPort,
      config: this.#o.config,
    });
    this.#lastLoad = '';
    this.#reportLoad();
  }

  #onFrame(socket: net.Socket, frame: { type: string } & Record<string, unknown>): void {
    // While handing over, what is in flight here still follows the routes and drains.
    if (this.#state !== 'up' && !(this.#state === 'handing-over' && (frame.type === 'state' || frame.type === 'drain'))) return;
    switch (frame.type) {
      case 'state':
        this.#apply(frame as unknown as RouterStateFrame);
        return;
      case 'drain': {
        const d = frame as unknown as { id: number; instanceKey: string; timeoutMs: number; upgradeTimeoutMs: number };
        void this.#router?.drain(d.instanceKey, d.timeoutMs, d.upgradeTimeoutMs).then(() => send(socket, { type: 'drained', id: d.id }));
        return;
      }
      case 'stop':
        void this.stop('the agent stops for good');
        return;
      case 'replace':
        void this.#handOver(String(frame.entry));
        return;
      default:
        this.#log.warn({ type: frame.type }, 'unknown frame from the agent; ignored');
    }
  }

  /**
   * An upgrade: starts the new router from `entry` with this one's listening sockets and state;
   * once it serves, this one stops accepting, answers what arrives on open connections with
   * `Connection: close`, waits for requests and websockets in flight (up to the drain bound), and exits.
   */
  async #handOver(entry: string): Promise<void> {
    const router = this.#router;
    if (this.#state !== 'up' || router === null) return;
    const { http: httpServer, https: httpsServer } = router.listeners();
    if (httpServer === undefined) return;
    this.#state = 'handing-over';
    this.#log.info({ entry }, 'handing the listeners over to a new router process');
    try {
      await spawnRouterProcess(entry, this.#o.dataDir, this.#o.config, this.#paths.log, {
        state: this.#last,
        http: httpServer,
        https: httpsServer,
      });
    } catch (err) {
      this.#log.error({ err: describeError(err) }, 'the new router process did not take over; this one serves on');
      this.#state = 'up';
      return;
    }
    // The successor owns the control socket's path and the pidfile now; agents reconnect to it.
    this.#clearTimers();
    for (const s of this.#agents) s.end();
    for (const srv of [httpServer, httpsServer]) {
      // net.Server's own close: stop accepting but keep open connections (http.Server#close
      // would also close idle keep-alive ones, racing a client that is just sending on one).
      if (srv?.listening) net.Server.prototype.close.call(srv);
    }
    const started = Date.now();
    while (Date.now() - started < HANDOVER_DRAIN_MS) {
      if (Date.now() - started >= IDLE_GRACE_MS && router.inFlight() === 0 && router.openTunnels() === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    this.#log.info({ inFlight: router.inFlight(), tunnels: router.openTunnels(), ms: Date.now() - started }, 'replaced router drained');
    for (const srv of [httpServer, httpsServer]) srv?.closeAllConnections();
    await this.stop('replaced by a new router process');
  }

  #reportLoad(): void {
    const router = this.#router;
    if (router === null || this.#agents.size === 0) return;
    const inFlight: Record<string, number> = {};
    for (const route of this.#last.routes) {
      for (const b of route.backends) {
        const n = router.inFlight(b.instanceKey);
        if (n > 0) inFlight[b.instanceKey] = n;
      }
    }
    const text = JSON.stringify(inFlight);
    if (text === this.#lastLoad) return;
    this.#lastLoad = text;
    for (const s of this.#agents) send(s, { type: 'load', inFlight });
  }

  /** The agent's data dir was removed (the agent was uninstalled, a test ended): nothing is left to serve for. */
  #checkDataDir(): void {
    try {
      statSync(this.#paths.dir);
    } catch {
      void this.stop('its data dir is gone');
    }
  }

  #clearTimers(): void {
    if (this.#loadTimer) clearInterval(this.#loadTimer);
    if (this.#dirTimer) clearInterval(this.#dirTimer);
    this.#loadTimer = null;
    this.#dirTimer = null;
  }
}

function send(socket: net.Socket, frame: RouterFrame): void {
  if (!socket.destroyed && socket.writable) socket.write(encodeFrame(frame));
}

function writeFileAtomic(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}
