/**
 * Upgraded connections (websockets, any `Upgrade`) through the agent's router: the handshake
 * request to an instance, and the two-way byte tunnel once the instance answered 101.
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import type { Clock, ClockTimer } from '../../common/clock.js';

/** How a handshake request to an instance ended. */
export type HandshakeOutcome =
  /** 101: `upstream` is the instance's socket, `head` the first bytes it sent after the 101. */
  | { kind: 'upgraded'; res: http.IncomingMessage; upstream: Socket; head: Buffer }
  /** The instance declined the upgrade and answered like a normal request. */
  | { kind: 'response'; res: http.IncomingMessage }
  /** Connection refused, reset or not opened in time, before any answer: safe to retry. */
  | { kind: 'unreachable'; err: unknown }
  /** No answer within the request timeout. */
  | { kind: 'timeout' }
  | { kind: 'error'; err: unknown }
  /** The client went away first; the request to the instance was aborted. */
  | { kind: 'client-gone' };

/** What {@link requestUpgrade} sends, and its bounds. */
export interface HandshakeRequest {
  host: string;
  port: number;
  method: string;
  path: string;
  /** Flat `[name, value, …]` list, `Connection` and `Upgrade` included. */
  headers: string[];
  /** Request body already read with the head, and the client socket to read the rest from. */
  body?: { head: Buffer; length: number; from: Socket };
  /** The client connection: its closing aborts the handshake. */
  client: Socket;
  connectTimeoutMs: number;
  responseTimeoutMs: number;
  clock: Clock;
  /** Error codes that mean the instance never got the request. */
  unreachableCodes: ReadonlySet<string>;
}

/** Sends a handshake to an instance on a connection of its own. Never rejects. */
export function requestUpgrade(r: HandshakeRequest): Promise<HandshakeOutcome> {
  return new Promise<HandshakeOutcome>((resolve) => {
    let settled = false;
    let connectTimer: ClockTimer | undefined;
    let responseTimer: ClockTimer | undefined;
    const upReq = http.request({
      host: r.host,
      port: r.port,
      method: r.method,
      path: r.path,
      headers: r.headers,
      setHost: false,
      agent: false,
    });
    const settle = (outcome: HandshakeOutcome): void => {
      if (settled) return;
      settled = true;
      if (connectTimer !== undefined) r.clock.clearTimeout(connectTimer);
      if (responseTimer !== undefined) r.clock.clearTimeout(responseTimer);
      r.client.off('close', onClientClose);
      resolve(outcome);
    };
    const onClientClose = (): void => {
      upReq.destroy();
      settle({ kind: 'client-gone' });
    };
    r.client.once('close', onClientClose);
    upReq.on('upgrade', (res, upstream, head) => {
      if (settled) upstream.destroy();
      else settle({ kind: 'upgraded', res, upstream, head });
    });
    upReq.on('response', (res) => {
      if (settled) res.destroy();
      else settle({ kind: 'response', res });
    });
    upReq.on('error', (err: NodeJS.ErrnoException) => {
      if (r.client.destroyed) return settle({ kind: 'client-gone' });
      if (err.code !== undefined && r.unreachableCodes.has(err.code)) return settle({ kind: 'unreachable', err });
      settle({ kind: 'error', err });
    });
    connectTimer = r.clock.setTimeout(() => {
      connectTimer = undefined;
      upReq.destroy();
      settle({ kind: 'unreachable', err: new Error(`no connection within ${r.connectTimeoutMs} ms`) });
    }, r.connectTimeoutMs);
    upReq.on('socket', (socket: Socket) => {
      socket.once('connect', () => {
        if (connectTimer !== undefined) r.clock.clearTimeout(connectTimer);
        connectTimer = undefined;
      });
    });
    responseTimer = r.clock.setTimeout(() => {
      responseTimer = undefined;
      upReq.destroy();
      settle({ kind: 'timeout' });
    }, r.responseTimeoutMs);
    if (r.body === undefined) upReq.end();
    else sendBody(r.body, upReq);
  });
}

/** Copies exactly `length` bytes of request body from the client; what follows stays unread. */
function sendBody(body: { head: Buffer; length: number; from: Socket }, upReq: http.ClientRequest): void {
  let left = body.length;
  const take = (chunk: Buffer): void => {
    const part = chunk.length > left ? chunk.subarray(0, left) : chunk;
    left -= part.length;
    const more = upReq.write(part);
    if (left === 0) {
      body.from.off('data', take);
      body.from.pause();
      // Bytes past the body belong to the upgraded protocol: the tunnel reads them later.
      if (part.length < chunk.length) body.from.unshift(chunk.subarray(part.length));
      upReq.end();
    } else if (!more) {
      body.from.pause();
      upReq.once('drain', () => body.from.resume());
    }
  };
  if (body.head.length > 0) take(body.head);
  if (left > 0) body.from.on('data', take);
}

/**
 * Two sockets joined both ways. When one side closes, the other is ended and, after `lingerMs`,
 * destroyed; {@link Tunnel.close} cuts both at once. `onClosed` runs once, when both are gone.
 */
export class Tunnel {
  readonly #client: Socket;
  readonly #upstream: Socket;
  readonly #onClosed: (t: Tunnel) => void;
  #open = 2;
  #done = false;

  constructor(
    client: Socket,
    upstream: Socket,
    options: { lingerMs: number; onClosed: (t: Tunnel) => void; onError: (err: Error) => void },
  ) {
    this.#client = client;
    this.#upstream = upstream;
    this.#onClosed = options.onClosed;
    for (const [side, other] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      // Websockets stay quiet for minutes between messages; only a drain or a peer ends them.
      side.setTimeout(0);
      side.setNoDelay(true);
      side.setKeepAlive(true, 60_000);
      side.on('error', options.onError);
      side.once('close', () => {
        if (!other.destroyed) {
          other.end();
          const timer = setTimeout(() => other.destroy(), options.lingerMs);
          timer.unref();
          other.once('close', () => clearTimeout(timer));
        }
        if (--this.#open === 0) this.#finish();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Bytes from the client to the instance, and from the instance to the client, so far. */
  get bytes(): { in: number; out: number } {
    return { in: this.#client.bytesRead, out: this.#client.bytesWritten };
  }

  /** Cuts both connections now. Idempotent. */
  close(): void {
    this.#client.destroy();
    this.#upstream.destroy();
    this.#finish();
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    this.#onClosed(this);
  }
}
