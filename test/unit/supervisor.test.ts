import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isHangarError } from '../../common/errors.js';
import { silentLogger } from '../../common/logger.js';
import { httpHealthCheck } from '../../agent/workloads/health-check.js';
import { readProcStat } from '../../agent/workloads/proc-stat.js';
import { Supervisor, type SupervisorEvent, type SupervisorOptions, type SupervisorStatus } from '../../agent/workloads/supervisor.js';

// Compiled to dist/test/unit/; the fixtures stay in the source tree.
const FIXTURES = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../test/fixtures/procs');

function fixtureCommand(name: string): string {
  return `'${process.execPath}' '${join(FIXTURES, name)}'`;
}

interface Harness {
  options: SupervisorOptions;
  events: SupervisorEvent[];
  dir: string;
  /** Pids to SIGKILL (as process groups) when the test ends, whatever happened. */
  pids: Set<number>;
}

/** Options for one supervised fixture in a fresh directory, with cleanup registered on `t`. */
function harness(t: TestContext, fixture: string, overrides: Partial<SupervisorOptions> = {}): Harness {
  const dir = mkdtempSync(join(tmpdir(), 'hangar-supervisor-'));
  const events: SupervisorEvent[] = [];
  const pids = new Set<number>();
  const options: SupervisorOptions = {
    key: 'shop:web.1:v3',
    command: fixtureCommand(fixture),
    cwd: dir,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    stdoutPath: join(dir, 'logs', 'stdout.log'),
    stderrPath: join(dir, 'logs', 'stderr.log'),
    pidfilePath: join(dir, 'run', 'web.1.pid'),
    graceMs: 300,
    settleMs: 200,
    backoff: { initialMs: 50, maxMs: 400, jitter: 0 },
    logger: silentLogger(),
    onEvent: (event) => {
      events.push(event);
      if (event.type === 'started' || event.type === 'adopted') pids.add(event.pid);
    },
    ...overrides,
  };
  t.after(() => {
    for (const pid of pids) {
      for (const target of [-pid, pid]) {
        try {
          process.kill(target, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });
  return { options, events, dir, pids };
}

/** Stops the supervisor when the test ends (bounded by its graceMs), before the pids are killed. */
function supervise(t: TestContext, supervisor: Supervisor): Supervisor {
  t.after(async () => {
    try {
      await supervisor.stop();
    } catch {
      // A detached supervisor refuses; its pids are killed by the harness.
    }
  });
  return supervisor;
}

async function waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(20);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function readText(path: string): string {
  return existsSync(path) ? readFileSync(path, 'utf8') : '';
}

/**
 * True when `pid` no longer runs: kill(pid, 0) fails with ESRCH, or the process is a zombie.
 * A killed orphan stays a zombie until init reaps it, and this sandbox's PID 1 never does.
 */
function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return true;
    throw err;
  }
  return readProcStat(pid)?.state === 'Z';
}

function ofType<K extends SupervisorEvent['type']>(events: SupervisorEvent[], type: K): Extract<SupervisorEvent, { type: K }>[] {
  return events.filter((e): e is Extract<SupervisorEvent, { type: K }> => e.type === type);
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  assert.ok(address !== null && typeof address === 'object');
  return address.port;
}

describe('Supervisor', () => {
  it('starts a process in its own group, is up after settleMs, appends output to the files', async (t) => {
    const h = harness(t, 'print-lines.mjs', { settleMs: 300 });
    writeFileSync(join(h.dir, 'existing.log'), '');
    const supervisor = supervise(t, new Supervisor(h.options));
    supervisor.start();
    supervisor.start();
    const started = ofType(h.events, 'started');
    assert.equal(started.length, 1, 'start() is idempotent');
    const pid = started[0]!.pid;
    assert.deepEqual(
      { state: supervisor.status().state, pid: supervisor.status().pid, restarts: supervisor.status().restarts },
      { state: 'starting', pid, restarts: 0 },
    );
    const stat = readProcStat(pid);
    assert.equal(stat?.pgrp, pid, 'leader of its own process group');
    assert.equal(stat?.session, pid, 'leader of its own session');
    assert.deepEqual(JSON.parse(readFileSync(h.options.pidfilePath, 'utf8')), { pid, startTime: stat?.startTime });

    await waitFor('up', () => supervisor.status().state === 'up');
    const healthy = ofType(h.events, 'healthy')[0]!;
    assert.ok(healthy.at - started[0]!.at >= 290, `up after settleMs, not before (${healthy.at - started[0]!.at} ms)`);
    assert.equal(healthy.pid, pid);

    await waitFor('stdout lines', () => readText(h.options.stdoutPath).includes(`line 3 from ${pid}`));
    await waitFor('stderr line', () => readText(h.options.stderrPath).includes(`warning from ${pid}`));
    assert.ok(!readText(h.options.stdoutPath).includes('warning'), 'stderr does not go to stdout');

    await supervisor.stop();
    assert.equal(supervisor.status().state, 'stopped');
    assert.equal(supervisor.status().pid, null);
    assert.ok(isGone(pid));
    assert.ok(!existsSync(h.options.pidfilePath), 'pidfile removed');

    // A second run appends to the same files rather than truncating them.
    supervisor.start();
    const pid2 = ofType(h.events, 'started')[1]!.pid;
    await waitFor('second run output', () => readText(h.options.stdoutPath).includes(`line 1 from ${pid2}`));
    assert.ok(readText(h.options.stdoutPath).includes(`line 3 from ${pid}`), 'first run lines kept');
    await supervisor.stop();
  });

  it('with a health check, is up only once the HTTP server answers with the right Host', async (t) => {
    const port = await freePort();
    let checks = 0;
    const h = harness(t, 'http-server.mjs', {
      settleMs: 10,
      healthIntervalMs: 50,
      env: { PATH: process.env.PATH ?? '', PORT: String(port), LISTEN_DELAY_MS: '700', EXPECT_HOST: 'shop.example.test' },
      healthCheck: () => {
        checks += 1;
        return httpHealthCheck({ port, path: '/', host: 'shop.example.test', timeoutMs: 500 });
      },
    });
    const supervisor = supervise(t, new Supervisor(h.options));
    supervisor.start();
    await delay(400);
    assert.equal(supervisor.status().state, 'starting', 'settleMs does not apply when a health check is given');
    await waitFor('up', () => supervisor.status().state === 'up');
    const started = ofType(h.events, 'started')[0]!;
    const healthy = ofType(h.events, 'healthy')[0]!;
    assert.ok(healthy.at - started.at >= 650, `up only after the server listens (${healthy.at - started.at} ms)`);
    assert.ok(checks >= 3, `health check polled while starting (${checks} checks)`);
    assert.match(readText(h.options.stdoutPath), new RegExp(`listening on ${port}`));
    const checksWhenUp = checks;
    await delay(200);
    assert.equal(checks, checksWhenUp, 'no polling once up');
  });

  it('restarts a process killed with SIGKILL and counts the restart', async (t) => {
    const h = harness(t, 'print-lines.mjs', { settleMs: 100 });
    const supervisor = supervise(t, new Supervisor(h.options));
    supervisor.start();
    await waitFor('up', () => supervisor.status().state === 'up');
    const pid1 = supervisor.status().pid!;
    process.kill(pid1, 'SIGKILL');
    await waitFor('restarted and up', () => {
      const s = supervisor.status();
      return s.state === 'up' && s.pid !== pid1;
    });
    const status = supervisor.status();
    assert.equal(status.restarts, 1);
    assert.equal(status.signal, 'SIGKILL');
    assert.equal(status.exitCode, null);
    const exited = ofType(h.events, 'exited');
    assert.equal(exited.length, 1);
    assert.deepEqual(
      { pid: exited[0]!.pid, code: exited[0]!.code, signal: exited[0]!.signal },
      { pid: pid1, code: null, signal: 'SIGKILL' },
    );
    assert.deepEqual(
      h.events.map((e) => e.type),
      ['started', 'healthy', 'exited', 'restarting', 'started', 'healthy'],
    );
    assert.ok(isGone(pid1));
  });

  it('backs off exponentially on a crashing process and reports a crash loop', async (t) => {
    let crashLoopStatus: SupervisorStatus | undefined;
    const h = harness(t, 'crash.mjs', {
      backoff: { initialMs: 50, maxMs: 400, factor: 2, jitter: 0, crashLoopThreshold: 4 },
    });
    const record = h.options.onEvent!;
    h.options.onEvent = (event) => {
      record(event);
      if (event.type === 'crash_loop') crashLoopStatus = supervisor.status();
    };
    const supervisor = supervise(t, new Supervisor(h.options));
    supervisor.start();
    await waitFor('crash loop', () => crashLoopStatus, 10_000);
    await waitFor('a fifth exit', () => ofType(h.events, 'restarting').length >= 5, 10_000);

    const exited = ofType(h.events, 'exited');
    assert.ok(
      exited.every((e) => e.code === 3 && e.signal === null),
      'every exit has code 3',
    );
    const delays = ofType(h.events, 'restarting').map((e) => e.delayMs);
    assert.deepEqual(delays.slice(0, 5), [50, 100, 200, 400, 400]);
    // The actual gap between scheduling and the next start honours each delay.
    const types = h.events.filter((e) => e.type === 'restarting' || e.type === 'started');
    for (let i = 1; i + 1 < types.length; i += 2) {
      const restarting = types[i]!;
      const next = types[i + 1]!;
      assert.equal(restarting.type, 'restarting');
      assert.equal(next.type, 'started');
      if (restarting.type === 'restarting') {
        assert.ok(next.at - restarting.at >= restarting.delayMs - 5, `waited ${next.at - restarting.at} >= ${restarting.delayMs}`);
      }
    }

    const loops = ofType(h.events, 'crash_loop');
    assert.equal(loops.length, 1, 'crash_loop is reported once');
    assert.deepEqual({ exits: loops[0]!.exits, code: loops[0]!.code }, { exits: 4, code: 3 });
    assert.equal(crashLoopStatus?.state, 'crashed');
    assert.equal(crashLoopStatus?.message, 'crash loop: exited 4 times in a row, last exit code 3; retrying in 0.4s');
    assert.equal(crashLoopStatus?.exitCode, 3);
    assert.ok(supervisor.status().restarts >= 4);
    assert.ok(readText(h.options.stderrPath).split('crash fixture: giving up').length - 1 >= 4, 'stderr appended');
  });

  it('stop() SIGKILLs a SIGTERM-ignoring process group after graceMs, grandchild included', async (t) => {
    const h = harness(t, 'ignore-sigterm.mjs', { graceMs: 300 });
    const supervisor = supervise(t, new Supervisor(h.options));
    supervisor.start();
    await waitFor('up', () => supervisor.status().state === 'up');
    const pid = supervisor.status().pid!;
    const grandchild = Number(await waitFor('grandchild pid', () => /grandchild=(\d+)/.exec(readText(h.options.stdoutPath))?.[1]));
    h.pids.add(grandchild);
    assert.equal(readProcStat(grandchild)?.pgrp, pid, 'grandchild is in the group');

    const stopping = supervisor.stop();
    assert.equal(supervisor.status().state, 'stopping');
    assert.throws(
      () => supervisor.start(),
      (err) => isHangarError(err, 'CONFLICT'),
    );
    const t0 = Date.now();
    await stopping;
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 280 && elapsed < 3000, `killed after graceMs (${elapsed} ms)`);
    assert.equal(supervisor.status().state, 'stopped');
    assert.equal(supervisor.status().signal, 'SIGKILL');
    assert.ok(isGone(pid), 'leader gone');
    assert.ok(isGone(grandchild), 'grandchild gone');
    assert.match(readText(h.options.stdoutPath), /SIGTERM ignored/);
    assert.deepEqual(
      h.events.map((e) => e.type),
      ['started', 'healthy', 'stopped'],
    );
    await supervisor.stop();
    assert.equal(ofType(h.events, 'stopped').length, 1, 'stop() is idempotent');
  });

  it('stop() kills group members left behind when the leader exits on SIGTERM', async (t) => {
    const h = harness(t, 'spawn-grandchild.mjs', { graceMs: 10_000 });
    const supervisor = supervise(t, new Supervisor(h.options));
    supervisor.start();
    await waitFor('up', () => supervisor.status().state === 'up');
    const pid = supervisor.status().pid!;
    const grandchild = Number(await waitFor('grandchild pid', () => /grandchild=(\d+)/.exec(readText(h.options.stdoutPath))?.[1]));
    h.pids.add(grandchild);
    await waitFor('grandchild running', () => readProcStat(grandchild)?.state === 'S');
    const t0 = Date.now();
    await supervisor.stop();
    assert.ok(Date.now() - t0 < 3000, 'did not wait for graceMs: the leader exited on SIGTERM');
    assert.equal(supervisor.status().signal, 'SIGTERM');
    assert.ok(isGone(pid), 'leader gone');
    assert.ok(isGone(grandchild), 'grandchild gone although it ignores SIGTERM');
  });

  it('stop() signals the main process only, so its warm shutdown lets the children finish', async (t) => {
    const h = harness(t, 'warm-shutdown.mjs', { graceMs: 10_000, stopSignal: 'SIGQUIT' });
    h.options.command = `${fixtureCommand('warm-shutdown.mjs')} SIGQUIT`;
    const supervisor = supervise(t, new Supervisor(h.options));
    supervisor.start();
    await waitFor('up', () => supervisor.status().state === 'up');
    const child = Number(await waitFor('child pid', () => /child=(\d+)/.exec(readText(h.options.stdoutPath))?.[1]));
    h.pids.add(child);
    await waitFor('child ready', () => readText(h.options.stdoutPath).includes('child ready'));
    await supervisor.stop();
    const out = readText(h.options.stdoutPath);
    assert.match(out, /main got SIGQUIT/);
    assert.match(out, /child finished its work/);
    assert.doesNotMatch(out, /child got SIGQUIT/, 'the child was not signalled itself');
    assert.equal(supervisor.status().exitCode, 0, 'the main process exited on its own');
    assert.ok(isGone(child), 'child gone');
  });

  it('stop() during a backoff wait cancels the restart', async (t) => {
    const h = harness(t, 'crash.mjs', { backoff: { initialMs: 800, jitter: 0 } });
    const supervisor = supervise(t, new Supervisor(h.options));
    supervisor.start();
    await waitFor('restart scheduled', () => ofType(h.events, 'restarting').length === 1);
    assert.equal(supervisor.status().state, 'crashed');
    assert.match(supervisor.status().message, /^exited with code 3; restarting in 0\.8s \(attempt 1\)$/);
    await supervisor.stop();
    assert.equal(supervisor.status().state, 'stopped');
    await delay(1100);
    assert.equal(ofType(h.events, 'started').length, 1, 'no restart after stop()');
    assert.equal(supervisor.status().state, 'stopped');
  });

  it('restart() stops and starts afresh, keeping the restart count', async (t) => {
    const h = harness(t, 'print-lines.mjs', { settleMs: 50 });
    const supervisor = supervise(t, new Supervisor(h.options));
    supervisor.start();
    await waitFor('up', () => supervisor.status().state === 'up');
    const pid1 = supervisor.status().pid!;
    process.kill(pid1, 'SIGKILL');
    await waitFor('restarted', () => supervisor.status().restarts === 1 && supervisor.status().state === 'up');
    const pid2 = supervisor.status().pid!;
    await supervisor.restart();
    const pid3 = supervisor.status().pid!;
    assert.ok(isGone(pid2));
    assert.notEqual(pid3, pid2);
    assert.equal(supervisor.status().restarts, 1);
    await waitFor('up again', () => supervisor.status().state === 'up');
  });

  it('restart(next) runs the new environment, and so do the restarts after it', async (t) => {
    const h = harness(t, 'print-lines.mjs', { settleMs: 50 });
    h.options.command = `sh -c "echo domains=\\$HANGAR_DOMAINS; exec ${h.options.command}"`;
    h.options.env = { ...h.options.env, HANGAR_DOMAINS: 'shop.localhost' };
    const supervisor = supervise(t, new Supervisor(h.options));
    supervisor.start();
    await waitFor('up', () => supervisor.status().state === 'up');
    const { command, graceMs, stopSignal } = h.options;
    await supervisor.restart({
      command,
      graceMs,
      stopSignal,
      env: { ...h.options.env, HANGAR_DOMAINS: 'shop.localhost,www.shop.example' },
    });
    await waitFor('up again', () => supervisor.status().state === 'up');
    process.kill(supervisor.status().pid!, 'SIGKILL');
    await waitFor('restarted after a crash', () => supervisor.status().restarts === 1 && supervisor.status().state === 'up');
    const lines = readFileSync(h.options.stdoutPath, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('domains='));
    assert.deepEqual(lines, [
      'domains=shop.localhost',
      'domains=shop.localhost,www.shop.example',
      'domains=shop.localhost,www.shop.example',
    ]);
  });

  it('reports a process that cannot be spawned as a crash and retries', async (t) => {
    const h = harness(t, 'print-lines.mjs');
    h.options.cwd = join(h.dir, 'missing');
    const supervisor = supervise(t, new Supervisor(h.options));
    supervisor.start();
    await waitFor('spawn failure', () => ofType(h.events, 'restarting').length >= 2);
    const exited = ofType(h.events, 'exited')[0]!;
    assert.equal(exited.pid, null);
    assert.equal(ofType(h.events, 'started').length, 0);
    assert.match(supervisor.status().message, /could not start|crash loop/);
    await supervisor.stop();
    assert.equal(supervisor.status().state, 'stopped');
  });

  it('adopt() re-attaches to a running process without restarting it, then supervises it', async (t) => {
    const h = harness(t, 'print-lines.mjs', { settleMs: 100, adoptPollMs: 100 });
    const first = new Supervisor(h.options);
    first.start();
    await waitFor('up', () => first.status().state === 'up');
    const pid = first.status().pid!;
    // Simulate the agent going away: stop supervising, leave the process running.
    first.detach();
    assert.throws(
      () => first.start(),
      (err) => isHangarError(err, 'CONFLICT'),
    );
    await delay(200);
    assert.ok(!isGone(pid), 'detach leaves the process running');

    const adoptedEvents: SupervisorEvent[] = [];
    const adopted = Supervisor.adopt({
      ...h.options,
      onEvent: (event) => {
        adoptedEvents.push(event);
        h.options.onEvent?.(event);
      },
    });
    assert.ok(adopted !== null, 'adopted');
    supervise(t, adopted);
    assert.deepEqual(
      { state: adopted.status().state, pid: adopted.status().pid, restarts: adopted.status().restarts },
      { state: 'up', pid, restarts: 0 },
    );
    assert.deepEqual(
      adoptedEvents.map((e) => e.type),
      ['adopted', 'healthy'],
    );
    await delay(300);
    assert.equal(adopted.status().pid, pid, 'not restarted by polling');

    process.kill(pid, 'SIGKILL');
    await waitFor('restart after the adopted process died', () => {
      const s = adopted.status();
      return s.state === 'up' && s.pid !== pid ? s : undefined;
    });
    assert.equal(adopted.status().restarts, 1);
    const exited = ofType(adoptedEvents, 'exited')[0]!;
    assert.deepEqual({ pid: exited.pid, code: exited.code, signal: exited.signal }, { pid, code: null, signal: null });
    const newPid = adopted.status().pid!;
    const record = JSON.parse(readFileSync(h.options.pidfilePath, 'utf8')) as { pid: number };
    assert.equal(record.pid, newPid, 'pidfile rewritten');
    await adopted.stop();
    assert.ok(isGone(newPid));
  });

  it('adopt() refuses a pidfile whose start time does not match, and removes it', async (t) => {
    const h = harness(t, 'print-lines.mjs');
    const child = spawn(process.execPath, [join(FIXTURES, 'print-lines.mjs')], { detached: true, stdio: 'ignore' });
    const pid = child.pid!;
    h.pids.add(pid);
    const startTime = await waitFor('proc stat', () => readProcStat(pid)?.startTime);
    mkdirSync(join(h.dir, 'run'), { recursive: true });

    writeFileSync(h.options.pidfilePath, JSON.stringify({ pid, startTime: startTime + 1 }));
    const wronglyAdopted = Supervisor.adopt(h.options);
    if (wronglyAdopted !== null) wronglyAdopted.detach();
    assert.equal(wronglyAdopted, null);
    assert.ok(!existsSync(h.options.pidfilePath), 'stale pidfile removed');
    assert.ok(!isGone(pid), 'the unrelated process is left alone');
    assert.deepEqual(h.events, []);

    writeFileSync(h.options.pidfilePath, 'not json');
    assert.equal(Supervisor.adopt(h.options), null);
    assert.ok(!existsSync(h.options.pidfilePath));

    assert.equal(Supervisor.adopt(h.options), null, 'no pidfile: nothing to adopt');

    process.kill(-pid, 'SIGKILL');
    await waitFor('fixture dead', () => isGone(pid));
    writeFileSync(h.options.pidfilePath, JSON.stringify({ pid, startTime }));
    assert.equal(Supervisor.adopt(h.options), null, 'dead pid: nothing to adopt');
    assert.ok(!existsSync(h.options.pidfilePath));
  });
});

describe('httpHealthCheck', () => {
  async function serve(t: TestContext, handler: Parameters<typeof createServer>[1]): Promise<number> {
    const server: Server = createServer(handler);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => {
      server.closeAllConnections();
      server.close();
    });
    const address = server.address();
    assert.ok(address !== null && typeof address === 'object');
    return address.port;
  }

  it('is true on 2xx and 3xx with the right Host header, false on 4xx and 5xx', async (t) => {
    const seen: string[] = [];
    const port = await serve(t, (req, res) => {
      seen.push(`${req.headers.host} ${req.url}`);
      if (req.headers.host !== 'shop.example.test') return void res.writeHead(400).end('DisallowedHost');
      const status = Number(req.url?.slice(1)) || 200;
      res.writeHead(status, status === 302 ? { location: '/elsewhere' } : {}).end('body');
    });
    const check = (path: string, host = 'shop.example.test'): Promise<boolean> => httpHealthCheck({ port, path, host, timeoutMs: 1000 });
    assert.equal(await check('/'), true);
    assert.equal(await check('/204'), true);
    assert.equal(await check('/302'), true);
    assert.equal(await check('/404'), false);
    assert.equal(await check('/500'), false);
    assert.equal(await check('/', 'other.example.test'), false);
    assert.equal(await check('health'), true, 'path without a leading slash');
    assert.ok(seen.includes('shop.example.test /health'));
  });

  it('is false, without throwing, when nothing listens or the answer is too slow', async (t) => {
    const closedPort = await freePort();
    assert.equal(await httpHealthCheck({ port: closedPort, timeoutMs: 500 }), false);
    const port = await serve(t, () => {
      // Never answers.
    });
    const t0 = Date.now();
    assert.equal(await httpHealthCheck({ port, timeoutMs: 300 }), false);
    assert.ok(Date.now() - t0 < 2000, 'bounded by timeoutMs');
  });
});
