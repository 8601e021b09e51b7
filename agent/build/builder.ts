/**
 * Builds a release on an agent, Heroku style: unpack the artifact into a slug directory, then
 * give it a virtualenv (`python -m venv --system-site-packages`, `pip install -r
 * requirements.txt`). Virtualenvs are keyed by interpreter and requirements, so a release whose
 * requirements did not change reuses the previous one. Every step runs as a child process in its
 * own process group and streams its output line by line.
 */

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, lchown, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { HangarError, describeError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { ownedDir, chownTree, type RunAs } from '../workloads/run-as.js';
import { choosePython, pythonDirs } from './python-runtime.js';
import { checkPythonSyntax } from './python-syntax-check.js';
import { unpackSlug } from './slug-unpack.js';

/** Lines of output kept to explain a failed step. */
const TAIL_LINES = 20;
/** Grace period between SIGTERM and SIGKILL when a build is aborted, in ms. */
const KILL_GRACE_MS = 3000;
/** How often a build waiting for another one's lock looks again, in ms. */
const LOCK_POLL_MS = 200;
/** Longest wait for another build of the same virtualenv, in ms. */
const LOCK_WAIT_MS = 30 * 60 * 1000;
const INDENT = '       ';

/** Options of {@link buildRelease}. */
export interface BuildOptions {
  /**
   * The agent's data directory; slugs go to `slugs/<app>/<sha256>/`, virtualenvs to
   * `venvs/<app>/<key>/` (without `app`: `slugs/<sha256>/`, `venvs/<key>/`).
   */
  dataDir: string;
  /** The app being built: its slugs and virtualenvs are its own, never shared with another app. */
  app?: string;
  /** The release's artifact: a gzipped tar of the app's source. */
  artifactPath: string;
  /** SHA-256 of the artifact file (lowercase hex); checked before unpacking. */
  sha256: string;
  /**
   * Python interpreter for the virtualenv when the app asks for no version (runtime.txt,
   * .python-version; see python-runtime.ts). Default `/usr/bin/python3` when it exists, else `python3`.
   */
  python?: string;
  /** Folders searched for `python3.Y` when the app asks for a version. Default: PATH's, /usr/local/bin, /usr/bin. */
  pythonDirs?: readonly string[];
  /** Receives every line of build output as it happens (step headers on `stdout`). */
  onOutput?: (line: string, stream: 'stdout' | 'stderr') => void;
  logger: Logger;
  /** Aborts the build: the running step's process group is killed and nothing partial is kept. */
  signal?: AbortSignal;
  /**
   * Extra environment for build steps (e.g. `PIP_INDEX_URL`, `PIP_RETRIES`), over a default of
   * PATH, HOME, locale, proxy and `PIP_*` variables of this process. Secrets of the agent are
   * never passed to build steps.
   */
  env?: Record<string, string>;
  /** Bound of the artifact's uncompressed size. Default 512 MiB. */
  maxBytes?: number;
  /**
   * Shares concurrent builds of the same virtualenv within this process (one per agent). Without
   * it, concurrent builds still never corrupt each other: they wait on a lock directory instead.
   */
  venvBuilds?: VenvBuilds;
  /**
   * Unprivileged user of the app (when the agent is root): build steps run as it and the slug and
   * virtualenv belong to it. Default: this process's user.
   */
  user?: RunAs | null;
}

/** A built release, ready to run. */
export interface BuildResult {
  /** The unpacked app: working directory of every process. */
  appDir: string;
  /** The virtualenv the app's processes run in. */
  venvDir: string;
  /** True when the virtualenv was reused rather than created by this build. */
  cached: boolean;
  /** Environment to add to every process: PATH with the venv's bin first, VIRTUAL_ENV, PYTHONUNBUFFERED=1. */
  env: Record<string, string>;
}

/** How one virtualenv build ended, as shared between the builds waiting for it. */
interface VenvOutcome {
  cached: boolean;
}

/**
 * In-flight virtualenv builds of one process, by key: a second build of the same key joins the
 * first one's promise instead of starting its own. Make one per agent and pass it to every
 * {@link buildRelease} call.
 */
export class VenvBuilds {
  readonly #inflight = new Map<string, Promise<VenvOutcome>>();

  /** Runs `build` for `key` unless one is already running; `joined` tells which happened. */
  run(key: string, build: () => Promise<VenvOutcome>): { promise: Promise<VenvOutcome>; joined: boolean } {
    const existing = this.#inflight.get(key);
    if (existing !== undefined) return { promise: existing, joined: true };
    const promise = build().finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, promise);
    return { promise, joined: false };
  }

  /** Number of builds running now. */
  get size(): number {
    return this.#inflight.size;
  }
}

/** The interpreter used when {@link BuildOptions.python} is not set. */
export function defaultPython(): string {
  return existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
}

/**
 * Builds a release: unpacks its artifact (reusing an earlier unpack) and creates or reuses its
 * virtualenv.
 *
 * @throws HangarError `BUILD_FAILED` when a step fails (the message ends with the last lines of
 *   its output) or the build is aborted; `BAD_INPUT` / `PAYLOAD_TOO_LARGE` for an unsafe or
 *   oversized artifact; `ARTIFACT_NOT_FOUND` when the artifact file is missing.
 */
export async function buildRelease(options: BuildOptions): Promise<BuildResult> {
  const { dataDir, sha256, signal } = options;
  const logger = options.logger.child({ component: 'builder', artifact: sha256.slice(0, 12) });
  const emit = (line: string, stream: 'stdout' | 'stderr' = 'stdout'): void => options.onOutput?.(line, stream);
  const user = options.user ?? null;
  const baseEnv = buildEnv({ ...(user ? { HOME: user.home, USER: user.name, LOGNAME: user.name } : {}), ...options.env });
  const started = Date.now();

  // DATA/slugs and DATA/venvs: traversable, not listable. DATA/slugs/APP: root's with the app's
  // group, so no other app enters it and the app cannot swap what the agent unpacks there.
  const slugsDir = options.app ? join(dataDir, 'slugs', options.app) : join(dataDir, 'slugs');
  const venvsDir = options.app ? join(dataDir, 'venvs', options.app) : join(dataDir, 'venvs');
  if (user) {
    for (const dir of [join(dataDir, 'slugs'), join(dataDir, 'venvs')]) await ownedDir(dir, 0o711, null, 'group');
    for (const dir of [slugsDir, venvsDir]) await ownedDir(dir, options.app ? 0o750 : 0o711, options.app ? user : null, 'group');
  }

  emit('-----> Unpacking');
  const slug = await unpackSlug({
    artifactPath: options.artifactPath,
    sha256,
    slugsDir,
    maxBytes: options.maxBytes,
    signal,
  });
  if (user && !slug.reused) {
    await chownTree(slug.appDir, user);
    if (options.app) await chmod(slug.appDir, 0o700);
  }
  emit(
    slug.reused
      ? `${INDENT}Using the slug unpacked by an earlier build`
      : `${INDENT}${slug.entries} entries, ${Math.ceil(slug.totalBytes / 1024)} KiB`,
  );

  const choice = await choosePython({
    appDir: slug.appDir,
    fallback: options.python ?? defaultPython(),
    dirs: options.pythonDirs ?? pythonDirs(baseEnv.PATH),
    versionOf: (p) => pythonVersion(p, baseEnv, user, signal),
  });
  const { python, version } = choice;
  emit(
    choice.request
      ? `-----> Python ${version} (${python}), as ${choice.request.file} asks (${choice.request.asked})`
      : `-----> Python ${version} (${python}, this server's default; ask for another with .python-version)`,
  );
  if (choice.warning) emit(`${INDENT}warning: ${choice.warning}`, 'stderr');
  const requirements = await readOptional(join(slug.appDir, 'requirements.txt'));
  const key = createHash('sha256')
    .update(`${python}\0${version}\0${requirements ?? ''}`)
    .digest('hex')
    .slice(0, 32);
  const venvDir = join(venvsDir, key);
  const step: StepContext = { env: baseEnv, cwd: slug.appDir, signal, emit, tail: [], user };

  let cached: boolean;
  if (await isFile(join(venvDir, '.complete'))) {
    emit('-----> Using cached virtualenv');
    cached = true;
  } else {
    const build = (): Promise<VenvOutcome> => createVenv({ venvDir, python, version, requirements: requirements !== null, step, logger });
    const shared = options.venvBuilds?.run(venvDir, build);
    if (shared?.joined === true) {
      emit('-----> Waiting for a concurrent build of the same virtualenv');
      await shared.promise;
      emit('-----> Using cached virtualenv');
      cached = true;
    } else {
      cached = (await (shared?.promise ?? build())).cached;
    }
  }

  // A syntax error would only show once instances crash-loop on it: fail the build instead.
  emit('-----> Checking that the Python source compiles');
  await checkPythonSyntax({ appDir: slug.appDir, python: join(venvDir, 'bin', 'python'), env: baseEnv, user, signal });

  logger.info({ venv: key, cached, ms: Date.now() - started }, 'build finished');
  return {
    appDir: slug.appDir,
    venvDir,
    cached,
    env: {
      PATH: `${join(venvDir, 'bin')}:${baseEnv.PATH ?? '/usr/local/bin:/usr/bin:/bin'}`,
      VIRTUAL_ENV: venvDir,
      PYTHONUNBUFFERED: '1',
      ...(user ? { HOME: user.home } : {}),
    },
  };
}

interface CreateVenvArgs {
  venvDir: string;
  python: string;
  version: string;
  requirements: boolean;
  step: StepContext;
  logger: Logger;
}

/** Creates the virtualenv under a lock directory; reports `cached` when another build made it. */
async function createVenv(args: CreateVenvArgs): Promise<VenvOutcome> {
  const { venvDir, step } = args;
  const lock = `${venvDir}.lock`;
  await mkdir(join(venvDir, '..'), { recursive: true });
  if (!(await acquireLock(lock, venvDir, step))) {
    step.emit('-----> Using cached virtualenv');
    return { cached: true };
  }
  try {
    if (await isFile(join(venvDir, '.complete'))) {
      step.emit('-----> Using cached virtualenv');
      return { cached: true };
    }
    await rm(venvDir, { recursive: true, force: true });
    try {
      await populateVenv(args);
    } catch (err) {
      await rm(venvDir, { recursive: true, force: true });
      if (err instanceof HangarError) throw err;
      throw new HangarError('BUILD_FAILED', `The build failed: ${describeError(err)}.`, { cause: err });
    }
    return { cached: false };
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}

async function populateVenv({ venvDir, python, version, requirements, step, logger }: CreateVenvArgs): Promise<void> {
  const bin = join(venvDir, 'bin');
  const venvPython = join(bin, 'python');
  const venvEnv = { ...step.env, VIRTUAL_ENV: venvDir, PATH: `${bin}:${step.env.PATH ?? '/usr/bin:/bin'}` };

  step.emit(`-----> Creating virtualenv (python ${version})`);
  // Made here and given to the app's user: its parent is not the app's to write in.
  await ownedDir(venvDir, 0o700, step.user, 'user');
  await runStep('create the virtualenv', python, ['-m', 'venv', '--system-site-packages', venvDir], step);

  if (requirements) {
    step.emit('-----> Installing requirements');
    await runStep(
      'install requirements.txt',
      venvPython,
      ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '-r', 'requirements.txt'],
      { ...step, env: venvEnv },
    );
  }

  // Debian's gunicorn satisfies the requirement through system site packages but installs no
  // script in the venv; without one, "gunicorn" in a Procfile would run outside the venv.
  const gunicorn = join(bin, 'gunicorn');
  if (!existsSync(gunicorn)) {
    const importable = await runStep('check gunicorn', venvPython, ['-c', 'import gunicorn'], { ...step, env: venvEnv, quiet: true })
      .then(() => true)
      .catch((err: unknown) => {
        if (step.signal?.aborted) throw err;
        return false;
      });
    if (importable) {
      // The virtualenv is the app's: create, never follow a link it may have left.
      // Mode from the create itself and lchown: nothing here follows a link swapped in meanwhile.
      await writeFile(gunicorn, `#!/bin/sh\nexec "${venvPython}" -m gunicorn "$@"\n`, { flag: 'wx', mode: 0o755 });
      if (step.user) await lchown(gunicorn, step.user.uid, step.user.gid);
      step.emit(`${INDENT}Added bin/gunicorn (runs python -m gunicorn in the virtualenv)`);
    }
  }

  const complete = join(venvDir, '.complete');
  await rm(complete, { force: true });
  await writeFile(complete, `${JSON.stringify({ python, version, createdAt: new Date().toISOString() })}\n`, { flag: 'wx', mode: 0o644 });
  logger.debug({ venvDir }, 'virtualenv created');
}

/**
 * Takes the lock directory of a virtualenv. Returns false when, while waiting, another build
 * completed it. A lock whose owner process is gone is taken over.
 */
async function acquireLock(lock: string, venvDir: string, step: StepContext): Promise<boolean> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  let announced = false;
  for (;;) {
    try {
      await mkdir(lock);
      await writeFile(join(lock, 'owner'), `${process.pid}\n`);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (await isFile(join(venvDir, '.complete'))) return false;
    const owner = Number.parseInt((await readOptional(join(lock, 'owner'))) ?? '', 10);
    if (Number.isInteger(owner) && !isAlive(owner)) {
      await rm(lock, { recursive: true, force: true });
      continue;
    }
    if (!announced) {
      step.emit('-----> Waiting for a concurrent build of the same virtualenv');
      announced = true;
    }
    if (Date.now() > deadline) {
      throw new HangarError('BUILD_FAILED', `Timed out waiting for another build of ${venvDir}; remove ${lock} if no build is running.`);
    }
    try {
      await delay(LOCK_POLL_MS, undefined, { signal: step.signal });
    } catch (err) {
      throw new HangarError('BUILD_FAILED', 'The build was aborted.', { cause: err });
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface StepContext {
  env: Record<string, string>;
  cwd: string;
  signal: AbortSignal | undefined;
  emit: (line: string, stream?: 'stdout' | 'stderr') => void;
  /** Last lines of output, for the error message of a failed step. */
  tail: string[];
  /** Keep the output out of the build log (still kept in `tail`). */
  quiet?: boolean;
  /** Run as this user instead of this process's. */
  user: RunAs | null;
}

/**
 * Runs one build step in its own process group, streaming its output. Resolves on exit code 0.
 *
 * @throws HangarError `BUILD_FAILED` on a non-zero exit, a failure to start, or an abort.
 */
function runStep(what: string, command: string, args: string[], ctx: StepContext): Promise<void> {
  const { signal } = ctx;
  if (signal?.aborted) {
    return Promise.reject(new HangarError('BUILD_FAILED', 'The build was aborted.', { cause: signal.reason }));
  }
  return new Promise<void>((resolve, reject) => {
    ctx.tail.length = 0;
    const child = spawn(command, args, {
      cwd: ctx.cwd,
      env: ctx.env,
      detached: true,
      ...(ctx.user ? { uid: ctx.user.uid, gid: ctx.user.gid } : {}),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let killTimer: NodeJS.Timeout | undefined;
    const killGroup = (sig: NodeJS.Signals): void => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, sig);
      } catch {
        // The group is already gone.
      }
    };
    const onAbort = (): void => {
      killGroup('SIGTERM');
      killTimer = setTimeout(() => killGroup('SIGKILL'), KILL_GRACE_MS);
      killTimer.unref();
    };
    signal?.addEventListener('abort', onAbort, { once: true });

    let open = 2;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let startError: Error | undefined;
    const finish = (): void => {
      if (open > 0 || (exit === undefined && startError === undefined)) return;
      signal?.removeEventListener('abort', onAbort);
      if (killTimer !== undefined) clearTimeout(killTimer);
      if (signal?.aborted) {
        reject(new HangarError('BUILD_FAILED', 'The build was aborted.', { cause: signal.reason }));
      } else if (startError !== undefined) {
        reject(new HangarError('BUILD_FAILED', `Could not ${what}: cannot run ${command} (${startError.message}).`, { cause: startError }));
      } else if (exit?.code !== 0) {
        const status = exit?.signal ? `was killed by ${exit.signal}` : `exited with code ${String(exit?.code)}`;
        const tail = ctx.tail.length > 0 ? `; last output:\n${ctx.tail.join('\n')}` : '';
        reject(new HangarError('BUILD_FAILED', `Could not ${what}: ${command} ${status}${tail}`));
      } else {
        resolve();
      }
    };
    for (const [stream, name] of [
      [child.stdout, 'stdout'],
      [child.stderr, 'stderr'],
    ] as const) {
      const lines = createInterface({ input: stream, crlfDelay: Infinity });
      lines.on('line', (line) => {
        ctx.tail.push(line);
        if (ctx.tail.length > TAIL_LINES) ctx.tail.shift();
        if (ctx.quiet !== true) ctx.emit(`${INDENT}${line}`, name);
      });
      lines.on('close', () => {
        open -= 1;
        finish();
      });
    }
    child.on('error', (err) => {
      startError = err;
      finish();
    });
    child.on('exit', (code, sig) => {
      exit = { code, signal: sig };
      finish();
    });
  });
}

/**
 * The interpreter's version (`3.11.2`); fails the build when it cannot be run. Run as the app's
 * user outside the slug: Python puts its working directory on sys.path.
 */
async function pythonVersion(
  python: string,
  env: Record<string, string>,
  user: RunAs | null,
  signal: AbortSignal | undefined,
): Promise<string> {
  const ctx: StepContext = { env, cwd: '/', signal, emit: () => undefined, tail: [], quiet: true, user };
  let version = '';
  await runStep('find the Python version', python, ['-c', 'import sys; print("%d.%d.%d" % sys.version_info[:3])'], {
    ...ctx,
    emit: (line) => {
      version = line.trim();
    },
    quiet: false,
  });
  if (!/^\d+\.\d+\.\d+$/.test(version)) {
    throw new HangarError('BUILD_FAILED', `${python} did not report a Python version; set the agent's python to a Python 3 interpreter.`);
  }
  return version;
}

/** Environment of build steps: a few harmless variables of this process plus the caller's. */
function buildEnv(extra: Record<string, string> | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  const passed =
    /^(PATH|HOME|USER|LOGNAME|LANG|LC_[A-Z]+|TZ|TMPDIR|SSL_CERT_FILE|SSL_CERT_DIR|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY|PIP_[A-Z0-9_]+)$/;
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && passed.test(name)) env[name] = value;
  }
  env.PATH ??= '/usr/local/bin:/usr/bin:/bin';
  env.LANG ??= 'C.UTF-8';
  env.PYTHONUNBUFFERED = '1';
  env.PIP_DISABLE_PIP_VERSION_CHECK = '1';
  env.PIP_NO_INPUT = '1';
  return { ...env, ...extra };
}

async function readOptional(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EISDIR' || code === 'ENOTDIR') return null;
    throw err;
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
