import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import type { LogLineView, LogStreamMessage } from '../../common/api-types.js';
import type { Clock } from '../../common/clock.js';
import { httpStatusFor, isHangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { appNameSchema } from '../../common/names.js';
import { selectWebsocketProtocol } from '../api/auth.js';
import type { LogHub } from './log-hub.js';
import { parseLogQuery } from './log-query.js';
import { logLineView, type LogStorage, type StoredLogLine } from './log-store.js';

/** Options of {@link LogStreamServer}. */
export interface LogStreamServerOptions {
  logs: LogStorage;
  hub: LogHub;
  /** Whether the app exists. */
  appExists: (app: string) => boolean;
  /** Whether the `Authorization` header carries the admin token. */
  /** Checks the caller's token; when it refuses, it has answered the socket (401/403) itself. */
  authorize: (request: IncomingMessage, socket: Duplex) => boolean;
  clock: Clock;
  logger: Logger;
  /**
   * Above this many bytes waiting to go out to a client, its new lines are skipped (and counted).
   * Default 4 MiB: a live message of a burst is one agent batch (256 KiB of text, ~500 KB as JSON),
   * so 1 MiB was two messages and a local follower descheduled for ~20 ms on a busy host missed
   * lines of a burst it would have caught up with; 4 MiB is ~8 messages, still bounded per client.
   */
  highWaterBytes?: number;
  /** A client that keeps missing lines for this long is cut off, ms. Default 30 s. */
  slowCutoffMs?: number;
}

const PATH = /^\/v1\/apps\/([^/]+)\/logs\/stream$/;

/**
 * The live log websocket (`/v1/apps/APP/logs/stream`), served on the API's HTTP server with `ws`
 * (noServer). The token comes in the Authorization header, never the URL. A client gets the
 * backfill, `{live: true}`, then live lines. A slow client never slows ingestion or others: when
 * its send buffer is over the high-water mark its lines are skipped and counted, it is told
 * `{missed: N}` once it catches up, and cut off if it stays behind.
 */
export class LogStreamServer {
  readonly #o: LogStreamServerOptions;
  readonly #logger: Logger;
  readonly #wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024, handleProtocols: selectWebsocketProtocol });
  /**
   * The live message of each published array of lines, made once: the hub hands the same array to
   * every subscriber of the app without a filter, so N followers cost one serialization, not N.
   */
  readonly #messages = new WeakMap<readonly StoredLogLine[], string>();

  constructor(options: LogStreamServerOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'log-stream' });
  }

  /** Whether an upgrade request is for this server. */
  handles(request: IncomingMessage): boolean {
    return PATH.test((request.url ?? '').split('?')[0] ?? '');
  }

  /** Takes an HTTP upgrade (the server's 'upgrade' event). */
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = new URL(request.url ?? '/', 'http://localhost');
    const match = PATH.exec(url.pathname);
    try {
      if (!this.#o.authorize(request, socket)) return;
      const app = appNameSchema.safeParse(decodeURIComponent(match?.[1] ?? ''));
      if (!app.success || !this.#o.appExists(app.data)) {
        return reject(socket, 404, 'APP_NOT_FOUND', `No app ${match?.[1] ?? ''}; see \`hangar apps\`.`);
      }
      const query = parseLogQuery(app.data, Object.fromEntries(url.searchParams), this.#o.clock.now(), { live: true });
      this.#wss.handleUpgrade(request, socket, head, (ws) => this.#serve(ws, query));
    } catch (err) {
      if (isHangarError(err)) return reject(socket, httpStatusFor(err.code), err.code, err.message);
      this.#logger.error({ err }, 'log stream upgrade failed');
      reject(socket, 500, 'INTERNAL', 'Internal error in the coordinator; its log has the details.');
    }
  }

  /** Closes every client; idempotent. */
  close(): void {
    for (const ws of this.#wss.clients) ws.terminate();
    this.#wss.close();
  }

  /** Lines of one batch share their read time: their ISO string is made once. */
  #lastTs = -1;
  #lastIso = '';

  #view(l: StoredLogLine): LogLineView {
    if (l.ts !== this.#lastTs) {
      this.#lastTs = l.ts;
      this.#lastIso = new Date(l.ts).toISOString();
    }
    return { ts: this.#lastIso, source: l.source, stream: l.stream, agent: l.agent, line: l.line };
  }

  #liveMessage(lines: StoredLogLine[]): string {
    let text = this.#messages.get(lines);
    if (text === undefined) {
      text = JSON.stringify({ lines: lines.map((l) => this.#view(l)) } satisfies LogStreamMessage);
      this.#messages.set(lines, text);
    }
    return text;
  }

  #serve(ws: WebSocket, query: ReturnType<typeof parseLogQuery>): void {
    const highWater = this.#o.highWaterBytes ?? 4 * 1024 * 1024;
    const cutoffMs = this.#o.slowCutoffMs ?? 30_000;
    const send = (message: LogStreamMessage) => ws.send(JSON.stringify(message));
    let missed = 0;
    let missingSince = 0;
    let drainTimer: NodeJS.Timeout | null = null;
    const checkDrain = () => {
      if (ws.readyState !== WebSocket.OPEN) return;
      if (ws.bufferedAmount <= highWater / 2) {
        send({ missed });
        missed = 0;
        missingSince = 0;
        if (drainTimer) clearInterval(drainTimer);
        drainTimer = null;
      } else if (this.#o.clock.now() - missingSince > cutoffMs) {
        ws.close(4008, 'too slow: lines were skipped for too long');
      }
    };
    // Backfill and subscription in the same tick: no line falls between them or comes twice.
    const backfill = query.n > 0 ? this.#o.logs.query(query) : [];
    const filter = { app: query.app, ...(query.source ? { source: query.source } : {}), ...(query.grep ? { grep: query.grep } : {}) };
    const unsubscribe = this.#o.hub.subscribe({
      filter,
      push: (lines: StoredLogLine[]) => {
        if (ws.readyState !== WebSocket.OPEN) return;
        if (missed > 0 || ws.bufferedAmount > highWater) {
          missed += lines.length;
          if (missingSince === 0) missingSince = this.#o.clock.now();
          drainTimer ??= setInterval(checkDrain, 100);
          return;
        }
        ws.send(this.#liveMessage(lines));
      },
    });
    ws.on('close', () => {
      unsubscribe();
      if (drainTimer) clearInterval(drainTimer);
    });
    ws.on('error', (err) => this.#logger.debug({ err }, 'log stream client error'));
    // Clients only listen; anything they send is ignored.
    ws.on('message', () => undefined);
    for (let i = 0; i < backfill.length; i += 1000) send({ lines: backfill.slice(i, i + 1000).map(logLineView) });
    send({ live: true });
  }
}

function reject(socket: Duplex, status: number, code: string, message: string): void {
  const body = JSON.stringify({ code, message });
  socket.end(
    `HTTP/1.1 ${status} ${status === 401 ? 'Unauthorized' : status === 404 ? 'Not Found' : status === 400 ? 'Bad Request' : 'Error'}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
