/**
 * An {@link Authenticator} that also accepts dashboard session tokens, so every route, the log
 * websocket included, takes them with the same scope checks as API tokens.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { Authenticator, presentedToken, type AuthenticatorOptions, type Caller } from '../api/auth.js';
import { SESSION_TOKEN_PREFIX, type DashboardSessions } from './dashboard-sessions.js';

/** Options of {@link SessionAuthenticator}. */
export interface SessionAuthenticatorOptions extends AuthenticatorOptions {
  sessions: DashboardSessions;
}

/** API tokens from the store, plus live dashboard sessions. */
export class SessionAuthenticator extends Authenticator {
  readonly #sessions: DashboardSessions;

  constructor(options: SessionAuthenticatorOptions) {
    super(options);
    this.#sessions = options.sessions;
  }

  override authenticate(headers: IncomingHttpHeaders): Caller {
    const token = presentedToken(headers);
    if (token?.startsWith(SESSION_TOKEN_PREFIX)) {
      const caller = this.#sessions.lookup(token);
      if (caller) return caller;
    }
    return super.authenticate(headers);
  }
}
