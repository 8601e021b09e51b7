/**
 * A build step that compiles every Python file of the app's own source (not the virtualenv,
 * which lives outside the slug, nor virtualenvs or node_modules a user committed): a syntax error
 * fails the build with its file and line, before any instance starts and crash-loops on it.
 * Nothing is written (no `__pycache__`): the source is compiled in memory, as `compileall` does.
 */
import { spawn } from 'node:child_process';
import { HangarError } from '../../common/errors.js';
import type { RunAs } from '../workloads/run-as.js';

/** Options of {@link checkPythonSyntax}. */
export interface PythonSyntaxCheckOptions {
  /** The unpacked app. */
  appDir: string;
  /** The interpreter (the virtualenv's python, so the syntax is the one the app runs with). */
  python: string;
  env: Record<string, string>;
  /** Run as this user (the app's). Default: this process's user. */
  user?: RunAs | null;
  signal?: AbortSignal;
  /** Longest the check may take, ms. Default 2 minutes. */
  timeoutMs?: number;
}

/** Errors shown at most; the build fails on the first anyway. */
const MAX_ERRORS = 5;

// Prints one `HANGAR-SYNTAX path\tline\tmessage\ttext` per file that does not compile.
const SCRIPT = String.raw`
import os, sys
SKIP = {'.git', '.hg', '__pycache__', 'node_modules', '.venv', 'venv', 'env', '.tox', 'site-packages'}
found = 0
for root, dirs, files in os.walk('.'):
    dirs[:] = sorted(d for d in dirs if d not in SKIP and not os.path.exists(os.path.join(root, d, 'pyvenv.cfg')))
    for name in sorted(files):
        if not name.endswith('.py'):
            continue
        path = os.path.join(root, name)[2:]
        try:
            with open(path, 'rb') as f:
                source = f.read()
            compile(source, path, 'exec', dont_inherit=True)
        except (SyntaxError, ValueError) as e:
            line = getattr(e, 'lineno', None) or 0
            text = (getattr(e, 'text', None) or '').strip()
            msg = getattr(e, 'msg', None) or str(e)
            print('HANGAR-SYNTAX %s\t%d\t%s: %s\t%s' % (path, line, type(e).__name__, msg, text), flush=True)
            found += 1
            if found >= ${MAX_ERRORS}:
                sys.exit(0)
`;

/** One file that does not compile. */
export interface PythonSyntaxError {
  file: string;
  line: number;
  /** `SyntaxError: invalid syntax`. */
  message: string;
  /** The offending source line, when Python gave it. */
  text: string;
}

/** Parses the script's output lines into errors (other lines are ignored). */
export function parseSyntaxReport(output: string): PythonSyntaxError[] {
  return output.split('\n').flatMap((l) => {
    if (!l.startsWith('HANGAR-SYNTAX ')) return [];
    const [file = '', line = '0', message = '', text = ''] = l.slice('HANGAR-SYNTAX '.length).split('\t');
    return [{ file, line: Number(line) || 0, message, text }];
  });
}

/**
 * Compiles the app's Python files; resolves with nothing when all compile.
 *
 * @throws HangarError `BUILD_FAILED` naming the file and line of each error found (up to 5).
 */
export async function checkPythonSyntax(o: PythonSyntaxCheckOptions): Promise<void> {
  const output = await new Promise<string>((resolve, reject) => {
    const child = spawn(o.python, ['-c', SCRIPT], {
      cwd: o.appDir,
      env: o.env,
      detached: true,
      ...(o.user ? { uid: o.user.uid, gid: o.user.gid } : {}),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const kill = (): void => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    };
    const timer = setTimeout(kill, o.timeoutMs ?? 2 * 60_000);
    o.signal?.addEventListener('abort', kill, { once: true });
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new HangarError('BUILD_FAILED', `Could not run the Python syntax check: ${e.message}`, { cause: e }));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', kill);
      if (code === 0) resolve(out);
      else
        reject(
          new HangarError(
            'BUILD_FAILED',
            `The Python syntax check failed (exit ${code ?? 'signal'}): ${err.trim().split('\n').slice(-3).join(' ')}`,
          ),
        );
    });
  });
  const errors = parseSyntaxReport(output);
  if (errors.length === 0) return;
  const lines = errors.map((e) => `${e.file}, line ${e.line}: ${e.message}${e.text ? ` (${e.text})` : ''}`);
  throw new HangarError(
    'BUILD_FAILED',
    `Python cannot compile ${errors.length === 1 ? 'a file' : `${errors.length} files`} of the app, so nothing was started: ${lines.join('; ')}. Fix ${errors.length === 1 ? 'it' : 'them'} and deploy again.`,
  );
}
