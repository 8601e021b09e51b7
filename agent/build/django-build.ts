/**
 * The Django part of a build, run with the release's config vars (unlike the virtualenv step,
 * which runs without them on purpose so it can be cached): `manage.py check --deploy` and a few
 * checks of our own, shown as warnings (failing the deploy only when the app cannot be imported:
 * an ImportError or SyntaxError), and `collectstatic --noinput`
 * when the settings have a STATIC_ROOT. One Python process does both, so Django loads once.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { access, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { DJANGO_NOTE_PREFIX } from '../workloads/error-hook.js';
import type { RunAs } from '../workloads/run-as.js';

/** What to run. `checks`: deploy checks + collectstatic; `static`: collectstatic only. */
export type DjangoBuildMode = 'checks' | 'static';

/** Options of {@link runDjangoBuild}. */
export interface DjangoBuildOptions {
  /** The unpacked app (holds manage.py). */
  appDir: string;
  /** Environment: the release's config vars plus the build's (PATH with the virtualenv first). */
  env: Record<string, string>;
  mode: DjangoBuildMode;
  /** Receives every line to show (warnings on stderr). */
  emit: (line: string, stream: 'stdout' | 'stderr') => void;
  signal?: AbortSignal;
  /** Values never to show (the release's config vars): replaced by `***` in our warnings. */
  secrets?: readonly string[];
  /** Longest the step may take, ms. Default 5 minutes. */
  timeoutMs?: number;
  /** The app's user (when the agent is root): the settings module is the app's code. Default: this process's user. */
  user?: RunAs | null;
}

/** How it went: a failure of the deploy only when the app cannot be imported ({@link DjangoBuildResult.fatal}). */
export interface DjangoBuildResult {
  /** False when the app has no manage.py (nothing was run). */
  django: boolean;
  warnings: number;
  /** collectstatic ran and succeeded. */
  collected: boolean;
  /** collectstatic was wanted but failed (its output was shown). */
  staticFailed: boolean;
  /**
   * The app cannot even be imported (an ImportError or SyntaxError loading the settings or
   * URLconf, during `checks`): what and where, e.g. `notes/views.py, line 3: ModuleNotFoundError: …`.
   * Every instance would fail the same way, so the build fails with it.
   */
  fatal: string | null;
}

const INDENT = '       ';

// Finds the settings module the way manage.py names it, loads Django, then reports.
const SCRIPT = String.raw`
import io, os, re, sys, traceback
mode = sys.argv[1]
sys.path.insert(0, os.getcwd())
def fatal(e):
    # The app's own file and line: a SyntaxError names it; otherwise the deepest frame in the app.
    where = None
    if isinstance(e, SyntaxError) and e.filename:
        where = (e.filename, e.lineno or 0)
    else:
        for frame in traceback.extract_tb(e.__traceback__):
            f = os.path.abspath(frame.filename)
            if f.startswith(os.getcwd() + os.sep) and os.environ.get('VIRTUAL_ENV', '//') not in f:
                where = (f, frame.lineno or 0)
    place = '%s, line %d: ' % (os.path.relpath(where[0]), where[1]) if where else ''
    print('HANGAR-FATAL %s%s: %s' % (place, type(e).__name__, e), flush=True)
    sys.exit(0)
try:
    m = re.search(r"DJANGO_SETTINGS_MODULE['\"]\s*,\s*['\"]([\w.]+)['\"]", open('manage.py').read())
    if m:
        os.environ.setdefault('DJANGO_SETTINGS_MODULE', m.group(1))
    import django
    from django.conf import settings
    django.setup()
except (ImportError, SyntaxError) as e:
    fatal(e)
except Exception as e:
    print('HANGAR-WARN Django could not load its settings (%s: %s); the app will likely fail the same way.' % (type(e).__name__, e), flush=True)
    sys.exit(0)
from django.core.management import call_command
if mode == 'checks':
    if settings.DEBUG:
        print('HANGAR-WARN DEBUG is on: visitors see tracebacks and settings; turn it off with a config var in production.', flush=True)
    if '*' in settings.ALLOWED_HOSTS:
        print("HANGAR-WARN ALLOWED_HOSTS contains '*': any Host header is accepted; list the app's domains instead.", flush=True)
    if not os.environ.get('SECRET_KEY'):
        print('HANGAR-WARN No SECRET_KEY config var: set one with hangar config:set SECRET_KEY=... (apps:create makes one).', flush=True)
    buf = io.StringIO()
    try:
        call_command('check', deploy=True, stdout=buf, stderr=buf)
    except (ImportError, SyntaxError) as e:
        fatal(e)
    except Exception as e:
        buf.write(str(e))
    for line in buf.getvalue().splitlines():
        if line.strip():
            print('HANGAR-CHECK ' + line, flush=True)
root = getattr(settings, 'STATIC_ROOT', None)
if root and 'django.contrib.staticfiles' in settings.INSTALLED_APPS:
    print('HANGAR-STATIC', flush=True)
    try:
        call_command('collectstatic', interactive=False, verbosity=1)
        print('HANGAR-STATIC-OK', flush=True)
    except Exception as e:
        print('HANGAR-STATIC-FAILED %s: %s' % (type(e).__name__, e), flush=True)
`;

/**
 * Runs the Django build step in `appDir` when it has a manage.py. Never throws for the app's
 * sake: a settings module that does not load, or a failing check, is a warning; an import or
 * syntax error is reported in `fatal` for the caller to fail the build.
 */
export async function runDjangoBuild(o: DjangoBuildOptions): Promise<DjangoBuildResult> {
  const result: DjangoBuildResult = { django: false, warnings: 0, collected: false, staticFailed: false, fatal: null };
  try {
    await access(join(o.appDir, 'manage.py'));
  } catch {
    return result;
  }
  result.django = true;
  if (o.mode === 'checks') o.emit('-----> Django deploy checks (warnings never stop the deploy)', 'stdout');
  await new Promise<void>((resolve) => {
    const child = spawn('python', ['-c', SCRIPT, o.mode], {
      cwd: o.appDir,
      // The settings autopilot (the agent's Python hook) says what it adjusted.
      env: { ...o.env, HANGAR_DJANGO_REPORT: '1', ...(o.user ? { HOME: o.user.home, USER: o.user.name, LOGNAME: o.user.name } : {}) },
      detached: true,
      ...(o.user ? { uid: o.user.uid, gid: o.user.gid } : {}),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const kill = (): void => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    };
    const timer = setTimeout(kill, o.timeoutMs ?? 5 * 60_000);
    o.signal?.addEventListener('abort', kill, { once: true });
    let inStatic = false;
    // An exception message may quote a setting built from a config var (a database URL…).
    const secrets = (o.secrets ?? []).filter((v) => v.length >= 6);
    const redact = (text: string): string => secrets.reduce((t, v) => t.split(v).join('***'), text);
    const onLine = (raw: string, stream: 'stdout' | 'stderr'): void => {
      const line = redact(raw);
      if (line.startsWith(DJANGO_NOTE_PREFIX)) {
        if (o.mode === 'checks') o.emit(`-----> Django: ${line.slice(DJANGO_NOTE_PREFIX.length)}`, 'stdout');
      } else if (line.startsWith('HANGAR-FATAL ')) {
        result.fatal = line.slice('HANGAR-FATAL '.length);
        o.emit(`${INDENT}${result.fatal}`, 'stderr');
      } else if (line.startsWith('HANGAR-WARN ')) {
        result.warnings++;
        if (o.mode === 'checks') o.emit(`${INDENT}warning: ${line.slice('HANGAR-WARN '.length)}`, 'stderr');
      } else if (line.startsWith('HANGAR-CHECK ')) {
        const text = line.slice('HANGAR-CHECK '.length);
        if (/\(\w+\.W\d+\)/.test(text)) result.warnings++;
        o.emit(`${INDENT}${text}`, 'stderr');
      } else if (line === 'HANGAR-STATIC') {
        inStatic = true;
        if (o.mode === 'checks') o.emit('-----> Running collectstatic --noinput', 'stdout');
      } else if (line === 'HANGAR-STATIC-OK') {
        result.collected = true;
      } else if (line.startsWith('HANGAR-STATIC-FAILED ')) {
        result.staticFailed = true;
        o.emit(`${INDENT}warning: collectstatic failed: ${line.slice('HANGAR-STATIC-FAILED '.length)}`, 'stderr');
      } else if (o.mode === 'checks' || inStatic) {
        o.emit(`${INDENT}${line}`, stream);
      }
    };
    createInterface({ input: child.stdout }).on('line', (l) => onLine(l, 'stdout'));
    createInterface({ input: child.stderr }).on('line', (l) => onLine(l, 'stderr'));
    child.on('error', (err) => {
      o.emit(`${INDENT}warning: could not run the Django checks: ${err.message}`, 'stderr');
    });
    child.on('close', () => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', kill);
      kill();
      resolve();
    });
  });
  return result;
}

/**
 * Name of the marker file that says collectstatic ran in `appDir` for this config: instances of
 * the same release on this agent run it once.
 */
export function staticMarker(appDir: string, config: Record<string, string>): string {
  // Per-process variables (HANGAR_INSTANCE…) differ between the build task and each instance.
  const vars = Object.entries(config).filter(([k]) => !k.startsWith('HANGAR_') && k !== 'PORT');
  const hash = createHash('sha256')
    .update(JSON.stringify(vars.sort(([a], [b]) => a.localeCompare(b))))
    .digest('hex')
    .slice(0, 16);
  return join(appDir, `.hangar-static-${hash}`);
}

/** True when the marker of {@link staticMarker} exists. */
export async function staticDone(appDir: string, config: Record<string, string>): Promise<boolean> {
  try {
    await access(staticMarker(appDir, config));
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes the marker of {@link staticMarker}. The slug belongs to the app's user: the file is
 * created exclusively, so a link the app left there is never followed by the agent.
 */
export async function markStaticDone(appDir: string, config: Record<string, string>): Promise<void> {
  try {
    await writeFile(staticMarker(appDir, config), '', { flag: 'wx', mode: 0o644 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}
