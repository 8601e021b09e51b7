/**
 * Which Python a release is built with: the one its `runtime.txt` (Heroku's `python-3.11.2`) or,
 * without one, its `.python-version` (`3.11` or `3.11.2`, pyenv's format) asks for, else the
 * agent's default. Heroku reads the same two files in the same order.
 *
 * The minor version (`3.11`) must be on this server: an interpreter named `python3.11` on the
 * agent's PATH, in /usr/local/bin or /usr/bin (or the agent's default when it is that version);
 * otherwise the build fails with a sentence naming the versions the server has. A patch that
 * differs (`3.11.9` asked, `3.11.2` here) builds with the server's, with a warning: the server's
 * packages bring the patch releases, as Heroku brings the latest patch of `3.11`.
 */
import { access, constants, open, readdir, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../../common/errors.js';

/** What an app asked for. */
export interface PythonRequest {
  /** `runtime.txt` or `.python-version`. */
  file: string;
  /** The version as written, e.g. `3.11.2` or `3.11`. */
  asked: string;
  /** `3.11`. */
  minor: string;
  /** `2`, or null when the file names only the minor version. */
  patch: string | null;
}

/** The interpreter a build uses and what to say about it. */
export interface PythonChoice {
  python: string;
  /** Full version, `3.11.2`. */
  version: string;
  /** The app's request, or null (the agent's default was used). */
  request: PythonRequest | null;
  /** Set when only the patch differs from what was asked. */
  warning: string | null;
}

/** Options of {@link choosePython}. */
export interface ChoosePythonOptions {
  /** The unpacked app. */
  appDir: string;
  /** The agent's default interpreter. */
  fallback: string;
  /** Folders searched for `python3.Y`, in order. Default: PATH's, then /usr/local/bin and /usr/bin. */
  dirs: readonly string[];
  /** The full version of an interpreter (`3.11.2`), or a rejection when it cannot run (as the app's user). */
  versionOf: (python: string) => Promise<string>;
}

/** The folders searched for interpreters by default: `path`'s entries, then /usr/local/bin and /usr/bin. */
export function pythonDirs(path: string | undefined): string[] {
  const dirs = (path ?? '').split(':').filter((d) => d.startsWith('/'));
  return [...new Set([...dirs, '/usr/local/bin', '/usr/bin'])];
}

/**
 * Reads the app's request (runtime.txt first, then .python-version).
 *
 * @throws HangarError `BUILD_FAILED` when the file does not name a CPython 3 version.
 */
export async function readPythonRequest(appDir: string): Promise<PythonRequest | null> {
  const runtime = await readOptional(join(appDir, 'runtime.txt'));
  if (runtime !== null) {
    const text = runtime.trim();
    const m = /^python-(3\.\d+)(?:\.(\d+))?$/.exec(text);
    if (!m?.[1]) {
      throw new HangarError(
        'BUILD_FAILED',
        `runtime.txt says "${text.slice(0, 40)}", which is not a Python version: write it as python-3.11.2 (or put 3.11 in .python-version instead).`,
      );
    }
    return { file: 'runtime.txt', asked: text.slice('python-'.length), minor: m[1], patch: m[2] ?? null };
  }
  const pyenv = await readOptional(join(appDir, '.python-version'));
  if (pyenv === null) return null;
  // pyenv allows several versions, one a line, and comments: the first one is the app's.
  const first = pyenv
    .split('\n')
    .map((l) => l.trim())
    .find((l) => l !== '' && !l.startsWith('#'));
  if (first === undefined) return null;
  const m = /^(?:python-)?(3\.\d+)(?:\.(\d+))?$/.exec(first);
  if (!m?.[1]) {
    throw new HangarError(
      'BUILD_FAILED',
      `.python-version says "${first.slice(0, 40)}", which is not a CPython 3 version: write it as 3.11 (or 3.11.2).`,
    );
  }
  return { file: '.python-version', asked: first.replace(/^python-/, ''), minor: m[1], patch: m[2] ?? null };
}

/**
 * Picks the interpreter of a build; see the module comment.
 *
 * @throws HangarError `BUILD_FAILED` when the asked minor version is not on this server (the
 *   message names those it has), or the request file is malformed.
 */
export async function choosePython(o: ChoosePythonOptions): Promise<PythonChoice> {
  const request = await readPythonRequest(o.appDir);
  if (request === null) return { python: o.fallback, version: await o.versionOf(o.fallback), request, warning: null };
  const candidates = [o.fallback, ...(await namedInterpreters(o.dirs)).filter((c) => c.minor === request.minor).map((c) => c.path)];
  for (const python of candidates) {
    let version: string;
    try {
      version = await o.versionOf(python);
    } catch {
      continue; // Not runnable here (or not by the app's user): look further.
    }
    if (minorOf(version) !== request.minor) continue;
    const patch = version.split('.')[2] ?? '';
    const warning =
      request.patch !== null && request.patch !== patch
        ? `${request.file} asks for Python ${request.asked}; this server has ${version}, used instead (only the patch differs).`
        : null;
    return { python, version, request, warning };
  }
  const have = await hostVersions(o);
  throw new HangarError(
    'BUILD_FAILED',
    `${request.file} asks for Python ${request.asked}, which this server does not have (it has ${have.length > 0 ? have.join(', ') : 'no python3.Y'}): ` +
      `ask for ${have.length > 0 ? have.join(' or ') : 'another version'} in ${request.file}, or install python${request.minor} on the agents' servers.`,
  );
}

/** The minor versions this server can run, ascending (`3.11`, `3.12`). */
async function hostVersions(o: ChoosePythonOptions): Promise<string[]> {
  const found = new Set<string>();
  for (const python of [o.fallback, ...(await namedInterpreters(o.dirs)).map((c) => c.path)]) {
    try {
      const minor = minorOf(await o.versionOf(python));
      if (minor) found.add(minor);
    } catch {
      // Not runnable: not counted.
    }
  }
  return [...found].sort((a, b) => Number(a.split('.')[1]) - Number(b.split('.')[1]));
}

/** Executables named `python3.Y` in `dirs`, first occurrence of each real file. */
async function namedInterpreters(dirs: readonly string[]): Promise<{ path: string; minor: string }[]> {
  const seen = new Set<string>();
  const found: { path: string; minor: string }[] = [];
  for (const dir of dirs) {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      continue;
    }
    for (const name of names.sort()) {
      const m = /^python(3\.\d+)$/.exec(name);
      if (!m?.[1]) continue;
      const path = join(dir, name);
      try {
        await access(path, constants.X_OK);
        const real = await realpath(path);
        if (seen.has(real)) continue;
        seen.add(real);
      } catch {
        continue;
      }
      found.push({ path, minor: m[1] });
    }
  }
  return found;
}

function minorOf(version: string): string {
  return version.split('.').slice(0, 2).join('.');
}

/**
 * The start of a regular file of the slug, or null. The slug is the app's: a link it left there
 * is not followed (the agent may be root, and the text is quoted in the build output).
 */
async function readOptional(path: string): Promise<string | null> {
  let file;
  try {
    file = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP') return null;
    throw err;
  }
  try {
    if (!(await file.stat()).isFile()) return null;
    const buffer = Buffer.alloc(READ_BYTES);
    const { bytesRead } = await file.read(buffer, 0, READ_BYTES, 0);
    return buffer.subarray(0, bytesRead).toString('utf8');
  } finally {
    await file.close();
  }
}

/** More than any version file needs. */
const READ_BYTES = 4096;
