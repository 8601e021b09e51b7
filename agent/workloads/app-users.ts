/**
 * Each app's own system user (`hangar-APP`), so that no app can read another's files, environment
 * or add-on data, nor signal its processes. Made when first needed when the agent runs as root;
 * an agent running as anyone else runs every app as itself.
 */
import { createHash } from 'node:crypto';
import { chmod, chown, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../common/logger.js';
import { NO_HOME, resolveRunAs, type RunAs } from './run-as.js';

/** Prefix of the per-app system users. */
export const APP_USER_PREFIX = 'hangar-';
/** Longest user name useradd takes. */
const MAX_USER_NAME = 32;
/** Users of Hangar itself that no app may run as. */
const RESERVED_USERS = new Set(['hangar-coordinator', 'hangar-agent']);

/**
 * The system user of `app`: `hangar-APP`, or, when that is longer than useradd allows, the first
 * letters of the app and 8 hex digits of its SHA-256 (`hangar-averyveryverylongap-1a2b3c4d`), the
 * same on every agent.
 */
export function appUserName(app: string): string {
  const name = `${APP_USER_PREFIX}${app}`;
  // `hangar-coordinator` is the coordinator's own user: an app named `coordinator` gets another.
  if (name.length <= MAX_USER_NAME && /^[a-z][a-z0-9-]*$/.test(app) && !RESERVED_USERS.has(name)) return name;
  const hash = createHash('sha256').update(app).digest('hex').slice(0, 8);
  const head = app
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .slice(0, MAX_USER_NAME - APP_USER_PREFIX.length - 1 - hash.length);
  return `${APP_USER_PREFIX}${head}-${hash}`;
}

/** Options of {@link AppUsers}. */
export interface AppUsersOptions {
  /**
   * Each user's HOME (pip and Python caches) is made as `homesDir/APP` (0700, owned by it).
   * Null: users get no HOME ({@link NO_HOME}).
   */
  homesDir: string | null;
  /**
   * One user every app runs as instead of a user per app (apps are then not isolated from each
   * other). Default: none, a user per app.
   */
  shared?: string;
  /** Whether this process runs as root. Default: `process.getuid() === 0`. */
  isRoot?: boolean;
  logger: Logger;
}

/** The users apps run as on this agent, resolved (and created) once per app. */
export class AppUsers {
  readonly #o: AppUsersOptions;
  readonly #users = new Map<string, Promise<RunAs | null>>();

  constructor(options: AppUsersOptions) {
    this.#o = options;
  }

  /** True when apps run as users of their own (the agent is root). */
  get dropsPrivileges(): boolean {
    return this.#o.isRoot ?? process.getuid?.() === 0;
  }

  /** The user name `app` runs as; null when the agent does not drop privileges. */
  nameOf(app: string): string | null {
    if (!this.dropsPrivileges) return null;
    return this.#o.shared ?? appUserName(app);
  }

  /**
   * The user `app` runs as, created when missing; null when the agent is not root (apps run as
   * the agent's user). A failure is tried again on the next call.
   *
   * @throws HangarError `INTERNAL` when the user cannot be created or used.
   */
  forApp(app: string): Promise<RunAs | null> {
    const name = this.nameOf(app);
    if (name === null) return Promise.resolve(null);
    let user = this.#users.get(name);
    if (!user) {
      user = this.#resolve(name, this.#o.shared === undefined ? app : 'shared');
      this.#users.set(name, user);
      user.catch(() => this.#users.delete(name));
    }
    return user;
  }

  async #resolve(name: string, homeName: string): Promise<RunAs | null> {
    const homes = this.#o.homesDir;
    if (homes === null) return resolveRunAs(name, null, this.#o.logger);
    // The homes' parent is traversable, not listable: one app cannot find the others' homes.
    await mkdir(homes, { recursive: true, mode: 0o711 });
    // An older agent gave DATA/home to the one shared user.
    await chown(homes, 0, 0);
    await chmod(homes, 0o711);
    return resolveRunAs(name, join(homes, homeName), this.#o.logger);
  }
}

export { NO_HOME };
