/**
 * The gzipped tar of an app's source that `hangar deploy` uploads. Version-control data, caches
 * and local virtualenvs are left out, and so is whatever a `.hangarignore` file at the top of the
 * source lists (one glob a line, like `.gitignore`).
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../common/errors.js';

/** Left out of every archive, wherever they are in the tree. */
export const DEFAULT_IGNORES: readonly string[] = ['.git', '__pycache__', '*.pyc', 'node_modules', '.venv', 'venv'];

/** The name of the optional ignore file at the top of the source. */
export const IGNORE_FILE = '.hangarignore';

/** One line of an ignore file, compiled. */
export interface IgnoreRule {
  /** The line as written. */
  pattern: string;
  /** `!pattern`: puts back what an earlier rule left out. */
  negate: boolean;
  /** `pattern/`: matches directories only. */
  directoryOnly: boolean;
  /** Matched against the whole relative path (pattern has a `/`) or against each name. */
  anchored: boolean;
  regex: RegExp;
}

/** What {@link createSourceArchive} made. */
export interface SourceArchive {
  /** The `.tar.gz` bytes. */
  data: Buffer;
  /** Relative paths of the files and links in it (directories not listed), sorted. */
  files: string[];
}

/**
 * Compiles ignore-file text. Supported, as in `.gitignore`: blank lines and `#` comments, `*`,
 * `?` and `**`, a trailing `/` for directories only, a leading or inner `/` to anchor the pattern
 * at the top of the source, and `!` to put back a path an earlier line left out.
 */
export function parseIgnoreRules(text: string): IgnoreRule[] {
  const rules: IgnoreRule[] = [];
  for (const raw of text.split(/\r?\n/)) {
    let line = raw.trimEnd();
    if (line === '' || line.startsWith('#')) continue;
    const pattern = line;
    const negate = line.startsWith('!');
    if (negate) line = line.slice(1);
    const directoryOnly = line.endsWith('/');
    line = line.replace(/\/+$/, '');
    const anchored = line.includes('/');
    line = line.replace(/^\/+/, '');
    if (line === '') continue;
    rules.push({ pattern, negate, directoryOnly, anchored, regex: globToRegex(line) });
  }
  return rules;
}

function globToRegex(glob: string): RegExp {
  let source = '';
  for (let i = 0; i < glob.length; i++) {
    const char = glob[i] ?? '';
    if (char === '*') {
      if (glob[i + 1] === '*') {
        // `**/` matches zero or more directories; a lone `**` anything.
        if (glob[i + 2] === '/') {
          source += '(?:.*/)?';
          i += 2;
        } else {
          source += '.*';
          i += 1;
        }
      } else {
        source += '[^/]*';
      }
    } else if (char === '?') {
      source += '[^/]';
    } else {
      source += char.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
  }
  return new RegExp(`^${source}$`);
}

/**
 * Whether `path` (relative to the top of the source, `/`-separated) is left out. The last
 * matching rule decides, as in `.gitignore`.
 */
export function isIgnored(path: string, isDirectory: boolean, rules: readonly IgnoreRule[]): boolean {
  const name = path.slice(path.lastIndexOf('/') + 1);
  let ignored = false;
  for (const rule of rules) {
    if (rule.directoryOnly && !isDirectory) continue;
    if (rule.regex.test(rule.anchored ? path : name)) ignored = !rule.negate;
  }
  return ignored;
}

/**
 * Packs directory `dir` into a gzipped tar with paths relative to it (`manage.py`,
 * `shop/wsgi.py`), leaving out {@link DEFAULT_IGNORES} and what `.hangarignore` lists. Owners
 * are not recorded. Throws `BAD_INPUT` when `dir` is not a directory or nothing is left to pack.
 */
export async function createSourceArchive(dir: string): Promise<SourceArchive> {
  let info;
  try {
    info = await stat(dir);
  } catch (err) {
    throw new HangarError(
      'BAD_INPUT',
      `Cannot read ${dir}: ${(err as Error).message}; pass your app's folder: \`hangar deploy PATH -a APP\``,
      {
        cause: err,
      },
    );
  }
  if (!info.isDirectory()) {
    throw new HangarError('BAD_INPUT', `${dir} is not a directory; pass your app's folder: \`hangar deploy PATH -a APP\``);
  }

  const rules = [...parseIgnoreRules(DEFAULT_IGNORES.join('\n')), ...(await readIgnoreFile(dir))];
  const top = (await readdir(dir, { withFileTypes: true }))
    .filter((entry) => !isIgnored(entry.name, entry.isDirectory(), rules))
    .map((entry) => entry.name)
    .sort();

  const nothing = (): HangarError =>
    new HangarError('BAD_INPUT', `${dir} has no files to deploy (after ${IGNORE_FILE} and the default ignores); is it your app's folder?`);
  if (top.length === 0) throw nothing();

  const files: string[] = [];
  // Loaded here, not at the top: every `hangar` command (the agent too) imports this module.
  const { create } = await import('tar');
  const pack = create(
    {
      gzip: true,
      cwd: dir,
      portable: true,
      filter: (path, entry) => {
        const relative = path.replace(/^\.\//, '');
        const isDirectory = 'isDirectory' in entry && typeof entry.isDirectory === 'function' ? entry.isDirectory() : false;
        if (isIgnored(relative, isDirectory, rules)) return false;
        if (!isDirectory) files.push(relative);
        return true;
      },
    },
    top,
  );
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk);

  if (files.length === 0) throw nothing();
  return { data: Buffer.concat(chunks), files: files.sort() };
}

async function readIgnoreFile(dir: string): Promise<IgnoreRule[]> {
  try {
    return parseIgnoreRules(await readFile(join(dir, IGNORE_FILE), 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new HangarError('BAD_INPUT', `Cannot read ${dir}/${IGNORE_FILE}: ${(err as Error).message}`, { cause: err });
  }
}
