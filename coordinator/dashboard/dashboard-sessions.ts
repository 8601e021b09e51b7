/**
 * Dashboard logins: one-time login codes and short-lived session tokens, both held in memory only
 * (a coordinator restart logs every browser out, which is the safe direction).
 *
 * A login code is made for an authenticated caller (`hangar dashboard`), is good for one exchange
 * within its lifetime, and travels in a URL fragment, which browsers never send to a server. A
 * session token has the scope of the API token it came from and dies with it: every lookup
 * re-reads that token, so revoking it (or lowering nothing: scopes never change) ends its sessions.
 * Only hashes are kept, as for API tokens.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../../common/clock.js';
import { HangarError } from '../../common/errors.js';
import { hashToken, type Caller } from '../api/auth.js';
import type { ApiTokenRow } from '../store/store.js';

/** Prefix of a one-time login code. */
export const LOGIN_CODE_PREFIX = 'hgr_login_';

/** Prefix of a dashboard session token. */
export const SESSION_TOKEN_PREFIX = 'hgr_sess_';

/** Options of {@link DashboardSessions}. */
export interface DashboardSessionsOptions {
  /** Looks up the API token a code or session was made from (by its SHA-256). */
  findToken(hash: string): ApiTokenRow | null;
  clock: Clock;
  /** How long a login code can be exchanged, ms. Default 60 s. */
  loginCodeTtlMs?: number;
  /** A session unused this long ends, ms. Default 1 h. */
  sessionIdleMs?: number;
  /** A session ends this long after it began, however used, ms. Default 12 h. */
  sessionMaxMs?: number;
  /** Most sessions and codes held at once; the oldest go first. Default 10 000. */
  maxEntries?: number;
}

/** A session just opened: the only time its token is seen. */
export interface OpenedSession {
  token: string;
  scope: Caller['scope'];
  /** Unix ms when it ends at the latest. */
  expiresAt: number;
  /** It ends after this long without a request, ms. */
  idleMs: number;
}

interface Pending {
  /** Hash of the API token it was made from. */
  parentHash: string;
  expiresAt: number;
}

interface Session {
  parentHash: string;
  lastUsedAt: number;
  expiresAt: number;
}

/** One-time login codes and session tokens of the dashboard. */
export class DashboardSessions {
  readonly #o: DashboardSessionsOptions;
  readonly #codeTtlMs: number;
  readonly #idleMs: number;
  readonly #maxMs: number;
  readonly #maxEntries: number;
  /** By the code's hash. */
  readonly #codes = new Map<string, Pending>();
  /** By the session token's hash. */
  readonly #sessions = new Map<string, Session>();

  constructor(options: DashboardSessionsOptions) {
    this.#o = options;
    this.#codeTtlMs = options.loginCodeTtlMs ?? 60_000;
    this.#idleMs = options.sessionIdleMs ?? 3_600_000;
    this.#maxMs = options.sessionMaxMs ?? 12 * 3_600_000;
    this.#maxEntries = options.maxEntries ?? 10_000;
  }

  /** Makes a login code for the API token `parentToken` (the raw token the caller presented). */
  createLoginCode(parentToken: string): { code: string; expiresAt: number } {
    this.#sweep();
    const code = `${LOGIN_CODE_PREFIX}${randomBytes(32).toString('base64url')}`;
    const expiresAt = this.#o.clock.now() + this.#codeTtlMs;
    this.#codes.set(hashToken(code), { parentHash: hashToken(parentToken), expiresAt });
    trim(this.#codes, this.#maxEntries);
    return { code, expiresAt };
  }

  /**
   * Exchanges a login code for a session; the code is spent either way.
   *
   * @throws HangarError `UNAUTHORIZED` when the code is unknown, spent, expired, or its token was revoked.
   */
  redeem(code: string): OpenedSession {
    const hash = hashToken(code);
    const pending = code.startsWith(LOGIN_CODE_PREFIX) ? this.#codes.get(hash) : undefined;
    this.#codes.delete(hash);
    if (!pending || pending.expiresAt <= this.#o.clock.now()) {
      throw new HangarError(
        'UNAUTHORIZED',
        'This login link was used already or has expired (links work once, for a minute); run `hangar dashboard` for a new one.',
      );
    }
    return this.#open(pending.parentHash);
  }

  /**
   * Opens a session for an API token the browser was given by hand (pasted), so the page keeps
   * only a short-lived token. A session token cannot open another session.
   *
   * @throws HangarError `FORBIDDEN` for a session token, `UNAUTHORIZED` for an unknown token.
   */
  openForToken(parentToken: string): OpenedSession {
    if (parentToken.startsWith(SESSION_TOKEN_PREFIX)) {
      throw new HangarError('FORBIDDEN', 'A dashboard session cannot open another session or make login links; use an API token.');
    }
    return this.#open(hashToken(parentToken));
  }

  /** The caller a session token identifies (and marks it used), or null when it is not a live session. */
  lookup(token: string): Caller | null {
    if (!token.startsWith(SESSION_TOKEN_PREFIX) || token.length > 512) return null;
    const hash = hashToken(token);
    const session = this.#sessions.get(hash);
    if (!session) return null;
    const now = this.#o.clock.now();
    const parent = this.#o.findToken(session.parentHash);
    if (session.expiresAt <= now || session.lastUsedAt + this.#idleMs <= now || !parent || !sameHash(parent.hash, session.parentHash)) {
      this.#sessions.delete(hash);
      return null;
    }
    session.lastUsedAt = now;
    return { tokenId: parent.id, name: parent.name, scope: parent.scope };
  }

  /** Ends a session; false when it was not live. */
  end(token: string): boolean {
    return this.#sessions.delete(hashToken(token));
  }

  /** How many codes and sessions are held (for tests and benchmarks). */
  get size(): { codes: number; sessions: number } {
    return { codes: this.#codes.size, sessions: this.#sessions.size };
  }

  #open(parentHash: string): OpenedSession {
    const parent = this.#o.findToken(parentHash);
    if (!parent) {
      throw new HangarError('UNAUTHORIZED', 'The API token behind this login was revoked; ask an admin for a new one.');
    }
    this.#sweep();
    const now = this.#o.clock.now();
    const token = `${SESSION_TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
    const expiresAt = now + this.#maxMs;
    this.#sessions.set(hashToken(token), { parentHash, lastUsedAt: now, expiresAt });
    trim(this.#sessions, this.#maxEntries);
    return { token, scope: parent.scope, expiresAt, idleMs: this.#idleMs };
  }

  #sweep(): void {
    const now = this.#o.clock.now();
    for (const [hash, code] of this.#codes) if (code.expiresAt <= now) this.#codes.delete(hash);
    for (const [hash, s] of this.#sessions) {
      if (s.expiresAt <= now || s.lastUsedAt + this.#idleMs <= now) this.#sessions.delete(hash);
    }
  }
}

/** Drops the oldest entries (Maps iterate in insertion order) beyond `max`. */
function trim(map: Map<string, unknown>, max: number): void {
  for (const key of map.keys()) {
    if (map.size <= max) return;
    map.delete(key);
  }
}

function sameHash(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a, 'hex'), Buffer.from(b, 'hex'));
}
