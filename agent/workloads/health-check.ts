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

/** What one health check saw: `ok`, or why not (status and first lines of the body, or the connection error). */
export interface HealthProbe {
  ok: boolean;
  /** E.g. `HTTP 400 from GET / (Host shop.localhost): DisallowedHost at / …`; empty when ok. */
  reason: string;
}

/** Characters of a failing answer's body kept in {@link HealthProbe.reason}. */
const BODY_CHARS = 240;

/**
 * GETs `http://ADDRESS:PORT/PATH` with the given Host header and resolves true when it answers
 * 2xx or 3xx within the timeout. Redirects are not followed (a 3xx means the app is serving).
 * Never throws: a refused connection, a timeout or a 4xx/5xx all resolve false.
 */
export async function httpHealthCheck(options: HttpHealthCheckOptions): Promise<boolean> {
  return (await httpHealthProbe(options)).ok;
}

/** Like {@link httpHealthCheck}, saying why a check failed. Never throws. */
export async function httpHealthProbe(options: HttpHealthCheckOptions): Promise<HealthProbe> {
  const timeoutMs = options.timeoutMs ?? 2000;
  const path = options.path ?? '/';
  const host = options.host ?? 'localhost';
  const url = `http://${options.address ?? '127.0.0.1'}:${options.port}${path.startsWith('/') ? path : `/${path}`}`;
  const what = `GET ${path} (Host ${host})`;
  try {
    const response = await request(url, {
      method: 'GET',
      headers: { host, 'user-agent': 'hangar-health-check' },
      signal: AbortSignal.timeout(timeoutMs),
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      // A fresh connection per check: a pooled socket to a dead instance would only add noise.
      reset: true,
    });
    if (response.statusCode >= 200 && response.statusCode < 400) {
      // Drain so the socket is released; the body's content does not matter.
      await response.body.dump();
      return { ok: true, reason: '' };
    }
    const body = await response.body.text().catch(() => '');
    const summary = summariseBody(body);
    return { ok: false, reason: `HTTP ${response.statusCode} from ${what}${summary ? `: ${summary}` : ''}` };
  } catch (err) {
    const e = err as { code?: string; name?: string; message?: string };
    const why =
      e.name === 'TimeoutError' || e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT'
        ? `no answer within ${timeoutMs} ms`
        : e.code === 'ECONNREFUSED'
          ? `connection refused on port ${options.port} (is the app listening on $PORT?)`
          : `${e.code ?? e.name ?? 'error'}: ${e.message ?? String(err)}`;
    return { ok: false, reason: `${what}: ${why}` };
  }
}

/**
 * The first lines of an answer, readable: an HTML page's `<title>` and first text (Django's
 * DisallowedHost or error page), whitespace folded, at most {@link BODY_CHARS} characters.
 */
export function summariseBody(body: string): string {
  const title = /<title[^>]*>([\s\S]*?)<\/title>/i.exec(body)?.[1];
  const text = body
    .replace(/<(script|style|head)[\s\S]*?<\/\1>/gi, ' ')
    .replace(/<[^>]+>/g, ' ')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#x27;|&#39;/g, "'")
    .replace(/&amp;/g, '&');
  const fold = (t: string): string => t.replace(/\s+/g, ' ').trim();
  const first = fold(title ?? '');
  const rest = fold(text);
  const joined = first && !rest.startsWith(first) ? `${first} — ${rest}` : rest || first;
  return joined.length > BODY_CHARS ? `${joined.slice(0, BODY_CHARS - 1)}…` : joined;
}
