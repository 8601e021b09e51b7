/**
 * Header rules of the agent's HTTP router: which headers are hop-by-hop, how the Host header is
 * matched, and what is added to a request on its way to an instance. Pure functions.
 */
import { STATUS_CODES, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';

/**
 * Headers that describe one connection, not the message (RFC 9110 §7.6.1), and must not be
 * forwarded. `expect` is dropped too: the router's server answers `100 Continue` itself and
 * undici refuses to send it.
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'upgrade',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'expect',
]);

/** Headers the router sets itself on forwarded requests; incoming values are replaced. The
 * maintenance bypass secret is for the router only and never reaches the app. */
const ROUTER_SET = new Set(['x-request-id', 'x-hangar-maintenance-bypass']);

/** What a trusted proxy may say in `X-Forwarded-Proto` and `X-Forwarded-Port`. */
const FORWARDED_PROTO = /^https?$/i;
const FORWARDED_PORT = /^\d{1,5}$/;

/** `Strict-Transport-Security` when an app opts in: one year, as browsers' preload lists ask. */
export const HSTS_VALUE = 'max-age=31536000';

/** A request id we accept from a client: Heroku's rule (20–200 of a safe alphabet), relaxed to 1–200. */
const REQUEST_ID = /^[A-Za-z0-9+/=._:@-]{1,200}$/;

/** True when `name` (any case) is a hop-by-hop header that must not be forwarded. */
export function isHopByHop(name: string): boolean {
  return isHopByHopLower(name.toLowerCase());
}

/** {@link isHopByHop} of a name already lower-cased (the per-request loops lower-case each name once). */
function isHopByHopLower(lower: string): boolean {
  return HOP_BY_HOP.has(lower) || lower.startsWith('proxy-');
}

/** No names: what a message without a `Connection` header adds to the hop-by-hop ones. */
const NO_TOKENS: ReadonlySet<string> = new Set();

/** Names listed in a `Connection` header value (they are hop-by-hop for that message), lower-cased. */
export function connectionTokens(value: string | string[] | undefined): Set<string> {
  const tokens = new Set<string>();
  if (value === undefined) return tokens;
  for (const part of Array.isArray(value) ? value : [value]) {
    for (const token of part.split(',')) {
      const t = token.trim().toLowerCase();
      if (t !== '') tokens.add(t);
    }
  }
  return tokens;
}

/**
 * False for the `Connection` values that name no header beyond the hop-by-hop ones (`keep-alive`,
 * `close`: what nearly every client and instance sends), so no token set is made for them.
 */
function namesHeaders(value: string | undefined): boolean {
  if (value === undefined) return false;
  const v = value.length <= 10 ? value.toLowerCase() : '';
  return v !== 'keep-alive' && v !== 'close';
}

/**
 * The host name a request is addressed to, for route lookup: lower-cased, port and a trailing dot
 * removed (`App.Example.com.:8080` → `app.example.com`, `[::1]:80` → `[::1]`). Null when absent.
 */
export function hostnameOf(host: string | undefined): string | null {
  if (host === undefined) return null;
  let h = host.trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    h = end === -1 ? h : h.slice(0, end + 1);
  } else {
    const colon = h.indexOf(':');
    if (colon !== -1) h = h.slice(0, colon);
  }
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h === '' ? null : h;
}

/** The client's `X-Request-Id` when it is acceptable to pass on, else undefined. */
export function acceptableRequestId(value: string | string[] | undefined): string | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  return v !== undefined && REQUEST_ID.test(v) ? v : undefined;
}

/** True when the request carries a body (declared length above zero, or a transfer coding). */
export function hasRequestBody(headers: IncomingHttpHeaders): boolean {
  if (headers['transfer-encoding'] !== undefined) return true;
  const length = headers['content-length'];
  return length !== undefined && length !== '0';
}

/** What the router adds to a forwarded request. */
export interface ForwardedFor {
  /** Address of the client as the router saw it (socket peer). */
  clientAddress: string | undefined;
  /** `http` or `https`, as the client reached the router. */
  proto: string;
  /** Port the client connected to on the router. */
  port: number | undefined;
  /** Id of this request (incoming or generated). */
  requestId: string;
  /**
   * The peer is a trusted proxy: its `X-Forwarded-For` is extended and its `X-Forwarded-Proto` and
   * `X-Forwarded-Port` kept. Default false: all three say only what the router saw.
   */
  peerTrusted?: boolean;
}

/**
 * Headers for the upstream request as a flat `[name, value, …]` list, built from Node's
 * `rawHeaders` so repeated headers and the original Host survive unchanged. Hop-by-hop headers
 * (and those named in `Connection`) are dropped; `X-Request-Id` is set by the router. From an
 * untrusted peer, `X-Forwarded-For`, `-Proto` and `-Port` are replaced by what the router saw (a
 * client cannot pose as HTTPS or as another address), `X-Real-IP` is set to the peer, `Forwarded`
 * says only `for=PEER;proto=…`, and any other `X-Forwarded-*` (`-Host`, `-Server`, `-Prefix`) is
 * removed; from a trusted proxy, the peer is appended to its `X-Forwarded-For` and `Forwarded`,
 * and its well-formed `-Proto`/`-Port`, its `X-Real-IP` and other `X-Forwarded-*` are kept.
 */
export function forwardRequestHeaders(rawHeaders: readonly string[], forwarded: ForwardedFor): string[] {
  let dropped: Set<string> | undefined;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] ?? '';
    // Most requests have no Connection header, or `keep-alive` only: no Set for them.
    if (name.length === 10 && name.toLowerCase() === 'connection' && namesHeaders(rawHeaders[i + 1])) {
      dropped ??= new Set<string>();
      for (const t of connectionTokens(rawHeaders[i + 1])) dropped.add(t);
    }
  }
  const trusted = forwarded.peerTrusted === true;
  const out: string[] = [];
  const forwardedFor: string[] = [];
  const rfcForwarded: string[] = [];
  let realIp: string | undefined;
  let proto = forwarded.proto;
  let port = forwarded.port === undefined ? undefined : String(forwarded.port);
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] ?? '';
    const value = rawHeaders[i + 1] ?? '';
    const lower = name.toLowerCase();
    if (isHopByHopLower(lower) || dropped?.has(lower) === true || ROUTER_SET.has(lower)) continue;
    if (lower.startsWith('x-forwarded-')) {
      if (lower === 'x-forwarded-for') {
        if (trusted && value.trim() !== '') forwardedFor.push(value.trim());
        continue;
      }
      if (lower === 'x-forwarded-proto') {
        if (trusted && FORWARDED_PROTO.test(value.trim())) proto = value.trim().toLowerCase();
        continue;
      }
      if (lower === 'x-forwarded-port') {
        if (trusted && FORWARDED_PORT.test(value.trim())) port = value.trim();
        continue;
      }
      // X-Forwarded-Host (Django's USE_X_FORWARDED_HOST), -Server, -Prefix…: a proxy's word only.
      if (!trusted) continue;
    } else if (lower === 'x-real-ip') {
      if (trusted && realIp === undefined && value.trim() !== '') realIp = value.trim();
      continue;
    } else if (lower === 'forwarded') {
      if (trusted && value.trim() !== '') rfcForwarded.push(value.trim());
      continue;
    }
    out.push(name, value);
  }
  const client = forwarded.clientAddress;
  if (client !== undefined) {
    forwardedFor.push(client);
    rfcForwarded.push(`for=${forwardedNode(client)};proto=${forwarded.proto}`);
  }
  if (forwardedFor.length > 0) out.push('x-forwarded-for', forwardedFor.join(', '));
  out.push('x-forwarded-proto', proto);
  if (port !== undefined) out.push('x-forwarded-port', port);
  realIp ??= client;
  if (realIp !== undefined) out.push('x-real-ip', realIp);
  if (rfcForwarded.length > 0) out.push('forwarded', rfcForwarded.join(', '));
  out.push('x-request-id', forwarded.requestId);
  return out;
}

/** An address as a `Forwarded` node (RFC 7239 §6): IPv6 in brackets and quotes. */
function forwardedNode(address: string): string {
  return address.includes(':') ? `"[${address}]"` : address;
}

/**
 * Headers of an instance's response as sent to the client: hop-by-hop ones (and those named in
 * its `Connection`) dropped, the router's `X-Request-Id` set.
 */
export function forwardResponseHeaders(headers: IncomingHttpHeaders, requestId: string): OutgoingHttpHeaders {
  const dropped = headers.connection === undefined ? NO_TOKENS : connectionTokens(headers.connection);
  const out: OutgoingHttpHeaders = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    if (isHopByHopLower(lower) || dropped.has(lower) || lower === 'x-request-id') continue;
    out[lower] = value;
  }
  out['x-request-id'] = requestId;
  return out;
}

/**
 * {@link forwardResponseHeaders} on Node's `rawHeaders` (`[name, value, …]`, names as the instance
 * sent them), as a flat list `ServerResponse.writeHead` takes: no header object is built on the
 * way. With `hsts`, `Strict-Transport-Security` is added unless the instance set one.
 */
export function forwardRawResponseHeaders(rawHeaders: readonly string[], requestId: string, hsts = false): string[] {
  let dropped: Set<string> | undefined;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] ?? '';
    if (name.length === 10 && name.toLowerCase() === 'connection' && namesHeaders(rawHeaders[i + 1])) {
      dropped ??= new Set<string>();
      for (const t of connectionTokens(rawHeaders[i + 1])) dropped.add(t);
    }
  }
  const out: string[] = [];
  let addHsts = hsts;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] ?? '';
    const lower = name.toLowerCase();
    if (isHopByHopLower(lower) || dropped?.has(lower) === true || lower === 'x-request-id') continue;
    if (addHsts && lower === 'strict-transport-security') addHsts = false;
    out.push(name, rawHeaders[i + 1] ?? '');
  }
  if (addHsts) out.push('strict-transport-security', HSTS_VALUE);
  out.push('x-request-id', requestId);
  return out;
}

/**
 * Response head (status line and headers, up to the blank line) of a 101 from an instance, as sent
 * to the client: its `Connection` and `Upgrade` kept (they are the handshake), other hop-by-hop
 * headers dropped, the router's `X-Request-Id` set.
 */
export function upgradeResponseHead(statusMessage: string, rawHeaders: readonly string[], requestId: string): string {
  let head = `HTTP/1.1 101 ${statusMessage === '' ? 'Switching Protocols' : statusMessage}\r\n`;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] ?? '';
    const lower = name.toLowerCase();
    if (lower === 'x-request-id' || (isHopByHopLower(lower) && lower !== 'connection' && lower !== 'upgrade')) continue;
    head += `${name}: ${rawHeaders[i + 1] ?? ''}\r\n`;
  }
  return `${head}x-request-id: ${requestId}\r\n\r\n`;
}

/**
 * Response head for a connection the router closes after the response (one that asked for an
 * upgrade, or a client error): `headers` as given (see {@link forwardResponseHeaders}) plus
 * `Connection: close`, so the body may be delimited by the close.
 */
export function closingResponseHead(status: number, statusMessage: string | undefined, headers: OutgoingHttpHeaders): string {
  let head = `HTTP/1.1 ${status} ${statusMessage ?? STATUS_CODES[status] ?? ''}\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name === 'connection') continue;
    for (const v of Array.isArray(value) ? value : [value]) head += `${name}: ${v}\r\n`;
  }
  return `${head}connection: close\r\n\r\n`;
}
