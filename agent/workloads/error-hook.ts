import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Lines the hook writes start with this, then one JSON object (see {@link ERROR_HOOK_SOURCE}). */
export const ERROR_LINE_PREFIX = 'hangar-error ';

/**
 * A Python startup hook (`sitecustomize`) put first on the app processes' PYTHONPATH. Once the
 * app imports `django.core.signals`, it connects to `got_request_exception` and writes each
 * traceback to stderr as ONE line: `hangar-error {"type", "message", "file", "line", "function",
 * "traceback", "release", "method", "path"}`; `file:line:function` is the innermost frame of the app's
 * own code (not the virtualenv's or the standard library's). It needs no change to the user's
 * settings and works with DEBUG off and no ADMINS. Request paths go without the query string
 * (it may hold secrets). It never raises into the app.
 */
export const ERROR_HOOK_SOURCE = `# Installed by the Hangar agent: reports Django request exceptions as one line on stderr.
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

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname != 'django.core.signals':
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            if spec is None or spec.loader is None or not hasattr(spec.loader, 'exec_module'):
                return spec
            exec_module = spec.loader.exec_module

            def exec_and_connect(module):
                exec_module(module)
                try:
                    module.got_request_exception.connect(report, weak=False, dispatch_uid='hangar-errors')
                except Exception:
                    pass

            spec.loader.exec_module = exec_and_connect
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
