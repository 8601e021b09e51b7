/**
 * The agent's side of its router process (router-host.ts): starts the router as a process of its
 * own (detached, its own process group, a pidfile in DATA/router), or adopts the one a previous
 * agent left running; replaces it without dropping a request when its code differs (an upgrade),
 * and replaces it plainly when its listen settings changed. Pushes the full route and TLS state
 * on every connect and change, asks for drains, keeps the last in-flight counts the router
 * reported, and reads the router's access journal by offset. `close({ stop: false })` detaches
 * (the router serves on, as instances run on); `stop: true` stops it.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { HangarError, describeError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { AccessJournalReader } from './access-journal.js';
import type { AccessEntry, AppRoute, Router, RouterTls } from './router.js';
import { spawnRouterProcess } from './router-spawn.js';
import {
  FrameReader,
  ROUTER_ENTRY,
  encodeFrame,
  processAlive,
  routerCodeVersion,
  routerPaths,
  type AgentFrame,
  type RouterFrame,
  type RouterProcessConfig,
  type RouterStateFrame,
} from './router-protocol.js';

/** What the rest of the agent uses of its router (in this process or the router process). */
export type RouterControl = Pick<Router, 'setRoutes' | 'setTls' | 'drain' | 'inFlight'>;

/** Options of {@link RouterClient}. */
export interface RouterClientOptions {
  dataDir: string;
  config: RouterProcessConfig;
  logger: Logger;
  /** Access entries read from the router's journal, oldest first. Must not throw. */
  onAccess: (entries: AccessEntry[]) => void;
  /** The router process's entry file. Default: router-main.js of this code. */
  entry?: string;
}

type Hello = Extract<RouterFrame, { type: 'hello' }>;

interface PendingDrain {
  frame: Extract<AgentFrame, { type: 'drain' }>;
  startedAt: number;
  resolve: () => void;
  timer: NodeJS.Timeout;
}

/** How long a connect plus hello may take, ms. */
const HELLO_TIMEOUT_MS = 5_000;
/** How long a replacement (upgrade) may take until the new router says hello, ms. */
const REPLACE_TIMEOUT_MS = 60_000;
/** How long a router told to stop may take to exit, ms. */
const STOP_TIMEOUT_MS = 15_000;
/**
 * How often the access journal is read, ms. Each read that finds entries saves the offset (a
 * write and a rename): at 200 ms those renames were a fifth of the agent's CPU under steady
 * traffic (bench:agent); a second keeps access lines as timely as the log batches they join.
 */
const ACCESS_POLL_MS = 1000;
/** A drain the router never answered (it went away) ends this long after its bound, ms. */
const DRAIN_GRACE_MS = 5_000;

export type RouterClientState = 'new' | 'starting' | 'up' | 'closed';

/** See the module comment. */
export class RouterClient implements RouterControl {
  readonly #o: RouterClientOptions;
  readonly #log: Logger;
  readonly #paths: ReturnType<typeof routerPaths>;
  readonly #version = routerCodeVersion();
  #state: RouterClientState = 'new';
  #socket: net.Socket | null = null;
  #hello: Hello | null = null;
  #routes: AppRoute[] | null = null;
  #tls: RouterTls = { certificates: [], challenges: new Map() };
  #pushScheduled = false;
  #inFlight: Record<string, number> = {};
  readonly #drains = new Map<number, PendingDrain>();
  #nextDrain = 1;
  #reconnectTimer: NodeJS.Timeout | null = null;
  #reconnectMs = 50;
  #accessTimer: NodeJS.Timeout | null = null;
  #journal: AccessJournalReader | null = null;
  /** Resolvers of whoever waits for the next hello (start, a replacement). */
  readonly #helloWaiters = new Set<(hello: Hello) => void>();
  #closedWaiters = new Set<() => void>();

  constructor(options: RouterClientOptions) {
    this.#o = options;
    this.#log = options.logger.child({ component: 'router-client' });
    this.#paths = routerPaths(options.dataDir);
  }

  get state(): RouterClientState {
    return this.#state;
  }

  /** Pid of the router process once started. */
  get pid(): number {
    return this.#hello?.pid ?? 0;
  }

  /**
   * Adopts the running router process (replacing it when its code or settings differ) or starts
   * one; resolves with its ports. Rejects with `CONFLICT` when a port cannot be bound.
   */
  async start(): Promise<{ port: number; httpsPort: number }> {
    if (this.#state !== 'new') throw new HangarError('CONFLICT', `The router client cannot start when ${this.#state}.`);
    this.#state = 'starting';
    mkdirSync(this.#paths.dir, { recursive: true, mode: 0o700 });
    let hello = await this.#tryConnect();
    if (hello === null) {
      const stale = this.#runningPid();
      if (stale !== null) {
        // Its control socket does not answer (it hangs, or it is still starting): wait a little, then replace it.
        hello = await this.#tryConnect(HELLO_TIMEOUT_MS);
        if (hello === null) {
          this.#log.warn({ pid: stale }, 'the router process does not answer on its control socket; replacing it');
          await killGroup(stale);
        }
      }
    }
    if (hello !== null && !sameConfig(hello.config, this.#o.config)) {
      this.#log.info({ was: hello.config, now: this.#o.config }, 'the router settings changed: restarting the router process');
      await this.#stopRouter(hello.pid);
      hello = null;
    }
    let adopted = 'adopted the running router process';
    if (hello !== null && hello.version !== this.#version) {
      hello = await this.#replace(hello);
      adopted = 'the router process runs on (replaced or not, as said above)';
    }
    if (hello === null) {
      try {
        await spawnRouterProcess(this.#o.entry ?? ROUTER_ENTRY, this.#o.dataDir, this.#o.config, this.#paths.log);
      } catch (err) {
        this.#state = 'closed';
        const message = describeError(err);
        throw new HangarError('CONFLICT', message.startsWith('The router') ? message : `The router process did not start: ${message}`, {
          cause: err,
        });
      }
      hello = await this.#tryConnect(HELLO_TIMEOUT_MS);
      if (hello === null) {
        this.#state = 'closed';
        throw new HangarError('CONFLICT', `The router process started but its control socket does not answer; see ${this.#paths.log}.`);
      }
      this.#log.info({ pid: hello.pid, port: hello.port, httpsPort: hello.httpsPort }, 'router process started');
    } else {
      this.#log.info({ pid: hello.pid, port: hello.port, httpsPort: hello.httpsPort }, adopted);
    }
    this.#state = 'up';
    return { port: hello.port, httpsPort: hello.httpsPort };
  }

  /** Starts reading the router's access journal (after whoever consumes the entries is ready). */
  followAccess(): void {
    if (this.#state !== 'up' || this.#journal !== null) return;
    this.#journal = new AccessJournalReader({
      dir: this.#paths.accessDir,
      offsetFile: this.#paths.accessOffset,
      logger: this.#log,
      onEntries: (entries) => {
        try {
          this.#o.onAccess(entries);
        } catch (err) {
          this.#log.error({ err }, 'access entries could not be handled');
        }
      },
    });
    this.#readAccess();
  }

  setRoutes(routes: AppRoute[]): void {
    this.#routes = routes;
    this.#schedulePush();
  }

  setTls(tls: RouterTls): void {
    this.#tls = tls;
    this.#schedulePush();
  }

  /** As {@link Router.drain}, done by the router process; ends early when the agent closes. */
  drain(instanceKey: string, timeoutMs: number, upgradeTimeoutMs?: number): Promise<void> {
    if (this.#state === 'closed') return Promise.resolve();
    this.#push();
    const id = this.#nextDrain++;
    const frame: PendingDrain['frame'] = { type: 'drain', id, instanceKey, timeoutMs, upgradeTimeoutMs: upgradeTimeoutMs ?? timeoutMs };
    return new Promise<void>((resolve) => {
      const timer = setTimeout(
        () => {
          this.#log.warn({ instanceKey }, 'the router process did not answer a drain; going on');
          this.#endDrain(id);
        },
        Math.max(timeoutMs, frame.upgradeTimeoutMs) + DRAIN_GRACE_MS,
      );
      this.#drains.set(id, { frame, startedAt: Date.now(), resolve, timer });
      this.#send(frame);
    });
  }

  /** Requests in flight to the instance (or to all), as the router process last reported. */
  inFlight(instanceKey?: string): number {
    if (instanceKey !== undefined) return this.#inFlight[instanceKey] ?? 0;
    return Object.values(this.#inFlight).reduce((a, b) => a + b, 0);
  }

  /**
   * Lets the router go. `stop: false` (an agent restart) leaves it serving for the next agent;
   * `stop: true` (the agent stops for good) stops it. Idempotent.
   */
  async close(options: { stop: boolean }): Promise<void> {
    if (this.#state === 'closed') return;
    const wasUp = this.#state === 'up';
    this.#state = 'closed';
    if (this.#accessTimer) clearTimeout(this.#accessTimer);
    this.#accessTimer = null;
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    // What the router logged until now goes into the spool before it closes.
    this.#drainJournal();
    for (const id of [...this.#drains.keys()]) this.#endDrain(id);
    if (options.stop && wasUp) {
      const pid = this.#hello?.pid ?? this.#runningPid();
      if (pid !== null && pid !== undefined) await this.#stopRouter(pid);
    }
    this.#socket?.destroy();
    this.#socket = null;
  }

  // --- connection ---------------------------------------------------------------------------

  /** Connects to the control socket and waits for the router's hello; null when nobody answers within `waitMs`. */
  async #tryConnect(waitMs = 0): Promise<Hello | null> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const hello = await this.#connectOnce();
      if (hello !== null || Date.now() >= deadline) return hello;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  #connectOnce(): Promise<Hello | null> {
    return new Promise((resolve) => {
      const socket = net.connect(this.#paths.control);
      let settled = false;
      const timer = setTimeout(() => done(null), HELLO_TIMEOUT_MS);
      const done = (hello: Hello | null): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#helloWaiters.delete(onHello);
        if (hello === null) socket.destroy();
        resolve(hello);
      };
      const onHello = (hello: Hello): void => done(hello);
      socket.once('error', () => done(null));
      socket.once('connect', () => {
        this.#attach(socket, onHello);
      });
      socket.once('close', () => done(null));
    });
  }

  /** Makes `socket` the connection: frames in, state and pending drains out once the hello came. */
  #attach(socket: net.Socket, onFirstHello: (hello: Hello) => void): void {
    let greeted = false;
    const reader = new FrameReader((frame) => {
      const f = frame as unknown as RouterFrame;
      switch (f.type) {
        case 'hello':
          if (greeted) return;
          greeted = true;
          this.#socket?.destroy();
          this.#socket = socket;
          this.#hello = f;
          this.#reconnectMs = 50;
          this.#inFlight = {};
          // A router that serves already has the state; this one's is pushed again all the same (it may be newer).
          if (this.#routes !== null) this.#push(true);
          for (const d of this.#drains.values()) {
            const elapsed = Date.now() - d.startedAt;
            this.#send({
              ...d.frame,
              timeoutMs: Math.max(0, d.frame.timeoutMs - elapsed),
              upgradeTimeoutMs: Math.max(0, d.frame.upgradeTimeoutMs - elapsed),
            });
          }
          onFirstHello(f);
          for (const w of [...this.#helloWaiters]) w(f);
          return;
        case 'drained':
          this.#endDrain(f.id);
          return;
        case 'load':
          this.#inFlight = f.inFlight;
          return;
      }
    });
    socket.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (err) {
        this.#log.warn({ err: describeError(err) }, 'bad frame from the router process; reconnecting');
        socket.destroy();
      }
    });
    socket.on('error', (err) => this.#log.debug({ err: describeError(err) }, 'router control connection error'));
    socket.on('close', () => {
      if (this.#socket !== socket) return;
      this.#socket = null;
      for (const w of [...this.#closedWaiters]) w();
      if (this.#state === 'up') this.#scheduleReconnect();
    });
  }

  #scheduleReconnect(): void {
    if (this.#reconnectTimer || this.#state !== 'up') return;
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      void this.#connectOnce().then((hello) => {
        if (hello === null) {
          this.#reconnectMs = Math.min(this.#reconnectMs * 2, 2_000);
          this.#scheduleReconnect();
        } else if (this.#state !== 'up') {
          this.#socket?.destroy();
        } else {
          this.#log.info({ pid: hello.pid, version: hello.version }, 'connected to the router process again');
        }
      });
    }, this.#reconnectMs);
  }

  #send(frame: AgentFrame): void {
    const s = this.#socket;
    if (s !== null && !s.destroyed && s.writable) s.write(encodeFrame(frame));
  }

  #schedulePush(): void {
    if (this.#pushScheduled) return;
    this.#pushScheduled = true;
    // setRoutes and setTls come together: one frame for both.
    queueMicrotask(() => this.#push());
  }

  /** Sends the state now if a push is due (or `force`). */
  #push(force = false): void {
    if (!this.#pushScheduled && !force) return;
    this.#pushScheduled = false;
    if (this.#routes === null) return;
    const frame: RouterStateFrame = {
      routes: this.#routes,
      certificates: this.#tls.certificates,
      challenges: [...this.#tls.challenges],
    };
    this.#send({ type: 'state', ...frame });
  }

  #endDrain(id: number): void {
    const d = this.#drains.get(id);
    if (!d) return;
    this.#drains.delete(id);
    clearTimeout(d.timer);
    d.resolve();
  }

  // --- process ------------------------------------------------------------------------------

  /** The pid in the pidfile when that process is alive and is a router process. */
  #runningPid(): number | null {
    let pid: number;
    try {
      pid = Number(readFileSync(this.#paths.pidFile, 'utf8').trim());
    } catch {
      return null;
    }
    if (!Number.isInteger(pid) || pid <= 1) return null;
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      return cmdline.includes('router-main') ? pid : null;
    } catch {
      return null;
    }
  }

  /** Asks the router to stop (or signals it), waits for it to exit; kills its group after the bound. */
  async #stopRouter(pid: number): Promise<void> {
    if (this.#socket !== null) this.#send({ type: 'stop' });
    else signal(pid, 'SIGTERM');
    const deadline = Date.now() + STOP_TIMEOUT_MS;
    while (processAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (processAlive(pid)) {
      this.#log.warn({ pid }, 'the router process did not stop in time; killing it');
      await killGroup(pid);
    }
    this.#socket?.destroy();
    this.#socket = null;
  }

  /** Has the router replace itself with one started from this agent's code; the new one's hello, or the old one's when it failed. */
  async #replace(old: Hello): Promise<Hello> {
    this.#log.info(
      { pid: old.pid, running: old.version, ours: this.#version },
      'the router process runs other code: replacing it (an upgrade)',
    );
    const next = new Promise<Hello | null>((resolve) => {
      const timer = setTimeout(() => finish(null), REPLACE_TIMEOUT_MS);
      const finish = (h: Hello | null): void => {
        clearTimeout(timer);
        this.#closedWaiters.delete(onClosed);
        resolve(h);
      };
      const onClosed = (): void => {
        // The old router let its agents go: the new one owns the control socket now.
        void this.#tryConnect(HELLO_TIMEOUT_MS).then(finish);
      };
      this.#closedWaiters.add(onClosed);
    });
    this.#send({ type: 'replace', entry: this.#o.entry ?? ROUTER_ENTRY });
    const hello = await next;
    if (hello === null) {
      this.#log.error({ log: this.#paths.log }, 'the router process was not replaced; the old one serves on');
      return (await this.#tryConnect(HELLO_TIMEOUT_MS)) ?? old;
    }
    this.#log.info({ pid: hello.pid, was: old.pid }, 'router process replaced');
    return hello;
  }

  // --- access journal -----------------------------------------------------------------------

  #readAccess(): void {
    this.#drainJournal();
    if (this.#state !== 'up') return;
    this.#accessTimer = setTimeout(() => this.#readAccess(), ACCESS_POLL_MS);
    this.#accessTimer.unref();
  }

  #drainJournal(): void {
    if (this.#journal === null) return;
    try {
      for (let i = 0; i < 16 && this.#journal.read(); i++);
    } catch (err) {
      this.#log.error({ err }, 'could not read the router access journal');
    }
  }
}

function sameConfig(a: RouterProcessConfig, b: RouterProcessConfig): boolean {
  return (
    a.port === b.port &&
    a.httpsPort === b.httpsPort &&
    a.host === b.host &&
    a.trustedProxies.length === b.trustedProxies.length &&
    a.trustedProxies.every((p, i) => p === b.trustedProxies[i])
  );
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Gone already.
  }
}

/** SIGKILL to the router's process group (it leads its own), then waits for it to be gone. */
async function killGroup(pid: number): Promise<void> {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    signal(pid, 'SIGKILL');
  }
  const deadline = Date.now() + 5_000;
  while (processAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}
