import { createReadStream } from 'node:fs';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { createHash, timingSafeEqual } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../../common/logger.js';
import {
  AGENT_METADATA_KEY,
  AUTH_METADATA_KEY,
  loadProto,
  type AddonJob,
  type AddonJobResult__Output,
  type AddonStatus__Output,
  type AgentMessage__Output,
  type AgentServiceHandlers,
  type ArtifactChunk,
  type BackupChunk__Output,
  type FetchBackupRequest__Output,
  type UploadBackupResult,
  type CoordinatorMessage,
  type DesiredState,
  type FetchArtifactRequest__Output,
  type Heartbeat__Output,
  type Hello__Output,
  type InstanceEvent__Output,
  type MetricsReport__Output,
  type LogBatch__Output,
  type JoinRequest__Output,
  type JoinResponse,
  type TaskOutput__Output,
  type RunInput,
  type RunOutput__Output,
  type RunStatus__Output,
} from '../../proto/loader.js';
import { DesiredStateEncoder } from './desired-state-encoding.js';

/** What the hub tells the rest of the coordinator. */
export interface AgentHubEvents {
  /** An agent said hello; the hub has answered Welcome. Return nothing; send state with {@link AgentHub.send}. */
  onHello(agent: string, hello: Hello__Output): void;
  onHeartbeat(agent: string, heartbeat: Heartbeat__Output): void;
  onInstanceEvent(agent: string, event: InstanceEvent__Output): void;
  onTaskOutput(agent: string, output: TaskOutput__Output): void;
  onTaskResult(agent: string, result: { taskId: string; ok: boolean; error: string; errorCode: string; phase: string }): void;
  /** A metrics report (optional: without a listener reports are dropped). */
  onMetrics?(agent: string, report: MetricsReport__Output): void;
  /** A log batch of the agent's spool `epoch`; `reply` with the seq to ack once stored (null: not stored). */
  onLogBatch(agent: string, epoch: string, batch: LogBatch__Output, reply: (acked: number | null) => void): void;
  /** Highest log seq stored of the agent's spool `epoch` (acked at once on hello). */
  logAcked(agent: string, epoch: string): number;
  onDisconnect(agent: string): void;
  /** An add-on's state changed on the agent. */
  onAddonStatus?(agent: string, status: AddonStatus__Output): void;
  /** The agent answered an add-on job. */
  onAddonJobResult?(agent: string, result: AddonJobResult__Output): void;
  /** Output of a one-off run. */
  onRunOutput?(agent: string, output: RunOutput__Output): void;
  /** A one-off run started, failed or exited. */
  onRunStatus?(agent: string, status: RunStatus__Output): void;
}

/** Where the hub keeps the agents' own credentials (the coordinator backs it with its store). */
export interface AgentCredentials {
  /** Makes (or replaces) the credential of `agent` and returns it; only its hash is kept. */
  issue(agent: string): string;
  /** True when `credential` is the current one of `agent`. */
  verify(agent: string, credential: string): boolean;
}

/** Options of {@link AgentHub}. */
export interface AgentHubOptions {
  /** Host to listen on. Default `0.0.0.0`. */
  host?: string;
  /** gRPC port; 0 picks a free one. */
  port: number;
  /** The secret part of the join token (`hgr_join_...`); `Join` checks it. */
  joinSecret: string;
  /** Certificate chain (server certificate, then the CA) and key the port serves TLS with. */
  tls: { certChainPem: string; keyPem: string };
  /** Per-agent credentials: issued at join, checked on every other call. */
  credentials: AgentCredentials;
  /** Path of a stored artifact by sha256, or null when unknown. */
  artifactPath(sha256: string): string | null;
  /** Add-on backup files in transit (`UploadBackup`, `FetchBackup`). Default: none accepted. */
  backupTransfers?: BackupTransferPaths;
  /** How often agents send heartbeats, ms. Default 2000. */
  heartbeatIntervalMs?: number;
  /** How often agents send metrics reports, ms. Default: the agent's own (10 s). */
  metricsIntervalMs?: number;
  /** Told how long handling each message from an agent took, ms (benchmarks, diagnostics). */
  onHandled?: (message: AgentMessage__Output, ms: number) => void;
  /** The epoch this coordinator leads under, in Welcome and every snapshot (agents refuse older ones). Default 0. */
  leaderEpoch?: number;
  logger: Logger;
}

/** Where the files of backup transfers are, for the agent each transfer was named to. */
export interface BackupTransferPaths {
  /** Where an upload of `transfer` by `agent` is written, or null when none is expected from it. */
  uploadPath(agent: string, transfer: string): string | null;
  /** The file a fetch of `transfer` by `agent` reads, or null. */
  fetchPath(agent: string, transfer: string): string | null;
}

interface Session {
  name: string;
  call: grpc.ServerDuplexStream<AgentMessage__Output, CoordinatorMessage>;
  /** Last desired-state generation the agent says it applied. */
  appliedGeneration: number;
  /** Last generation we sent it. */
  sentGeneration: number;
  /** Identity of the agent's log spool. */
  logEpoch: string;
}

/** Bytes a Connect response was encoded to already (desired states: see {@link DesiredStateEncoder}); sent as they are. */
const ENCODED = Symbol('encoded');
type PreEncoded = CoordinatorMessage & { [ENCODED]?: Buffer };

/** An error a server call ends with: emit it on the call (`destroy` would not send the status). */
function grpcError(code: grpc.status, details: string): Error {
  return Object.assign(new Error(details), { code, details });
}

/** Receive window for an agent's stream, bytes: several log batches may be on the way at once. */
const AGENT_STREAM_WINDOW = 16 * 1024 * 1024;

/**
 * Widens HTTP/2 flow control for an agent's stream. With the default 64 KiB window, an agent can
 * have only 64 KiB in flight while the coordinator stores a batch, so log shipping would stall on
 * round trips. grpc-js has no server option for it (only the client's `grpc-node.flow_control_window`),
 * so this reaches the HTTP/2 session under the call; if grpc-js changes its internals, nothing
 * breaks, shipping is only slower.
 */
function widenFlowControlWindow(call: unknown): void {
  try {
    const session = (call as { call?: { stream?: { session?: Http2SessionLike } } }).call?.stream?.session;
    if (!session || typeof session.settings !== 'function') return;
    if ((session.localSettings?.initialWindowSize ?? 0) < AGENT_STREAM_WINDOW) session.settings({ initialWindowSize: AGENT_STREAM_WINDOW });
    if (typeof session.setLocalWindowSize === 'function') session.setLocalWindowSize(AGENT_STREAM_WINDOW * 2);
  } catch {
    // Flow control keeps its defaults.
  }
}

/** The HTTP/2 session under a call, reached the same way as in {@link widenFlowControlWindow}; null if grpc-js changed. */
function sessionOf(call: unknown): Http2SessionLike | null {
  const session = (call as { call?: { stream?: { session?: Http2SessionLike } } }).call?.stream?.session;
  return session && typeof session.destroy === 'function' && typeof session.once === 'function' ? session : null;
}

interface Http2SessionLike {
  destroy(): void;
  once(event: 'close', listener: () => void): void;
  settings(settings: { initialWindowSize: number }): void;
  setLocalWindowSize?(size: number): void;
  localSettings?: { initialWindowSize?: number };
}

function tokenMatches(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

const AGENT_NAME = /^[a-z0-9][a-z0-9.-]{0,62}$/i;

/**
 * The coordinator's gRPC side: one long-lived `Connect` stream per agent and `FetchArtifact` for
 * release artifacts, over TLS. `Join` takes the join token and issues the agent its own
 * credential; every other call must carry that credential.
 */
export class AgentHub {
  readonly #options: AgentHubOptions;
  readonly #logger: Logger;
  readonly #sessions = new Map<string, Session>();
  /**
   * Every agent's HTTP/2 session still open. A partitioned agent's goes quiet without a FIN: a
   * graceful shutdown would wait for it for as long as TCP retries, so close() destroys what is left.
   */
  readonly #transports = new Set<Http2SessionLike>();
  #server: grpc.Server | null = null;
  #port = 0;
  /** Set by {@link start}, before any agent can connect. */
  #events: AgentHubEvents | null = null;
  readonly #serviceDefinition = loadProto().hangar.v1.AgentService.service;
  readonly #encoder = new DesiredStateEncoder(this.#serviceDefinition.Connect.responseSerialize);

  constructor(options: AgentHubOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ component: 'agent-hub' });
  }

  /** Binds the gRPC port and tells `events` what agents send; idempotent. Returns the bound port. */
  async start(events: AgentHubEvents): Promise<number> {
    if (this.#server) return this.#port;
    this.#events = events;
    // A partitioned agent (no FIN, no RST) is noticed within ~5 s: its stream ends, it shows down.
    const server = new grpc.Server({
      'grpc.keepalive_time_ms': 2000,
      'grpc.keepalive_timeout_ms': 3000,
      'grpc.keepalive_permit_without_calls': 1,
    });
    const handlers: AgentServiceHandlers = {
      Connect: (call) => this.#onConnect(call),
      FetchArtifact: (call) => this.#onFetchArtifact(call),
      UploadBackup: (call, callback) => void this.#onUploadBackup(call, callback),
      FetchBackup: (call) => this.#onFetchBackup(call),
      Join: (call, callback) => this.#onJoin(call, callback),
    };
    const service = this.#serviceDefinition;
    const serialize = service.Connect.responseSerialize;
    server.addService(
      { ...service, Connect: { ...service.Connect, responseSerialize: (value: PreEncoded) => value[ENCODED] ?? serialize(value) } },
      handlers,
    );
    const { certChainPem, keyPem } = this.#options.tls;
    const credentials = grpc.ServerCredentials.createSsl(
      null,
      [{ cert_chain: Buffer.from(certChainPem), private_key: Buffer.from(keyPem) }],
      false,
    );
    this.#port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${this.#options.host ?? '0.0.0.0'}:${this.#options.port}`, credentials, (err, port) =>
        err ? reject(err) : resolve(port),
      );
    });
    this.#server = server;
    return this.#port;
  }

  #on(): AgentHubEvents {
    if (!this.#events) throw new Error('the agent hub is not started');
    return this.#events;
  }

  /** Names of connected agents. */
  connected(): string[] {
    return [...this.#sessions.keys()];
  }

  isConnected(agent: string): boolean {
    return this.#sessions.has(agent);
  }

  /** Last generation the agent applied, or null when it is not connected. */
  appliedGeneration(agent: string): number | null {
    return this.#sessions.get(agent)?.appliedGeneration ?? null;
  }

  /** Sends a desired-state snapshot to one connected agent; false when it is not connected. */
  send(agent: string, state: DesiredState & { generation: number }): boolean {
    const session = this.#sessions.get(agent);
    if (!session) return false;
    session.sentGeneration = state.generation;
    const desiredState = { ...state, leaderEpoch: this.#options.leaderEpoch ?? 0 };
    const message: PreEncoded = { desiredState, [ENCODED]: this.#encoder.encode(desiredState) };
    session.call.write(message);
    return true;
  }

  /** Sends a one-shot add-on job to a connected agent; false when it is not connected. */
  sendAddonJob(agent: string, job: AddonJob): boolean {
    const session = this.#sessions.get(agent);
    if (!session) return false;
    session.call.write({ addonJob: job });
    return true;
  }

  /** Sends input to a one-off run on a connected agent; false when it is not connected. */
  sendRunInput(agent: string, input: RunInput): boolean {
    const session = this.#sessions.get(agent);
    if (!session) return false;
    session.call.write({ runInput: input });
    return true;
  }

  /** Ends the stream of `agent` (e.g. after its credential was revoked); false when not connected. */
  disconnect(agent: string): boolean {
    const session = this.#sessions.get(agent);
    if (!session) return false;
    this.#sessions.delete(agent);
    session.call.emit('error', grpcError(grpc.status.UNAUTHENTICATED, 'This agent was removed from the coordinator.'));
    this.#on().onDisconnect(agent);
    return true;
  }

  /** Stops serving: open streams are cancelled. Idempotent. */
  async close(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#server = null;
    for (const session of this.#sessions.values()) session.call.end();
    this.#sessions.clear();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, 2000);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    for (const transport of this.#transports) transport.destroy();
    this.#transports.clear();
  }

  /** The agent's name when the call carries its current credential, else null. */
  #authenticate(metadata: grpc.Metadata): string | null {
    const presented = bearer(metadata);
    const name = String(metadata.get(AGENT_METADATA_KEY)[0] ?? '');
    if (!presented || !AGENT_NAME.test(name)) return null;
    return this.#options.credentials.verify(name, presented) ? name : null;
  }

  #onJoin(call: grpc.ServerUnaryCall<JoinRequest__Output, JoinResponse>, callback: grpc.sendUnaryData<JoinResponse>): void {
    if (!tokenMatches(bearer(call.metadata), this.#options.joinSecret)) {
      this.#logger.warn({ peer: call.getPeer() }, 'an agent presented a wrong join token; refused');
      callback(
        grpcError(grpc.status.UNAUTHENTICATED, 'The join token is wrong: copy it whole from the coordinator data dir (join-token).'),
      );
      return;
    }
    const name = call.request.name;
    if (!AGENT_NAME.test(name)) {
      callback(
        grpcError(grpc.status.INVALID_ARGUMENT, `Agent name "${name.slice(0, 80)}" is not valid: use letters, digits, dots and dashes.`),
      );
      return;
    }
    try {
      const credential = this.#options.credentials.issue(name);
      this.#logger.info({ agent: name, peer: call.getPeer() }, 'agent joined');
      callback(null, { agentId: name, credential });
    } catch (err) {
      this.#logger.error({ err, agent: name }, 'could not issue an agent credential');
      callback(grpcError(grpc.status.INTERNAL, 'The coordinator could not register this agent; its log has the details.'));
    }
  }

  #onConnect(call: grpc.ServerDuplexStream<AgentMessage__Output, CoordinatorMessage>): void {
    const name = this.#authenticate(call.metadata);
    if (name === null) {
      this.#logger.warn({ peer: call.getPeer() }, 'agent presented no valid credential; refused');
      call.emit(
        'error',
        grpcError(
          grpc.status.UNAUTHENTICATED,
          'This agent has no valid credential (it was removed, or joined another coordinator): delete DATA_DIR/credential.json and start it with a join token.',
        ),
      );
      return;
    }
    widenFlowControlWindow(call);
    const transport = sessionOf(call);
    if (transport && !this.#transports.has(transport)) {
      this.#transports.add(transport);
      transport.once('close', () => this.#transports.delete(transport));
    }
    let session: Session | null = null;
    call.on('data', (message: AgentMessage__Output) => {
      try {
        if (message.hello) {
          session = this.#openSession(call, message.hello, name);
          return;
        }
        if (!session) {
          call.emit('error', grpcError(grpc.status.FAILED_PRECONDITION, 'Say hello first.'));
          return;
        }
        if (this.#options.onHandled) {
          const started = performance.now();
          this.#dispatch(session, message);
          this.#options.onHandled(message, performance.now() - started);
        } else {
          this.#dispatch(session, message);
        }
      } catch (err) {
        this.#logger.error({ err, agent: name }, 'failed to handle a message from an agent');
      }
    });
    const finish = () => {
      if (session && this.#sessions.get(session.name) === session) {
        this.#sessions.delete(session.name);
        this.#logger.info({ agent: session.name }, 'agent disconnected');
        this.#on().onDisconnect(session.name);
      }
      session = null;
    };
    call.on('end', () => {
      finish();
      call.end();
    });
    call.on('error', (err) => {
      this.#logger.debug({ err, agent: name }, 'agent stream error');
      finish();
    });
    call.on('cancelled', finish);
  }

  #openSession(call: Session['call'], hello: Hello__Output, metadataName: string): Session {
    // The credential names the agent: a hello cannot speak for another one.
    const name = metadataName;
    if (!AGENT_NAME.test(name)) {
      call.emit(
        'error',
        grpcError(grpc.status.INVALID_ARGUMENT, `Agent name "${name}" is not valid: use letters, digits, dots and dashes.`),
      );
      throw new Error(`bad agent name ${name}`);
    }
    const previous = this.#sessions.get(name);
    if (previous && previous.call !== call) {
      this.#logger.warn({ agent: name }, 'agent reconnected; closing its previous stream');
      previous.call.end();
    }
    const session: Session = { name, call, appliedGeneration: Number(hello.generation), sentGeneration: 0, logEpoch: hello.logEpoch };
    this.#sessions.set(name, session);
    this.#logger.info({ agent: name, address: hello.advertiseAddress, routerPort: hello.routerPort }, 'agent connected');
    call.write({
      welcome: {
        agentId: name,
        heartbeatIntervalMs: this.#options.heartbeatIntervalMs ?? 2000,
        metricsIntervalMs: this.#options.metricsIntervalMs ?? 0,
        leaderEpoch: this.#options.leaderEpoch ?? 0,
      },
    });
    if (hello.logEpoch) {
      // Lines stored before a coordinator restart need not be sent again.
      const acked = this.#on().logAcked(name, hello.logEpoch);
      if (acked > 0) call.write({ logAck: { seq: acked, epoch: hello.logEpoch } });
    }
    this.#on().onHello(name, hello);
    return session;
  }

  #dispatch(session: Session, message: AgentMessage__Output): void {
    const events = this.#on();
    switch (message.body) {
      case 'heartbeat':
        if (message.heartbeat) {
          session.appliedGeneration = Math.max(session.appliedGeneration, Number(message.heartbeat.generation));
          events.onHeartbeat(session.name, message.heartbeat);
          // The agent counts its singleton lease from the send time of the last heartbeat acked.
          session.call.write({ heartbeatAck: { sentAt: message.heartbeat.sentAt } });
        }
        return;
      case 'instanceEvent':
        if (message.instanceEvent) events.onInstanceEvent(session.name, message.instanceEvent);
        return;
      case 'taskOutput':
        if (message.taskOutput) events.onTaskOutput(session.name, message.taskOutput);
        return;
      case 'taskResult':
        if (message.taskResult) events.onTaskResult(session.name, message.taskResult);
        return;
      case 'addonStatus':
        if (message.addonStatus) events.onAddonStatus?.(session.name, message.addonStatus);
        return;
      case 'addonJobResult':
        if (message.addonJobResult) events.onAddonJobResult?.(session.name, message.addonJobResult);
        return;
      case 'runOutput':
        if (message.runOutput) events.onRunOutput?.(session.name, message.runOutput);
        return;
      case 'runStatus':
        if (message.runStatus) events.onRunStatus?.(session.name, message.runStatus);
        return;
      case 'logBatch':
        if (message.logBatch && session.logEpoch) {
          const { call, logEpoch } = session;
          events.onLogBatch(session.name, logEpoch, message.logBatch, (acked) => {
            if (call.destroyed || call.cancelled) return;
            if (acked !== null) call.write({ logAck: { seq: acked, epoch: logEpoch } });
            // Not stored: end the stream with a status (a destroyed call sends none, and the agent would
            // wait on it forever); the agent reconnects with backoff and sends everything unacked again.
            else call.emit('error', grpcError(grpc.status.UNAVAILABLE, 'The coordinator could not store log lines; send them again.'));
          });
        }
        return;
      case 'metrics':
        if (message.metrics) events.onMetrics?.(session.name, message.metrics);
        return;
      case 'hello':
      case undefined:
        return;
    }
  }

  /** Writes an agent's backup upload to the path its transfer names (FILE.partial until complete), hashing it. */
  async #onUploadBackup(
    call: grpc.ServerReadableStream<BackupChunk__Output, UploadBackupResult>,
    callback: grpc.sendUnaryData<UploadBackupResult>,
  ): Promise<void> {
    const agent = this.#authenticate(call.metadata);
    if (agent === null) {
      callback(grpcError(grpc.status.UNAUTHENTICATED, 'This agent has no valid credential.'));
      return;
    }
    let path: string | null = null;
    let out: FileHandle | null = null;
    const hash = createHash('sha256');
    let size = 0;
    try {
      for await (const chunk of call as AsyncIterable<BackupChunk__Output>) {
        if (path === null) {
          path = this.#options.backupTransfers?.uploadPath(agent, chunk.transfer) ?? null;
          if (path === null)
            throw grpcError(grpc.status.PERMISSION_DENIED, `No backup transfer ${chunk.transfer} is expected from ${agent}.`);
          out = await open(`${path}.partial`, 'w', 0o600);
        }
        hash.update(chunk.data);
        size += chunk.data.length;
        await out?.write(chunk.data);
      }
      if (path === null || out === null) throw grpcError(grpc.status.INVALID_ARGUMENT, 'An empty upload names no transfer.');
      await out.sync();
      await out.close();
      out = null;
      await rename(`${path}.partial`, path);
      callback(null, { sha256: hash.digest('hex'), size });
    } catch (err) {
      await out?.close().catch(() => undefined);
      if (path !== null) await rm(`${path}.partial`, { force: true }).catch(() => undefined);
      this.#logger.warn({ err, agent }, 'a backup upload failed');
      const code = (err as { code?: unknown }).code;
      callback(
        typeof code === 'number'
          ? (err as grpc.ServiceError)
          : grpcError(grpc.status.INTERNAL, 'The coordinator could not store the upload.'),
      );
    }
  }

  #onFetchBackup(call: grpc.ServerWritableStream<FetchBackupRequest__Output, ArtifactChunk>): void {
    const agent = this.#authenticate(call.metadata);
    if (agent === null) {
      call.emit('error', grpcError(grpc.status.UNAUTHENTICATED, 'This agent has no valid credential.'));
      return;
    }
    const path = this.#options.backupTransfers?.fetchPath(agent, call.request.transfer) ?? null;
    if (!path) {
      call.emit('error', grpcError(grpc.status.NOT_FOUND, `No backup transfer ${call.request.transfer} for ${agent}.`));
      return;
    }
    this.#streamFile(call, path, 'the backup', {});
  }

  #onFetchArtifact(call: grpc.ServerWritableStream<FetchArtifactRequest__Output, ArtifactChunk>): void {
    if (this.#authenticate(call.metadata) === null) {
      call.emit('error', grpcError(grpc.status.UNAUTHENTICATED, 'This agent has no valid credential.'));
      return;
    }
    const sha = call.request.sha256;
    const path = /^[0-9a-f]{64}$/.test(sha) ? this.#options.artifactPath(sha) : null;
    if (!path) {
      call.emit('error', grpcError(grpc.status.NOT_FOUND, `No artifact ${sha}.`));
      return;
    }
    this.#streamFile(call, path, 'the artifact', { sha });
  }

  /** Streams a file to a server-streaming call in 256 KiB chunks, pausing while the call is full. */
  #streamFile(
    call: grpc.ServerWritableStream<unknown, { data: Buffer }>,
    path: string,
    what: string,
    fields: Record<string, unknown>,
  ): void {
    const stream = createReadStream(path, { highWaterMark: 256 * 1024 });
    stream.on('data', (chunk) => {
      if (!call.write({ data: chunk as Buffer })) {
        stream.pause();
        call.once('drain', () => stream.resume());
      }
    });
    stream.on('end', () => call.end());
    stream.on('error', (err) => {
      this.#logger.error({ err, ...fields }, `failed to read ${what}`);
      call.emit('error', grpcError(grpc.status.INTERNAL, `Failed to read ${what}.`));
    });
    call.on('cancelled', () => stream.destroy());
  }
}

function bearer(metadata: grpc.Metadata): string {
  const auth = String(metadata.get(AUTH_METADATA_KEY)[0] ?? '');
  return auth.startsWith('Bearer ') ? auth.slice('Bearer '.length) : '';
}

export type { Heartbeat__Output, Hello__Output, InstanceEvent__Output, TaskOutput__Output };
