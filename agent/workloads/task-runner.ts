import { spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { HangarError, describeError, isHangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { Task__Output } from '../../proto/loader.js';
import type { RunAs } from './run-as.js';
import type { BuildResult } from '../build/builder.js';
import { buildSlug, type SlugBuildDeps } from '../build/slug-build.js';
import { markStaticDone, runDjangoBuild } from '../build/django-build.js';

/** One line of task output as it happens. */
export interface TaskLine {
  taskId: string;
  source: 'build' | 'release';
  stream: 'stdout' | 'stderr';
  line: string;
  ts: number;
}

/** The end of a task. */
export interface TaskOutcome {
  taskId: string;
  /** The task's phase (`''`: build and release phase; `postdeploy`). */
  phase: string;
  ok: boolean;
  error: string;
  errorCode: string;
}

/** Options of {@link TaskRunner}. */
export interface TaskRunnerOptions extends SlugBuildDeps {
  /** Where finished tasks' outcomes are remembered, so a task runs once even across restarts. */
  dir: string;
  /** Longest a release command may run, ms. Default 30 minutes. */
  releaseTimeoutMs?: number;
  onLine: (line: TaskLine) => void;
  onOutcome: (outcome: TaskOutcome) => void;
  logger: Logger;
}

/**
 * Runs the one-shot tasks of desired state: fetch and build a release, then its release phase
 * (app.json `scripts.dokku.predeploy`, then Procfile `release:`), streaming every line; or, once
 * the release is live (phase `postdeploy`), its app.json postdeploy scripts. Each task id and
 * phase runs once; its outcome is kept on disk and sent again whenever the coordinator still
 * lists the task (e.g. it restarted meanwhile).
 */
export class TaskRunner {
  readonly #o: TaskRunnerOptions;
  readonly #logger: Logger;
  readonly #running = new Map<string, AbortController>();

  constructor(options: TaskRunnerOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'task-runner' });
  }

  /** Starts the tasks not yet run and re-reports the finished ones. */
  apply(tasks: readonly Task__Output[]): void {
    for (const task of tasks) {
      const key = `${task.id}:${task.phase}`;
      if (this.#running.has(key)) continue;
      const controller = new AbortController();
      this.#running.set(key, controller);
      this.#runOnce(task, controller.signal)
        .then((outcome) => this.#o.onOutcome(outcome))
        .catch((err: unknown) => this.#logger.error({ err, task: task.id }, 'task bookkeeping failed'))
        .finally(() => this.#running.delete(key));
    }
  }

  /** Aborts running tasks (their child processes are killed). */
  close(): void {
    for (const controller of this.#running.values()) controller.abort();
  }

  async #runOnce(task: Task__Output, signal: AbortSignal): Promise<TaskOutcome> {
    if (!/^[0-9a-f-]{36}$/.test(task.id) || (task.phase !== '' && task.phase !== 'postdeploy')) {
      return { taskId: task.id, phase: task.phase, ok: false, error: 'bad task id or phase', errorCode: 'BAD_INPUT' };
    }
    const record = join(this.#o.dir, task.phase ? `${task.id}.${task.phase}.json` : `${task.id}.json`);
    try {
      return JSON.parse(await readFile(record, 'utf8')) as TaskOutcome;
    } catch {
      // Not run yet.
    }
    const outcome = { ...(await this.#run(task, signal)), phase: task.phase };
    if (!signal.aborted) {
      await mkdir(this.#o.dir, { recursive: true });
      await writeFile(record, JSON.stringify(outcome));
    }
    return outcome;
  }

  async #run(task: Task__Output, signal: AbortSignal): Promise<Omit<TaskOutcome, 'phase'>> {
    const emit = (source: TaskLine['source'], stream: TaskLine['stream'], line: string) =>
      this.#o.onLine({ taskId: task.id, source, stream, line, ts: Date.now() });
    const postdeploy = task.phase === 'postdeploy';
    let build: BuildResult;
    let user: RunAs | null = null;
    try {
      if (!postdeploy) emit('build', 'stdout', `-----> Fetching the source (${task.artifactSha256.slice(0, 12)})`);
      ({ build, user } = await buildSlug(this.#o, task.app, task.artifactSha256, this.#logger, {
        // After the rollout the build is the one this agent made (cached): its lines were shown.
        onOutput: (line, stream) => (postdeploy ? undefined : emit('build', stream, line)),
        signal,
      }));
    } catch (err) {
      const message = describeError(err);
      emit('build', 'stderr', `-----> Build failed: ${message}`);
      return {
        taskId: task.id,
        ok: false,
        error: `Build failed: ${message}`,
        errorCode: postdeploy ? 'POSTDEPLOY_FAILED' : 'BUILD_FAILED',
      };
    }
    if (postdeploy) return this.#runPostdeploy(task, build, user, signal, (stream, line) => emit('release', stream, line));
    // Django: deploy checks (warnings only) and collectstatic, with the release's config vars.
    try {
      const django = await runDjangoBuild({
        appDir: build.appDir,
        env: { ...task.env, ...build.env },
        mode: 'checks',
        secrets: Object.entries(task.env)
          .filter(([k]) => !k.startsWith('HANGAR_'))
          .map(([, v]) => v),
        emit: (line, stream) => emit('build', stream, line),
        signal,
        user,
      });
      if (django.fatal !== null) {
        const error = `Build failed: the app cannot be imported, so nothing was started: ${django.fatal}. Fix it and deploy again.`;
        emit('build', 'stderr', `-----> ${error}`);
        return { taskId: task.id, ok: false, error, errorCode: 'BUILD_FAILED' };
      }
      // Instances of this release on this agent need not run collectstatic again.
      if (django.django && !django.staticFailed) await markStaticDone(build.appDir, task.env);
    } catch (err) {
      emit('build', 'stderr', `       warning: the Django checks did not run: ${describeError(err)}`);
    }
    if (signal.aborted) return { taskId: task.id, ok: false, error: 'The build was aborted.', errorCode: 'BUILD_FAILED' };
    const releaseLine = (stream: TaskLine['stream'], line: string) => emit('release', stream, line);
    if (task.predeployCommand) {
      emit('release', 'stdout', `-----> Running predeploy (app.json scripts.dokku.predeploy): ${task.predeployCommand}`);
      try {
        await this.#runCommand(task.predeployCommand, task, build, user, signal, releaseLine);
        emit('release', 'stdout', '-----> Predeploy succeeded');
      } catch (err) {
        const error = `The predeploy script (app.json scripts.dokku.predeploy) ${describeError(err)}; nothing was started or switched. Fix it and deploy again.`;
        emit('release', 'stderr', `-----> ${error}`);
        return { taskId: task.id, ok: false, error, errorCode: 'RELEASE_PHASE_FAILED' };
      }
    }
    if (!task.releaseCommand) {
      return { taskId: task.id, ok: true, error: '', errorCode: '' };
    }
    emit('release', 'stdout', `-----> Running release command: ${task.releaseCommand}`);
    try {
      await this.#runCommand(task.releaseCommand, task, build, user, signal, releaseLine).catch((err: unknown) => {
        throw new HangarError('RELEASE_PHASE_FAILED', `The release command ${describeError(err)}; nothing was changed.`, { cause: err });
      });
      emit('release', 'stdout', '-----> Release command succeeded');
      return { taskId: task.id, ok: true, error: '', errorCode: '' };
    } catch (err) {
      const message = describeError(err);
      emit('release', 'stderr', `-----> ${message}`);
      return { taskId: task.id, ok: false, error: message, errorCode: isHangarError(err) ? err.code : 'RELEASE_PHASE_FAILED' };
    }
  }

  /**
   * The app.json postdeploy scripts, in order, once the release is live; the first that fails
   * ends the task (the release stays live: the coordinator says so).
   */
  async #runPostdeploy(
    task: Task__Output,
    build: BuildResult,
    user: RunAs | null,
    signal: AbortSignal,
    onLine: (stream: 'stdout' | 'stderr', line: string) => void,
  ): Promise<Omit<TaskOutcome, 'phase'>> {
    for (const script of task.postdeployScripts) {
      onLine('stdout', `-----> Running postdeploy (app.json ${script.name}): ${script.command}`);
      try {
        await this.#runCommand(script.command, task, build, user, signal, onLine);
        onLine('stdout', `-----> Postdeploy (${script.name}) succeeded`);
      } catch (err) {
        const error = `The postdeploy script (app.json ${script.name}) ${describeError(err)}`;
        onLine('stderr', `-----> ${error}`);
        return { taskId: task.id, ok: false, error, errorCode: 'POSTDEPLOY_FAILED' };
      }
    }
    return { taskId: task.id, ok: true, error: '', errorCode: '' };
  }

  /**
   * Runs a release-phase command (`/bin/sh -c`) in the slug, with the release's environment, as
   * the app's user, in its own process group (killed when it ends, on abort or after the timeout).
   * Rejects with what happened (`failed (exit code 1)`).
   */
  #runCommand(
    command: string,
    task: Task__Output,
    build: BuildResult,
    user: RunAs | null,
    signal: AbortSignal,
    onLine: (stream: 'stdout' | 'stderr', line: string) => void,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      // No `exec`: a command such as `a && b` runs whole; the group is killed at the end anyway.
      const child = spawn('/bin/sh', ['-c', command], {
        cwd: build.appDir,
        env: { ...task.env, ...build.env },
        detached: true,
        ...(user ? { uid: user.uid, gid: user.gid } : {}),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const killGroup = () => {
        if (child.pid === undefined) return;
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      };
      const timeoutMs = this.#o.releaseTimeoutMs ?? 30 * 60_000;
      const timer = setTimeout(killGroup, timeoutMs);
      const onAbort = () => killGroup();
      signal.addEventListener('abort', onAbort, { once: true });
      createInterface({ input: child.stdout }).on('line', (l) => onLine('stdout', l));
      createInterface({ input: child.stderr }).on('line', (l) => onLine('stderr', l));
      child.on('error', (err) => {
        clearTimeout(timer);
        reject(new HangarError('RELEASE_PHASE_FAILED', `could not start: ${err.message}`, { cause: err }));
      });
      child.on('close', (code, sig) => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        // Nothing the release command started may outlive it.
        killGroup();
        if (code === 0) resolve();
        else {
          reject(new HangarError('RELEASE_PHASE_FAILED', `failed (${sig ? `killed by ${sig}` : `exit code ${code}`})`));
        }
      });
    });
  }
}
