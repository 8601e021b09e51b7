/**
 * Memory and CPU limits of a process type, as app.json (`formation.TYPE.memory: "512M"`,
 * `formation.TYPE.cpu: 0.5`) and the agent (`--default-memory 512M`, `--default-cpu 1`) write them.
 * No zod here: the agent imports this file (their schemas are in resource-limit-schemas.ts).
 */
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

/** The fewest cores a CPU limit may give. */
export const MIN_CPU_CORES = 0.01;
/** The most cores a CPU limit may give. */
export const MAX_CPU_CORES = 1024;
