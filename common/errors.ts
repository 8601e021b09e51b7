/**
 * The one error type Hangar throws on purpose. Every error carries a stable string `code` that
 * tests, the CLI and API clients match on; {@link httpStatusFor} maps it to an HTTP status.
 */

/** Every code Hangar uses, with the HTTP status it maps to. */
export const ERROR_STATUS = {
  BAD_INPUT: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  APP_NOT_FOUND: 404,
  RELEASE_NOT_FOUND: 404,
  DEPLOY_NOT_FOUND: 404,
  INSTANCE_NOT_FOUND: 404,
  ARTIFACT_NOT_FOUND: 404,
  ADDON_NOT_FOUND: 404,
  BACKUP_NOT_FOUND: 404,
  RUN_NOT_FOUND: 404,
  AGENT_NOT_FOUND: 404,
  DOMAIN_NOT_FOUND: 404,
  ADDON_EXISTS: 409,
  APP_EXISTS: 409,
  /** The domain belongs to an app already (this one or another). */
  DOMAIN_TAKEN: 409,
  CONFLICT: 409,
  ROLLOUT_IN_PROGRESS: 409,
  NO_RELEASE: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  UNKNOWN_PROCESS_TYPE: 422,
  /** A certificate that cannot be used: key does not match, expired, or none of the app's domains. */
  CERT_INVALID: 422,
  /** A backup copy whose bytes no longer match its SHA-256: it is never restored. */
  BACKUP_CORRUPT: 422,
  NO_CAPACITY: 503,
  NO_AGENTS: 503,
  /** The agent named for a run is not connected. */
  AGENT_DOWN: 503,
  /** This coordinator follows (or just lost the lease): the answer names the leader to ask. */
  NOT_LEADER: 503,
  DATABASE_UNAVAILABLE: 503,
  RELEASE_UNHEALTHY: 500,
  RELEASE_PHASE_FAILED: 500,
  /** An app.json postdeploy script failed after the release went live (it stays live). */
  POSTDEPLOY_FAILED: 500,
  BUILD_FAILED: 500,
  AGENT_CRASH_LOOP: 500,
  ADDON_FAILED: 500,
  UNREACHABLE: 502,
  /** The coordinator's disk (its data dir) is full: nothing more can be stored until space is freed. */
  DISK_FULL: 507,
  INTERNAL: 500,
} as const satisfies Record<string, number>;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class HangarError extends Error {
  override readonly name = 'HangarError';
  readonly code: ErrorCode;
  /** Extra machine-readable detail (e.g. the list of bad fields), sent in API error bodies. */
  readonly details: unknown;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.code = code;
    this.details = options.details;
  }
}

export function httpStatusFor(code: string): number {
  return (ERROR_STATUS as Record<string, number>)[code] ?? 500;
}

export function isHangarError(err: unknown, code?: ErrorCode): err is HangarError {
  return err instanceof HangarError && (code === undefined || err.code === code);
}

/** A readable one-line description of anything thrown, for logs and user messages. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
