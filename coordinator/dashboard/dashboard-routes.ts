/**
 * The web dashboard's routes: its page and assets (public: they hold no data), its logins, and
 * `whoami`. Everything the page shows or does goes through the same API routes and scopes as the
 * CLI; these only bring a browser a short-lived session token.
 *
 *   GET    /                               the page                        (no token)
 *   GET    /assets/:file                   its scripts and styles          (no token)
 *   POST   /v1/dashboard/login-links       -> 201 { code, path, expiresAt } (read; an API token, not a session)
 *   POST   /v1/dashboard/login { code }    -> 201 { session }              (no token: the one-time code is the credential)
 *   POST   /v1/dashboard/sessions          -> 201 { session }              (read; trades a pasted API token for a session)
 *   DELETE /v1/dashboard/session           -> { ok: true }                 (read; ends the presented session)
 *   GET    /v1/whoami                      -> { whoami: { name, scope, session } }   (read)
 */
import type { FastifyReply } from 'fastify';
import { z } from 'zod';
import type { DashboardLoginLinkView, DashboardSessionView, WhoamiView } from '../../common/dashboard-types.js';
import { HangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { ApiServer } from '../api/server.js';
import { needs, presentedToken } from '../api/auth.js';
import { parseInput } from '../api/validation.js';
import { loadDashboardAssets, type DashboardAsset } from './dashboard-assets.js';
import { SESSION_TOKEN_PREFIX, type DashboardSessions, type OpenedSession } from './dashboard-sessions.js';

/** Routes that take no input still refuse a body that means something else. */
const noBody = z.object({}).strict();

/** Options of {@link registerDashboardRoutes}. */
export interface DashboardRoutesOptions {
  sessions: DashboardSessions;
  logger: Logger;
  /** The built files; default: read from `dist/dashboard/`. */
  assets?: Map<string, DashboardAsset>;
}

/**
 * The page's policy: its own scripts, styles and API only; nothing inline, nothing from
 * elsewhere, no framing.
 */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** The policy of every other answer (JSON): nothing may run or load from it. */
const API_CSP = "default-src 'none'; frame-ancestors 'none'";

const loginBody = z.object({ code: z.string().min(1).max(512) }).strict();
const assetParams = z.object({ file: z.string().regex(/^[A-Za-z0-9._-]{1,128}$/, 'must be an asset name') }).strict();

function sessionView(s: OpenedSession): DashboardSessionView {
  return { token: s.token, scope: s.scope, expiresAt: new Date(s.expiresAt).toISOString(), idleSeconds: Math.round(s.idleMs / 1000) };
}

/** Registers the dashboard's routes and its security headers on every answer. */
export function registerDashboardRoutes(app: ApiServer, o: DashboardRoutesOptions): void {
  const logger = o.logger.child({ component: 'dashboard' });
  const assets = o.assets ?? loadDashboardAssets();
  if (!assets.has('index.html')) logger.warn('the dashboard was not built (dist/dashboard/ is missing); `npm run build` builds it');

  app.addHook('onSend', async (_request, reply, payload) => {
    if (!reply.hasHeader('content-security-policy')) void reply.header('content-security-policy', API_CSP);
    void reply.header('x-content-type-options', 'nosniff');
    void reply.header('referrer-policy', 'no-referrer');
    return payload;
  });

  const send = (name: string, ifNoneMatch: string | undefined, reply: FastifyReply) => {
    const asset = assets.get(name);
    if (!asset) {
      throw name === 'index.html'
        ? new HangarError('NOT_FOUND', 'The dashboard was not built; run `npm run build` on the coordinator and restart it.')
        : new HangarError('NOT_FOUND', `No dashboard file ${name}; reload the page.`);
    }
    // Hashed asset names never change content; the page itself is checked on every load.
    void reply
      .header('content-security-policy', DASHBOARD_CSP)
      .header('x-frame-options', 'DENY')
      .header('cache-control', name === 'index.html' ? 'no-cache' : 'public, max-age=31536000, immutable')
      .header('etag', asset.etag)
      .type(asset.contentType);
    if (ifNoneMatch === asset.etag) return reply.status(304).send();
    return reply.send(asset.body);
  };

  app.get('/', needs('none'), async (request, reply) => send('index.html', request.headers['if-none-match'], reply));

  app.get('/assets/:file', needs('none'), async (request, reply) => {
    const { file } = parseInput(assetParams, request.params, 'asset');
    if (file === 'index.html') throw new HangarError('NOT_FOUND', 'No dashboard file index.html here; open / instead.');
    return send(file, request.headers['if-none-match'], reply);
  });

  app.post('/v1/dashboard/login-links', needs('read'), async (request, reply) => {
    parseInput(noBody, request.body ?? {}, 'login link');
    const token = presentedToken(request.headers);
    if (!token || token.startsWith(SESSION_TOKEN_PREFIX)) {
      throw new HangarError('FORBIDDEN', 'A dashboard session cannot make login links; run `hangar dashboard` with an API token.');
    }
    const { code, expiresAt } = o.sessions.createLoginCode(token);
    logger.info({ tokenId: request.caller?.tokenId }, 'dashboard login link made');
    const view: DashboardLoginLinkView = { code, path: `/#login=${code}`, expiresAt: new Date(expiresAt).toISOString() };
    return reply.status(201).send({ link: view });
  });

  app.post('/v1/dashboard/login', needs('none'), async (request, reply) => {
    const { code } = parseInput(loginBody, request.body ?? {}, 'login');
    const session = o.sessions.redeem(code);
    logger.info({ scope: session.scope }, 'dashboard session opened with a login link');
    return reply.status(201).send({ session: sessionView(session) });
  });

  app.post('/v1/dashboard/sessions', needs('read'), async (request, reply) => {
    parseInput(noBody, request.body ?? {}, 'session');
    const session = o.sessions.openForToken(presentedToken(request.headers) ?? '');
    logger.info({ tokenId: request.caller?.tokenId, scope: session.scope }, 'dashboard session opened with a token');
    return reply.status(201).send({ session: sessionView(session) });
  });

  app.delete('/v1/dashboard/session', needs('read'), async (request) => {
    const token = presentedToken(request.headers) ?? '';
    if (!token.startsWith(SESSION_TOKEN_PREFIX)) throw new HangarError('BAD_INPUT', 'This is not a dashboard session; nothing to end.');
    o.sessions.end(token);
    return { ok: true };
  });

  app.get('/v1/whoami', needs('read'), async (request) => {
    const caller = request.caller;
    if (!caller) throw new HangarError('UNAUTHORIZED', 'Missing API token.');
    const token = presentedToken(request.headers) ?? '';
    const view: WhoamiView = { name: caller.name, scope: caller.scope, session: token.startsWith(SESSION_TOKEN_PREFIX) };
    return { whoami: view };
  });
}
