/**
 * Reads an uploaded source archive (gzipped tar) without extracting it and works out how to run
 * it: the Procfile (or the zero-config Django default), the release command and app.json. Every
 * entry is checked for safety on the way, so a build never starts from a hostile archive.
 */

import type { ReadEntry } from 'tar';
import { scanArchive, DEFAULT_MAX_ARCHIVE_BYTES } from '../../common/archive-guard.js';
import { parseAppJson, type AppJson } from '../../common/app-json.js';
import { HangarError } from '../../common/errors.js';
import { parseProcfile, processTypes, releaseCommand, type Procfile } from '../../common/procfile.js';

/** Largest Procfile or app.json read from an archive. */
const MAX_MANIFEST_BYTES = 1024 * 1024;

const PYTHON_IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** What an uploaded source declares about how to run it. */
export interface SourceInfo {
  /** Process types and their commands: the Procfile's, or the zero-config Django `web` line. */
  procfile: Procfile;
  /** Process types kept running (every type but `release`), in Procfile order. */
  processTypes: string[];
  /** The Procfile's `release` command, or null. */
  releaseCommand: string | null;
  /** The validated app.json, or null when there is none. */
  appJson: AppJson | null;
  /**
   * Where the process types come from: `procfile` when the source has a Procfile, `django` when
   * they were derived from a Django project (zero-config).
   */
  framework: 'django' | 'procfile';
  /**
   * The Django project package (the directory holding `wsgi.py` next to a root `manage.py`), or
   * null when the source is not a Django project or the project cannot be told apart.
   */
  djangoProject: string | null;
}

/** Options of {@link inspectSource}. */
export interface InspectSourceOptions {
  /** Bound of the uncompressed size. Default 512 MiB. */
  maxBytes?: number;
  /** Stops reading; the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** A root-level file whose content is needed. */
interface Collected {
  type: string;
  chunks: Buffer[];
  bytes: number;
}

/**
 * Inspects a gzipped tar of a user's project, streaming it without writing to disk.
 *
 * @throws HangarError `BAD_INPUT` for an unsafe entry (named in the message), an invalid
 *   Procfile or app.json, or a source with neither a Procfile nor a Django project;
 *   `PAYLOAD_TOO_LARGE` past `maxBytes`.
 */
export async function inspectSource(tarGzPath: string, options: InspectSourceOptions = {}): Promise<SourceInfo> {
  const wanted = new Set(['Procfile', 'app.json', 'manage.py']);
  const collected = new Map<string, Collected>();
  const wsgiProjects = new Set<string>();
  const nested = new Set<string>();

  const onEntry = (entry: ReadEntry, path: string): void => {
    if (wanted.has(path)) {
      const file: Collected = { type: entry.type, chunks: [], bytes: 0 };
      collected.set(path, file);
      entry.on('data', (chunk: Buffer) => {
        file.bytes += chunk.length;
        if (file.bytes <= MAX_MANIFEST_BYTES) file.chunks.push(chunk);
      });
      return;
    }
    const parts = path.split('/');
    if (parts.length === 2 && parts[1] === 'wsgi.py' && PYTHON_IDENTIFIER.test(parts[0] ?? '')) {
      wsgiProjects.add(parts[0] as string);
    }
    if (parts.length === 2 && (parts[1] === 'Procfile' || parts[1] === 'manage.py')) nested.add(path);
  };

  await scanArchive(tarGzPath, {
    maxBytes: options.maxBytes ?? DEFAULT_MAX_ARCHIVE_BYTES,
    onEntry,
    signal: options.signal,
  });

  const procfileText = readManifest(collected, 'Procfile');
  const appJsonText = readManifest(collected, 'app.json');
  const appJson = appJsonText === null ? null : parseAppJson(appJsonText);
  const djangoProject = collected.has('manage.py') ? pickDjangoProject(wsgiProjects, collected.get('manage.py')) : null;

  if (procfileText !== null) {
    const procfile = parseProcfile(procfileText);
    const types = processTypes(procfile);
    if (types.length === 0) {
      throw new HangarError(
        'BAD_INPUT',
        'The Procfile declares only a release command; add a process to run, such as "web: gunicorn mysite.wsgi".',
      );
    }
    return { procfile, processTypes: types, releaseCommand: releaseCommand(procfile), appJson, framework: 'procfile', djangoProject };
  }

  if (collected.has('manage.py') && wsgiProjects.size > 1 && djangoProject === null) {
    throw new HangarError(
      'BAD_INPUT',
      `Found several Django projects with a wsgi.py (${[...wsgiProjects].sort().join(', ')}); add a Procfile with a line such as "web: gunicorn ${[...wsgiProjects].sort()[0] ?? 'mysite'}.wsgi" to pick one.`,
    );
  }
  if (djangoProject !== null) {
    const procfile: Procfile = { web: `gunicorn ${djangoProject}.wsgi --bind 0.0.0.0:$PORT` };
    return { procfile, processTypes: ['web'], releaseCommand: null, appJson, framework: 'django', djangoProject };
  }

  const hint = nested.size > 0 ? ` (found ${[...nested].sort().join(', ')}: deploy from inside that directory)` : '';
  throw new HangarError(
    'BAD_INPUT',
    `No Procfile and no Django project (manage.py + wsgi.py) found${hint}; add a Procfile with a line such as "web: gunicorn mysite.wsgi --bind 0.0.0.0:$PORT" at the root of the directory you deploy.`,
  );
}

function readManifest(collected: Map<string, Collected>, name: string): string | null {
  const file = collected.get(name);
  if (file === undefined) return null;
  if (file.type !== 'File' && file.type !== 'OldFile' && file.type !== 'ContiguousFile') {
    throw new HangarError(
      'BAD_INPUT',
      `${name} must be a regular file, not a ${file.type === 'Directory' ? 'directory' : 'link'}; replace it with the file itself.`,
    );
  }
  if (file.bytes > MAX_MANIFEST_BYTES) {
    throw new HangarError('BAD_INPUT', `${name} is larger than ${MAX_MANIFEST_BYTES / 1024} KiB; it should be a few lines.`);
  }
  return Buffer.concat(file.chunks).toString('utf8');
}

/**
 * The project whose `wsgi.py` goes with `manage.py`: the one its DJANGO_SETTINGS_MODULE names,
 * else the only candidate; null when there is none or several.
 */
function pickDjangoProject(candidates: Set<string>, managePy: Collected | undefined): string | null {
  const text = managePy === undefined ? '' : Buffer.concat(managePy.chunks).toString('utf8');
  const named = /DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([A-Za-z_][A-Za-z0-9_]*)\./.exec(text)?.[1];
  if (named !== undefined && candidates.has(named)) return named;
  if (candidates.size === 1) return [...candidates][0] ?? null;
  return null;
}
