import { Readable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import type { Clock, ClockTimer } from '../common/clock.js';
import type { Logger } from '../common/logger.js';
import {
  AGENT_METADATA_KEY,
  AUTH_METADATA_KEY,
  loadProto,
  type AddonJob__Output,
  type AgentMessage,
  type AgentServiceClient,
  type ArtifactChunk__Output,
  type CoordinatorMessage__Output,
  type DesiredState__Output,
} from '../proto/loader.js';

/** Options of {@link CoordinatorLink}. */
export interface CoordinatorLinkOptions {
  /** `HOST:PORT` of the coordinator's gRPC server. */
  address: string;
  joinToken: string;
  /** This agent's name. */
  name: string;
  /** Builds the hello sent on every (re)connect: identity, capacity, what runs now. */
  hello: () => NonNullable<AgentMessage['hello']>;
  onDesiredState: (state: DesiredState__Output) => void;
  /** A one-shot job on an add-on; answer it with an `addonJobResult` message. */
  onAddonJob?: (job: AddonJob__Output) => void;
  /** The stream is up (after Welcome); gives the heartbeat and metrics intervals the coordinator wants (0: default). */
  onConnected?: (heartbeatIntervalMs: number, metricsIntervalMs: number) => void;
  onDisconnected?: () => void;
  /** The coordinator stored every log line up to `seq` of spool `epoch`. */
  onLogAck?: (seq: number, epoch: string) => void;
  clock: Clock;
  logger: Logger;
  /** First reconnect delay, ms. Default 500; doubles up to `maxBackoffMs`, with jitter. */
  initialBackoffMs?: number;
  /** Default 15000. */
  maxBackoffMs?: number;
}

export type LinkState = 'idle' | 'connecting' | 'connected' | 'closed';

/**
 * The agent's one long-lived bidirectional stream to the coordinator. Agents dial out; this
 * reconnects forever with exponential backoff and jitter until closed.
 */
export class CoordinatorLink {
  readonly #o: CoordinatorLinkOptions;
  readonly #logger: Logger;
  readonly #client: AgentServiceClient;
  #state: LinkState = 'idle';
  #call: grpc.ClientDuplexStream<AgentMessage, CoordinatorMessage__Output> | null = null;
  #attempt = 0;
  #retryTimer: ClockTimer | null = null;
  #lastError = '';

  constructor(options: CoordinatorLinkOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'coordinator-link', coordinator: options.address });
    const Service = loadProto().hangar.v1.AgentService;
    this.#client = new Service(options.address, grpc.credentials.createInsecure(), {
      'grpc.keepalive_time_ms': 20_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
    });
  }

  get state(): LinkState {
    return this.#state;
  }

  /** Starts connecting; idempotent. */
  start(): void {
    if (this.#state !== 'idle') return;
    this.#connect();
  }

  /** Sends a message when connected; returns false (dropping it) otherwise. */
  send(message: AgentMessage): boolean {
    if (this.#state !== 'connected' || !this.#call) return false;
    this.#call.write(message);
    return true;
  }

  /** Streams an artifact's bytes from the coordinator. */
  fetchArtifact(sha256: string): Readable {
    const call = this.#client.FetchArtifact({ sha256 }, this.#metadata());
    return Readable.from(
      (async function* () {
        for await (const chunk of call as AsyncIterable<ArtifactChunk__Output>) yield chunk.data;
      })(),
    );
  }

  /** Closes the stream and stops reconnecting; idempotent. */
  close(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    if (this.#retryTimer) this.#o.clock.clearTimeout(this.#retryTimer);
    this.#call?.end();
    this.#call?.cancel();
    this.#call = null;
    this.#client.close();
  }

  #metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set(AUTH_METADATA_KEY, `Bearer ${this.#o.joinToken}`);
    md.set(AGENT_METADATA_KEY, this.#o.name);
    return md;
  }

  #connect(): void {
    if (this.#state === 'closed') return;
    this.#state = 'connecting';
    const call = this.#client.Connect(this.#metadata());
    this.#call = call;
    let ended = false;
    const lost = (reason: string, code?: number) => {
      if (ended) return;
      ended = true;
      if (this.#call === call) this.#call = null;
      const wasConnected = this.#state === 'connected';
      if (this.#state === 'closed') return;
      this.#state = 'connecting';
      if (wasConnected) this.#o.onDisconnected?.();
      this.#scheduleReconnect(reason, code);
    };
    call.on('data', (message: CoordinatorMessage__Output) => {
      try {
        if (message.welcome) {
          this.#state = 'connected';
          this.#attempt = 0;
          this.#lastError = '';
          this.#logger.info('connected to the coordinator');
          this.#o.onConnected?.(message.welcome.heartbeatIntervalMs || 2000, message.welcome.metricsIntervalMs);
        } else if (message.desiredState) {
          this.#o.onDesiredState(message.desiredState);
        } else if (message.addonJob) {
          this.#o.onAddonJob?.(message.addonJob);
        } else if (message.logAck) {
          this.#o.onLogAck?.(Number(message.logAck.seq), message.logAck.epoch);
        }
      } catch (err) {
        this.#logger.error({ err }, 'failed to handle a message from the coordinator');
      }
    });
    call.on('error', (err: grpc.ServiceError) => lost(err.details || err.message, err.code));
    call.on('end', () => lost('the coordinator closed the stream'));
    call.write({ hello: this.#o.hello() });
  }

  #scheduleReconnect(reason: string, code?: number): void {
    const initial = this.#o.initialBackoffMs ?? 500;
    const max = this.#o.maxBackoffMs ?? 15_000;
    const base = Math.min(max, initial * 2 ** this.#attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.#attempt++;
    if (code === grpc.status.UNAUTHENTICATED) {
      this.#logger.error({ retryInMs: delay }, `the coordinator refused this agent: ${reason}`);
    } else if (reason !== this.#lastError) {
      this.#logger.warn({ retryInMs: delay }, `lost the coordinator (${reason}); reconnecting`);
    }
    this.#lastError = reason;
    this.#retryTimer = this.#o.clock.setTimeout(() => {
      this.#retryTimer = null;
      this.#connect();
    }, delay);
  }
}
