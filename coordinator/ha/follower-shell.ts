/**
 * What a follower coordinator serves while another leads: on its HTTP port, `GET /v1/health`
 * saying who leads, and every other request (websocket upgrades too) forwarded to the leader, so
 * that any coordinator answers the API; a 503 `NOT_LEADER` naming the leader when there is none or
 * it cannot be reached (and for a request another follower forwarded already: no loops); on its gRPC port
 * (with the same TLS identity as the leader: the same data dir), UNAVAILABLE with the leader's
 * address in the `hangar-leader` trailer, so that agents switch to it at once.
 */
import {
  createServer as createHttpServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import type { Duplex } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import type { HealthView, LeaderView } from '../../common/api-types.js';
import type { Logger } from '../../common/logger.js';
import { LEADER_METADATA_KEY, loadProto, type AgentServiceHandlers } from '../../proto/loader.js';

/** Marks a request a follower forwarded (its name): the leader's view of it is never forwarded again. */
export const FORWARDED_BY_HEADER = 'hangar-forwarded-by';

/** Headers of one hop only (RFC 9110 §7.6.1), never forwarded. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

/** A forwarded request idle this long (no byte either way) is cut, ms. */
const FORWARD_IDLE_MS = 300_000;

/** Options of {@link FollowerShell}. */
export interface FollowerShellOptions {
  httpHost: string;
  httpPort: number;
  grpcHost: string;
  grpcPort: number;
  /** Serve HTTPS with this certificate and key (as the leader's API does). Default: plain HTTP. */
  https?: { cert: Buffer; key: Buffer };
  /** The coordinators' certificate chain and key (agents pin their CA). */
  tls: { certChainPem: string; keyPem: string };
  /** This coordinator's name (known once the ports are bound). */
  name: () => string;
  version: string;
  /** The live leader, or null during an election. */
  leader: () => LeaderView | null;
  logger: Logger;
}

/** The follower's two small servers; {@link start} and {@link close} may alternate. */
export class FollowerShell {
  readonly #o: FollowerShellOptions;
  readonly #logger: Logger;
  #http: Server | null = null;
  #grpc: grpc.Server | null = null;
  #httpPort: number;
  #grpcPort: number;
  /** Forwarded websockets: detached from the HTTP server, closed with the shell. */
  readonly #tunnels = new Set<Duplex>();

  constructor(options: FollowerShellOptions) {
    this.#o = options;
    this.#httpPort = options.httpPort;
    this.#grpcPort = options.grpcPort;
    this.#logger = options.logger.child({ component: 'follower' });
  }

  /** The ports bound (the first start fixes them when 0 was asked for). */
  get ports(): { httpPort: number; grpcPort: number } {
    return { httpPort: this.#httpPort, grpcPort: this.#grpcPort };
  }

  /** Binds both ports; idempotent. */
  async start(): Promise<void> {
    if (this.#http) return;
    const handler = (req: IncomingMessage, res: ServerResponse) => this.#answer(req, res);
    const http = this.#o.https ? createHttpsServer(this.#o.https, handler) : createHttpServer(handler);
    // An upgrade (live logs, `hangar run`) goes to the leader as any other request does.
    http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.#forwardUpgrade(req, socket, head));
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(this.#httpPort, this.#o.httpHost, () => {
        http.off('error', reject);
        resolve();
      });
    });
    const address = http.address();
    if (typeof address === 'object' && address) this.#httpPort = address.port;
    this.#http = http;
    try {
      this.#grpc = await this.#startGrpc();
    } catch (err) {
      await this.#closeHttp();
      throw err;
    }
    this.#logger.info({ httpPort: this.#httpPort, grpcPort: this.#grpcPort }, 'following; answering agents and clients with the leader');
  }

  async #startGrpc(): Promise<grpc.Server> {
    const server = new grpc.Server();
    const refuse = () => this.#grpcRefusal();
    const handlers: AgentServiceHandlers = {
      Connect: (call) => void call.emit('error', refuse()),
      FetchArtifact: (call) => void call.emit('error', refuse()),
      FetchBackup: (call) => void call.emit('error', refuse()),
      Join: (_call, callback) => callback(refuse()),
      UploadBackup: (_call, callback) => callback(refuse()),
    };
    server.addService(loadProto().hangar.v1.AgentService.service, handlers);
    const { certChainPem, keyPem } = this.#o.tls;
    const credentials = grpc.ServerCredentials.createSsl(
      null,
      [{ cert_chain: Buffer.from(certChainPem), private_key: Buffer.from(keyPem) }],
      false,
    );
    this.#grpcPort = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${this.#o.grpcHost}:${this.#grpcPort}`, credentials, (err, port) => (err ? reject(err) : resolve(port)));
    });
    return server;
  }

  #grpcRefusal(): Partial<grpc.ServiceError> {
    const leader = this.#o.leader();
    const metadata = new grpc.Metadata();
    // Always sent, empty during an election: agents tell a follower's answer by the key, not by its words.
    metadata.set(LEADER_METADATA_KEY, leader?.address ?? '');
    const details = leader
      ? `This coordinator follows; the leader is ${leader.address}.`
      : 'This coordinator follows and no leader is elected right now; try again in a few seconds.';
    return Object.assign(new Error(details), { code: grpc.status.UNAVAILABLE, details, metadata });
  }

  /** The API's error body; the leader's URL in `details` like any error's data, and at the top for scripts. */
  #notLeaderBody(unreachable?: string): { code: 'NOT_LEADER'; message: string; leader: string | null; details: { leader: string | null } } {
    const leader = this.#o.leader();
    return {
      code: 'NOT_LEADER',
      message: leader
        ? `This coordinator (${this.#o.name()}) follows; the leader is ${leader.url}${unreachable ? ` and it ${unreachable}` : ''}: send requests there, or list both in HANGAR_URL.`
        : `This coordinator (${this.#o.name()}) follows and no leader is elected right now; try again in a few seconds.`,
      leader: leader?.url ?? null,
      details: { leader: leader?.url ?? null },
    };
  }

  #answer(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    const leader = this.#o.leader();
    const isHealth = req.method === 'GET' && path === '/v1/health';
    if (!isHealth && leader && req.headers[FORWARDED_BY_HEADER] === undefined) {
      this.#forward(req, res, leader);
      return;
    }
    req.resume();
    let status = 503;
    let body: unknown;
    if (req.method === 'GET' && path === '/v1/health') {
      status = 200;
      const health: HealthView = { ok: true, version: this.#o.version, role: 'follower', name: this.#o.name(), leader: this.#o.leader() };
      body = health;
    } else {
      body = this.#notLeaderBody();
    }
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  /** The request to the leader, with this hop's headers. */
  #upstreamRequest(req: IncomingMessage, leader: LeaderView, upgrade: boolean) {
    const target = new URL(req.url ?? '/', leader.url);
    const headers: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value !== undefined && (upgrade || !HOP_BY_HOP.has(name))) headers[name] = value;
    }
    const client = req.socket.remoteAddress ?? '';
    const prior = req.headers['x-forwarded-for'];
    headers['x-forwarded-for'] = prior ? `${String(prior)}, ${client}` : client;
    headers['x-forwarded-host'] ??= req.headers.host ?? '';
    headers.host = target.host;
    headers[FORWARDED_BY_HEADER] = this.#o.name();
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    return send(target, { method: req.method ?? 'GET', headers, timeout: FORWARD_IDLE_MS });
  }

  /** Streams `req` to the leader and its answer back; a leader out of reach is a `NOT_LEADER` naming it. */
  #forward(req: IncomingMessage, res: ServerResponse, leader: LeaderView): void {
    const upstream = this.#upstreamRequest(req, leader, false);
    upstream.on('response', (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.statusMessage, {
        ...withoutHopByHop(answer.headers),
        [FORWARDED_BY_HEADER]: this.#o.name(),
      });
      answer.pipe(res);
      answer.on('error', () => res.destroy());
    });
    upstream.on('timeout', () => upstream.destroy(new Error(`no answer from the leader in ${FORWARD_IDLE_MS / 1000} s`)));
    upstream.on('error', (err) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      this.#logger.warn({ err, leader: leader.url }, 'could not forward a request to the leader');
      const text = JSON.stringify(this.#notLeaderBody(`could not reach it (${err.message})`));
      res.writeHead(503, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
    // The client gone: so is the request to the leader (a response in full has ended it already).
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  }

  /** A websocket (or any upgrade) tunnelled to the leader; refused as any request when there is none. */
  #forwardUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const leader = this.#o.leader();
    const refuse = (detail?: string) => {
      const body = JSON.stringify(this.#notLeaderBody(detail));
      socket.end(
        `HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    };
    if (!leader || req.headers[FORWARDED_BY_HEADER] !== undefined) {
      refuse();
      return;
    }
    socket.on('error', () => socket.destroy());
    const upstream = this.#upstreamRequest(req, leader, true);
    upstream.on('upgrade', (answer, leaderSocket, leaderHead) => {
      socket.write(
        `HTTP/1.1 ${answer.statusCode ?? 101} ${answer.statusMessage ?? 'Switching Protocols'}\r\n${rawHeaderLines(answer.rawHeaders)}\r\n`,
      );
      if (leaderHead.length > 0) socket.write(leaderHead);
      if (head.length > 0) leaderSocket.write(head);
      leaderSocket.setTimeout(0);
      for (const [a, b] of [
        [socket, leaderSocket],
        [leaderSocket, socket],
      ] as const) {
        a.pipe(b);
        a.on('error', () => b.destroy());
        a.on('close', () => b.destroy());
      }
      this.#tunnels.add(socket);
      socket.on('close', () => this.#tunnels.delete(socket));
    });
    // The leader refused the upgrade (a bad token, no such app): its answer, then the end.
    upstream.on('response', (answer) => {
      socket.write(
        `HTTP/1.1 ${answer.statusCode ?? 502} ${answer.statusMessage ?? ''}\r\n${rawHeaderLines(answer.rawHeaders, true)}connection: close\r\n\r\n`,
      );
      answer.pipe(socket);
    });
    upstream.on('timeout', () => upstream.destroy(new Error('no answer from the leader')));
    upstream.on('error', (err) => {
      if (socket.writable) refuse(`could not reach it (${err.message})`);
    });
    upstream.end();
  }

  async #closeHttp(): Promise<void> {
    const http = this.#http;
    this.#http = null;
    if (!http) return;
    for (const tunnel of this.#tunnels) tunnel.destroy();
    this.#tunnels.clear();
    await new Promise<void>((resolve) => {
      http.close(() => resolve());
      http.closeAllConnections();
    });
  }

  /** Frees both ports; idempotent. */
  async close(): Promise<void> {
    const server = this.#grpc;
    this.#grpc = null;
    // Nothing in flight is worth waiting for: every call was answered at once.
    server?.forceShutdown();
    await this.#closeHttp();
  }
}

function withoutHopByHop(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  return out;
}

/** `Name: value` lines (each ending in CRLF) of a message's raw headers; `dropHopByHop` leaves those out. */
function rawHeaderLines(raw: readonly string[], dropHopByHop = false): string {
  let lines = '';
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    if (dropHopByHop && HOP_BY_HOP.has(name.toLowerCase())) continue;
    lines += `${name}: ${raw[i + 1] as string}\r\n`;
  }
  return lines;
}
