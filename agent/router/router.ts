/**
 * The agent's HTTP router: one port, routes by Host header to the healthy web instances of each
 * app anywhere in the fleet, with keep-alive pools, least-in-flight balancing, a safe retry when an
 * instance vanished before it answered, and draining — what makes deploys zero-downtime. Upgraded
 * connections (websockets) are tunnelled both ways; slow, greedy or oversized clients are cut off.
 */
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { pipeline } from 'node:stream/promises';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import type { Logger } from '../../common/logger.js';
import { MAINTENANCE_BYPASS_HEADER } from '../../common/api-types.js';
import { systemClock, sleep, type Clock, type ClockTimer } from '../../common/clock.js';
import { HangarError, describeError } from '../../common/errors.js';
import {
  acceptableRequestId,
  closingResponseHead,
  forwardRawResponseHeaders,
  forwardRequestHeaders,
  forwardResponseHeaders,
  hasRequestBody,
  hostnameOf,
  upgradeResponseHead,
} from './http-headers.js';
import { TrustedProxies, plainAddress } from './trusted-proxies.js';
import { BODY_TOO_LARGE, CONNECT_TIMEOUT, HEADERS_TIMEOUT, UpstreamRelay } from './upstream-relay.js';
import { Tunnel, requestUpgrade, type HandshakeOutcome } from './upgrade-tunnel.js';

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
  /** Set while the app is in maintenance mode: every request gets a 503 page, bar the bypass. */
  maintenance?: MaintenanceMode | null;
  /** Largest request body, bytes; a larger one gets 413. 0 or absent: no limit. */
  maxBodyBytes?: number;
  /** Time the app has to send response headers, ms; then 504. 0 or absent: `requestTimeoutMs`. */
  upstreamTimeoutMs?: number;
  /**
   * Plain HTTP requests to a domain the router has a certificate for get a 308 to the same URL
   * over HTTPS (when the HTTPS listener is on). Default false.
   */
  httpsRedirect?: boolean;
  /** HTTPS responses carry `Strict-Transport-Security: max-age=31536000`. Default false. */
  hsts?: boolean;
}

/** Maintenance mode of an app, as the router applies it. */
export interface MaintenanceMode {
  /** HTML of the 503 page; empty: the router's default page. */
  pageHtml: string;
  /** SHA-256 (hex) of the bypass header's value; empty: no bypass. */
  bypassSha256: string;
  /** Seconds sent in `Retry-After`. */
  retryAfterSeconds: number;
}

/** A certificate the HTTPS listener serves, and the exact host names it is served for (SNI). */
export interface RouterCertificate {
  /** Stable id: an unchanged id is not parsed again. */
  id: string;
  domains: string[];
  /** Leaf then chain, PEM. */
  certPem: string;
  /** Its private key, PEM. Never logged. */
  keyPem: string;
}

/** What {@link Router.setTls} takes: certificates and pending ACME HTTP-01 challenges. */
export interface RouterTls {
  certificates: RouterCertificate[];
  /** Token → key authorization, answered at `/.well-known/acme-challenge/TOKEN` on plain HTTP. */
  challenges: ReadonlyMap<string, string>;
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
  | 'CLIENT_CLOSED'
  /** The app is in maintenance mode (503). */
  | 'MAINTENANCE'
  /** The request body is larger than the app's `max_body` (413). */
  | 'BODY_TOO_LARGE';

/** One line of the router's access log, handed to {@link RouterOptions.onAccess}. */
export interface AccessEntry {
  /** Unix ms when the request arrived. */
  ts: number;
  /** App name; empty when the Host matched no app. */
  app: string;
  method: string;
  /** Request target as received (path and query). */
  path: string;
  /**
   * Status sent to the client (499 when the client closed before any response). 101 for an
   * upgraded connection (websocket): its entry comes at the handshake, with the time to the 101.
   */
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
  /**
   * Port of the HTTPS listener (SNI: the certificate of {@link Router.setTls} for the requested
   * name; a name without one fails the TLS handshake); 0 picks a free one. Default: no HTTPS listener.
   */
  httpsPort?: number;
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
  /**
   * Time a client has to send a request's line and headers, in ms, counted from the connection
   * (or the request's first byte on a kept-alive one); then 408 and the connection is closed, so
   * slowloris clients cannot hold connections. Default 20000 (nginx's `client_header_timeout` is
   * 60 s, Node's 60 s; a browser sends its headers in one packet).
   */
  headersTimeoutMs?: number;
  /**
   * How long an idle keep-alive client connection stays open between requests, in ms. Default
   * 75000, nginx's `keepalive_timeout`: above the 60 s idle timeout of common load balancers, so a
   * balancer in front never reuses a connection the router is closing.
   */
  keepAliveTimeoutMs?: number;
  /** Largest request line plus headers, in bytes; a larger request gets 431. Default 16384 (Node's). */
  maxHeaderBytes?: number;
  /**
   * Most connections open at once from one client address; further ones are closed as soon as
   * they open. Peers in {@link RouterOptions.trustedProxies} are exempt (they carry many clients).
   * Default 256.
   */
  maxConnectionsPerClient?: number;
  /**
   * CIDR ranges (`10.0.0.0/8`, `2001:db8::/32`, or single addresses) of proxies in front of the
   * router — load balancers, CDNs — whose `X-Forwarded-For`, `-Proto` and `-Port` are believed and
   * extended. From any other peer those headers are replaced by what the router saw. Default none.
   */
  trustedProxies?: readonly string[];
  /**
   * How long {@link Router.drain} lets an instance's upgraded connections (websockets) run on
   * before closing them, in ms. Default 30000.
   */
  upgradeDrainTimeoutMs?: number;
  /** Clock for timestamps, the retry pause, drain timeouts and failure cool-down. Default: system. */
  clock?: Clock;
  /**
   * Listening sockets handed over by a previous router process (see router-host.ts): served
   * instead of binding `port`/`httpsPort`, so no connection is refused during the switch.
   */
  inherited?: { http: NetServer; https?: NetServer };
}

/** Router lifecycle. */
export type RouterState = 'new' | 'starting' | 'up' | 'closing' | 'closed';

const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
const DEFAULT_HEADERS_TIMEOUT_MS = 20_000;
const DEFAULT_KEEP_ALIVE_TIMEOUT_MS = 75_000;
const DEFAULT_MAX_HEADER_BYTES = 16 * 1024;
const DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 256;
const DEFAULT_UPGRADE_DRAIN_TIMEOUT_MS = 30_000;
/** After answering a client error, unread bytes are discarded this long before the close, so the answer is read, not reset. */
const LINGER_MS = 2_000;
/** At most one warning per this interval about clients over their connection cap (an attack would flood the log). */
const CAP_WARNING_INTERVAL_MS = 10_000;
/** Pause before retrying on the same instance when it is the only one (a restart may be under way). */
const RETRY_PAUSE_MS = 100;
/** An instance that refused or reset is picked only when nothing else is available, for this long. */
const FAILURE_COOLDOWN_MS = 2_000;
/**
 * Idle keep-alive sockets to instances are closed after this long. Below gunicorn's default
 * `--keep-alive 2`, so the router rarely reuses a socket the instance is about to close.
 */
const POOL_KEEP_ALIVE_MS = 1_500;
/** Where ACME HTTP-01 challenges are fetched (RFC 8555 §8.3). */
const ACME_CHALLENGE_PREFIX = '/.well-known/acme-challenge/';
/** Methods that are idempotent, hence safe to send twice when they carry no body. */
const RETRYABLE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
/** Error codes meaning the instance never got (or never processed) the request. */
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', CONNECT_TIMEOUT]);

/** A backend as the router tracks it: its pool, load and draining state. */
interface BackendState {
  readonly key: string;
  readonly host: string;
  readonly port: number;
  readonly origin: string;
  /** Keep-alive connections to it. */
  readonly agent: http.Agent;
  inFlight: number;
  /** Upgraded connections (websockets) open to it. */
  tunnels: number;
  /** Set by {@link Router.drain}: no new requests. */
  draining: boolean;
  /** No longer in the route table: no new requests, connections closed once idle. */
  retired: boolean;
  agentClosed: boolean;
  lastFailureAt: number;
}

interface AppEntry {
  readonly app: string;
  readonly backends: readonly BackendState[];
  /** The 503 page and bypass while in maintenance mode; null otherwise. */
  readonly maintenance: MaintenanceAnswer | null;
  /** 0: no limit. */
  readonly maxBodyBytes: number;
  readonly upstreamTimeoutMs: number;
  readonly httpsRedirect: boolean;
  readonly hsts: boolean;
  /** Round-robin cursor for ties. */
  cursor: number;
}

interface MaintenanceAnswer {
  readonly page: Buffer;
  /** Digest of the bypass value; null: no bypass. */
  readonly bypass: Buffer | null;
  readonly retryAfterSeconds: number;
}

interface ClientConnection {
  /** Peer address, IPv4-mapped IPv6 unwrapped. */
  readonly address: string;
  readonly trusted: boolean;
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
  /** The attempt under way, told when the client goes away. */
  relay: UpstreamRelay | undefined;
  /** The app's body limit, checked while a body of unknown length streams; 0: none. */
  maxBodyBytes: number;
  /** The app's time to response headers, ms. */
  headersTimeoutMs: number;
  clientGone: boolean;
  bytes: number;
  /** Add `Strict-Transport-Security` to the response (an HTTPS request to an app that opted in). */
  hsts: boolean;
}

type Outcome =
  | { kind: 'done'; status: number }
  | { kind: 'broken'; status: number; err: unknown }
  | { kind: 'client-gone'; status: number }
  | { kind: 'unreachable'; err: unknown }
  | { kind: 'timeout'; err: unknown }
  | { kind: 'too-large' }
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
  #httpsServer: https.Server | undefined;
  #port = 0;
  #httpsPort = 0;
  #starting: Promise<{ port: number; httpsPort: number }> | undefined;
  /** SNI: a secure context per host name. */
  #contexts = new Map<string, tls.SecureContext>();
  /** Parsed certificates by id, so an unchanged one is not parsed again. */
  #parsed = new Map<string, { pem: string; context: tls.SecureContext }>();
  #challenges: ReadonlyMap<string, string> = new Map();
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
  /** Drains waiting for an instance's upgraded connections to end. */
  readonly #tunnelWaiters = new Set<DrainWaiter>();
  /** Upgraded connections, and the instance each goes to. */
  readonly #tunnels = new Map<Tunnel, BackendState>();
  /** Client sockets handed over by an upgrade (the HTTP server no longer closes them). */
  readonly #upgradeSockets = new Set<Socket>();
  readonly #trusted: TrustedProxies;
  /** Client connections by socket: address and whether it is a trusted proxy. */
  readonly #clients = new WeakMap<Socket, ClientConnection>();
  /** Open connections per client address (trusted proxies not counted). */
  readonly #perAddress = new Map<string, number>();
  /** Sockets answered with a client error, lingering before their close. */
  readonly #answered = new WeakSet<Socket>();
  #lastCapWarningAt = -Infinity;

  constructor(options: RouterOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: 'router' });
    this.#clock = options.clock ?? systemClock;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.#trusted = new TrustedProxies(options.trustedProxies ?? []);
  }

  /** Current lifecycle state. */
  get state(): RouterState {
    return this.#state;
  }

  /** Port of the HTTPS listener once started; 0 when it has none. */
  get httpsPort(): number {
    return this.#httpsPort;
  }

  /**
   * Starts listening (HTTP, and HTTPS when {@link RouterOptions.httpsPort} is set). Idempotent:
   * later calls return the same ports (`httpsPort` 0 without HTTPS). Rejects when a port cannot be
   * bound, and with `CONFLICT` after {@link Router.close}.
   */
  start(): Promise<{ port: number; httpsPort: number }> {
    if (this.#state === 'closing' || this.#state === 'closed') {
      return Promise.reject(new HangarError('CONFLICT', 'The router is closed; create a new Router to listen again.'));
    }
    if (this.#starting !== undefined) return this.#starting;
    this.#state = 'starting';
    this.#starting = this.#listen();
    return this.#starting;
  }

  async #listen(): Promise<{ port: number; httpsPort: number }> {
    const headersTimeoutMs = this.#options.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS;
    const serverOptions: http.ServerOptions = {
      // Uploads may legitimately take minutes; idleness is bounded by the socket timeout below.
      requestTimeout: 0,
      headersTimeout: headersTimeoutMs,
      // Node checks the header deadline on this interval (30 s by default, which would double it).
      connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(headersTimeoutMs / 4))),
      maxHeaderSize: this.#options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES,
    };
    const server = http.createServer(serverOptions);
    this.#serve(server, 'connection');
    this.#server = server;
    this.#port = await this.#bind(server, this.#options.port, '--router-port', this.#options.inherited?.http);
    if (this.#options.httpsPort !== undefined) {
      const secure = https.createServer({
        ...serverOptions,
        // No default certificate: a name without one fails the handshake (no other app's certificate is shown).
        SNICallback: (servername, done) => {
          const context = this.#contextFor(servername);
          if (context === undefined) done(new Error(`no certificate for ${servername}`));
          else done(null, context);
        },
      });
      secure.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
        this.#log.debug({ err: describeError(err), code: err.code, remote: socket.remoteAddress }, 'TLS handshake failed');
        socket.destroy();
      });
      this.#serve(secure, 'secureConnection');
      this.#httpsServer = secure;
      this.#httpsPort = await this.#bind(secure, this.#options.httpsPort, '--https-port', this.#options.inherited?.https);
    }
    if (this.#state === 'starting') this.#state = 'up';
    this.#log.info({ port: this.#port, httpsPort: this.#httpsPort || undefined }, 'router listening');
    return { port: this.#port, httpsPort: this.#httpsPort };
  }

  /** The handlers of both listeners; `admitOn` is the event that gives the socket requests arrive on. */
  #serve(server: http.Server | https.Server, admitOn: 'connection' | 'secureConnection'): void {
    server.keepAliveTimeout = this.#options.keepAliveTimeoutMs ?? DEFAULT_KEEP_ALIVE_TIMEOUT_MS;
    // A client that sends nothing for this long is cut off; longer than an instance may take to answer.
    server.setTimeout(this.#requestTimeoutMs + 30_000);
    server.on(admitOn, (socket: Socket) => this.#admit(socket));
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      if (this.#answered.has(req.socket)) return void res.destroy();
      this.#handle(req, res).catch((err: unknown) => {
        this.#log.error({ err, url: req.url }, 'router failed to handle a request');
        if (!res.headersSent && !res.destroyed) this.#reply(res, 500, 'Internal router error.\n');
        else res.destroy();
      });
    });
    server.on('upgrade', (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
      this.#handleUpgrade(req, socket, head).catch((err: unknown) => {
        this.#log.error({ err, url: req.url }, 'router failed to handle an upgrade');
        socket.destroy();
      });
    });
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.#clientError(err, socket));
  }

  async #bind(server: http.Server | https.Server, port: number, flag: string, inherited?: NetServer): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        this.#state = 'closed';
        reject(
          new HangarError('CONFLICT', `The router cannot listen on port ${port}: ${err.message}. Choose another ${flag}.`, { cause: err }),
        );
      };
      server.once('error', onError);
      const listening = (): void => {
        server.off('error', onError);
        server.on('error', (err) => this.#log.warn({ err }, 'router server error'));
        resolve();
      };
      if (inherited !== undefined) server.listen(inherited, listening);
      else server.listen(port, this.#options.host ?? '0.0.0.0', listening);
    });
    return (server.address() as AddressInfo).port;
  }

  /** The listening servers once started (handed to the next router process on an upgrade). */
  listeners(): { http: http.Server | undefined; https: https.Server | undefined } {
    return { http: this.#server, https: this.#httpsServer };
  }

  /**
   * Replaces the certificates served over HTTPS and the ACME challenges answered over HTTP. A
   * certificate that cannot be loaded is left out (logged without its key); the others serve on.
   */
  setTls(state: RouterTls): void {
    const contexts = new Map<string, tls.SecureContext>();
    const parsed = new Map<string, { pem: string; context: tls.SecureContext }>();
    for (const cert of state.certificates) {
      let entry = this.#parsed.get(cert.id);
      if (entry === undefined || entry.pem !== cert.certPem) {
        try {
          entry = { pem: cert.certPem, context: tls.createSecureContext({ cert: cert.certPem, key: cert.keyPem }) };
        } catch (err) {
          this.#log.warn(
            { certificate: cert.id, domains: cert.domains, err: describeError(err) },
            'certificate could not be loaded; left out',
          );
          continue;
        }
      }
      parsed.set(cert.id, entry);
      for (const domain of cert.domains) {
        const name = hostnameOf(domain);
        if (name !== null) contexts.set(name, entry.context);
      }
    }
    this.#parsed = parsed;
    this.#contexts = contexts;
    this.#challenges = state.challenges;
  }

  /** The secure context served for an SNI name, if any. */
  #contextFor(servername: string): tls.SecureContext | undefined {
    const name = hostnameOf(servername);
    return name === null ? undefined : this.#contexts.get(name);
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
          state = existing !== undefined && existing.origin === origin ? existing : this.#newBackend(b, origin);
          backends.set(b.instanceKey, state);
        }
        state.draining = this.#drained.has(b.instanceKey);
        if (!states.includes(state)) states.push(state);
      }
      const entry: AppEntry = {
        app: route.app,
        backends: states,
        maintenance: maintenanceAnswer(route.app, route.maintenance),
        maxBodyBytes: route.maxBodyBytes ?? 0,
        upstreamTimeoutMs:
          route.upstreamTimeoutMs !== undefined && route.upstreamTimeoutMs > 0 ? route.upstreamTimeoutMs : this.#requestTimeoutMs,
        httpsRedirect: route.httpsRedirect === true,
        hsts: route.hsts === true,
        cursor: this.#appEntry(route.app)?.cursor ?? 0,
      };
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
   * flight, or after `timeoutMs` (whichever comes first), and none of its upgraded connections
   * (websockets) is open: those run on for up to `upgradeTimeoutMs` (default `upgradeDrainTimeoutMs`),
   * from the drain's start, then are closed. The
   * instance stays drained until a route table without it has been set.
   */
  async drain(instanceKey: string, timeoutMs: number, upgradeTimeoutMs?: number): Promise<void> {
    this.#drained.add(instanceKey);
    const current = this.#backends.get(instanceKey);
    if (current !== undefined) current.draining = true;
    const tunnelDeadline =
      this.#clock.now() + (upgradeTimeoutMs ?? this.#options.upgradeDrainTimeoutMs ?? DEFAULT_UPGRADE_DRAIN_TIMEOUT_MS);
    await this.#drainRequests(instanceKey, timeoutMs);
    // After the requests: a handshake in flight at the start may have become a tunnel meanwhile.
    await this.#drainTunnels(instanceKey, Math.max(0, tunnelDeadline - this.#clock.now()));
  }

  #drainTunnels(instanceKey: string, timeoutMs: number): Promise<void> {
    if (this.openTunnels(instanceKey) === 0) return Promise.resolve();
    return this.#waitForIdle(this.#tunnelWaiters, instanceKey, timeoutMs, () => {
      this.#log.info(
        { instanceKey, open: this.openTunnels(instanceKey), timeoutMs },
        'closing upgraded connections still open at the drain bound',
      );
      for (const [tunnel, backend] of [...this.#tunnels]) if (backend.key === instanceKey) tunnel.close();
    });
  }

  #drainRequests(instanceKey: string, timeoutMs: number): Promise<void> {
    if (this.inFlight(instanceKey) === 0) return Promise.resolve();
    return this.#waitForIdle(this.#waiters, instanceKey, timeoutMs, () => {
      this.#log.warn({ instanceKey, inFlight: this.inFlight(instanceKey), timeoutMs }, 'drain timed out with requests in flight');
    });
  }

  /**
   * Resolves when a waiter in `waiters` for `instanceKey` is resolved (the last request or tunnel
   * ended), or after `timeoutMs`, when `onBound` runs first.
   */
  #waitForIdle(waiters: Set<DrainWaiter>, instanceKey: string, timeoutMs: number, onBound: () => void): Promise<void> {
    return new Promise<void>((resolve) => {
      let timer: ClockTimer | undefined = undefined;
      const waiter: DrainWaiter = {
        key: instanceKey,
        resolve: () => {
          waiters.delete(waiter);
          if (timer !== undefined) this.#clock.clearTimeout(timer);
          resolve();
        },
      };
      waiters.add(waiter);
      timer = this.#clock.setTimeout(() => {
        timer = undefined;
        if (!waiters.has(waiter)) return;
        onBound();
        waiter.resolve();
      }, timeoutMs);
    });
  }

  /** Upgraded connections (websockets) open to the instance, or to all instances when no key is given. */
  openTunnels(instanceKey?: string): number {
    let n = 0;
    for (const state of this.#allBackends()) {
      if (instanceKey === undefined || state.key === instanceKey) n += state.tunnels;
    }
    return n;
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
    const servers = [this.#server, this.#httpsServer].filter((srv) => srv !== undefined && srv.listening);
    if (servers.length > 0) {
      const closed = Promise.all(servers.map((srv) => new Promise<void>((resolve) => srv?.close(() => resolve()))));
      for (const srv of servers) srv?.closeAllConnections();
      // Upgraded connections are no longer the HTTP server's to close.
      for (const tunnel of [...this.#tunnels.keys()]) tunnel.close();
      for (const socket of this.#upgradeSockets) socket.destroy();
      await closed;
    }
    const pools = [...this.#allBackends()];
    this.#backends = new Map();
    this.#domains = new Map();
    this.#retired.clear();
    for (const s of pools) this.#destroyAgent(s);
    for (const w of [...this.#waiters, ...this.#tunnelWaiters]) w.resolve();
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

  #newBackend(b: Backend, origin: string): BackendState {
    // Idle connections are closed after POOL_KEEP_ALIVE_MS (or the instance's `Keep-Alive:
    // timeout`, if shorter); the most recently used is reused first, so the others age out.
    const agent = new http.Agent({ keepAlive: true, timeout: POOL_KEEP_ALIVE_MS, scheduling: 'lifo' });
    return {
      key: b.instanceKey,
      host: b.host,
      port: b.port,
      origin,
      agent,
      inFlight: 0,
      tunnels: 0,
      draining: false,
      retired: false,
      agentClosed: false,
      lastFailureAt: -Infinity,
    };
  }

  #closeIfIdle(state: BackendState): void {
    if (!state.retired || state.inFlight > 0 || state.tunnels > 0 || state.agentClosed) return;
    this.#retired.delete(state);
    // Nothing in flight: only idle keep-alive connections are left to close.
    state.agentClosed = true;
    state.agent.destroy();
  }

  /** Closes the instance's connections, in use or idle (requests still on them fail). */
  #destroyAgent(state: BackendState): void {
    state.agentClosed = true;
    state.agent.destroy();
  }

  /**
   * Least loaded (requests in flight plus upgraded connections open) among the instances that
   * take requests, round robin among ties. Instances
   * that failed recently, and `avoid`, are chosen only when there is nothing else.
   */
  #pick(entry: AppEntry, avoid?: BackendState): BackendState | undefined {
    // One pass, no arrays: tier 0 = open and not failed lately, 1 = failed lately, 2 = `avoid`.
    const backends = entry.backends;
    const n = backends.length;
    if (n === 0) return undefined;
    const now = this.#clock.now();
    const start = entry.cursor++ % n;
    let best0: BackendState | undefined;
    let best1: BackendState | undefined;
    let best2: BackendState | undefined;
    for (let i = 0; i < n; i++) {
      const b = backends[(start + i) % n];
      if (b === undefined || b.draining || b.retired) continue;
      const load = b.inFlight + b.tunnels;
      if (b === avoid) {
        if (best2 === undefined || load < best2.inFlight + best2.tunnels) best2 = b;
      } else if (now - b.lastFailureAt < FAILURE_COOLDOWN_MS) {
        if (best1 === undefined || load < best1.inFlight + best1.tunnels) best1 = b;
      } else if (best0 === undefined || load < best0.inFlight + best0.tunnels) {
        best0 = b;
      }
    }
    return best0 ?? best1 ?? best2;
  }

  #release(state: BackendState): void {
    state.inFlight--;
    if (this.#waiters.size > 0 && this.inFlight(state.key) === 0) {
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
      headers: this.#upstreamHeaders(req, requestId),
      hasBody: hasRequestBody(req.headers),
      relay: undefined,
      maxBodyBytes: 0,
      headersTimeoutMs: this.#requestTimeoutMs,
      clientGone: false,
      bytes: 0,
      hsts: false,
    };
    res.on('close', () => {
      if (!res.writableFinished) {
        ex.clientGone = true;
        ex.relay?.clientGone();
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
      this.#reportAccess(entry, failure);
    };

    const entry = hostname === null ? undefined : this.#domains.get(hostname);
    const secure = this.#reachedOverHttps(req);
    // ACME HTTP-01 (RFC 8555 §8.3): before app routing and before the HTTPS redirect, for any Host.
    if (!secure && path.startsWith(ACME_CHALLENGE_PREFIX) && (method === 'GET' || method === 'HEAD')) {
      const keyAuthorization = this.#challenges.get(path.slice(ACME_CHALLENGE_PREFIX.length));
      if (keyAuthorization !== undefined) {
        app = entry?.app ?? '';
        status = 200;
        this.#reply(res, 200, keyAuthorization, ex);
        return finish();
      }
    }
    if (entry === undefined) {
      status = 404;
      failure = 'NO_APP';
      this.#reply(res, 404, noAppMessage(hostname), ex);
      return finish();
    }
    app = entry.app;
    if (
      !secure &&
      entry.httpsRedirect &&
      hostname !== null &&
      this.#httpsServer !== undefined &&
      this.#contextFor(hostname) !== undefined
    ) {
      status = 308;
      const port = this.#httpsPort === 443 ? '' : `:${this.#httpsPort}`;
      const location = `https://${hostname}${port}${path}`;
      this.#reply(res, 308, `This app is served over HTTPS: ${location}\n`, ex, { location });
      return finish();
    }
    ex.hsts = secure && entry.hsts;
    if (entry.maintenance !== null && !bypasses(entry.maintenance, req.headers[MAINTENANCE_BYPASS_HEADER])) {
      status = 503;
      failure = 'MAINTENANCE';
      this.#replyMaintenance(res, entry.maintenance, ex);
      return finish();
    }
    if (entry.maxBodyBytes > 0 && ex.hasBody) {
      const declared = Number(req.headers['content-length'] ?? 0);
      if (declared > entry.maxBodyBytes) {
        status = 413;
        failure = 'BODY_TOO_LARGE';
        this.#reply(res, 413, bodyTooLargeMessage(app, entry.maxBodyBytes), ex);
        return finish();
      }
      ex.maxBodyBytes = entry.maxBodyBytes;
    }
    ex.headersTimeoutMs = entry.upstreamTimeoutMs;
    const retryable = RETRYABLE_METHODS.has(method) && !ex.hasBody;
    const first = this.#pick(entry);
    if (first === undefined) {
      status = 503;
      failure = 'NO_BACKENDS';
      this.#reply(res, 503, noBackendsMessage(app), ex);
      return finish();
    }

    let backend: BackendState = first;
    for (;;) {
      attempts++;
      instanceKey = backend.key;
      const outcome = await this.#forward(ex, backend);
      if (outcome.kind === 'done') {
        status = outcome.status;
        return finish();
      }
      // Log context, only for the attempts that did not go well.
      const ctx = { app, instanceKey, origin: backend.origin, requestId, method, path, attempt: attempts };
      switch (outcome.kind) {
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
          this.#log.warn({ ...ctx, timeoutMs: ex.headersTimeoutMs }, 'instance sent no response in time');
          status = 504;
          failure = 'BACKEND_TIMEOUT';
          this.#reply(res, 504, timeoutMessage(app, ex.headersTimeoutMs), ex);
          return finish();
        case 'too-large':
          status = 413;
          failure = 'BODY_TOO_LARGE';
          this.#reply(res, 413, bodyTooLargeMessage(app, ex.maxBodyBytes), ex);
          return finish();
        case 'error':
          this.#log.warn({ ...ctx, err: describeError(outcome.err), code: errorCode(outcome.err) }, 'forwarding to instance failed');
          status = 502;
          failure = 'BACKEND_ERROR';
          this.#reply(res, 502, invalidResponseMessage(app), ex);
          return finish();
        case 'unreachable': {
          backend.lastFailureAt = this.#clock.now();
          const canRetry = retryable && attempts === 1 && !ex.clientGone;
          this.#log.warn(
            { ...ctx, err: describeError(outcome.err), code: errorCode(outcome.err), retry: canRetry },
            'instance unreachable',
          );
          if (canRetry) {
            const next = await this.#retryTarget(ex.hostname, backend);
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
          this.#reply(res, 502, unreachableMessage(app), ex);
          return finish();
        }
      }
    }
  }

  /**
   * The instance to retry on after `failed` was unreachable, re-reading the table (the router may
   * have learnt of its death meanwhile); `failed` again, after a pause, when it is the only one.
   */
  async #retryTarget(hostname: string, failed: BackendState): Promise<BackendState | undefined> {
    let entry = this.#domains.get(hostname);
    let next = entry === undefined ? undefined : this.#pick(entry, failed);
    if (next === failed) {
      await sleep(RETRY_PAUSE_MS, this.#clock);
      entry = this.#domains.get(hostname);
      next = entry === undefined ? undefined : this.#pick(entry, failed);
    }
    return next;
  }

  /** Headers of the request as forwarded to an instance. */
  #upstreamHeaders(req: http.IncomingMessage, requestId: string): string[] {
    const client = this.#clients.get(req.socket);
    return forwardRequestHeaders(req.rawHeaders, {
      clientAddress: client?.address ?? req.socket.remoteAddress,
      proto: 'encrypted' in req.socket && req.socket.encrypted === true ? 'https' : 'http',
      port: req.socket.localPort,
      requestId,
      peerTrusted: client?.trusted === true,
    });
  }

  /** A new client connection: recorded, or closed at once when its address is over the cap. */
  #admit(socket: Socket): void {
    if (socket.remoteAddress === undefined) return void socket.destroy();
    const address = plainAddress(socket.remoteAddress);
    const trusted = this.#trusted.has(address);
    if (!trusted) {
      const cap = this.#options.maxConnectionsPerClient ?? DEFAULT_MAX_CONNECTIONS_PER_CLIENT;
      const open = this.#perAddress.get(address) ?? 0;
      if (open >= cap) {
        const now = this.#clock.now();
        if (now - this.#lastCapWarningAt >= CAP_WARNING_INTERVAL_MS) {
          this.#lastCapWarningAt = now;
          this.#log.warn({ remote: address, cap }, 'client over its connection cap; closing its new connections');
        }
        return void socket.destroy();
      }
      this.#perAddress.set(address, open + 1);
      socket.once('close', () => {
        const n = (this.#perAddress.get(address) ?? 1) - 1;
        if (n <= 0) this.#perAddress.delete(address);
        else this.#perAddress.set(address, n);
      });
    }
    this.#clients.set(socket, { address, trusted });
  }

  /** A client broke HTTP, was too slow or sent too much: answered when possible, then closed. */
  #clientError(err: NodeJS.ErrnoException, socket: Socket): void {
    // A parser in error keeps reporting while the rest of the bytes arrive: answer once.
    if (this.#answered.has(socket)) return;
    const remote = socket.remoteAddress;
    // A response already under way cannot be followed by an error answer on the same connection.
    const busy = (socket as { _httpMessage?: { headersSent?: boolean } | null })._httpMessage?.headersSent === true;
    if (err.code === 'ECONNRESET' || busy || !socket.writable || socket.destroyed) {
      this.#log.debug({ err: describeError(err), code: err.code, remote }, 'client connection error');
      return void socket.destroy();
    }
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      // Debug only: a slowloris attack is thousands of these.
      this.#log.debug({ remote }, 'client too slow to send request headers');
      return this.#answerAndClose(
        socket,
        408,
        'The request headers took too long to arrive; the connection is closed. Send the request again.\n',
      );
    }
    if (err.code === 'HPE_HEADER_OVERFLOW') {
      this.#log.debug({ remote }, 'request headers too large');
      const limit = this.#options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
      return this.#answerAndClose(
        socket,
        431,
        `The request headers are larger than this Hangar router accepts (${limit} bytes). Clear the site's cookies, or send fewer or smaller headers.\n`,
      );
    }
    this.#log.warn({ err: describeError(err), code: err.code, remote }, 'client connection error');
    this.#answered.add(socket);
    socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
  }

  /** Writes a short plain-text answer and closes; the client's unread bytes are discarded meanwhile, for a while. */
  #answerAndClose(socket: Socket, status: number, body: string | Buffer, requestId?: string, extra?: http.OutgoingHttpHeaders): void {
    this.#answered.add(socket);
    const buf = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
    const headers: http.OutgoingHttpHeaders = {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': buf.length,
      'cache-control': 'no-store',
      ...extra,
    };
    if (requestId !== undefined) headers['x-request-id'] = requestId;
    socket.end(Buffer.concat([Buffer.from(closingResponseHead(status, undefined, headers), 'latin1'), buf]));
    this.#linger(socket);
  }

  /** After the last byte was written: discards what the client still sends, then closes, bounded. */
  #linger(socket: Socket): void {
    // Closing while the client still sends would reset the connection, and could lose the answer.
    socket.resume();
    const timer = setTimeout(() => socket.destroy(), LINGER_MS);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  }

  /**
   * A request with `Upgrade` (websocket…): handshake with an instance picked as for any request
   * (retried once when unreachable, as a GET is), then a tunnel both ways; a declined upgrade is
   * relayed as a normal response and the connection closed.
   */
  async #handleUpgrade(req: http.IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    this.#upgradeSockets.add(socket);
    socket.once('close', () => this.#upgradeSockets.delete(socket));
    socket.on('error', (err) => this.#log.debug({ err: describeError(err) }, 'upgraded client connection error'));
    const ts = this.#clock.now();
    const t0 = performance.now();
    const method = req.method ?? 'GET';
    const requestId = acceptableRequestId(req.headers['x-request-id']) ?? randomUUID();
    const { hostname, path } = targetOf(req);
    let app = '';
    let instanceKey: string | null = null;
    let attempts = 0;
    let bytes = 0;
    const finish = (status: number, failure?: RouteFailure): void => {
      const entry: AccessEntry = {
        ts,
        app,
        method,
        path,
        status,
        durationMs: Math.round((performance.now() - t0) * 1000) / 1000,
        instanceKey,
        bytes,
        requestId,
        attempts,
      };
      this.#reportAccess(entry, failure);
    };
    const answer = (status: number, body: string, failure: RouteFailure): void => {
      bytes += method === 'HEAD' ? 0 : Buffer.byteLength(body);
      this.#answerAndClose(socket, status, body, requestId);
      finish(status, failure);
    };

    const entry = hostname === null ? undefined : this.#domains.get(hostname);
    if (entry === undefined) return answer(404, noAppMessage(hostname), 'NO_APP');
    app = entry.app;
    if (entry.maintenance !== null && !bypasses(entry.maintenance, req.headers[MAINTENANCE_BYPASS_HEADER])) {
      bytes += method === 'HEAD' ? 0 : entry.maintenance.page.length;
      this.#answerAndClose(socket, 503, entry.maintenance.page, requestId, {
        'content-type': 'text/html; charset=utf-8',
        'retry-after': String(entry.maintenance.retryAfterSeconds),
      });
      return finish(503, 'MAINTENANCE');
    }
    let backend = this.#pick(entry);
    if (backend === undefined) return answer(503, noBackendsMessage(app), 'NO_BACKENDS');
    const headers = this.#upstreamHeaders(req, requestId);
    headers.push('connection', 'upgrade', 'upgrade', String(req.headers.upgrade ?? ''));
    const length = Number(req.headers['content-length'] ?? 0);
    if (req.headers['transfer-encoding'] !== undefined || !Number.isSafeInteger(length) || length < 0) {
      return answer(
        400,
        'This Hangar router does not take a chunked request body together with an Upgrade header. Send the body with a Content-Length, or without Upgrade.\n',
        'BACKEND_ERROR',
      );
    }
    const retryable = RETRYABLE_METHODS.has(method) && length === 0;

    for (;;) {
      attempts++;
      instanceKey = backend.key;
      backend.inFlight++;
      let outcome: HandshakeOutcome;
      try {
        outcome = await requestUpgrade({
          host: backend.host,
          port: backend.port,
          method,
          path,
          headers,
          ...(length > 0 ? { body: { head, length, from: socket } } : {}),
          client: socket,
          connectTimeoutMs: this.#connectTimeoutMs,
          responseTimeoutMs: this.#requestTimeoutMs,
          clock: this.#clock,
          unreachableCodes: UNREACHABLE_CODES,
        });
      } finally {
        this.#release(backend);
      }
      const ctx = { app, instanceKey, origin: backend.origin, requestId, method, path, attempt: attempts, upgrade: true };
      switch (outcome.kind) {
        case 'upgraded': {
          if (socket.destroyed) {
            outcome.upstream.destroy();
            return finish(499, 'CLIENT_CLOSED');
          }
          socket.write(upgradeResponseHead(outcome.res.statusMessage ?? '', outcome.res.rawHeaders, requestId));
          if (outcome.head.length > 0) socket.write(outcome.head);
          // Bytes the client sent before the 101 (past any body) go first.
          if (length === 0 && head.length > 0) outcome.upstream.write(head);
          this.#openTunnel(backend, socket, outcome.upstream);
          return finish(101);
        }
        case 'response': {
          const res = outcome.res;
          socket.write(closingResponseHead(res.statusCode ?? 502, res.statusMessage, forwardResponseHeaders(res.headers, requestId)));
          try {
            await pipeline(
              res,
              async function* count(source: AsyncIterable<Buffer>) {
                for await (const chunk of source) {
                  bytes += chunk.length;
                  yield chunk;
                }
              },
              socket,
            );
            this.#linger(socket);
            return finish(res.statusCode ?? 502);
          } catch (err) {
            const clientGone = socket.destroyed;
            // Headers are gone: cutting the connection is the only way to tell the client it is truncated.
            socket.destroy();
            if (clientGone) return finish(res.statusCode ?? 502, 'CLIENT_CLOSED');
            this.#log.warn({ ...ctx, err: describeError(err) }, 'instance response broke off mid-body');
            return finish(res.statusCode ?? 502, 'BACKEND_ERROR');
          }
        }
        case 'client-gone':
          return finish(499, 'CLIENT_CLOSED');
        case 'timeout':
          this.#log.warn({ ...ctx, timeoutMs: this.#requestTimeoutMs }, 'instance sent no response in time');
          return answer(504, timeoutMessage(app, this.#requestTimeoutMs), 'BACKEND_TIMEOUT');
        case 'error':
          this.#log.warn({ ...ctx, err: describeError(outcome.err), code: errorCode(outcome.err) }, 'forwarding to instance failed');
          return answer(502, invalidResponseMessage(app), 'BACKEND_ERROR');
        case 'unreachable': {
          backend.lastFailureAt = this.#clock.now();
          const canRetry = retryable && attempts === 1 && !socket.destroyed;
          this.#log.warn(
            { ...ctx, err: describeError(outcome.err), code: errorCode(outcome.err), retry: canRetry },
            'instance unreachable',
          );
          if (canRetry) {
            const next = await this.#retryTarget(hostname ?? '', backend);
            if (next !== undefined && !socket.destroyed) {
              backend = next;
              continue;
            }
          }
          if (socket.destroyed) return finish(499, 'CLIENT_CLOSED');
          return answer(502, unreachableMessage(app), 'BACKEND_UNREACHABLE');
        }
      }
    }
  }

  #openTunnel(backend: BackendState, client: Socket, upstream: Socket): void {
    backend.tunnels++;
    const opened = performance.now();
    const tunnel = new Tunnel(client, upstream, {
      lingerMs: LINGER_MS,
      onError: (err) => this.#log.debug({ err: describeError(err), instanceKey: backend.key }, 'upgraded connection error'),
      onClosed: (t) => {
        this.#tunnels.delete(t);
        backend.tunnels--;
        this.#log.debug(
          { instanceKey: backend.key, durationMs: Math.round(performance.now() - opened), bytesIn: t.bytes.in, bytesOut: t.bytes.out },
          'upgraded connection closed',
        );
        if (this.openTunnels(backend.key) === 0) {
          for (const w of [...this.#tunnelWaiters]) if (w.key === backend.key) w.resolve();
        }
        this.#closeIfIdle(backend);
      },
    });
    this.#tunnels.set(tunnel, backend);
  }

  /** One attempt: sends the request to `backend` and relays the response back as it comes. */
  async #forward(ex: Exchange, backend: BackendState): Promise<Outcome> {
    backend.inFlight++;
    try {
      const relay = new UpstreamRelay(
        ex.res,
        (rawHeaders) => forwardRawResponseHeaders(rawHeaders, ex.requestId, ex.hsts),
        (n) => (ex.bytes += n),
      );
      ex.relay = relay;
      if (ex.clientGone) relay.clientGone();
      else {
        relay.send({
          agent: backend.agent,
          host: backend.host,
          port: backend.port,
          method: ex.method,
          path: ex.path,
          headers: ex.headers,
          body: ex.hasBody ? ex.req : null,
          maxBodyBytes: ex.maxBodyBytes,
          connectTimeoutMs: this.#connectTimeoutMs,
          headersTimeoutMs: ex.headersTimeoutMs,
          bodyTimeoutMs: this.#requestTimeoutMs,
        });
      }
      const outcome = await relay.done;
      ex.relay = undefined;
      switch (outcome.kind) {
        case 'done':
        case 'broken':
        case 'client-gone':
          return outcome;
        case 'failed': {
          const err = outcome.err;
          if (ex.clientGone) return { kind: 'client-gone', status: 499 };
          const code = errorCode(err);
          if (code === HEADERS_TIMEOUT) return { kind: 'timeout', err };
          if (code === BODY_TOO_LARGE) return { kind: 'too-large' };
          if (code !== undefined && UNREACHABLE_CODES.has(code)) return { kind: 'unreachable', err };
          return { kind: 'error', err };
        }
      }
    } finally {
      this.#release(backend);
    }
  }

  /** The 503 maintenance page, with `Retry-After`. */
  #replyMaintenance(res: http.ServerResponse, m: MaintenanceAnswer, ex: Exchange): void {
    if (res.headersSent || res.destroyed) return;
    const headers: http.OutgoingHttpHeaders = {
      'content-type': 'text/html; charset=utf-8',
      'content-length': m.page.length,
      'cache-control': 'no-store',
      'retry-after': String(m.retryAfterSeconds),
      'x-request-id': ex.requestId,
    };
    if (ex.method !== 'HEAD') ex.bytes += m.page.length;
    if (ex.hasBody && !ex.req.readableEnded) headers.connection = 'close';
    res.writeHead(503, headers);
    res.end(ex.method === 'HEAD' ? undefined : m.page);
  }

  /**
   * True when the client reached the router over TLS: its own HTTPS listener, or a trusted proxy
   * (load balancer) that says `X-Forwarded-Proto: https` — no redirect loop behind one.
   */
  #reachedOverHttps(req: http.IncomingMessage): boolean {
    if ('encrypted' in req.socket && req.socket.encrypted === true) return true;
    const proto = req.headers['x-forwarded-proto'];
    return this.#clients.get(req.socket)?.trusted === true && typeof proto === 'string' && proto.trim().toLowerCase() === 'https';
  }

  /** Hands one access-log entry (with why the router answered itself, if it did) to `onAccess`. */
  #reportAccess(entry: AccessEntry, failure: RouteFailure | undefined): void {
    if (failure !== undefined) entry.failure = failure;
    try {
      this.#options.onAccess?.(entry);
    } catch (err) {
      this.#log.warn({ err: describeError(err) }, 'onAccess callback threw');
    }
  }

  /** Sends a short plain-text answer from the router itself. */
  #reply(res: http.ServerResponse, status: number, body: string, ex?: Exchange, extra: http.OutgoingHttpHeaders = {}): void {
    if (res.headersSent || res.destroyed) return;
    const buf = Buffer.from(body, 'utf8');
    const headers: http.OutgoingHttpHeaders = {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': buf.length,
      'cache-control': 'no-store',
      ...extra,
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

function maintenanceAnswer(app: string, m: MaintenanceMode | null | undefined): MaintenanceAnswer | null {
  if (m === null || m === undefined) return null;
  return {
    page: Buffer.from(m.pageHtml === '' ? defaultMaintenancePage(app) : m.pageHtml, 'utf8'),
    bypass: /^[0-9a-f]{64}$/.test(m.bypassSha256) ? Buffer.from(m.bypassSha256, 'hex') : null,
    retryAfterSeconds: m.retryAfterSeconds,
  };
}

/** True when the request's bypass header carries the secret whose digest the app's maintenance mode holds. */
function bypasses(m: MaintenanceAnswer, value: string | string[] | undefined): boolean {
  if (m.bypass === null || typeof value !== 'string' || value === '') return false;
  const digest = createHash('sha256').update(value, 'utf8').digest();
  return timingSafeEqual(digest, m.bypass);
}

function defaultMaintenancePage(app: string): string {
  const name = app.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Down for maintenance</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:15vh auto;padding:0 1rem;color:#222}h1{font-size:1.6rem}</style></head>
<body><h1>Down for maintenance</h1><p>${name} is undergoing maintenance and will be back shortly. Please try again in a few minutes.</p></body>
</html>
`;
}

function bodyTooLargeMessage(app: string, max: number): string {
  return `The request body is larger than the app "${app}" accepts (${max} bytes). Send a smaller body, or raise "max_body" in the "hangar" section of its app.json.\n`;
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

function noAppMessage(hostname: string | null): string {
  return `No app is served at ${truncate(hostname ?? '(no Host header)')} by this Hangar router. Check the domain, or run \`hangar apps\` to see the apps.\n`;
}

function noBackendsMessage(app: string): string {
  return `No web processes running for app "${app}". Check them with \`hangar ps -a ${app}\`, or start one with \`hangar scale web=1 -a ${app}\`.\n`;
}

function timeoutMessage(app: string, timeoutMs: number): string {
  return `The app "${app}" did not respond within ${Math.round(timeoutMs / 1000)} s. Look for slow requests with \`hangar logs -a ${app}\`.\n`;
}

function invalidResponseMessage(app: string): string {
  return `The app "${app}" sent an invalid response. Check \`hangar logs -a ${app}\`.\n`;
}

function unreachableMessage(app: string): string {
  return `The app "${app}" could not be reached (its web process refused or dropped the connection). Check \`hangar ps -a ${app}\` and \`hangar logs -a ${app}\`.\n`;
}

function truncate(s: string): string {
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}
