/**
 * HTTP health checks of web instances, as used by the supervisor and the rollout gate. On
 * node:http rather than undici: the agent loads no HTTP client library for these few requests.
 */
import http from 'node:http';

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
/** Bytes of a body read at most: of a passing answer it only ends the exchange; of a failing one it is summarised. */
const BODY_READ_BYTES = 64 * 1024;

/**
 * GETs `http://ADDRESS:PORT/PATH` with the given Host header and resolves true when it answers
 * 2xx or 3xx within the timeout. Redirects are not followed (a 3xx means the app is serving).
 * Never throws: a refused connection, a timeout or a 4xx/5xx all resolve false.
 */
export async function httpHealthCheck(options: HttpHealthCheckOptions): Promise<boolean> {
  return (await httpHealthProbe(options)).ok;
}

/** Like {@link httpHealthCheck}, saying why a check failed. Never throws. */
export function httpHealthProbe(options: HttpHealthCheckOptions): Promise<HealthProbe> {
  const timeoutMs = options.timeoutMs ?? 2000;
  const path = options.path ?? '/';
  const host = options.host ?? 'localhost';
  const what = `GET ${path} (Host ${host})`;
  return new Promise<HealthProbe>((resolve) => {
    let settled = false;
    // Every way out goes here once: the timer cleared and the socket destroyed (never pooled, never
    // left half-read), so no check holds a connection of the instance (a gunicorn sync worker) open.
    const finish = (probe: HealthProbe): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(probe);
    };
    const req = http.request({
      host: options.address ?? '127.0.0.1',
      port: options.port,
      path: path.startsWith('/') ? path : `/${path}`,
      method: 'GET',
      headers: { host, 'user-agent': 'hangar-health-check' },
      // A fresh connection per check, closed after it (`Connection: close`): a pooled socket to a
      // dead instance would only add noise.
      agent: false,
    });
    // One bound for the whole exchange: connect, headers and body.
    const timer = setTimeout(() => finish({ ok: false, reason: `${what}: no answer within ${timeoutMs} ms` }), timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'ECONNREFUSED'
          ? `connection refused on port ${options.port} (is the app listening on $PORT?)`
          : `${err.code ?? err.name}: ${err.message}`;
      finish({ ok: false, reason: `${what}: ${why}` });
    });
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      const ok = status >= 200 && status < 400;
      const chunks: Buffer[] = [];
      let bytes = 0;
      const done = (): void => {
        if (ok) return finish({ ok: true, reason: '' });
        const summary = summariseBody(Buffer.concat(chunks).toString('utf8'));
        finish({ ok: false, reason: `HTTP ${status} from ${what}${summary ? `: ${summary}` : ''}` });
      };
      res.on('data', (chunk: Buffer) => {
        if (!ok) chunks.push(chunk);
        bytes += chunk.length;
        // Enough read: the answer is known; the socket is closed rather than read to its end.
        if (bytes >= BODY_READ_BYTES) done();
      });
      res.on('end', done);
      // The connection closed before the body ended: the status is what counts.
      res.on('aborted', done);
      res.on('error', done);
    });
    req.end();
  });
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
