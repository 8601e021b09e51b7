/**
 * Runs a one-shot helper program of an add-on (initdb, psql, pg_dump, …) and collects its output:
 * no shell, arguments as a list, secrets only in the environment (never in argv, which `ps` shows).
 */
import { spawn } from 'node:child_process';
import { HangarError } from '../../common/errors.js';
import type { RunAs } from '../workloads/run-as.js';

/** Options of {@link runCommand}. */
export interface RunCommandOptions {
  /** Extra environment (merged over a minimal PATH/LANG environment). */
  env?: Record<string, string>;
  cwd?: string;
  /** Run as this user (when the agent is root). Default: the agent's user. */
  runAs?: RunAs | null;
  /** Kill it after this long, ms. Default 60 000. */
  timeoutMs?: number;
  /** Aborts it (SIGKILL). */
  signal?: AbortSignal;
}

/** What a finished command left. */
export interface CommandResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Keeps the last part of a long output: error messages are at the end. */
const MAX_OUTPUT = 64 * 1024;

/** Runs `file args…`; resolves with its exit status and output (it does not throw on a non-zero exit). */
export function runCommand(file: string, args: readonly string[], options: RunCommandOptions = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd ?? '/',
      env: { PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(options.runAs ? { uid: options.runAs.uid, gid: options.runAs.gid } : {}),
    });
    let stdout = '';
    let stderr = '';
    const keep = (text: string, chunk: Buffer) => (text + chunk.toString()).slice(-MAX_OUTPUT);
    child.stdout.on('data', (chunk: Buffer) => (stdout = keep(stdout, chunk)));
    child.stderr.on('data', (chunk: Buffer) => (stderr = keep(stderr, chunk)));
    const kill = () => child.kill('SIGKILL');
    const timer = setTimeout(kill, options.timeoutMs ?? 60_000);
    options.signal?.addEventListener('abort', kill, { once: true });
    child.on('error', (err) => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', kill);
      reject(new HangarError('ADDON_FAILED', `Could not run ${file}: ${err.message}`, { cause: err }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', kill);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Runs a command and throws ADDON_FAILED with its last stderr line(s) when it fails. */
export async function runChecked(what: string, file: string, args: readonly string[], options: RunCommandOptions = {}): Promise<string> {
  const result = await runCommand(file, args, options);
  if (result.code !== 0) {
    const tail = (result.stderr || result.stdout).trim().split('\n').slice(-3).join(' ').trim();
    const how = result.signal ? `was killed by ${result.signal}` : `failed (exit code ${result.code})`;
    throw new HangarError('ADDON_FAILED', `${what} ${how}${tail ? `: ${tail}` : ''}`);
  }
  return result.stdout;
}
