/**
 * The page's client of the coordinator's HTTP API: the same routes and scopes as the CLI, with the
 * dashboard session token as the bearer token. A 401 ends the session (the page shows the login).
 */
import type { ErrorBody } from '../common/api-types.js';
import { clearSession, currentSession } from './session.js';

/** A non-2xx answer: the server's `{code, message}`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

type Method = 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';

/** Options of {@link api}. */
export interface CallOptions {
  json?: unknown;
  body?: Blob;
  contentType?: string;
  /** A token to use instead of the session's (logging in with a pasted token). */
  token?: string;
  signal?: AbortSignal;
}

/** Calls `method path` and returns its JSON body; throws {@link ApiError}. */
export async function api<T>(method: Method, path: string, options: CallOptions = {}): Promise<T> {
  const token = options.token ?? currentSession()?.token;
  const headers: Record<string, string> = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  let body: BodyInit | undefined;
  if (options.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(options.json);
  } else if (options.body) {
    headers['content-type'] = options.contentType ?? 'application/octet-stream';
    body = options.body;
  }
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body, signal: options.signal, credentials: 'omit', cache: 'no-store' });
  } catch (err) {
    if (err instanceof DOMException && err.name === 'AbortError') throw err;
    throw new ApiError(0, 'UNREACHABLE', 'The coordinator cannot be reached; the page retries on its own.');
  }
  const text = await res.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!res.ok) {
    const e = (parsed ?? {}) as Partial<ErrorBody>;
    if (res.status === 401 && options.token === undefined) clearSession('Your session ended; log in again.');
    throw new ApiError(res.status, e.code ?? 'HTTP_ERROR', e.message ?? `The coordinator answered ${res.status}.`);
  }
  return parsed as T;
}

/** `/v1/apps/NAME/...` with the name encoded. */
export function appPath(app: string, ...rest: string[]): string {
  return ['/v1/apps', encodeURIComponent(app), ...rest].join('/');
}
