/**
 * Heroku's Procfile format: one `name: command` line per process type. `web` receives `$PORT`,
 * `release` runs once per release before rollout, any other name is a worker type.
 */

import { HangarError } from './errors.js';

/** A parsed Procfile: process type name → shell command, in file order. */
export type Procfile = Record<string, string>;

/** The process type that runs once per release instead of being kept running. */
export const RELEASE_PROCESS_TYPE = 'release';

/** Longest process type name accepted (it becomes part of instance names and hostnames). */
export const MAX_PROCESS_TYPE_LENGTH = 63;

const NAME = /^[A-Za-z0-9_-]+$/;

/** One problem found in a Procfile, with its 1-based line number. */
export interface ProcfileProblem {
  line: number;
  message: string;
}

/**
 * Parses Procfile text. Blank lines and lines starting with `#` are skipped; CRLF and a leading
 * byte-order mark are tolerated. Every problem is collected before failing.
 *
 * @throws HangarError `BAD_INPUT` naming each bad line (malformed line, bad or too long name,
 *   duplicate name, empty command) or when no process type is declared; `details` holds the
 *   {@link ProcfileProblem} list.
 */
export function parseProcfile(text: string): Procfile {
  // Object.fromEntries keeps a name such as "__proto__" an own property instead of a prototype.
  const entries: [string, string][] = [];
  const firstLine = new Map<string, number>();
  const problems: ProcfileProblem[] = [];
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n|\r/);

  lines.forEach((raw, index) => {
    const line = index + 1;
    const trimmed = raw.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;

    const colon = trimmed.indexOf(':');
    if (colon === -1) {
      problems.push({ line, message: 'expected "name: command"' });
      return;
    }
    const name = trimmed.slice(0, colon).trim();
    const command = trimmed.slice(colon + 1).trim();
    if (!NAME.test(name)) {
      problems.push({
        line,
        message:
          name === '' ? 'missing process type name before ":"' : `process type "${name}" may only contain letters, digits, "_" and "-"`,
      });
      return;
    }
    if (name.length > MAX_PROCESS_TYPE_LENGTH) {
      problems.push({ line, message: `process type "${name.slice(0, 20)}…" is longer than ${MAX_PROCESS_TYPE_LENGTH} characters` });
      return;
    }
    if (command === '') {
      problems.push({ line, message: `process type "${name}" has an empty command` });
      return;
    }
    const previous = firstLine.get(name);
    if (previous !== undefined) {
      problems.push({ line, message: `process type "${name}" is already declared on line ${previous}` });
      return;
    }
    firstLine.set(name, line);
    entries.push([name, command]);
  });

  if (problems.length > 0) {
    const list = problems.map((p) => `line ${p.line}: ${p.message}`).join('; ');
    throw new HangarError('BAD_INPUT', `Invalid Procfile: ${list}. Each line must look like "web: gunicorn mysite.wsgi".`, {
      details: problems,
    });
  }
  if (firstLine.size === 0) {
    throw new HangarError('BAD_INPUT', 'The Procfile declares no process types; add a line such as "web: gunicorn mysite.wsgi".', {
      details: [],
    });
  }
  return Object.fromEntries(entries);
}

/** The process types that are kept running (every type except `release`), in Procfile order. */
export function processTypes(procfile: Procfile): string[] {
  return Object.keys(procfile).filter((name) => name !== RELEASE_PROCESS_TYPE);
}

/** The `release` command of a Procfile, or null when it declares none. */
export function releaseCommand(procfile: Procfile): string | null {
  return procfile[RELEASE_PROCESS_TYPE] ?? null;
}
