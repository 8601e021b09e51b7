/** HTTP health checks of web instances, as used by the supervisor and the rollout gate. */
import { request } from 'undici';

/** Options of {@link httpHealthCheck}. */
export interface HttpHealthCheckOptions {
  /** Port the instance listens on (its `$PORT`). */
  port: number;
  /** Path requested. Default `/`. */
  path?: string;
  /**
   * Host header sent: the app's own domain, so Django's ALLOWED_HOSTS accepts the request.
   * Default `localhost`.
   */
  host?: string;
  /** Address connected to. Default `127.0.0.1`. */
  address?: string;
  /** Time allowed for the whole request, body included, in ms. Default 2000. */
  timeoutMs?: number;
}

/**
 * GETs `http://ADDRESS:PORT/PATH` with the given Host header and resolves true when it answers
 * 2xx or 3xx within the timeout. Redirects are not followed (a 3xx means the app is serving).
 * Never throws: a refused connection, a timeout or a 4xx/5xx all resolve false.
 */
export async function httpHealthCheck(options: HttpHealthCheckOptions): Promise<boolean> {
  const timeoutMs = options.timeoutMs ?? 2000;
  const path = options.path ?? '/';
  const url = `http://${options.address ?? '127.0.0.1'}:${options.port}${path.startsWith('/') ? path : `/${path}`}`;
  try {
    const response = await request(url, {
      method: 'GET',
      headers: { host: options.host ?? 'localhost', 'user-agent': 'hangar-health-check' },
      signal: AbortSignal.timeout(timeoutMs),
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      // A fresh connection per check: a pooled socket to a dead instance would only add noise.
      reset: true,
    });
    // Drain so the socket is released; the body's content does not matter.
    await response.body.dump();
    return response.statusCode >= 200 && response.statusCode < 400;
  } catch {
    return false;
  }
}
