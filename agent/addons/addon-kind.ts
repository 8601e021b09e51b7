/**
 * What every kind of add-on server (PostgreSQL, Redis, memcached) provides to the
 * {@link AddonServerDriver}: how to initialize its data on first start, the command the supervisor
 * runs, and a health check that speaks the server's own protocol.
 */
import { join } from 'node:path';
import type { Logger } from '../../common/logger.js';
import type { AddonKind } from '../../common/vocabulary.js';
import type { AddonSpec__Output } from '../../proto/loader.js';
import type { RunAs } from '../workloads/run-as.js';

/** Where one add-on keeps its things: DATA/addons/NAME/… */
export interface AddonPaths {
  /** DATA/addons/NAME: owned by the user the server runs as; PostgreSQL's socket lives here. */
  root: string;
  /** The server's own data (PostgreSQL cluster, Redis AOF/RDB). */
  data: string;
  /** PostgreSQL backups (`NAME.dump`). */
  backups: string;
  /** The server's stdout and stderr, written by the server itself (log shipping tails them). */
  stdout: string;
  stderr: string;
  /** `{pid, startTime}` of the running server, for adoption after an agent restart. */
  pidfile: string;
  /** `{id, name, app, kind, port}`: what this directory belongs to. */
  meta: string;
}

/** The paths of add-on `name` under `addonsDir`. */
export function addonPaths(addonsDir: string, name: string): AddonPaths {
  const root = join(addonsDir, name);
  return {
    root,
    data: join(root, 'data'),
    backups: join(root, 'backups'),
    stdout: join(root, 'stdout.log'),
    stderr: join(root, 'stderr.log'),
    pidfile: join(root, 'pid.json'),
    meta: join(root, 'addon.json'),
  };
}

/** What a driver gets to prepare or operate on an add-on. */
export interface AddonContext {
  spec: AddonSpec__Output;
  paths: AddonPaths;
  /** The port the server listens on (chosen once, kept in addon.json). */
  port: number;
  /** Addresses to listen on: the agent's advertise address (what app instances dial) and loopback. */
  listen: string[];
  /** The agent's advertise address (memcached, which has no auth, listens on it only). */
  advertise: string;
  /** The user the server runs as; null: the agent's own. */
  runAs: RunAs | null;
  /** The agent's name, for messages. */
  host: string;
  logger: Logger;
}

/** A server ready to be started by the supervisor. */
export interface PreparedServer {
  /** Shell command line (run as `sh -c 'exec COMMAND'`); never contains a secret. */
  command: string;
  env: Record<string, string>;
  cwd: string;
  /** True once the server answers its protocol with the add-on's credentials. Never throws. */
  healthCheck: () => Promise<boolean>;
  /** Signal that stops it cleanly. Default SIGTERM. */
  stopSignal?: NodeJS.Signals;
}

/** One kind of add-on server. */
export interface AddonDriver {
  kind: AddonKind;
  /** The port tried first (the server's usual one); the next free one above is taken otherwise. */
  preferredPort: number;
  /** Idempotent: initializes the data on first call, (re)writes its config, returns how to run it. */
  prepare(ctx: AddonContext): Promise<PreparedServer>;
  /** Writes a backup of the running server to `file`. Kinds without backups leave it out. */
  backup?(ctx: AddonContext, file: string): Promise<void>;
  /**
   * Restores `file` into the running server; a kind that must swap the server's files stops and
   * starts it through `server`. What it returns is the job's report (e.g. the keys found after).
   */
  restore?(ctx: AddonContext, file: string, server: ServerControl): Promise<object | void>;
}

/** The supervised server of an add-on, for a restore that swaps its files. */
export interface ServerControl {
  /** Stops the server; it stays wanted, and nothing starts it again until {@link start}. */
  stop(): Promise<void>;
  /** Starts it again and resolves once its health check passes; throws when it does not in time. */
  start(): Promise<void>;
}

/** Quotes words for `/bin/sh`. */
export function shellWords(words: readonly string[]): string {
  return words.map((w) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? w : `'${w.replaceAll("'", `'\\''`)}'`)).join(' ');
}
