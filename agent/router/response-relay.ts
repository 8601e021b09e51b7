/**
 * One attempt of a routed request as an undici dispatch handler: the instance's response is
 * written straight to the client's `ServerResponse`, with backpressure both ways, and the attempt
 * settles once with how it ended. No response stream, no `pipeline`, no `AbortSignal` per request:
 * on the happy path nothing here builds an error object (each one captures a stack trace, which
 * a profile of the router under load showed near the top).
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';

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

/**
 * Undici closes an instance's connection that answered `Connection: close` (gunicorn's sync workers
 * close every one) by destroying its socket with an `InformationalError('reset')`, made right after
 * the handler's `onResponseEnd` returns, in the same synchronous call; the socket's destroy then
 * formats its stack. Both were ~8% of the router's CPU under load. Errors made from here to the
 * next microtask checkpoint (the rest of undici's parser callback) carry no stack frames; the
 * limit is restored before any other code runs.
 */
function framelessErrorsUntilMicrotask(): void {
  if (savedStackTraceLimit !== undefined) return;
  savedStackTraceLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  queueMicrotask(restoreStackTraceLimit);
}

let savedStackTraceLimit: number | undefined;

function restoreStackTraceLimit(): void {
  if (savedStackTraceLimit === undefined) return;
  Error.stackTraceLimit = savedStackTraceLimit;
  savedStackTraceLimit = undefined;
}

/** True when the response says the instance closes the connection after it (HTTP/1.1 `Connection: close`). */
function closesConnection(headers: IncomingHttpHeaders): boolean {
  const c = headers.connection;
  if (c === undefined) return false;
  const v = Array.isArray(c) ? c.join(',') : c;
  return v.length === 5 ? v.toLowerCase() === 'close' : /(^|,)\s*close\s*(,|$)/i.test(v);
}

/** Error given to undici when the client goes away (made only then). */
class ClientClosedError extends Error {
  readonly code = 'CLIENT_CLOSED';
  constructor() {
    super('the client closed the connection');
  }
}

/**
 * Relays one upstream response to `res`. `headersFor` turns the instance's response headers into
 * the client's; `onBytes` counts the body bytes written.
 */
export class ResponseRelay implements Dispatcher.DispatchHandler {
  readonly #res: ServerResponse;
  readonly #headersFor: (headers: IncomingHttpHeaders) => OutgoingHttpHeaders;
  readonly #onBytes: (n: number) => void;
  readonly #settle: (outcome: RelayOutcome) => void;
  #controller: Dispatcher.DispatchController | undefined;
  #status = 0;
  #settled = false;
  #clientGone = false;
  #waitingForDrain = false;
  /** The instance said `Connection: close`: undici resets the socket right after the end. */
  #closing = false;
  /** Resolves with how the attempt ended; never rejects. */
  readonly done: Promise<RelayOutcome>;

  constructor(res: ServerResponse, headersFor: (headers: IncomingHttpHeaders) => OutgoingHttpHeaders, onBytes: (n: number) => void) {
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

  /** The client went away: aborts the upstream request (now, or as soon as it starts). */
  clientGone(): void {
    if (this.#clientGone) return;
    this.#clientGone = true;
    if (this.#controller !== undefined && !this.#controller.aborted) this.#controller.abort(new ClientClosedError());
    this.#finish({ kind: 'client-gone', status: this.#status === 0 ? 499 : this.#status });
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.#clientGone) controller.abort(new ClientClosedError());
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    // 1xx interim answers (100 Continue, 103 Early Hints) are not relayed; the final one follows.
    if (statusCode < 200 || this.#settled) return;
    this.#status = statusCode;
    this.#closing = closesConnection(headers);
    this.#res.writeHead(statusCode, this.#headersFor(headers));
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#settled) return;
    this.#onBytes(chunk.length);
    if (!this.#res.write(chunk) && !this.#waitingForDrain) {
      this.#waitingForDrain = true;
      controller.pause();
      this.#res.once('drain', () => {
        this.#waitingForDrain = false;
        controller.resume();
      });
    }
  }

  onResponseEnd(): void {
    if (this.#settled) return;
    this.#res.end();
    // Before settling, so the limit is restored ahead of the continuations the settling queues.
    if (this.#closing) framelessErrorsUntilMicrotask();
    this.#finish({ kind: 'done', status: this.#status });
  }

  onResponseError(controller: Dispatcher.DispatchController, err: Error): void {
    if (this.#settled) return;
    if (this.#status === 0) return this.#finish({ kind: 'failed', err });
    // Headers are gone: cutting the connection is the only way to tell the client it is truncated.
    this.#res.destroy();
    this.#finish({ kind: 'broken', status: this.#status, err });
  }

  #finish(outcome: RelayOutcome): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#settle(outcome);
  }
}
