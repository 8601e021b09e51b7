/**
 * One attempt of a routed request, on `node:http`'s client: the request goes to the instance
 * through the instance's keep-alive {@link http.Agent}, and the instance's response is written
 * straight to the client's `ServerResponse` as it comes, with backpressure both ways. The attempt
 * settles once with how it ended. No response stream, no `pipeline`, no `AbortSignal` and no timer
 * of its own per request (timeouts are the socket's idle timeout): on the happy path nothing here
 * builds an error object. A profile of the router under load put undici's per-request objects and
 * the errors it made for every connection an instance closes (gunicorn's sync workers close each
 * one) near the top; Node's client, its parser native, costs about half the CPU per request.
 */
import http, { type ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Socket } from 'node:net';

/** How one attempt ended. */
export type RelayOutcome =
  /** The whole response reached the client. */
  | { kind: 'done'; status: number }
  /** The instance failed after the response head was sent to the client (the client got a cut response). */
  | { kind: 'broken'; status: number; err: Error }
  /** The client went away; the upstream request was aborted. `status` is what it had been sent, or 499. */
  | { kind: 'client-gone'; status: number }
  /** The instance failed before any of its response reached the client. */
  | { kind: 'failed'; err: Error };

/** Code of the error when no connection to the instance was made within the connect timeout (it is unreachable). */
export const CONNECT_TIMEOUT = 'HANGAR_CONNECT_TIMEOUT';
/** Code of the error when the instance sent no response headers in time. */
export const HEADERS_TIMEOUT = 'HANGAR_HEADERS_TIMEOUT';
/** Code of the error when the instance went silent mid-body. */
export const BODY_TIMEOUT = 'HANGAR_BODY_TIMEOUT';
/** Code of the error that ends a request body over the app's limit. */
export const BODY_TOO_LARGE = 'HANGAR_BODY_TOO_LARGE';

/** What {@link UpstreamRelay.send} sends, and where. */
export interface UpstreamRequest {
  agent: http.Agent;
  host: string;
  port: number;
  method: string;
  path: string;
  /** Flat `[name, value, …]`, Host included (sent as given). */
  headers: string[];
  /** The client's request body, or null when it has none. */
  body: Readable | null;
  /** Largest body passed on, bytes; a larger one fails the attempt with {@link BODY_TOO_LARGE}. 0: no limit. */
  maxBodyBytes: number;
  connectTimeoutMs: number;
  /** Time the instance has to send response headers, ms. */
  headersTimeoutMs: number;
  /** Longest silence while the instance sends the body, ms. */
  bodyTimeoutMs: number;
}

/** An error with a code, made only when an attempt fails. */
function codedError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/**
 * Relays one upstream response to `res`. `headersFor` turns the instance's raw response headers
 * into the client's (flat `[name, value, …]` lists both); `onBytes` counts the body bytes written.
 */
export class UpstreamRelay {
  readonly #res: ServerResponse;
  readonly #headersFor: (rawHeaders: string[]) => string[];
  readonly #onBytes: (n: number) => void;
  readonly #settle: (outcome: RelayOutcome) => void;
  #req: http.ClientRequest | undefined;
  #options: UpstreamRequest | undefined;
  #status = 0;
  #settled = false;
  #clientGone = false;
  /** Resolves with how the attempt ended; never rejects. */
  readonly done: Promise<RelayOutcome>;

  constructor(res: ServerResponse, headersFor: (rawHeaders: string[]) => string[], onBytes: (n: number) => void) {
    this.#res = res;
    this.#headersFor = headersFor;
    this.#onBytes = onBytes;
    let settle: (outcome: RelayOutcome) => void = () => undefined;
    this.done = new Promise<RelayOutcome>((resolve) => (settle = resolve));
    this.#settle = settle;
  }

  /** True once part of the response (its head) was sent to the client: a retry is then impossible. */
  get started(): boolean {
    return this.#status !== 0;
  }

  /** The client went away: aborts the upstream request (now, or instead of sending it). */
  clientGone(): void {
    if (this.#clientGone) return;
    this.#clientGone = true;
    this.#finish({ kind: 'client-gone', status: this.#status === 0 ? 499 : this.#status });
    this.#req?.destroy();
  }

  /** Sends the request; {@link done} settles when it ended. */
  send(o: UpstreamRequest): void {
    if (this.#settled) return;
    this.#options = o;
    const req = http.request({
      agent: o.agent,
      host: o.host,
      port: o.port,
      method: o.method,
      path: o.path,
      headers: o.headers,
      setHost: false,
      // The socket's idle timeout from its creation: bounds the connect; set per phase below.
      timeout: o.connectTimeoutMs,
    });
    this.#req = req;
    req.on('socket', this.#onSocket);
    req.on('timeout', this.#onTimeout);
    req.on('error', this.#onRequestError);
    req.on('response', this.#onResponse);
    const body = o.body;
    if (body === null) {
      req.end();
      return;
    }
    if (o.maxBodyBytes > 0) {
      let n = 0;
      const max = o.maxBodyBytes;
      body.on('data', (chunk: Buffer) => {
        n += chunk.length;
        if (n > max && !req.destroyed) req.destroy(codedError(BODY_TOO_LARGE, `request body over ${max} bytes`));
      });
    }
    body.pipe(req);
  }

  readonly #onSocket = (socket: Socket): void => {
    const o = this.#options;
    if (o === undefined) return;
    if (socket.connecting) socket.once('connect', () => socket.setTimeout(o.headersTimeoutMs));
    else socket.setTimeout(o.headersTimeoutMs);
  };

  readonly #onTimeout = (): void => {
    const req = this.#req;
    if (req === undefined) return;
    if (this.#status !== 0) return void req.destroy(codedError(BODY_TIMEOUT, 'the instance went silent mid-response'));
    if (req.socket?.connecting === true) return void req.destroy(codedError(CONNECT_TIMEOUT, 'could not connect to the instance in time'));
    req.destroy(codedError(HEADERS_TIMEOUT, 'the instance sent no response headers in time'));
  };

  readonly #onRequestError = (err: Error): void => {
    if (this.#settled) return;
    if (this.#status === 0) return this.#finish({ kind: 'failed', err });
    this.#broken(err);
  };

  readonly #onResponse = (up: http.IncomingMessage): void => {
    if (this.#settled) return void up.destroy();
    const status = up.statusCode ?? 502;
    this.#status = status;
    up.socket.setTimeout(this.#options?.bodyTimeoutMs ?? 0);
    const res = this.#res;
    res.writeHead(status, this.#headersFor(up.rawHeaders));
    up.on('data', (chunk: Buffer) => {
      if (this.#settled) return;
      this.#onBytes(chunk.length);
      if (!res.write(chunk)) {
        up.pause();
        res.once('drain', () => up.resume());
      }
    });
    up.on('end', () => {
      if (this.#settled) return;
      res.end();
      this.#finish({ kind: 'done', status });
    });
    up.on('error', (err) => this.#broken(err));
    up.on('close', () => {
      if (!up.complete) this.#broken(codedError('ECONNRESET', 'the instance closed the connection mid-response'));
    });
  };

  /** The instance failed after the head went out: cutting the connection is the only way to tell the client it is truncated. */
  #broken(err: Error): void {
    if (this.#settled) return;
    this.#res.destroy();
    this.#finish({ kind: 'broken', status: this.#status, err });
  }

  #finish(outcome: RelayOutcome): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#settle(outcome);
  }
}
