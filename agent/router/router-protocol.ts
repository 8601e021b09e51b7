/**
 * What the agent and its router process say to each other over the router's control socket
 * (DATA/router/control.sock, 0600): newline-delimited JSON frames (JSON escapes every newline
 * inside a string, so a newline always ends a frame). The agent pushes the full route and TLS
 * state on every connect and change, asks for drains; the router says hello (its code version,
 * ports and config), answers drains and reports requests in flight. Also the paths of the
 * router's files below the agent's data dir and the code version that tells an upgrade.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HANGAR_VERSION } from '../../common/version.js';
import type { AppRoute, RouterCertificate } from './router.js';
import { PACKAGE_ROOT } from '../../common/package-root.js';

/** Largest frame accepted, bytes (a route table with every certificate of a big fleet fits). */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

/** What the router process needs to listen; a running router with other settings is replaced. */
export interface RouterProcessConfig {
  port: number;
  /** null: no HTTPS listener. */
  httpsPort: number | null;
  host: string;
  trustedProxies: string[];
}

function isPort(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 65535;
}

/**
 * Checks the router process's `--config` (written by this same code's router-spawn): plain checks,
 * so that neither process loads zod for four fields.
 */
export const routerProcessConfigSchema = {
  /** The config, or throws naming every bad field. */
  parse(value: unknown): RouterProcessConfig {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('the router config must be an object');
    const v = value as Record<string, unknown>;
    const bad: string[] = [];
    if (!isPort(v.port)) bad.push('port must be an integer from 0 to 65535');
    if (v.httpsPort !== null && !isPort(v.httpsPort)) bad.push('httpsPort must be null or an integer from 0 to 65535');
    if (typeof v.host !== 'string' || v.host === '') bad.push('host must be a non-empty string');
    if (!Array.isArray(v.trustedProxies) || !v.trustedProxies.every((p) => typeof p === 'string'))
      bad.push('trustedProxies must be a list of strings');
    for (const key of Object.keys(v))
      if (!['port', 'httpsPort', 'host', 'trustedProxies'].includes(key)) bad.push(`unrecognized key "${key}"`);
    if (bad.length > 0) throw new Error(`invalid router config: ${bad.join('; ')}`);
    return {
      port: v.port as number,
      httpsPort: v.httpsPort as number | null,
      host: v.host as string,
      trustedProxies: [...(v.trustedProxies as string[])],
    };
  },
};

/** The router's whole state as the agent last gave it. */
export interface RouterStateFrame {
  routes: AppRoute[];
  certificates: RouterCertificate[];
  /** ACME HTTP-01 challenges: [token, key authorization]. */
  challenges: [string, string][];
}

/** Agent → router. */
export type AgentFrame =
  | ({ type: 'state' } & RouterStateFrame)
  | { type: 'drain'; id: number; instanceKey: string; timeoutMs: number; upgradeTimeoutMs: number }
  /** Stop for good (the agent stops for good): close the listeners and exit. */
  | { type: 'stop' }
  /** Hand the listeners over to a new router process started from `entry` (an upgrade), then exit. */
  | { type: 'replace'; entry: string };

/** Router → agent. */
export type RouterFrame =
  | { type: 'hello'; version: string; pid: number; port: number; httpsPort: number; config: RouterProcessConfig }
  | { type: 'drained'; id: number }
  /** Requests in flight per instance key (sent when it changes, at most every {@link LOAD_REPORT_MS}). */
  | { type: 'load'; inFlight: Record<string, number> };

export const LOAD_REPORT_MS = 500;

/** A parsed frame: an object with a string `type` (throws otherwise). */
function asFrame(value: unknown): { type: string } & Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || typeof (value as { type?: unknown }).type !== 'string') {
    throw new Error('a router control frame must be a JSON object with a string "type"');
  }
  return value as { type: string } & Record<string, unknown>;
}

/**
 * Splits a byte stream into frames; `onFrame` gets each parsed object (validated only as an object
 * with a `type`: the other side is this same code). Throws on a frame over {@link MAX_FRAME_BYTES}
 * or one that is not JSON (the caller closes the connection).
 */
export class FrameReader {
  #pending: Buffer[] = [];
  #size = 0;
  readonly #onFrame: (frame: { type: string } & Record<string, unknown>) => void;

  constructor(onFrame: (frame: { type: string } & Record<string, unknown>) => void) {
    this.#onFrame = onFrame;
  }

  push(chunk: Buffer): void {
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      const part = chunk.subarray(start, nl);
      const line = this.#pending.length > 0 ? Buffer.concat([...this.#pending, part]) : part;
      this.#pending = [];
      this.#size = 0;
      start = nl + 1;
      if (line.length > 0) this.#onFrame(asFrame(JSON.parse(line.toString('utf8'))));
    }
    if (start < chunk.length) {
      this.#size += chunk.length - start;
      if (this.#size > MAX_FRAME_BYTES) throw new Error(`a router control frame is larger than ${MAX_FRAME_BYTES} bytes`);
      this.#pending.push(chunk.subarray(start));
    }
  }
}

/** One frame on the wire. */
export function encodeFrame(frame: AgentFrame | RouterFrame): string {
  return `${JSON.stringify(frame)}\n`;
}

/** Where the router's files live below the agent's data dir. */
export function routerPaths(dataDir: string): {
  dir: string;
  control: string;
  pidFile: string;
  log: string;
  accessDir: string;
  accessOffset: string;
} {
  const dir = join(dataDir, 'router');
  return {
    dir,
    control: join(dir, 'control.sock'),
    pidFile: join(dir, 'router.pid'),
    log: join(dir, 'router.log'),
    accessDir: join(dir, 'access'),
    accessOffset: join(dir, 'access.offset'),
  };
}

/** The router's compiled files (dist/agent/router/, as in an install). */
const ROUTER_DIR = join(PACKAGE_ROOT, 'dist', 'agent', 'router');

/** The router process's entry file (run from dist/, never from the agent's bundle). */
export const ROUTER_ENTRY = join(ROUTER_DIR, 'router-main.js');

let codeVersion: string | undefined;

/**
 * The version of the router code this process loaded: Hangar's version and a hash of the router's
 * files. A running router whose version differs (the agent was upgraded) is replaced.
 */
export function routerCodeVersion(): string {
  if (codeVersion === undefined) {
    const hash = createHash('sha256');
    for (const name of readdirSync(ROUTER_DIR)
      .filter((n) => n.endsWith('.js'))
      .sort()) {
      hash.update(name);
      hash.update(readFileSync(join(ROUTER_DIR, name)));
    }
    codeVersion = `${HANGAR_VERSION}+${hash.digest('hex').slice(0, 16)}`;
  }
  return codeVersion;
}

/** Whether `pid` runs (a zombie, exited but not yet reaped by its parent, does not). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    // /proc/PID/stat: "pid (comm) S ..."; comm may hold spaces and parentheses.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}
