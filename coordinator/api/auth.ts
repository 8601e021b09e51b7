/**
 * Who may call the HTTP API (and its websockets): API tokens with a scope. Tokens are random
 * (`hgr_tok_...`, 32 bytes), shown once at creation and stored as their SHA-256 only; a presented
 * token is hashed, looked up, and compared in constant time. A token travels in the
 * `Authorization: Bearer` header or, for browsers' websockets, as a `hangar.token.<TOKEN>`
 * subprotocol in `Sec-WebSocket-Protocol` — never in a URL, which lands in logs.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyBaseLogger, FastifyInstance, RawServerDefault } from 'fastify';
import type { Clock } from '../../common/clock.js';
import { HangarError, httpStatusFor, isHangarError } from '../../common/errors.js';
import type { ApiTokenRow, Store, TokenScope } from '../store/store.js';

export type { TokenScope } from '../store/store.js';

/** Every scope, weakest first: each includes the ones before it. */
export const TOKEN_SCOPES = ['read', 'deploy', 'admin'] as const satisfies readonly TokenScope[];

/** Prefix of a websocket subprotocol carrying a token. */
export const TOKEN_SUBPROTOCOL_PREFIX = 'hangar.token.';

/** The subprotocol a websocket server answers with when a browser offered a token in one. */
export const WEBSOCKET_SUBPROTOCOL = 'hangar.v1';

/** Who called: the token's id, name and scope. */
export interface Caller {
  tokenId: string;
  name: string;
  scope: TokenScope;
}

/** Lowercase hex SHA-256 of a token: what the store keeps. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** True when `scope` is at least `needed`. */
export function scopeAllows(scope: TokenScope, needed: TokenScope): boolean {
  return TOKEN_SCOPES.indexOf(scope) >= TOKEN_SCOPES.indexOf(needed);
}

/** The token a request carries: `Authorization: Bearer`, else a `hangar.token.` subprotocol. */
export function presentedToken(headers: IncomingHttpHeaders): string | null {
  const auth = headers.authorization;
  if (typeof auth === 'string' && auth.startsWith('Bearer ')) return auth.slice('Bearer '.length).trim() || null;
  const protocols = headers['sec-websocket-protocol'];
  if (typeof protocols === 'string') {
    for (const p of protocols.split(',')) {
      const value = p.trim();
      if (value.startsWith(TOKEN_SUBPROTOCOL_PREFIX)) return value.slice(TOKEN_SUBPROTOCOL_PREFIX.length) || null;
    }
  }
  return null;
}

/**
 * Picks the subprotocol a websocket server answers with (pass it as `handleProtocols` of a `ws`
 * server): `hangar.v1` when offered, never the token one (that would echo the token).
 */
export function selectWebsocketProtocol(protocols: Set<string>): string | false {
  return protocols.has(WEBSOCKET_SUBPROTOCOL) ? WEBSOCKET_SUBPROTOCOL : false;
}

/** Options of {@link Authenticator}. */
export interface AuthenticatorOptions {
  store: Store;
  clock: Clock;
}

/** Checks tokens against the store and makes new ones. */
export class Authenticator {
  readonly #store: Store;
  readonly #clock: Clock;

  constructor(options: AuthenticatorOptions) {
    this.#store = options.store;
    this.#clock = options.clock;
  }

  /**
   * The caller a request's headers identify.
   *
   * @throws HangarError `UNAUTHORIZED` when no token is presented or it is not a live token.
   */
  authenticate(headers: IncomingHttpHeaders): Caller {
    const token = presentedToken(headers);
    const row = token ? this.#lookup(token) : null;
    if (!row) {
      throw new HangarError('UNAUTHORIZED', 'Missing or wrong API token: set HANGAR_TOKEN or run `hangar login --url URL --token TOKEN`.');
    }
    return { tokenId: row.id, name: row.name, scope: row.scope };
  }

  /**
   * Like {@link authenticate}, then checks the scope.
   *
   * @throws HangarError `UNAUTHORIZED`, or `FORBIDDEN` when the token's scope is too weak.
   */
  authorize(headers: IncomingHttpHeaders, needed: TokenScope): Caller {
    const caller = this.authenticate(headers);
    if (!scopeAllows(caller.scope, needed)) {
      throw new HangarError(
        'FORBIDDEN',
        `This token has scope ${caller.scope}; this needs ${needed}. Ask an admin for a token with \`hangar tokens:create --scope ${needed}\`.`,
      );
    }
    return caller;
  }

  /** Makes a token; returns it (the only time it is seen) and its stored row. */
  create(scope: TokenScope, name: string): { token: string; row: ApiTokenRow } {
    const token = `hgr_tok_${randomBytes(32).toString('base64url')}`;
    const row: ApiTokenRow = {
      id: `tok_${randomBytes(6).toString('hex')}`,
      name,
      scope,
      hash: hashToken(token),
      createdAt: this.#clock.now(),
      lastUsedAt: null,
    };
    this.#store.insertToken(row);
    return { token, row };
  }

  /**
   * Registers an existing token (the admin token of the data dir) once: when the store has
   * recorded `seedKey`, nothing happens, so a revoked seed stays revoked.
   */
  seed(token: string, scope: TokenScope, name: string, seedKey: string): void {
    this.#store.transaction(() => {
      if (this.#store.getMeta(seedKey) !== null) return;
      if (!this.#store.findTokenByHash(hashToken(token))) {
        this.#store.insertToken({ id: `tok_${name}`, name, scope, hash: hashToken(token), createdAt: this.#clock.now(), lastUsedAt: null });
      }
      this.#store.setMeta(seedKey, '1');
    });
  }

  #lookup(token: string): ApiTokenRow | null {
    if (token.length > 512) return null;
    const hash = hashToken(token);
    const row = this.#store.findTokenByHash(hash);
    if (!row || !timingSafeEqual(Buffer.from(row.hash, 'hex'), Buffer.from(hash, 'hex'))) return null;
    return row;
  }
}

/**
 * Checks a websocket upgrade request: returns the caller, or answers the raw socket with 401/403
 * and `{code, message}` and returns null. Use it in a server's `upgrade` handler before
 * `handleUpgrade`.
 */
export function authorizeUpgrade(auth: Authenticator, request: IncomingMessage, socket: Duplex, needed: TokenScope): Caller | null {
  try {
    return auth.authorize(request.headers, needed);
  } catch (err) {
    const code = isHangarError(err) ? err.code : 'UNAUTHORIZED';
    const status = httpStatusFor(code);
    const body = JSON.stringify({ code, message: err instanceof Error ? err.message : 'Unauthorized.' });
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
    return null;
  }
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * Least token scope the route needs; `none` makes it public. Default: `admin` (deny by
     * default: a route that forgets to declare its scope is open to admins only).
     */
    scope?: TokenScope | 'none';
  }
  interface FastifyRequest {
    /** Who called (set by the auth hook; null on routes that need no token). */
    caller: Caller | null;
  }
}

/** One route of the API and the scope it needs, as the router registered it. */
export interface RouteScope {
  method: string;
  /** The route's pattern, e.g. `/v1/apps/:app/config`. */
  url: string;
  scope: TokenScope | 'none';
}

/** Scope a request that matched no route needs before it learns so (a 404). */
const UNMATCHED_SCOPE: TokenScope = 'read';

/**
 * Adds the auth hook to every route: 401 without a live token, 403 when its scope is below the
 * route's `config.scope`. The decision reads the route Fastify matched (its options and config),
 * never the raw URL, so no spelling of a path (percent-encoded, absolute-form, `//`, `..`, case)
 * can reach a route without its check. Call it before any route is registered; returns the table
 * of every route and its scope, filled as routes are added.
 */
export function registerAuth<L extends FastifyBaseLogger>(
  app: FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, L>,
  auth: Authenticator,
): readonly RouteScope[] {
  const table: RouteScope[] = [];
  app.decorateRequest('caller', null);
  app.addHook('onRoute', (route) => {
    const scope = route.config?.scope ?? 'admin';
    route.config = { ...route.config, scope };
    for (const method of [route.method].flat()) table.push({ method, url: route.url, scope });
  });
  app.addHook('onRequest', async (request) => {
    const matched = request.routeOptions.url !== undefined;
    const needed = matched ? (request.routeOptions.config.scope ?? 'admin') : UNMATCHED_SCOPE;
    if (needed === 'none') return;
    request.caller = auth.authorize(request.headers, needed);
  });
  return table;
}

/** Route options that declare the least scope a route needs: `app.get(url, needs('read'), handler)`. */
export function needs(scope: TokenScope | 'none'): { config: { scope: TokenScope | 'none' } } {
  return { config: { scope } };
}
