/**
 * Memory and CPU limits of a process type, as app.json (`formation.TYPE.memory: "512M"`,
 * `formation.TYPE.cpu: 0.5`) and the agent (`--default-memory 512M`, `--default-cpu 1`) write them.
 */
import { z } from 'zod';

/** The smallest memory limit accepted: below it gunicorn or Python cannot even start. */
export const MIN_MEMORY_BYTES = 32 * 1024 * 1024;
/** The largest memory limit accepted (1 TiB). */
export const MAX_MEMORY_BYTES = 1024 ** 4;
/** The share of the memory limit past which an instance is told it exceeds its quota (R14). */
export const MEMORY_SOFT_SHARE = 0.9;

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/**
 * Bytes of a size written like Heroku's and Docker's: `512M`, `1G`, `1.5G`, `65536K`, `268435456`
 * (binary units; a trailing `B` or `iB` is allowed). Null when the text is not a size.
 */
export function parseMemorySize(text: string): number | null {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(text);
  if (!match?.[1]) return null;
  const unit = UNITS[(match[2] ?? '').toUpperCase()];
  if (unit === undefined) return null;
  const bytes = Math.round(Number(match[1]) * unit);
  return Number.isSafeInteger(bytes) ? bytes : null;
}

/** A size for people: `512M`, `1.5G`, `300K`. */
export function formatMemorySize(bytes: number): string {
  for (const [unit, size] of [
    ['T', 1024 ** 4],
    ['G', 1024 ** 3],
    ['M', 1024 ** 2],
    ['K', 1024],
  ] as const) {
    if (bytes >= size) return `${Number((bytes / size).toFixed(1))}${unit}`;
  }
  return `${bytes}B`;
}

/**
 * A memory limit as text (`"512M"`), between {@link MIN_MEMORY_BYTES} and {@link MAX_MEMORY_BYTES}.
 * It stays text (what is stored is parsed again); {@link parseMemorySize} gives its bytes.
 */
export const memoryLimitSchema = z.string({ error: 'write a memory limit as a size such as "512M" or "1G"' }).superRefine((text, ctx) => {
  const bytes = parseMemorySize(text);
  if (bytes === null) ctx.addIssue({ code: 'custom', message: `"${text}" is not a size; write one such as "512M" or "1G"` });
  else if (bytes < MIN_MEMORY_BYTES || bytes > MAX_MEMORY_BYTES) {
    ctx.addIssue({ code: 'custom', message: `${text} is out of range; give between 32M and 1T` });
  }
});

/** A CPU limit in cores (`0.5` = half of one core, `2` = two cores). */
export const cpuLimitSchema = z
  .number({ error: 'write a CPU limit as a number of cores such as 0.5 or 2' })
  .min(0.01, 'give at least 0.01 of a core')
  .max(1024, 'give at most 1024 cores');
