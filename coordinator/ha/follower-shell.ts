/**
 * What a follower coordinator serves while another leads: on its HTTP port, `GET /v1/health`
 * saying who leads and a 503 `NOT_LEADER` naming the leader for everything else; on its gRPC port
 * (with the same TLS identity as the leader: the same data dir), UNAVAILABLE with the leader's
 * address in the `hangar-leader` trailer, so that agents switch to it at once.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import * as grpc from '@grpc/grpc-js';
import type { HealthView, LeaderView } from '../../common/api-types.js';
import type { Logger } from '../../common/logger.js';
import { LEADER_METADATA_KEY, loadProto, type AgentServiceHandlers } from '../../proto/loader.js';

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
    // An upgrade (live logs, `hangar run`) gets the same answer as any other request.
    http.on('upgrade', (req: IncomingMessage, socket: NodeJS.WritableStream & { destroy(): void }) => {
      const body = JSON.stringify(this.#notLeaderBody());
      socket.end(
        `HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    });
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
  #notLeaderBody(): { code: 'NOT_LEADER'; message: string; leader: string | null; details: { leader: string | null } } {
    const leader = this.#o.leader();
    return {
      code: 'NOT_LEADER',
      message: leader
        ? `This coordinator (${this.#o.name()}) follows; the leader is ${leader.url}: send requests there, or list both in HANGAR_URL.`
        : `This coordinator (${this.#o.name()}) follows and no leader is elected right now; try again in a few seconds.`,
      leader: leader?.url ?? null,
      details: { leader: leader?.url ?? null },
    };
  }

  #answer(req: IncomingMessage, res: ServerResponse): void {
    req.resume();
    const path = (req.url ?? '/').split('?')[0];
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

  async #closeHttp(): Promise<void> {
    const http = this.#http;
    this.#http = null;
    if (!http) return;
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
