import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/logger.js';
import { appNameSchema } from '../../common/names.js';
import { authorizeUpgrade, needs, type Authenticator } from './auth.js';
import type { LogHub } from '../logs/log-hub.js';
import { formatLogCursor, MAX_LOG_LINES, parseLogQuery } from '../logs/log-query.js';
import { logLineView, type LogStorage } from '../logs/log-store.js';
import { LogStreamServer } from '../logs/log-stream-server.js';
import type { Store } from '../store/store.js';
import { parseInput } from './validation.js';

/** What the log routes need. */
export interface LogRoutesOptions {
  store: Store;
  logs: LogStorage;
  hub: LogHub;
  /** Checks API tokens (the stream needs a `read` token). */
  auth: Authenticator;
  clock: Clock;
  logger: Logger;
  /** Other websockets served on the same server (their own 'upgrade' listeners take them). */
  otherUpgrades?: readonly { handles(request: IncomingMessage): boolean }[];
}

const appParams = z.object({ app: appNameSchema }).strict();

/**
 * `GET /v1/apps/:app/logs`, `GET /v1/apps/:app/errors` and the websocket
 * `/v1/apps/:app/logs/stream` (on the server's 'upgrade' event; closed with the server).
 */
export function registerLogRoutes(app: FastifyInstance<Server, IncomingMessage, ServerResponse, Logger>, o: LogRoutesOptions): void {
  app.get('/v1/apps/:app/logs', needs('read'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    o.store.requireApp(name);
    const { cursor, ...query } = parseLogQuery(name, request.query, o.clock.now());
    const page = o.logs.page(query, MAX_LOG_LINES, cursor);
    return { lines: page.lines.map(logLineView), next: page.next && formatLogCursor(page.next) };
  });

  app.get('/v1/apps/:app/errors', needs('read'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    o.store.requireApp(name);
    return { errors: o.logs.errors(name) };
  });

  const streams = new LogStreamServer({
    logs: o.logs,
    hub: o.hub,
    appExists: (name) => o.store.getApp(name) !== null,
    authorize: (request, socket) => authorizeUpgrade(o.auth, request, socket, 'read') !== null,
    clock: o.clock,
    logger: o.logger,
  });
  app.server.on('upgrade', (request, socket, head: Buffer) => {
    if (streams.handles(request)) streams.handleUpgrade(request, socket, head);
    else if (!o.otherUpgrades?.some((u) => u.handles(request))) socket.destroy();
  });
  app.addHook('preClose', async () => streams.close());
}
