/**
 * One-off runs: `POST /v1/apps/:app/runs`, `GET /v1/apps/:app/runs[/:name]`,
 * `POST /v1/apps/:app/runs/:name/stop`, and the websocket `/v1/apps/:app/runs/:name/attach` that
 * bridges an attached run's terminal or pipes to the CLI (binary frames: output with a leading
 * stream byte, input as is; text frames: {@link RunStreamMessage} / {@link RunStreamControl}).
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { z } from 'zod';
import type { RunStreamControl, RunStreamMessage } from '../../common/api-types.js';
import { HangarError, httpStatusFor, isHangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { appNameSchema } from '../../common/names.js';
import { runView, type Runs } from '../runs/runs.js';
import type { Store } from '../store/store.js';
import { authorizeUpgrade, needs, selectWebsocketProtocol, type Authenticator } from './auth.js';
import type { ApiServer } from './server.js';
import { parseInput } from './validation.js';

/** What the run routes need. */
export interface RunRoutesOptions {
  store: Store;
  runs: Runs;
  auth: Authenticator;
  logger: Logger;
}

/** Takes an HTTP upgrade when it is for this route group. */
export interface UpgradeHandler {
  handles(request: IncomingMessage): boolean;
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void;
  close(): void;
}

const runName = z.string().regex(/^run\.[1-9]\d{0,9}$/, 'must be run.N, e.g. run.3 (`hangar runs` lists them)');
const appParams = z.object({ app: appNameSchema }).strict();
const runParams = z.object({ app: appNameSchema, name: runName }).strict();

/** Body of `POST /v1/apps/:app/runs`; defaults live here. */
export const runRequestSchema = z
  .object({
    command: z
      .string()
      .min(1, 'give a command, e.g. python manage.py migrate')
      .max(64 * 1024)
      .refine((c) => c.trim().length > 0, 'give a command, e.g. python manage.py migrate')
      .refine((c) => !c.includes('\0'), 'must not contain NUL')
      .optional(),
    console: z.boolean().default(false),
    detached: z.boolean().default(false),
    tty: z.boolean().default(false),
    cols: z.number().int().min(1).max(1000).default(80),
    rows: z.number().int().min(1).max(1000).default(24),
    term: z
      .string()
      .regex(/^[A-Za-z0-9._+-]{1,64}$/)
      .default('xterm-256color'),
    release: z.number().int().positive().optional(),
    agent: z
      .string()
      .regex(/^[a-z0-9][a-z0-9.-]{0,62}$/i, 'must be an agent name (`hangar agents` lists them)')
      .optional(),
    timeoutSeconds: z
      .number()
      .int()
      .positive()
      .max(30 * 86_400)
      .optional(),
  })
  .strict()
  .refine((r) => (r.command === undefined) === r.console, {
    message: 'give a command (e.g. python manage.py migrate), or console: true without one',
    path: ['command'],
  });

const controlSchema = z.union([
  z.object({ resize: z.object({ cols: z.number().int().min(1).max(1000), rows: z.number().int().min(1).max(1000) }).strict() }).strict(),
  z.object({ eof: z.literal(true) }).strict(),
  z.object({ signal: z.enum(['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT']) }).strict(),
]);

const ATTACH_PATH = /^\/v1\/apps\/([^/]+)\/runs\/([^/]+)\/attach$/;
/** Output waiting to go out to a client above this, bytes: the client is too slow and is cut off. */
const MAX_BUFFERED = 16 * 1024 * 1024;

/** Registers the routes; returns the websocket's upgrade handler (the server dispatches upgrades). */
export function registerRunRoutes(app: ApiServer, o: RunRoutesOptions): UpgradeHandler {
  const numberOf = (name: string) => Number(name.slice('run.'.length));

  app.post('/v1/apps/:app/runs', needs('deploy'), async (request, reply) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    const body = parseInput(runRequestSchema, request.body ?? {}, 'run');
    const run = o.runs.create(name, body, request.caller?.name ?? 'admin');
    return reply.status(201).send({ run: runView(run) });
  });

  app.get('/v1/apps/:app/runs', needs('read'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    o.store.requireApp(name);
    return { runs: o.runs.store.list(name).map(runView) };
  });

  app.get('/v1/apps/:app/runs/:name', needs('read'), async (request) => {
    const { app: name, name: run } = parseInput(runParams, request.params, 'run');
    o.store.requireApp(name);
    return { run: runView(o.runs.require(name, numberOf(run))) };
  });

  app.post('/v1/apps/:app/runs/:name/stop', needs('deploy'), async (request) => {
    const { app: name, name: run } = parseInput(runParams, request.params, 'run');
    o.store.requireApp(name);
    return { run: runView(o.runs.stop(name, numberOf(run))) };
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: 128 * 1024, handleProtocols: selectWebsocketProtocol });
  const logger = o.logger.child({ component: 'run-stream' });
  return {
    handles: (request) => ATTACH_PATH.test((request.url ?? '').split('?')[0] ?? ''),
    handleUpgrade(request, socket, head) {
      try {
        if (authorizeUpgrade(o.auth, request, socket, 'deploy') === null) return;
        const match = ATTACH_PATH.exec((request.url ?? '').split('?')[0] ?? '');
        const params = parseInput(
          runParams,
          { app: decodeURIComponent(match?.[1] ?? ''), name: decodeURIComponent(match?.[2] ?? '') },
          'run',
        );
        o.store.requireApp(params.app);
        const run = o.runs.require(params.app, numberOf(params.name));
        if (run.status !== 'pending')
          throw new HangarError('CONFLICT', `${params.name} is ${run.status}: only a run that waits for its terminal can be attached.`);
        wss.handleUpgrade(request, socket, head, (ws) => serve(ws, run.id));
      } catch (err) {
        if (isHangarError(err)) return reject(socket, httpStatusFor(err.code), err.code, err.message);
        logger.error({ err }, 'run stream upgrade failed');
        reject(socket, 500, 'INTERNAL', 'Internal error in the coordinator; its log has the details.');
      }
    },
    close() {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
    },
  };

  function serve(ws: WebSocket, id: string): void {
    const run = o.runs.store.get(id);
    if (!run) return ws.close(1011, 'the run is gone');
    const text = (m: RunStreamMessage) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(m));
    };
    let attachment: ReturnType<Runs['attach']>;
    try {
      attachment = o.runs.attach(run, {
        output(stream, data) {
          if (ws.readyState !== WebSocket.OPEN) return;
          if (ws.bufferedAmount > MAX_BUFFERED) {
            ws.close(4008, 'too slow: the output could not be sent fast enough');
            return;
          }
          ws.send(Buffer.concat([Buffer.from([stream === 'stderr' ? 2 : 1]), data]), { binary: true });
        },
        message: text,
        end: () => ws.close(1000),
      });
    } catch (err) {
      text({ error: { code: isHangarError(err) ? err.code : 'INTERNAL', message: err instanceof Error ? err.message : String(err) } });
      ws.close(1000);
      return;
    }
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) return attachment.input(data);
      let control: RunStreamControl;
      try {
        control = controlSchema.parse(JSON.parse(data.toString('utf8')));
      } catch {
        return text({
          error: { code: 'BAD_INPUT', message: 'Unknown control message: send {resize: {cols, rows}}, {eof: true} or {signal}.' },
        });
      }
      attachment.control(control);
    });
    ws.on('close', () => attachment.detach());
    ws.on('error', (err) => logger.debug({ err }, 'run stream client error'));
  }
}

function reject(socket: Duplex, status: number, code: string, message: string): void {
  const body = JSON.stringify({ code, message });
  socket.end(
    `HTTP/1.1 ${status} ${status === 404 ? 'Not Found' : status === 400 ? 'Bad Request' : status === 409 ? 'Conflict' : 'Error'}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
