/**
 * How the `hangar` command prints things for people: aligned tables, `=== headings`, ages like
 * `2m ago`, sizes like `1.2 MB`, and `--json` output. Pure functions: they return strings and
 * never write anywhere themselves.
 */

/**
 * Aligns rows into columns separated by two spaces; the last column is not padded. With
 * `headers`, prints them above the rows with a dashed rule under each, like Heroku's tables.
 */
export function formatTable(rows: readonly (readonly string[])[], headers?: readonly string[]): string {
  const all: (readonly string[])[] = headers ? [headers, headers.map((h) => '-'.repeat(h.length)), ...rows] : [...rows];
  if (all.length === 0) return '';
  const columns = Math.max(...all.map((row) => row.length));
  const widths: number[] = [];
  for (let c = 0; c < columns; c++) widths.push(Math.max(...all.map((row) => (row[c] ?? '').length)));
  return all
    .map((row) =>
      row
        .map((cell, c) => (c === row.length - 1 ? cell : cell.padEnd(widths[c] ?? 0)))
        .join('  ')
        .trimEnd(),
    )
    .map((line) => `${line}\n`)
    .join('');
}

/**
 * Key/value lines with the values aligned, as in `apps:info` and `config`:
 * `Domain:    shop.localhost`.
 */
export function formatPairs(pairs: readonly (readonly [string, string])[], separator = ':'): string {
  const width = Math.max(0, ...pairs.map(([key]) => key.length + separator.length));
  return pairs.map(([key, value]) => `${`${key}${separator}`.padEnd(width)}  ${value}\n`).join('');
}

/** A Heroku-style section heading: `=== shop Releases`. */
export function heading(text: string): string {
  return `=== ${text}\n`;
}

/** A short human duration: `45s`, `2m`, `3h`, `5d`. Negative durations count as zero. */
export function formatDuration(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h`;
  return `${Math.floor(hours / 24)}d`;
}

/** How long ago an ISO time was, relative to `now` (Unix ms): `2m ago`; `-` when unparseable. */
export function timeAgo(iso: string, now: number): string {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return '-';
  return `${formatDuration(now - then)} ago`;
}

/** A size in decimal units with one decimal: `512 B`, `1.2 MB`. */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit] ?? 'TB'}`;
}

/** A formation the way people write it: `web=2 worker=1`, or `none` when empty. */
export function formatFormation(formation: Record<string, number>): string {
  const entries = Object.entries(formation).sort(([a], [b]) => compareProcessTypes(a, b));
  return entries.length === 0 ? 'none' : entries.map(([type, n]) => `${type}=${n}`).join(' ');
}

/** Orders process types with `web` first, then alphabetically, as Heroku lists dynos. */
export function compareProcessTypes(a: string, b: string): number {
  if (a === b) return 0;
  if (a === 'web') return -1;
  if (b === 'web') return 1;
  return a < b ? -1 : 1;
}

/** Joins names for a sentence: `A`, `A and B`, `A, B and C`. */
export function formatList(items: readonly string[]): string {
  if (items.length <= 1) return items.join('');
  return `${items.slice(0, -1).join(', ')} and ${items[items.length - 1] ?? ''}`;
}

/** `--json` output: the API value as it is, pretty-printed, with a final newline. */
export function formatJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** Quotes a value for a POSIX shell: `'it'\''s'`. */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}
