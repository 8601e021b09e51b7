import { Client } from 'undici';

/** One failed request of a {@link HttpLoad}. */
export interface LoadFailure {
  method: string;
  path: string;
  /** HTTP status, or null for a connection error. */
  status: number | null;
  detail: string;
  at: number;
}

/** Options of {@link startHttpLoad}. */
export interface HttpLoadOptions {
  /** Router ports; clients are spread over them. */
  ports: number[];
  /** Host header (the app's domain). */
  host: string;
  /** Concurrent keep-alive clients (one connection each). */
  clients: number;
  /** Every Nth request of a client is a POST to `postPath`; 0 = never. */
  postEvery: number;
  postPath: string;
  /** Pause between a client's requests, ms. */
  pauseMs: number;
  /** The load stops by itself after this long even if nobody calls stop(), ms. */
  maxMs: number;
}

/** A steady load in progress: counts of served and failed requests. */
export interface HttpLoad {
  ok: number;
  failures: LoadFailure[];
  /** Stops every client (waits for their last request) and returns the counts. */
  stop(): Promise<{ ok: number; failures: LoadFailure[] }>;
}

/**
 * Steady HTTP load through routers: `clients` loops, each with its own keep-alive connection,
 * GETs `/` (and POSTs now and then), counting 2xx answers and everything else as a failure.
 * Bounded: every loop ends at `maxMs` on its own.
 */
export function startHttpLoad(o: HttpLoadOptions): HttpLoad {
  const deadline = Date.now() + o.maxMs;
  let stopped = false;
  const load: HttpLoad = {
    ok: 0,
    failures: [],
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return { ok: load.ok, failures: load.failures };
    },
  };
  const loop = async (n: number): Promise<void> => {
    const port = o.ports[n % o.ports.length] as number;
    const client = new Client(`http://127.0.0.1:${port}`, { keepAliveTimeout: 30_000, pipelining: 1 });
    try {
      for (let i = 1; !stopped && Date.now() < deadline; i++) {
        const post = o.postEvery > 0 && i % o.postEvery === 0;
        const method = post ? 'POST' : 'GET';
        const path = post ? o.postPath : '/';
        try {
          const res = await client.request({
            method,
            path,
            headers: post ? { host: o.host, 'content-type': 'application/json' } : { host: o.host },
            body: post ? JSON.stringify({ text: `load ${n}.${i}` }) : null,
            headersTimeout: 30_000,
            bodyTimeout: 30_000,
          });
          const body = await res.body.text();
          if (res.statusCode >= 200 && res.statusCode < 300) load.ok++;
          else load.failures.push({ method, path, status: res.statusCode, detail: body.slice(0, 300), at: Date.now() });
        } catch (err) {
          load.failures.push({
            method,
            path,
            status: null,
            detail: err instanceof Error ? `${err.name}: ${err.message}` : String(err),
            at: Date.now(),
          });
        }
        if (o.pauseMs > 0) await new Promise((r) => setTimeout(r, o.pauseMs));
      }
    } finally {
      await client.close().catch(() => undefined);
    }
  };
  const loops = Array.from({ length: o.clients }, (_, n) => loop(n));
  return load;
}
