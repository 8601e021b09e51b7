import { connect } from 'node:net';
import { Readable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import type { Clock, ClockTimer } from '../../common/clock.js';
import { describeError, isHangarError } from '../../common/errors.js';
import { COORDINATOR_TLS_NAME, type JoinToken } from '../../common/join-token.js';
import type { Logger } from '../../common/logger.js';
import {
  AGENT_METADATA_KEY,
  AUTH_METADATA_KEY,
  LEADER_METADATA_KEY,
  loadProto,
  type AddonJob__Output,
  type AgentMessage,
  type AgentServiceClient,
  type BackupChunk,
  type ArtifactChunk__Output,
  type CoordinatorMessage__Output,
  type DesiredState__Output,
  type JoinResponse__Output,
  type RunInput__Output,
  type UploadBackupResult__Output,
} from '../../proto/loader.js';
import { fetchPinnedCa, readIdentity, writeIdentity, type AgentIdentity } from './agent-identity.js';

/** Options of {@link CoordinatorLink}. */
export interface CoordinatorLinkOptions {
  /**
   * `HOST:PORT` of the coordinator's gRPC server, or several comma-separated (coordinators sharing
   * a data dir): they are tried in turn, and a follower's answer naming the leader is followed at once.
   */
  address: string;
  /** The highest leader epoch this agent has seen: a coordinator welcoming it under an older one is a stale leader, dropped. Default 0. */
  leaderEpoch?: () => number;
  /** A coordinator welcomed this agent under `epoch` (not older than {@link leaderEpoch}). */
  onLeaderEpoch?: (epoch: number) => void;
  /** The join token: its secret joins once, its fingerprint pins the coordinator's CA. */
  joinToken: JoinToken;
  /** Where the CA and this agent's credential are kept after joining (mode 0600). */
  identityPath: string;
  /** This agent's name. */
  name: string;
  /** Builds the hello sent on every (re)connect: identity, capacity, what runs now. */
  hello: () => NonNullable<AgentMessage['hello']>;
  onDesiredState: (state: DesiredState__Output) => void;
  /** Input for a running one-off run. */
  onRunInput?: (input: RunInput__Output) => void;
  /** A one-shot job on an add-on; answer it with an `addonJobResult` message. */
  onAddonJob?: (job: AddonJob__Output) => void;
  /** The stream is up (after Welcome); gives the heartbeat and metrics intervals the coordinator wants (0: default). */
  onConnected?: (heartbeatIntervalMs: number, metricsIntervalMs: number) => void;
  onDisconnected?: () => void;
  /** The coordinator received the heartbeat this agent sent at `sentAt` (its clock, Unix ms). */
  onHeartbeatAck?: (sentAt: number) => void;
  /** The coordinator stored every log line up to `seq` of spool `epoch`. */
  onLogAck?: (seq: number, epoch: string) => void;
  /** The coordinator refused this agent (wrong join token, another CA, revoked credential). */
  onRefused?: (message: string) => void;
  clock: Clock;
  logger: Logger;
  /** First reconnect delay, ms. Default 500; doubles up to `maxBackoffMs`, with jitter. */
  initialBackoffMs?: number;
  /**
   * Longest reconnect delay, ms. Default 15000. While waiting longer than {@link PROBE_MS}, the
   * coordinator's address is probed over TCP every {@link PROBE_MS} and a probe that connects cuts
   * the wait short (on a fresh channel, after a jitter of up to {@link PROBE_JITTER_MS}): a
   * coordinator back up is used again within about a second (bench/reconnect.ts).
   */
  maxBackoffMs?: number;
  /**
   * A connected stream with no message from the coordinator (heartbeat acks come every heartbeat
   * interval) for this long is given up and dialled again, ms. Default: 3 heartbeat intervals,
   * at least 3000.
   */
  silenceMs?: number;
}

export type LinkState = 'idle' | 'joining' | 'connecting' | 'connected' | 'closed';

/** Longest backoff of the gRPC channel's own reconnects, ms. */
export const FAST_RETRY_MS = 2000;
/** Waits longer than this are probed over TCP at this interval and cut short once the address answers, ms. */
export const PROBE_MS = 500;
/** Timeout of one TCP probe, ms. */
const PROBE_TIMEOUT_MS = 1000;
/**
 * Most random delay between a probe that connects and the dial: a fleet whose coordinator came
 * back does not dial in the same millisecond (with the probes' own random phases, 1,000 agents
 * arrive spread over about a second), ms.
 */
export const PROBE_JITTER_MS = 500;
/** A dial that got no Welcome within this is given up (a coordinator that accepts TCP but is stopped), ms. */
const WELCOME_TIMEOUT_MS = 5000;
/** While a follower says an election is under way, waits between rounds of the list stay this short, ms. */
const ELECTION_RETRY_MS = 1000;

const CHANNEL_OPTIONS = {
  // A link cut without a FIN or RST (a partition) is noticed within ~5 s, not at the next write.
  'grpc.keepalive_time_ms': 2000,
  'grpc.keepalive_timeout_ms': 3000,
  'grpc.keepalive_permit_without_calls': 1,
  // The channel's own reconnects stay quick too (its defaults back off to two minutes).
  'grpc.initial_reconnect_backoff_ms': 300,
  'grpc.max_reconnect_backoff_ms': FAST_RETRY_MS,
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
  // A channel of its own (not the process-wide subchannel pool): a fresh client made after a
  // probe connected does not inherit the old one's reconnect backoff.
  'grpc.use_local_subchannel_pool': 1,
  // The server certificate names the coordinator, not the address agents dial; the pinned CA is the trust.
  'grpc.ssl_target_name_override': COORDINATOR_TLS_NAME,
  'grpc.default_authority': COORDINATOR_TLS_NAME,
};

/**
 * The agent's one long-lived bidirectional stream to the coordinator, over TLS verified against
 * the pinned CA. A new agent first joins (fetches the CA, checks its fingerprint, trades the join
 * token for its own credential). Agents dial out; this reconnects forever with exponential
 * backoff and jitter until closed.
 */
export class CoordinatorLink {
  readonly #o: CoordinatorLinkOptions;
  readonly #logger: Logger;
  #client: AgentServiceClient | null = null;
  #identity: AgentIdentity | null = null;
  #state: LinkState = 'idle';
  #call: grpc.ClientDuplexStream<AgentMessage, CoordinatorMessage__Output> | null = null;
  #attempt = 0;
  #retryTimer: ClockTimer | null = null;
  #probeTimer: ClockTimer | null = null;
  #silenceTimer: ClockTimer | null = null;
  #lastMessageAt = 0;
  #lastError = '';
  /** The coordinators to try, in order; {@link #current} is the one dialled. */
  readonly #addresses: string[];
  #current = 0;
  /** When each address last failed to answer at all (a follower's answer is no failure). */
  readonly #failedAt = new Map<string, number>();
  /** When a follower last said who leads (an election may be under way). */
  #electionSeenAt = -Infinity;
  /** The stale epoch last logged, to say it once. */
  #staleLogged = -1;

  constructor(options: CoordinatorLinkOptions) {
    this.#o = options;
    this.#addresses = options.address
      .split(',')
      .map((a) => a.trim())
      .filter((a) => a !== '');
    if (this.#addresses.length === 0) throw new Error('no coordinator address');
    this.#logger = options.logger.child({ component: 'coordinator-link', coordinator: options.address });
  }

  /** The coordinator address dialled now. */
  get address(): string {
    return this.#addresses[this.#current] as string;
  }

  /** Dials `address` next (a new client: the old one's channel is bound to its address). */
  #switchTo(address: string): void {
    let index = this.#addresses.indexOf(address);
    if (index < 0) index = this.#addresses.push(address) - 1;
    if (index === this.#current) return;
    this.#current = index;
    this.#client?.close();
    this.#client = this.#identity ? CoordinatorLink.#clientFor(this.address, this.#identity.caPem) : null;
  }

  static #clientFor(address: string, caPem: string): AgentServiceClient {
    const Service = loadProto().hangar.v1.AgentService;
    return new Service(address, grpc.credentials.createSsl(Buffer.from(caPem)), CHANNEL_OPTIONS);
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
    if (!this.#client) throw new Error('not joined to the coordinator yet');
    const call = this.#client.FetchArtifact({ sha256 }, this.#metadata());
    return Readable.from(
      (async function* () {
        for await (const chunk of call as AsyncIterable<ArtifactChunk__Output>) yield chunk.data;
      })(),
    );
  }

  /** Streams the bytes of a backup transfer the coordinator named in an add-on job. */
  fetchBackup(transfer: string): Readable {
    if (!this.#client) throw new Error('not joined to the coordinator yet');
    const call = this.#client.FetchBackup({ transfer }, this.#metadata());
    return Readable.from(
      (async function* () {
        for await (const chunk of call as AsyncIterable<ArtifactChunk__Output>) yield chunk.data;
      })(),
    );
  }

  /** Sends `source` as the backup transfer `transfer`; resolves with what the coordinator received. */
  async uploadBackup(transfer: string, source: AsyncIterable<Buffer>): Promise<UploadBackupResult__Output> {
    const client = this.#client;
    if (!client) throw new Error('not joined to the coordinator yet');
    let call: grpc.ClientWritableStream<BackupChunk> | null = null;
    const answer = new Promise<UploadBackupResult__Output>((resolve, reject) => {
      call = client.UploadBackup(this.#metadata(), (err: grpc.ServiceError | null, result?: UploadBackupResult__Output) =>
        err || !result ? reject(err ?? new Error('no answer to the upload')) : resolve(result),
      );
    });
    const writer = call as unknown as grpc.ClientWritableStream<BackupChunk>;
    try {
      let first = true;
      for await (const data of source) {
        const ok = writer.write({ transfer: first ? transfer : '', data });
        first = false;
        if (!ok) await new Promise((resolve) => writer.once('drain', resolve));
      }
      if (first) writer.write({ transfer, data: Buffer.alloc(0) });
      writer.end();
    } catch (err) {
      writer.cancel();
      await answer.catch(() => undefined);
      throw err;
    }
    return answer;
  }

  /** Closes the stream and stops reconnecting; idempotent. */
  close(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    if (this.#retryTimer) this.#o.clock.clearTimeout(this.#retryTimer);
    this.#stopProbing();
    this.#stopSilenceWatch();
    this.#call?.end();
    this.#call?.cancel();
    this.#call = null;
    this.#client?.close();
  }

  #metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set(AUTH_METADATA_KEY, `Bearer ${this.#identity?.credential ?? ''}`);
    md.set(AGENT_METADATA_KEY, this.#o.name);
    return md;
  }

  /** The coordinator's CA certificate (PEM) once joined, else null. */
  get caPem(): string | null {
    return this.#identity?.caPem ?? null;
  }

  /** Loads the stored identity, or joins to get one; then makes the verifying client. */
  async #ensureClient(): Promise<AgentServiceClient> {
    if (this.#client) return this.#client;
    const { joinToken, identityPath, name } = this.#o;
    const address = this.address;
    let identity = await readIdentity(identityPath);
    if (identity && (identity.caFingerprint !== joinToken.caFingerprint || identity.name !== name)) identity = null;
    if (!identity) {
      this.#state = 'joining';
      const caPem = await fetchPinnedCa(address, joinToken.caFingerprint);
      const joiner = CoordinatorLink.#clientFor(address, caPem);
      try {
        const md = new grpc.Metadata();
        md.set(AUTH_METADATA_KEY, `Bearer ${joinToken.secret}`);
        const answer = await new Promise<JoinResponse__Output>((resolve, reject) => {
          joiner.Join({ name }, md, { deadline: Date.now() + 15_000 }, (err, res) =>
            err || !res ? reject(err ?? new Error('no answer')) : resolve(res),
          );
        });
        identity = { name, caPem, caFingerprint: joinToken.caFingerprint, credential: answer.credential };
        await writeIdentity(identityPath, identity);
        this.#logger.info('joined the coordinator; credential stored');
      } finally {
        joiner.close();
      }
    }
    this.#identity = identity;
    this.#client = CoordinatorLink.#clientFor(this.address, identity.caPem);
    return this.#client;
  }

  #connect(): void {
    if (this.#state === 'closed') return;
    if (!this.#client) {
      this.#ensureClient().then(
        () => this.#connect(),
        (err: unknown) => {
          if (this.#state === 'closed') return;
          this.#state = 'connecting';
          const code = (err as grpc.ServiceError).code;
          const refused = code === grpc.status.UNAUTHENTICATED || code === grpc.status.INVALID_ARGUMENT || isHangarError(err, 'FORBIDDEN');
          const details = (err as Partial<grpc.ServiceError>).details;
          const reason = typeof details === 'string' && details ? details : describeError(err);
          this.#scheduleReconnect(
            refused ? `could not join: ${reason}` : reason,
            refused ? grpc.status.UNAUTHENTICATED : code,
            leaderHint(err),
          );
        },
      );
      return;
    }
    this.#state = 'connecting';
    const call = this.#client.Connect(this.#metadata());
    this.#call = call;
    let ended = false;
    const welcomeTimer = this.#o.clock.setTimeout(() => {
      if (this.#call === call && this.#state === 'connecting') {
        this.#logger.warn(`no welcome from ${this.address} within ${WELCOME_TIMEOUT_MS} ms; trying again`);
        call.cancel();
      }
    }, WELCOME_TIMEOUT_MS);
    const lost = (reason: string, code?: number, leader?: string | null) => {
      if (ended) return;
      ended = true;
      this.#o.clock.clearTimeout(welcomeTimer);
      if (this.#call === call) this.#call = null;
      this.#stopSilenceWatch();
      const wasConnected = this.#state === 'connected';
      if (this.#state === 'closed') return;
      this.#state = 'connecting';
      if (wasConnected) this.#o.onDisconnected?.();
      this.#scheduleReconnect(reason, code, leader ?? null);
    };
    call.on('data', (message: CoordinatorMessage__Output) => {
      this.#lastMessageAt = this.#o.clock.now();
      try {
        if (message.welcome) {
          const epoch = Number(message.welcome.leaderEpoch ?? 0);
          const highest = this.#o.leaderEpoch?.() ?? 0;
          if (epoch < highest) {
            // A coordinator that still believes it leads after another was elected: never listen to it.
            if (this.#staleLogged !== epoch) {
              this.#staleLogged = epoch;
              this.#logger.warn({ epoch, highest }, `${this.address} welcomed this agent under an old leader epoch; dropping it`);
            }
            this.#failedAt.set(this.address, this.#o.clock.now());
            lost(`a stale leader (epoch ${epoch} < ${highest})`, grpc.status.FAILED_PRECONDITION);
            call.cancel();
            return;
          }
          this.#o.clock.clearTimeout(welcomeTimer);
          this.#o.onLeaderEpoch?.(epoch);
          this.#electionSeenAt = -Infinity;
          this.#state = 'connected';
          this.#attempt = 0;
          this.#lastError = '';
          this.#logger.info({ address: this.address, epoch }, 'connected to the coordinator');
          const heartbeatMs = message.welcome.heartbeatIntervalMs || 2000;
          this.#watchSilence(call, this.#o.silenceMs ?? Math.max(3000, 3 * heartbeatMs));
          this.#o.onConnected?.(heartbeatMs, message.welcome.metricsIntervalMs);
        } else if (message.desiredState) {
          this.#o.onDesiredState(message.desiredState);
        } else if (message.runInput) {
          this.#o.onRunInput?.(message.runInput);
        } else if (message.addonJob) {
          this.#o.onAddonJob?.(message.addonJob);
        } else if (message.heartbeatAck) {
          this.#o.onHeartbeatAck?.(Number(message.heartbeatAck.sentAt));
        } else if (message.logAck) {
          this.#o.onLogAck?.(Number(message.logAck.seq), message.logAck.epoch);
        }
      } catch (err) {
        this.#logger.error({ err }, 'failed to handle a message from the coordinator');
      }
    });
    call.on('error', (err: grpc.ServiceError) => lost(err.details || err.message, err.code, leaderHint(err)));
    call.on('end', () => lost('the coordinator closed the stream'));
    call.write({ hello: this.#o.hello() });
  }

  /**
   * `leader`: a follower answered and named the leader (null: it answered, naming none; undefined:
   * no follower answered). With several addresses, a named leader that has not just failed is
   * dialled at once; otherwise the next address, quickly within a round, with backoff between
   * rounds (kept short while a follower says an election is under way).
   */
  #scheduleReconnect(reason: string, code?: number, leader?: string | null): void {
    const initial = this.#o.initialBackoffMs ?? 500;
    const max = this.#o.maxBackoffMs ?? 15_000;
    const now = this.#o.clock.now();
    const followerAnswered = leader !== undefined;
    if (followerAnswered) this.#electionSeenAt = now;
    else if (code !== grpc.status.UNAUTHENTICATED) this.#failedAt.set(this.address, now);
    let delay: number | null = null;
    if (leader && leader !== this.address && now - (this.#failedAt.get(leader) ?? -Infinity) > 2 * ELECTION_RETRY_MS) {
      this.#logger.info({ leader }, `${this.address} follows; dialling the leader`);
      this.#switchTo(leader);
      delay = Math.round(Math.random() * 100);
    } else if (this.#addresses.length > 1 && code !== grpc.status.UNAUTHENTICATED) {
      const next = (this.#current + 1) % this.#addresses.length;
      this.#switchTo(this.#addresses[next] as string);
      if (next !== 0) delay = Math.round(100 + Math.random() * 200);
    }
    if (delay === null) {
      const electing = now - this.#electionSeenAt < 30_000;
      const base = Math.min(electing ? ELECTION_RETRY_MS : max, initial * 2 ** this.#attempt);
      delay = Math.round(base * (0.8 + Math.random() * 0.4));
      this.#attempt++;
    }
    if (code === grpc.status.UNAUTHENTICATED) {
      this.#logger.error({ retryInMs: delay }, `the coordinator refused this agent: ${reason}`);
      this.#o.onRefused?.(reason);
    } else if (reason !== this.#lastError) {
      this.#logger.warn({ retryInMs: delay }, `lost the coordinator (${reason}); reconnecting`);
    }
    this.#lastError = reason;
    this.#retryTimer = this.#o.clock.setTimeout(() => {
      this.#retryTimer = null;
      this.#stopProbing();
      this.#connect();
    }, delay);
    if (delay > PROBE_MS && code !== grpc.status.UNAUTHENTICATED) this.#probe();
  }

  /** During a long wait: once the address answers TCP (the link healed), dial again soon. */
  #probe(): void {
    this.#probeTimer = this.#o.clock.setTimeout(() => {
      this.#probeTimer = null;
      void answersTcp(this.address, PROBE_TIMEOUT_MS).then((answers) => {
        if (this.#retryTimer === null || this.#state === 'closed') return;
        if (!answers) {
          this.#probe();
          return;
        }
        this.#logger.info('the coordinator answers again; reconnecting');
        this.#o.clock.clearTimeout(this.#retryTimer);
        // Jitter: a fleet whose link healed at once does not dial in the same millisecond.
        this.#retryTimer = this.#o.clock.setTimeout(
          () => {
            this.#retryTimer = null;
            this.#freshChannel();
            this.#connect();
          },
          Math.round(Math.random() * PROBE_JITTER_MS),
        );
      });
    }, PROBE_MS);
  }

  /**
   * Replaces the client by one on a new channel: the old channel may sit in its own reconnect
   * backoff (up to {@link FAST_RETRY_MS}), where a call fails at once, though the address answers.
   */
  #freshChannel(): void {
    const caPem = this.#identity?.caPem;
    if (!this.#client || !caPem || this.#state === 'closed') return;
    this.#client.close();
    this.#client = CoordinatorLink.#clientFor(this.address, caPem);
  }

  #stopProbing(): void {
    if (this.#probeTimer) this.#o.clock.clearTimeout(this.#probeTimer);
    this.#probeTimer = null;
  }

  /** Gives up a stream the coordinator fell silent on (no heartbeat ack for `silenceMs`). */
  #watchSilence(call: grpc.ClientDuplexStream<AgentMessage, CoordinatorMessage__Output>, silenceMs: number): void {
    this.#stopSilenceWatch();
    const check = () => {
      this.#silenceTimer = this.#o.clock.setTimeout(() => {
        this.#silenceTimer = null;
        if (this.#call !== call || this.#state !== 'connected') return;
        const silent = this.#o.clock.now() - this.#lastMessageAt;
        if (silent >= silenceMs) {
          this.#logger.warn({ silentMs: silent }, 'no word from the coordinator; dialling again');
          call.cancel();
          return;
        }
        check();
      }, 500);
    };
    check();
  }

  #stopSilenceWatch(): void {
    if (this.#silenceTimer) this.#o.clock.clearTimeout(this.#silenceTimer);
    this.#silenceTimer = null;
  }
}

/** True when a TCP connection to `HOST:PORT` opens within `timeoutMs` (closed again at once). */
function answersTcp(address: string, timeoutMs: number): Promise<boolean> {
  const at = address.lastIndexOf(':');
  const host = address.slice(0, at).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(at + 1));
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** The leader a follower named in its answer: its address, null when it named none (an election); undefined when no follower answered. */
function leaderHint(err: unknown): string | null | undefined {
  const metadata = (err as { metadata?: unknown }).metadata;
  if (!(metadata instanceof grpc.Metadata)) return undefined;
  const value = metadata.get(LEADER_METADATA_KEY)[0];
  if (value === undefined) return undefined;
  return String(value) || null;
}
