/**
 * A real PostgreSQL for the coordinator's tests: Debian's server, started by the test as the
 * unprivileged `postgres` user (when the test runs as root) in a temp dir, on a free loopback
 * port, trust auth for the `hangar` role. One server per test process; each test takes a fresh
 * database from it. Stopped with its own pid (process group) when the process ends.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findPostgresBin } from '../../agent/addons/server-binaries.js';
import { PostgresDatabase } from '../../coordinator/store/postgres.js';
import { freePort } from '../../agent/workloads/free-port.js';

export interface TestPostgres {
  /** The admin URL (database `postgres`). */
  readonly url: string;
  /** A new empty database's URL (`hangar` owns it). */
  createDatabase(prefix?: string): string;
  /** The postmaster's pid (for tests that stop or pause it). */
  readonly pid: number;
}

let started: Promise<TestPostgres> | null = null;

/** The test process's PostgreSQL, started on first use. */
export function testPostgres(): Promise<TestPostgres> {
  started ??= start();
  return started;
}

/** Which engine the coordinators of e2e tests use: `HANGAR_TEST_DATABASE=postgres` or SQLite. */
export function testDatabaseEngine(): 'sqlite' | 'postgres' {
  return process.env.HANGAR_TEST_DATABASE === 'postgres' ? 'postgres' : 'sqlite';
}

/** A fresh PostgreSQL database URL when e2e tests run on PostgreSQL, else undefined (SQLite in the data dir). */
export async function testDatabaseUrl(prefix = 'e2e'): Promise<string | undefined> {
  return testDatabaseEngine() === 'postgres' ? (await testPostgres()).createDatabase(prefix) : undefined;
}

function asPostgres(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

async function start(): Promise<TestPostgres> {
  const bin = await findPostgresBin('this machine');
  const owner = asPostgres();
  const dir = mkdtempSync(join(tmpdir(), 'hangar-test-pg-'));
  if (owner) chownSync(dir, owner.uid, owner.gid);
  const data = join(dir, 'data');
  const ids = owner ? { uid: owner.uid, gid: owner.gid } : {};
  execFileSync(join(bin, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'hangar', '--no-sync', '-E', 'UTF8', '--locale=C'], {
    ...ids,
    stdio: 'ignore',
  });
  const port = await freePort();
  const server: ChildProcess = spawn(
    join(bin, 'postgres'),
    ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'max_connections=200'],
    { ...ids, detached: true, stdio: 'ignore' },
  );
  const pid = server.pid as number;
  const stop = (): void => {
    try {
      process.kill(-pid, 'SIGQUIT');
    } catch {
      // already gone
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', stop);
  server.unref();
  const url = `postgres://hangar@127.0.0.1:${port}/postgres`;
  for (let i = 0; ; i++) {
    try {
      new PostgresDatabase({ url }).close();
      break;
    } catch (err) {
      if (i > 100 || server.exitCode !== null) throw new Error(`the test PostgreSQL did not start: ${String(err)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    url,
    pid,
    createDatabase(prefix = 'test') {
      const name = `${prefix.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${randomBytes(4).toString('hex')}`;
      const admin = new PostgresDatabase({ url });
      try {
        admin.exec(`CREATE DATABASE ${name} OWNER hangar`);
      } finally {
        admin.close();
      }
      return `postgres://hangar@127.0.0.1:${port}/${name}`;
    },
  };
}
