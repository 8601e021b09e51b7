/**
 * What the add-on e2e tests talk to add-ons with: the CLI (asserting it succeeded), `psql` and
 * RESP straight at an add-on's URL, and the add-ons of an app (through the CLI or the API).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { request } from 'undici';
import { respCommand } from '../../agent/addons/redis.js';
import { findPostgresBin } from '../../agent/addons/server-binaries.js';
import { socketExchange } from '../../agent/addons/socket-exchange.js';
import type { AddonView } from '../../common/api-types.js';
import type { Cluster } from './cluster.js';

/** Runs `hangar ARGS` and returns its stdout; fails the test with both outputs when it exits non-zero. */
export async function cliOk(cluster: Cluster, args: string[], timeoutMs = 300_000): Promise<string> {
  const res = await cluster.cli(args, { timeoutMs });
  assert.equal(res.code, 0, `hangar ${args.join(' ')} failed:\n${res.stdout}\n${res.stderr}`);
  return res.stdout;
}

/** `hangar addons -a APP --json` (with `--reveal`: URLs with their passwords). */
export async function addonViews(cluster: Cluster, app: string, reveal = false): Promise<AddonView[]> {
  return JSON.parse(await cliOk(cluster, ['addons', '-a', app, '--json', ...(reveal ? ['--reveal'] : [])])) as AddonView[];
}

/** GET `path` of the coordinator's API as the admin (a CLI start costs seconds on a loaded machine); fails the test unless 200. */
export async function apiGet<T>(cluster: Cluster, path: string): Promise<T> {
  const res = await request(`${cluster.coordinator.url}${path}`, {
    headers: { authorization: `Bearer ${cluster.coordinator.adminToken}` },
  });
  const body = (await res.body.json()) as T;
  assert.equal(res.statusCode, 200, JSON.stringify(body));
  return body;
}

/** The app's add-ons from the API straight (`GET /v1/apps/APP/addons`). */
export async function apiAddons(cluster: Cluster, app: string, reveal = false): Promise<AddonView[]> {
  return (await apiGet<{ addons: AddonView[] }>(cluster, `/v1/apps/${app}/addons${reveal ? '?reveal=true' : ''}`)).addons;
}

/**
 * `psql CONNINFO -tAc SQL` (stopping at the first error) as a client on this host would run it,
 * with `env` added and, given `user`, as that user: exit code, trimmed stdout and stderr.
 */
export async function psqlResult(
  conninfo: string,
  sql: string,
  env: Record<string, string> = {},
  user: { uid: number; gid: number } | null = null,
): Promise<{ code: number | null; out: string; err: string }> {
  const bin = await findPostgresBin('test');
  return new Promise((resolve, reject) => {
    const child = spawn(join(bin, 'psql'), [conninfo, '-v', 'ON_ERROR_STOP=1', '-tAc', sql], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', PGCONNECT_TIMEOUT: '5', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: '/',
      ...(user ? { uid: user.uid, gid: user.gid } : {}),
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out: out.trim(), err: err.trim() });
    });
  });
}

/** `psql` straight at the add-on, the password in the environment; its trimmed output, or a rejection with psql's error. */
export async function psql(url: string, sql: string): Promise<string> {
  const u = new URL(url);
  const password = decodeURIComponent(u.password);
  u.password = '';
  const res = await psqlResult(u.toString(), sql, { PGPASSWORD: password });
  if (res.code !== 0) throw new Error(`psql failed (${res.code}): ${res.err}`);
  return res.out;
}

/** Sends RESP commands to the Redis at `url` (AUTH first, unless not `withAuth`) and returns the raw answer once it has `replies` lines. */
export function redis(url: string, commands: string[][], replies: number, withAuth = true): Promise<string> {
  const u = new URL(url);
  const auth = withAuth ? [['AUTH', decodeURIComponent(u.password)]] : [];
  return socketExchange({
    host: u.hostname,
    port: Number(u.port),
    request: [...auth, ...commands].map((c) => respCommand(...c)).join(''),
    complete: (r) => (r.match(/\r\n/g) ?? []).length >= replies + auth.length,
    timeoutMs: 5000,
  });
}
