/**
 * A tiny TCP request/response for health checks: connect, write, read until the answer is
 * complete (or the peer closes), bounded by a timeout. Enough to speak RESP to Redis and the text
 * protocol to memcached without a client library.
 */
import { connect } from 'node:net';

/** Options of {@link socketExchange}. */
export interface SocketExchangeOptions {
  host: string;
  port: number;
  /** Bytes to send once connected. */
  request: string;
  /** True once `received` holds the whole answer. */
  complete: (received: string) => boolean;
  /** Give up after this long, ms. Default 2000. */
  timeoutMs?: number;
}

/** Resolves with what the server answered; rejects on connection errors and timeouts. */
export function socketExchange(o: SocketExchangeOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    let received = '';
    let done = false;
    const socket = connect({ host: o.host, port: o.port });
    const finish = (err: Error | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(received);
    };
    const timer = setTimeout(
      () => finish(new Error(`no complete answer from ${o.host}:${o.port} within ${o.timeoutMs ?? 2000} ms`)),
      o.timeoutMs ?? 2000,
    );
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(o.request));
    socket.on('data', (chunk: string) => {
      received += chunk;
      if (o.complete(received)) finish(null);
    });
    socket.on('error', (err) => finish(err));
    socket.on('close', () => finish(null));
  });
}
