const UNITS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/**
 * A duration as users write it after `--since` (`30s`, `15m`, `2h`, `7d`) → ms; null when not in
 * that shape. The one grammar of durations (logs, metrics, the coordinator's flags).
 */
export function parseDuration(text: string): number | null {
  const m = /^(\d{1,9})([smhd])$/.exec(text.trim());
  if (!m) return null;
  return Number(m[1]) * UNITS[m[2] as keyof typeof UNITS];
}
