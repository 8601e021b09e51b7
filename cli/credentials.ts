/**
 * Where the `hangar` command finds the coordinator and its token: `HANGAR_URL` + `HANGAR_TOKEN`
 * in the environment first, else the credentials file that `hangar login` writes
 * (`$XDG_CONFIG_HOME/hangar/credentials.json`, else `~/.config/hangar/credentials.json`;
 * `HANGAR_CREDENTIALS` names another path). The file is mode 0600 in a 0700 directory.
 *
 * No function here ever puts a token in an error message.
 */
import { randomUUID } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import type { ZodType } from 'zod';
import { HangarError } from '../common/errors.js';

/** Environment variables, as in `process.env` (injected so tests need not touch the real one). */
export type Env = Readonly<Record<string, string | undefined>>;

/** How to reach and authenticate to a coordinator. */
export interface Credentials {
  /** Base URL of the coordinator's HTTP API, without a trailing slash: `http://host:7080`. */
  url: string;
  /** Admin token sent as `Authorization: Bearer TOKEN`. Never printed. */
  token: string;
}

/** {@link Credentials} plus where they came from, for `hangar whoami` and error messages. */
export interface ResolvedCredentials extends Credentials {
  /** `env` when HANGAR_URL/HANGAR_TOKEN were used, `file` when the credentials file was. */
  source: 'env' | 'file';
  /** The credentials file, when `source` is `file`. */
  path?: string;
}

/** What to tell someone who has no credentials at all. */
export const LOGIN_HINT =
  'run `hangar login --url URL --token TOKEN`, or set HANGAR_URL and HANGAR_TOKEN ' +
  "(`hangar dev` and the coordinator's first start print both)";

const TOKEN_PATTERN = /^[\x21-\x7e]+$/;

/**
 * Checks a coordinator URL given by a person and returns it normalised (no trailing slash).
 * Only `http:` and `https:` are accepted; user info, query and fragment are refused so that the
 * URL can be printed safely in messages.
 */
export function parseCoordinatorUrl(input: string): string {
  // Several coordinators sharing a data dir: `http://a:7080,http://b:7080`.
  if (input.includes(',')) {
    const urls = input
      .split(',')
      .map((u) => u.trim())
      .filter((u) => u !== '');
    if (urls.length === 0)
      throw new HangarError('BAD_INPUT', `"${input}" holds no URL; give the coordinator's address, e.g. http://10.0.0.5:7080`);
    return urls.map(parseOneCoordinatorUrl).join(',');
  }
  return parseOneCoordinatorUrl(input);
}

function parseOneCoordinatorUrl(input: string): string {
  let url: URL;
  try {
    url = new URL(input);
  } catch (err) {
    throw new HangarError('BAD_INPUT', `"${input}" is not a URL; give the coordinator's address, e.g. http://10.0.0.5:7080`, {
      cause: err,
    });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new HangarError('BAD_INPUT', `The coordinator URL must start with http:// or https://, not ${url.protocol}//`);
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new HangarError(
      'BAD_INPUT',
      'The coordinator URL must not carry a user, password, query or fragment; pass the token with --token',
    );
  }
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}

/**
 * Checks a token given by a person (printable ASCII, no spaces). The message never repeats it.
 */
export function parseToken(input: string): string {
  if (!TOKEN_PATTERN.test(input)) {
    throw new HangarError(
      'BAD_INPUT',
      'The token must be non-empty printable ASCII without spaces; copy it from DATA_DIR/admin-token or from `hangar dev`',
    );
  }
  return input;
}

let credentialsFileSchema: Promise<ZodType<{ url: string; token: string }>> | undefined;

/**
 * The credentials file's schema, made on first use: zod loads only when a file is read, so
 * `hangar agent` (which shares this module with the commands) does not carry it (~6 MB of RSS).
 */
function fileSchema(): Promise<ZodType<{ url: string; token: string }>> {
  credentialsFileSchema ??= import('zod').then(({ z }) =>
    z.strictObject({
      url: z.string().refine((value) => {
        try {
          parseCoordinatorUrl(value);
          return true;
        } catch {
          return false;
        }
      }, 'must be an http(s) URL'),
      token: z.string().regex(TOKEN_PATTERN, 'must be non-empty printable ASCII'),
    }),
  );
  return credentialsFileSchema;
}

/** The credentials file's path: `HANGAR_CREDENTIALS`, else under `XDG_CONFIG_HOME`, else `~/.config`. */
export function credentialsPath(env: Env): string {
  if (env.HANGAR_CREDENTIALS) return env.HANGAR_CREDENTIALS;
  return join(configHome(env), 'hangar', 'credentials.json');
}

function configHome(env: Env): string {
  // The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
  if (env.XDG_CONFIG_HOME && isAbsolute(env.XDG_CONFIG_HOME)) return env.XDG_CONFIG_HOME;
  return join(env.HOME || homedir(), '.config');
}

/** Reads a credentials file; `null` when it does not exist. A malformed file is an error. */
export async function readCredentials(path: string): Promise<Credentials | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new HangarError('BAD_INPUT', `Cannot read the credentials file ${path}: ${(err as Error).message}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new HangarError(
      'BAD_INPUT',
      `The credentials file ${path} is not JSON; log in again with \`hangar login --url URL --token TOKEN\``,
      {
        cause: err,
      },
    );
  }
  const parsed = (await fileSchema()).safeParse(json);
  if (!parsed.success) {
    const fields = parsed.error.issues.map((issue) => `${issue.path.join('.') || '(file)'} ${issue.message}`).join('; ');
    throw new HangarError(
      'BAD_INPUT',
      `The credentials file ${path} is invalid (${fields}); log in again with \`hangar login --url URL --token TOKEN\``,
    );
  }
  return { url: parseCoordinatorUrl(parsed.data.url), token: parsed.data.token };
}

/**
 * Writes the credentials file atomically with mode 0600, creating its directory with mode 0700.
 * The directory's mode is also tightened when it already exists, unless `HANGAR_CREDENTIALS`
 * chose the path (then the directory may be shared, and is left alone).
 */
export async function writeCredentials(path: string, credentials: Credentials, options: { ownDirectory: boolean }): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (options.ownDirectory) await chmod(dir, 0o700);
  // A temporary file then a rename: an existing file keeps its mode on overwrite, a new one does not,
  // and a crash never leaves half a file.
  const temporary = `${path}.${randomUUID()}.tmp`;
  try {
    await writeFile(temporary, `${JSON.stringify({ url: credentials.url, token: credentials.token }, null, 2)}\n`, {
      mode: 0o600,
      flag: 'wx',
    });
    await chmod(temporary, 0o600);
    await rename(temporary, path);
  } catch (err) {
    await rm(temporary, { force: true });
    throw new HangarError('BAD_INPUT', `Cannot write the credentials file ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** Deletes the credentials file; `false` when there was none. */
export async function removeCredentials(path: string): Promise<boolean> {
  try {
    await rm(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new HangarError('BAD_INPUT', `Cannot remove the credentials file ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The credentials to use: HANGAR_URL + HANGAR_TOKEN when set (both, or neither: half of them would
 * send one server's token to another), else the credentials file. Throws `UNAUTHORIZED` with a
 * sentence saying how to log in when there are none.
 */
export async function resolveCredentials(env: Env): Promise<ResolvedCredentials> {
  const url = env.HANGAR_URL;
  const token = env.HANGAR_TOKEN;
  if (url || token) {
    if (!url || !token) {
      const [set, unset] = url ? ['HANGAR_URL', 'HANGAR_TOKEN'] : ['HANGAR_TOKEN', 'HANGAR_URL'];
      throw new HangarError(
        'BAD_INPUT',
        `${set} is set but ${unset} is not; set both, or unset ${set} to use the credentials from \`hangar login\``,
      );
    }
    return {
      url: withSource('HANGAR_URL', () => parseCoordinatorUrl(url)),
      token: withSource('HANGAR_TOKEN', () => parseToken(token)),
      source: 'env',
    };
  }
  const path = credentialsPath(env);
  const stored = await readCredentials(path);
  if (!stored) throw new HangarError('UNAUTHORIZED', `Not logged in to a Hangar coordinator: ${LOGIN_HINT}.`);
  return { ...stored, source: 'file', path };
}

function withSource(variable: string, parse: () => string): string {
  try {
    return parse();
  } catch (err) {
    throw new HangarError('BAD_INPUT', `${variable}: ${(err as Error).message}`, { cause: err });
  }
}
