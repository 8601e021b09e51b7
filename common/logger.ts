import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger } from 'pino';

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** Minimum level written. Default: `HANGAR_LOG_LEVEL` is read by the CLI, else `info`. */
  level?: string;
  /** Where lines go. Default: stderr, so command output on stdout stays clean. */
  destination?: DestinationStream;
}

/**
 * The root logger, made once at startup by the CLI (or a test) and passed down; components use
 * `logger.child({ component })`. Secrets are redacted by key name as a second line of defence.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: undefined,
      redact: {
        paths: ['token', 'joinToken', 'env', '*.env', 'config', '*.password', 'authorization', '*.authorization'],
        censor: '[redacted]',
      },
    },
    options.destination ?? pino.destination(2),
  );
}

/** A logger that drops everything, for tests and tools that do not want output. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
