import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Lines the hook writes start with this, then one JSON object (see {@link ERROR_HOOK_SOURCE}). */
export const ERROR_LINE_PREFIX = 'hangar-error ';

/**
 * Lines the settings autopilot writes on stdout, one per adjustment (`added shop.example.com to
 * ALLOWED_HOSTS`), only when `HANGAR_DJANGO_REPORT=1` (the build's Django step sets it).
 */
export const DJANGO_NOTE_PREFIX = 'HANGAR-DJANGO ';

/**
 * Config vars that switch the settings autopilot off (value `0`, `false`, `no` or `off`): all of
 * it, or one setting.
 */
export const DJANGO_AUTOPILOT_SWITCHES = [
  'HANGAR_DJANGO_AUTOPILOT',
  'HANGAR_DJANGO_ALLOWED_HOSTS',
  'HANGAR_DJANGO_CSRF_TRUSTED_ORIGINS',
  'HANGAR_DJANGO_SECURE_PROXY_SSL_HEADER',
] as const;

/**
 * A Python startup hook (`sitecustomize`) put first on the app processes' PYTHONPATH.
 *
 * Settings autopilot: once Django has loaded the settings module (`django.conf.Settings`, however
 * DJANGO_SETTINGS_MODULE was named), it appends the domains of `HANGAR_DOMAINS` to ALLOWED_HOSTS
 * (unless it holds `*`; an empty list with DEBUG on keeps Django's localhost defaults) and to
 * CSRF_TRUSTED_ORIGINS (`https://DOMAIN` from Django 4, bare `DOMAIN` before), and sets
 * SECURE_PROXY_SSL_HEADER to `('HTTP_X_FORWARDED_PROTO', 'https')` unless the settings set it.
 * See {@link DJANGO_AUTOPILOT_SWITCHES} to turn parts off.
 *
 * Errors: once the app imports `django.core.signals`, it connects to `got_request_exception` and writes each
 * traceback to stderr as ONE line: `hangar-error {"type", "message", "file", "line", "function",
 * "traceback", "release", "method", "path"}`; `file:line:function` is the innermost frame of the app's
 * own code (not the virtualenv's or the standard library's). It needs no change to the user's
 * settings and works with DEBUG off and no ADMINS. Request paths go without the query string
 * (it may hold secrets). It never raises into the app.
 */
export const ERROR_HOOK_SOURCE = `# Installed by the Hangar agent: adjusts Django's settings to the app's domains and\n# reports Django request exceptions as one line on stderr.
import sys


def _hangar_install():
    import importlib.abc
    import importlib.util
    import json
    import os
    import sysconfig
    import traceback

    lib_dirs = set()
    for key in ('stdlib', 'platstdlib', 'purelib', 'platlib'):
        try:
            lib_dirs.add(os.path.realpath(sysconfig.get_paths()[key]))
        except Exception:
            pass

    def is_app_file(filename):
        real = os.path.realpath(filename)
        if '/site-packages/' in real or '/dist-packages/' in real or filename.startswith('<'):
            return False
        return not any(real.startswith(d + os.sep) for d in lib_dirs)

    def report(sender, request=None, **kwargs):
        try:
            etype, evalue, tb = sys.exc_info()
            if etype is None:
                return
            frames = traceback.extract_tb(tb)
            frame = next((f for f in reversed(frames) if is_app_file(f.filename)), frames[-1] if frames else None)
            name = etype.__qualname__ if etype.__module__ == 'builtins' else etype.__module__ + '.' + etype.__qualname__
            filename = frame.filename if frame else ''
            try:
                filename = os.path.relpath(filename)
            except Exception:
                pass
            record = {
                'type': name,
                'message': str(evalue)[:2000],
                'file': filename,
                'line': frame.lineno if frame else 0,
                'function': frame.name if frame else '',
                'traceback': ''.join(traceback.format_exception(etype, evalue, tb))[-30000:],
                'release': os.environ.get('HANGAR_RELEASE', ''),
                'method': getattr(request, 'method', '') or '',
                'path': getattr(request, 'path', '') or '',
            }
            sys.stderr.write('${ERROR_LINE_PREFIX}' + json.dumps(record) + '\\n')
            sys.stderr.flush()
        except Exception:
            pass

    def flag(name):
        return os.environ.get(name, '1').strip().lower() not in ('0', 'false', 'no', 'off')

    def matches(host, patterns):
        for p in patterns:
            p = str(p).lower()
            if p == '*' or p == host or (p.startswith('.') and (host.endswith(p) or host == p[1:])):
                return True
        return False

    def note(text):
        if os.environ.get('HANGAR_DJANGO_REPORT') == '1':
            sys.stdout.write('${DJANGO_NOTE_PREFIX}' + text + '\\n')
            sys.stdout.flush()

    def autopilot(settings):
        # Runs once the settings module is loaded: the user's file is never edited.
        if not flag('HANGAR_DJANGO_AUTOPILOT'):
            note('settings left as they are (HANGAR_DJANGO_AUTOPILOT=0)')
            return
        import django
        domains = [d.strip().lower() for d in os.environ.get('HANGAR_DOMAINS', '').split(',') if d.strip()]
        if domains and not flag('HANGAR_DJANGO_ALLOWED_HOSTS'):
            note('ALLOWED_HOSTS left as it is (HANGAR_DJANGO_ALLOWED_HOSTS=0)')
        elif domains:
            hosts = list(getattr(settings, 'ALLOWED_HOSTS', None) or [])
            if not hosts and getattr(settings, 'DEBUG', False):
                # What Django allows when DEBUG is on and the list is empty: keep allowing it.
                hosts = ['.localhost', '127.0.0.1', '[::1]']
            added = [d for d in domains if not matches(d, hosts)]
            if added:
                settings.ALLOWED_HOSTS = hosts + added
                for d in added:
                    note('added %s to ALLOWED_HOSTS' % d)
        if domains and not flag('HANGAR_DJANGO_CSRF_TRUSTED_ORIGINS'):
            note('CSRF_TRUSTED_ORIGINS left as it is (HANGAR_DJANGO_CSRF_TRUSTED_ORIGINS=0)')
        elif domains:
            origins = list(getattr(settings, 'CSRF_TRUSTED_ORIGINS', None) or [])
            # Django 4 compares whole origins (scheme included); 3.2 compares hosts.
            if django.VERSION >= (4, 0):
                have = [o[len('https://'):] for o in map(str, origins) if o.lower().startswith('https://')]
                wanted = [('https://' + d, d) for d in domains]
                have = ['.' + h[2:] if h.startswith('*.') else h for h in have]
            else:
                have = origins
                wanted = [(d, d) for d in domains]
            added = [origin for origin, d in wanted if not matches(d, [h for h in have if h != '*'])]
            if added:
                settings.CSRF_TRUSTED_ORIGINS = origins + added
                for origin in added:
                    note('added %s to CSRF_TRUSTED_ORIGINS' % origin)
        if not flag('HANGAR_DJANGO_SECURE_PROXY_SSL_HEADER'):
            note('SECURE_PROXY_SSL_HEADER left as it is (HANGAR_DJANGO_SECURE_PROXY_SSL_HEADER=0)')
        elif not settings.is_overridden('SECURE_PROXY_SSL_HEADER'):
            settings.SECURE_PROXY_SSL_HEADER = ('HTTP_X_FORWARDED_PROTO', 'https')
            note("set SECURE_PROXY_SSL_HEADER = ('HTTP_X_FORWARDED_PROTO', 'https') (the router sets X-Forwarded-Proto)")

    def connect_errors(module):
        module.got_request_exception.connect(report, weak=False, dispatch_uid='hangar-errors')

    def patch_settings(module):
        init = module.Settings.__init__

        def init_and_adjust(self, *args, **kwargs):
            init(self, *args, **kwargs)
            try:
                autopilot(self)
            except Exception as e:
                note('the settings autopilot failed (%s: %s); settings left as they are' % (type(e).__name__, e))

        module.Settings.__init__ = init_and_adjust

    # Module -> what to do once it has run; each runs once.
    pending = {'django.core.signals': connect_errors, 'django.conf': patch_settings}

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            after = pending.pop(fullname, None)
            if after is None:
                return None
            if not pending:
                sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            if spec is None or spec.loader is None or not hasattr(spec.loader, 'exec_module'):
                return spec
            exec_module = spec.loader.exec_module

            def exec_and_hook(module):
                exec_module(module)
                try:
                    after(module)
                except Exception:
                    pass

            spec.loader.exec_module = exec_and_hook
            return spec

    sys.meta_path.insert(0, Finder())


try:
    _hangar_install()
except Exception:
    pass
`;

/** Writes the hook into `DIR/sitecustomize.py`; returns DIR (to put first on PYTHONPATH). */
export async function installErrorHook(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
  await writeFile(join(dir, 'sitecustomize.py'), ERROR_HOOK_SOURCE, { mode: 0o644 });
  return dir;
}

/** `env` with `dir` first on PYTHONPATH. */
export function withHookOnPath(env: Record<string, string>, dir: string): Record<string, string> {
  const current = env.PYTHONPATH;
  if (current?.split(':').includes(dir)) return env;
  return { ...env, PYTHONPATH: current ? `${dir}:${current}` : dir };
}
