/**
 * The agent's HTTP router: one port, routes by Host header to the healthy web instances of each
 * app anywhere in the fleet, with keep-alive pools, least-in-flight balancing, a safe retry when an
 * instance vanished before it answered, and draining — what makes deploys zero-downtime.
 */
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { pipeline } from 'node:stream/promises';
import type { AddressInfo, Socket } from 'node:net';
import { Pool, type Dispatcher } from 'undici';
import type { Logger } from '../../common/logger.js';
import { systemClock, sleep, type Clock, type ClockTimer } from '../../common/clock.js';
import { HangarError, describeError } from '../../common/errors.js';
import { acceptableRequestId, forwardRequestHeaders, forwardResponseHeaders, hasRequestBody, hostnameOf } from './http-headers.js';

/** One web instance the router may send requests to. */
export interface Backend {
  /** Stable, fleet-wide name of the instance (drain and in-flight counts use it). */
  instanceKey: string;
  /** Address the instance listens on (IPv4, IPv6 or a name). */
  host: string;
  port: number;
}

/** The domains of one app and its healthy web instances. */
export interface AppRoute {
  app: string;
  /** Host names served, matched exactly and case-insensitively. */
  domains: string[];
  backends: Backend[];
}

/**
 * Why the router answered a request itself or cut it short. A caller maps these to Heroku-style
 * codes (H10/H12/H13/H14…) in the router log line.
 */
export type RouteFailure =
  /** No app has this domain (404). */
  | 'NO_APP'
  /** The app has no routable web instance (503). */
  | 'NO_BACKENDS'
  /** The instance refused or reset the connection before answering, retry impossible (502). */
  | 'BACKEND_UNREACHABLE'
  /** The instance sent no response headers within `requestTimeoutMs` (504). */
  | 'BACKEND_TIMEOUT'
  /** The instance failed another way: bad response, or died while sending the body. */
  | 'BACKEND_ERROR'
  /** The client went away before the response was complete; the upstream request was aborted. */
  | 'CLIENT_CLOSED';

/** One line of the router's access log, handed to {@link RouterOptions.onAccess}. */
export interface AccessEntry {
  /** Unix ms when the request arrived. */
  ts: number;
  /** App name; empty when the Host matched no app. */
  app: string;
  method: string;
  /** Request target as received (path and query). */
  path: string;
  /** Status sent to the client (499 when the client closed before any response). */
  status: number;
  durationMs: number;
  /** Instance that served (or last tried to serve) the request; null when none was chosen. */
  instanceKey: string | null;
  /** Response body bytes sent to the client. */
  bytes: number;
  requestId: string;
  /** Instances tried: 0 (answered by the router), 1, or 2 after a retry. */
  attempts: number;
  /** Set when the request did not complete normally. */
  failure?: RouteFailure;
}

/** Options of {@link Router}. */
export interface RouterOptions {
  /** Port to listen on; 0 picks a free one ({@link Router.start} returns it). */
  port: number;
  /** Address to listen on. Default `0.0.0.0`. */
  host?: string;
  /** Parent logger; the router logs under `component: 'router'`. */
  logger: Logger;
  /** Called once per request when it ends. Must not throw (a throw is logged and ignored). */
  onAccess?: (entry: AccessEntry) => void;
  /** Time allowed to open a connection to an instance, in ms. Default 5000. */
  connectTimeoutMs?: number;
  /**
   * Time an instance has to send response headers, and the longest silence allowed while it sends
   * the body, in ms. Default 30000, like Heroku's H12.
   */
  requestTimeoutMs?: number;
  /** Clock for timestamps, the retry pause, drain timeouts and failure cool-down. Default: system. */
  clock?: Clock;
}

/** Router lifecycle. */
export type RouterState = 'new' | 'starting' | 'up' | 'closing' | 'closed';

const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** Pause before retrying on the same instance when it is the only one (a restart may be under way). */
const RETRY_PAUSE_MS = 100;
/** An instance that refused or reset is picked only when nothing else is available, for this long. */
const FAILURE_COOLDOWN_MS = 2_000;
/**
 * Idle keep-alive sockets to instances are closed after this long. Below gunicorn's default
 * `--keep-alive 2`, so the router rarely reuses a socket the instance is about to close.
 */
const POOL_KEEP_ALIVE_MS = 1_500;
/** Methods that are idempotent, hence safe to send twice when they carry no body. */
const RETRYABLE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
/** Error codes meaning the instance never got (or never processed) the request. */
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_CLOSED',
  'UND_ERR_DESTROYED',
]);

/** A backend as the router tracks it: its pool, load and draining state. */
interface BackendState {
  readonly key: string;
  readonly origin: string;
  readonly pool: Pool;
  inFlight: number;
  /** Set by {@link Router.drain}: no new requests. */
  draining: boolean;
  /** No longer in the route table: no new requests, pool closed once idle. */
  retired: boolean;
  poolClosed: boolean;
  lastFailureAt: number;
}

interface AppEntry {
  readonly app: string;
  readonly backends: readonly BackendState[];
  /** Round-robin cursor for ties. */
  cursor: number;
}

interface DrainWaiter {
  readonly key: string;
  readonly resolve: () => void;
}

/** Per-request state shared by the attempts. */
interface Exchange {
  readonly req: http.IncomingMessage;
  readonly res: http.ServerResponse;
  readonly hostname: string;
  readonly method: string;
  readonly path: string;
  readonly requestId: string;
  readonly headers: string[];
  readonly hasBody: boolean;
  readonly abort: AbortController;
  clientGone: boolean;
  bytes: number;
}

type Outcome =
  | { kind: 'done'; status: number }
  | { kind: 'broken'; status: number; err: unknown }
  | { kind: 'client-gone'; status: number }
  | { kind: 'unreachable'; err: unknown }
  | { kind: 'timeout'; err: unknown }
  | { kind: 'error'; err: unknown };

/**
 * Routes HTTP requests by Host header to app instances. Create, {@link Router.setRoutes} (any
 * time, before or after start), {@link Router.start}; {@link Router.drain} an instance before
 * stopping it; {@link Router.close} at shutdown.
 */
export class Router {
  readonly #options: RouterOptions;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #requestTimeoutMs: number;
  readonly #connectTimeoutMs: number;
  #state: RouterState = 'new';
  #server: http.Server | undefined;
  #port = 0;
  #starting: Promise<{ port: number }> | undefined;
  #closing: Promise<void> | undefined;
  /** Route table, swapped whole by setRoutes. */
  #domains = new Map<string, AppEntry>();
  /** Current backends by instance key. */
  #backends = new Map<string, BackendState>();
  /** Backends removed from the table that still have requests in flight. */
  readonly #retired = new Set<BackendState>();
  /** Keys drained by drain(); kept until the key leaves the route table, so stale routes cannot undo it. */
  readonly #drained = new Set<string>();
  readonly #waiters = new Set<DrainWaiter>();

  constructor(options: RouterOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: 'router' });
    this.#clock = options.clock ?? systemClock;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  }

  /** Current lifecycle state. */
  get state(): RouterState {
    return this.#state;
  }

  /**
   * Starts listening. Idempotent: later calls return the same port. Rejects when the port cannot
   * be bound, and with `CONFLICT` after {@link Router.close}.
   */
  start(): Promise<{ port: number }> {
    if (this.#state === 'closing' || this.#state === 'closed') {
      return Promise.reject(new HangarError('CONFLICT', 'The router is closed; create a new Router to listen again.'));
    }
    if (this.#starting !== undefined) return this.#starting;
    this.#state = 'starting';
    this.#starting = this.#listen();
    return this.#starting;
  }

  async #listen(): Promise<{ port: number }> {
    const server = http.createServer({
      // Uploads may legitimately take minutes; idleness is bounded by the socket timeout below.
      requestTimeout: 0,
    });
    // A client that sends nothing for this long is cut off; longer than an instance may take to answer.
    server.setTimeout(this.#requestTimeoutMs + 30_000);
    server.on('request', (req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        this.#log.error({ err, url: req.url }, 'router failed to handle a request');
        if (!res.headersSent && !res.destroyed) this.#reply(res, 500, 'Internal router error.\n');
        else res.destroy();
      });
    });
    server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      const level = err.code === 'ECONNRESET' ? 'debug' : 'warn';
      this.#log[level]({ err: describeError(err), code: err.code, remote: (socket as Socket).remoteAddress }, 'client connection error');
      if (socket.writable && !socket.destroyed && err.code !== 'ECONNRESET') {
        socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      } else {
        socket.destroy();
      }
    });
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        this.#state = 'closed';
        reject(
          new HangarError(
            'CONFLICT',
            `The router cannot listen on port ${this.#options.port}: ${err.message}. Choose another --router-port.`,
            { cause: err },
          ),
        );
      };
      server.once('error', onError);
      server.listen(this.#options.port, this.#options.host ?? '0.0.0.0', () => {
        server.off('error', onError);
        server.on('error', (err) => this.#log.warn({ err }, 'router server error'));
        resolve();
      });
    });
    this.#port = (server.address() as AddressInfo).port;
    if (this.#state === 'starting') this.#state = 'up';
    this.#log.info({ port: this.#port }, 'router listening');
    return { port: this.#port };
  }

  /**
   * Replaces the route table atomically. Instances no longer listed get no new requests; their
   * in-flight requests finish and their pools close once idle. An instance whose address changed
   * under the same key is treated as a new one.
   */
  setRoutes(routes: AppRoute[]): void {
    const backends = new Map<string, BackendState>();
    const domains = new Map<string, AppEntry>();
    for (const route of routes) {
      const states: BackendState[] = [];
      for (const b of route.backends) {
        const origin = originOf(b);
        let state = backends.get(b.instanceKey);
        if (state !== undefined && state.origin !== origin) {
          this.#log.warn({ instanceKey: b.instanceKey, app: route.app }, 'instance key listed with two addresses; keeping the first');
          continue;
        }
        if (state === undefined) {
          const existing = this.#backends.get(b.instanceKey);
          state = existing !== undefined && existing.origin === origin ? existing : this.#newBackend(b.instanceKey, origin);
          backends.set(b.instanceKey, state);
        }
        state.draining = this.#drained.has(b.instanceKey);
        if (!states.includes(state)) states.push(state);
      }
      const entry: AppEntry = { app: route.app, backends: states, cursor: this.#appEntry(route.app)?.cursor ?? 0 };
      for (const domain of route.domains) {
        const name = hostnameOf(domain);
        if (name === null) continue;
        const other = domains.get(name);
        if (other !== undefined && other.app !== route.app) {
          this.#log.warn({ domain: name, app: route.app, other: other.app }, 'domain claimed by two apps; the later one wins');
        }
        domains.set(name, entry);
      }
    }
    const old = this.#backends;
    this.#backends = backends;
    this.#domains = domains;
    for (const [key, state] of old) {
      if (backends.get(key) === state) continue;
      state.retired = true;
      this.#retired.add(state);
      this.#closeIfIdle(state);
    }
    for (const key of this.#drained) if (!backends.has(key)) this.#drained.delete(key);
  }

  /**
   * Stops sending new requests to the instance now, and resolves when none of its requests is in
   * flight, or after `timeoutMs` (whichever comes first). The instance stays drained until a route
   * table without it has been set.
   */
  drain(instanceKey: string, timeoutMs: number): Promise<void> {
    this.#drained.add(instanceKey);
    const current = this.#backends.get(instanceKey);
    if (current !== undefined) current.draining = true;
    if (this.inFlight(instanceKey) === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      let timer: ClockTimer | undefined = undefined;
      const waiter: DrainWaiter = {
        key: instanceKey,
        resolve: () => {
          this.#waiters.delete(waiter);
          if (timer !== undefined) this.#clock.clearTimeout(timer);
          resolve();
        },
      };
      this.#waiters.add(waiter);
      timer = this.#clock.setTimeout(() => {
        if (!this.#waiters.has(waiter)) return;
        this.#log.warn({ instanceKey, inFlight: this.inFlight(instanceKey), timeoutMs }, 'drain timed out with requests in flight');
        waiter.resolve();
      }, timeoutMs);
    });
  }

  /** Requests in flight to the instance, or to all instances when no key is given. */
  inFlight(instanceKey?: string): number {
    let n = 0;
    for (const state of this.#allBackends()) {
      if (instanceKey === undefined || state.key === instanceKey) n += state.inFlight;
    }
    return n;
  }

  /**
   * Stops listening, aborts requests still in flight (drain instances first for a graceful stop)
   * and closes every pool. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    if (this.#state === 'starting') await this.#starting?.catch(() => undefined);
    this.#state = 'closing';
    const server = this.#server;
    if (server !== undefined && server.listening) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    }
    const pools = [...this.#allBackends()];
    this.#backends = new Map();
    this.#domains = new Map();
    this.#retired.clear();
    await Promise.all(pools.map((s) => this.#destroyPool(s)));
    for (const w of [...this.#waiters]) w.resolve();
    this.#state = 'closed';
    this.#log.info('router closed');
  }

  *#allBackends(): Iterable<BackendState> {
    yield* this.#backends.values();
    yield* this.#retired;
  }

  #appEntry(app: string): AppEntry | undefined {
    for (const entry of this.#domains.values()) if (entry.app === app) return entry;
    return undefined;
  }

  #newBackend(key: string, origin: string): BackendState {
    const pool = new Pool(origin, {
      connect: { timeout: this.#connectTimeoutMs },
      keepAliveTimeout: POOL_KEEP_ALIVE_MS,
      headersTimeout: this.#requestTimeoutMs,
      bodyTimeout: this.#requestTimeoutMs,
    });
    return { key, origin, pool, inFlight: 0, draining: false, retired: false, poolClosed: false, lastFailureAt: -Infinity };
  }

  #closeIfIdle(state: BackendState): void {
    if (!state.retired || state.inFlight > 0 || state.poolClosed) return;
    this.#retired.delete(state);
    state.poolClosed = true;
    state.pool.close().catch((err: unknown) => {
      this.#log.warn({ err: describeError(err), instanceKey: state.key }, 'closing an instance pool failed');
    });
  }

  async #destroyPool(state: BackendState): Promise<void> {
    state.poolClosed = true;
    try {
      await state.pool.destroy();
    } catch (err) {
      this.#log.warn({ err: describeError(err), instanceKey: state.key }, 'destroying an instance pool failed');
    }
  }

  /**
   * Least in-flight among the instances that take requests, round robin among ties. Instances
   * that failed recently, and `avoid`, are chosen only when there is nothing else.
   */
  #pick(entry: AppEntry, avoid?: BackendState): BackendState | undefined {
    const open = entry.backends.filter((b) => !b.draining && !b.retired);
    const now = this.#clock.now();
    const tiers = [open.filter((b) => b !== avoid && now - b.lastFailureAt >= FAILURE_COOLDOWN_MS), open.filter((b) => b !== avoid), open];
    const candidates = tiers.find((t) => t.length > 0);
    if (candidates === undefined) return undefined;
    const start = entry.cursor++ % candidates.length;
    let best: BackendState | undefined;
    for (let i = 0; i < candidates.length; i++) {
      const b = candidates[(start + i) % candidates.length];
      if (b !== undefined && (best === undefined || b.inFlight < best.inFlight)) best = b;
    }
    return best;
  }

  #release(state: BackendState): void {
    state.inFlight--;
    if (this.inFlight(state.key) === 0) {
      for (const w of [...this.#waiters]) if (w.key === state.key) w.resolve();
    }
    this.#closeIfIdle(state);
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const ts = this.#clock.now();
    const t0 = performance.now();
    const method = req.method ?? 'GET';
    const requestId = acceptableRequestId(req.headers['x-request-id']) ?? randomUUID();
    const { hostname, path } = targetOf(req);
    const ex: Exchange = {
      req,
      res,
      hostname: hostname ?? '',
      method,
      path,
      requestId,
      headers: forwardRequestHeaders(req.rawHeaders, {
        clientAddress: req.socket.remoteAddress,
        proto: 'encrypted' in req.socket && req.socket.encrypted === true ? 'https' : 'http',
        port: req.socket.localPort,
        requestId,
      }),
      hasBody: hasRequestBody(req.headers),
      abort: new AbortController(),
      clientGone: false,
      bytes: 0,
    };
    res.on('close', () => {
      if (!res.writableFinished) {
        ex.clientGone = true;
        ex.abort.abort();
      }
    });

    let app = '';
    let instanceKey: string | null = null;
    let attempts = 0;
    let status: number;
    let failure: RouteFailure | undefined;
    const finish = (): void => {
      const entry: AccessEntry = {
        ts,
        app,
        method,
        path,
        status,
        durationMs: Math.round((performance.now() - t0) * 1000) / 1000,
        instanceKey,
        bytes: ex.bytes,
        requestId,
        attempts,
      };
      if (failure !== undefined) entry.failure = failure;
      try {
        this.#options.onAccess?.(entry);
      } catch (err) {
        this.#log.warn({ err: describeError(err) }, 'onAccess callback threw');
      }
    };

    let entry = hostname === null ? undefined : this.#domains.get(hostname);
    if (entry === undefined) {
      status = 404;
      failure = 'NO_APP';
      this.#reply(
        res,
        404,
        `No app is served at ${truncate(hostname ?? '(no Host header)')} by this Hangar router. Check the domain, or run \`hangar apps\` to see the apps.\n`,
        ex,
      );
      return finish();
    }
    app = entry.app;
    const retryable = RETRYABLE_METHODS.has(method) && !ex.hasBody;
    const first = this.#pick(entry);
    if (first === undefined) {
      status = 503;
      failure = 'NO_BACKENDS';
      this.#reply(
        res,
        503,
        `No web processes running for app "${app}". Check them with \`hangar ps -a ${app}\`, or start one with \`hangar scale web=1 -a ${app}\`.\n`,
        ex,
      );
      return finish();
    }

    let backend: BackendState = first;
    for (;;) {
      attempts++;
      instanceKey = backend.key;
      const outcome = await this.#forward(ex, backend);
      const ctx = { app, instanceKey, origin: backend.origin, requestId, method, path, attempt: attempts };
      switch (outcome.kind) {
        case 'done':
          status = outcome.status;
          return finish();
        case 'broken':
          this.#log.warn({ ...ctx, err: describeError(outcome.err) }, 'instance response broke off mid-body');
          status = outcome.status;
          failure = 'BACKEND_ERROR';
          return finish();
        case 'client-gone':
          status = outcome.status;
          failure = 'CLIENT_CLOSED';
          return finish();
        case 'timeout':
          this.#log.warn({ ...ctx, timeoutMs: this.#requestTimeoutMs }, 'instance sent no response in time');
          status = 504;
          failure = 'BACKEND_TIMEOUT';
          this.#reply(
            res,
            504,
            `The app "${app}" did not respond within ${Math.round(this.#requestTimeoutMs / 1000)} s. Look for slow requests with \`hangar logs -a ${app}\`.\n`,
            ex,
          );
          return finish();
        case 'error':
          this.#log.warn({ ...ctx, err: describeError(outcome.err), code: errorCode(outcome.err) }, 'forwarding to instance failed');
          status = 502;
          failure = 'BACKEND_ERROR';
          this.#reply(res, 502, `The app "${app}" sent an invalid response. Check \`hangar logs -a ${app}\`.\n`, ex);
          return finish();
        case 'unreachable': {
          backend.lastFailureAt = this.#clock.now();
          const canRetry = retryable && attempts === 1 && !ex.clientGone;
          this.#log.warn(
            { ...ctx, err: describeError(outcome.err), code: errorCode(outcome.err), retry: canRetry },
            'instance unreachable',
          );
          if (canRetry) {
            const failed: BackendState = backend;
            // Re-read the table: the router may have learnt of the instance's death meanwhile.
            entry = this.#domains.get(ex.hostname);
            let next: BackendState | undefined = entry === undefined ? undefined : this.#pick(entry, failed);
            if (next === failed) {
              await sleep(RETRY_PAUSE_MS, this.#clock);
              entry = this.#domains.get(ex.hostname);
              next = entry === undefined ? undefined : this.#pick(entry, failed);
            }
            if (next !== undefined && !ex.clientGone) {
              backend = next;
              continue;
            }
          }
          if (ex.clientGone) {
            status = 499;
            failure = 'CLIENT_CLOSED';
            return finish();
          }
          status = 502;
          failure = 'BACKEND_UNREACHABLE';
          this.#reply(
            res,
            502,
            `The app "${app}" could not be reached (its web process refused or dropped the connection). Check \`hangar ps -a ${app}\` and \`hangar logs -a ${app}\`.\n`,
            ex,
          );
          return finish();
        }
      }
    }
  }

  /** One attempt: sends the request to `backend` and streams the response back. */
  async #forward(ex: Exchange, backend: BackendState): Promise<Outcome> {
    backend.inFlight++;
    try {
      let upstream: Dispatcher.ResponseData;
      try {
        upstream = await backend.pool.request({
          method: ex.method,
          path: ex.path,
          headers: ex.headers,
          body: ex.hasBody ? ex.req : null,
          signal: ex.abort.signal,
        });
      } catch (err) {
        if (ex.clientGone) return { kind: 'client-gone', status: 499 };
        const code = errorCode(err);
        if (code === 'UND_ERR_HEADERS_TIMEOUT') return { kind: 'timeout', err };
        if (code !== undefined && UNREACHABLE_CODES.has(code)) return { kind: 'unreachable', err };
        return { kind: 'error', err };
      }
      const status = upstream.statusCode;
      if (ex.clientGone) {
        upstream.body.destroy();
        return { kind: 'client-gone', status: 499 };
      }
      ex.res.writeHead(status, forwardResponseHeaders(upstream.headers, ex.requestId));
      try {
        await pipeline(
          upstream.body,
          async function* count(source: AsyncIterable<Buffer>) {
            for await (const chunk of source) {
              ex.bytes += chunk.length;
              yield chunk;
            }
          },
          ex.res,
        );
        return { kind: 'done', status };
      } catch (err) {
        // Headers are gone: cutting the connection is the only way to tell the client it is truncated.
        ex.res.destroy();
        if (ex.clientGone) return { kind: 'client-gone', status };
        return { kind: 'broken', status, err };
      }
    } finally {
      this.#release(backend);
    }
  }

  /** Sends a short plain-text answer from the router itself. */
  #reply(res: http.ServerResponse, status: number, body: string, ex?: Exchange): void {
    if (res.headersSent || res.destroyed) return;
    const buf = Buffer.from(body, 'utf8');
    const headers: http.OutgoingHttpHeaders = {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': buf.length,
      'cache-control': 'no-store',
    };
    if (ex !== undefined) {
      headers['x-request-id'] = ex.requestId;
      if (ex.method !== 'HEAD') ex.bytes += buf.length;
    }
    // A request body nobody will read must not keep the connection busy: close after answering.
    if (ex?.hasBody === true && !ex.req.readableEnded) headers.connection = 'close';
    res.writeHead(status, headers);
    res.end(ex?.method === 'HEAD' ? undefined : buf);
  }
}

function originOf(b: Backend): string {
  const host = b.host.includes(':') && !b.host.startsWith('[') ? `[${b.host}]` : b.host;
  return `http://${host}:${b.port}`;
}

/** Host and path of a request, accepting the absolute form (`GET http://host/path`) too. */
function targetOf(req: http.IncomingMessage): { hostname: string | null; path: string } {
  const url = req.url ?? '/';
  if (/^https?:\/\//i.test(url)) {
    try {
      const u = new URL(url);
      return { hostname: hostnameOf(u.host), path: `${u.pathname}${u.search}` };
    } catch {
      // Fall through to the Host header.
    }
  }
  return { hostname: hostnameOf(req.headers.host), path: url.startsWith('/') || url === '*' ? url : `/${url}` };
}

function errorCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') return code;
  const cause = (err as { cause?: unknown }).cause;
  return cause === err ? undefined : errorCode(cause);
}

function truncate(s: string): string {
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}
