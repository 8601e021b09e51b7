/** The last lines an instance wrote to its output files, to explain why it is not up. */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

/** Bytes read from the end of each file. */
const TAIL_BYTES = 8 * 1024;

/** The last `maxLines` complete lines of a file (fewer when it is short or missing). */
export function tailLines(path: string, maxLines: number): string[] {
  if (maxLines <= 0) return [];
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return [];
  }
  try {
    const size = fstatSync(fd).size;
    const length = Math.min(size, TAIL_BYTES);
    const buf = Buffer.alloc(length);
    const read = readSync(fd, buf, 0, length, size - length);
    const lines = buf.subarray(0, read).toString('utf8').split('\n');
    // The first line may be cut in the middle when the file is longer than the window.
    if (size > length) lines.shift();
    return lines.filter((l) => l.trim() !== '').slice(-maxLines);
  } catch {
    return [];
  } finally {
    closeSync(fd);
  }
}

/**
 * Up to `maxLines` last lines of an instance's output, stderr first (where tracebacks and
 * gunicorn's errors go), topped up with stdout; at most 4 KiB in all.
 */
export function instanceLogTail(stdoutPath: string, stderrPath: string, maxLines = 20): string {
  const err = tailLines(stderrPath, maxLines);
  const out = err.length < maxLines ? tailLines(stdoutPath, maxLines - err.length) : [];
  const lines = [...out, ...err].map((l) => (l.length > 300 ? `${l.slice(0, 300)}…` : l));
  let text = lines.join('\n');
  while (text.length > 4096 && lines.length > 1) {
    lines.shift();
    text = lines.join('\n');
  }
  return text;
}
