import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { request } from 'undici';
import { CoordinatorLink } from '../../agent/link/coordinator-link.js';
import { LogShipper } from '../../agent/logs/log-shipper.js';
import { systemClock } from '../../common/clock.js';
import { parseJoinToken } from '../../common/join-token.js';
import { startCoordinator, type RunningCoordinator } from '../../coordinator/coordinator.js';
import { ApiClient } from '../../cli/api-client.js';
import { fileLogger, runCli, waitFor } from '../helpers/cluster.js';

const run = promisify(execFile);

/** A process writing `seq N` lines to FILE (O_APPEND, as an instance does) until SIGTERM. */
const WRITER = `import os, signal, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
n = 0
while not stop:
    n += 1
    os.write(fd, b"seq %d\\n" % n)
    if n % 20 == 0:
        time.sleep(0.005)
`;

function countOf(text: string, needle: string): number {
  return text.split(needle).length - 1;
}

test(
  "a full disk under the coordinator's data dir: lines wait on the agent, the user is told once, and every line arrives once when space is freed",
  { timeout: 300_000 },
  async (t) => {
    // Not tempDir: its removal would run before the unmount below.
    const dir = await mkdtemp(join(tmpdir(), 'hangar-test-'));
    // The coordinator's data dir on a small tmpfs of its own, which the test fills.
    const data = join(dir, 'coordinator');
    await mkdir(data);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', data]);
    let coordinator: RunningCoordinator | null = null;
    let link: CoordinatorLink | null = null;
    let shipper: LogShipper | null = null;
    const writer = spawn('/usr/bin/python3', ['-c', WRITER, join(dir, 'app.log')], { stdio: 'ignore' });
    t.after(async () => {
      if (writer.exitCode === null) writer.kill('SIGKILL');
      link?.close();
      shipper?.close();
      await coordinator?.close();
      await run('umount', [data]);
      await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
    });

    const logPath = join(dir, 'coordinator.log');
    coordinator = await startCoordinator(
      { dataDir: data, httpPort: 0, httpHost: '127.0.0.1', grpcPort: 0, grpcHost: '127.0.0.1' },
      { logger: fileLogger(dir, 'coordinator') },
    );
    const { url, adminToken } = coordinator;
    const env = { HANGAR_URL: url, HANGAR_TOKEN: adminToken, HANGAR_CREDENTIALS: join(dir, 'no-credentials.json') };
    assert.equal((await runCli(['apps:create', 'flood'], env)).code, 0);

    // The agent's log pipeline (what `hangar agent` runs): tailer, spool, shipper, gRPC link.
    const agentLogger = fileLogger(dir, 'agent');
    const s = new LogShipper({
      dir: join(dir, 'spool'),
      send: (batch) => link?.send({ logBatch: batch }) ?? false,
      clock: systemClock,
      logger: agentLogger,
    });
    shipper = s;
    s.start();
    s.tail({ path: join(dir, 'app.log'), app: 'flood', source: 'worker.1', stream: 'stdout' });
    link = new CoordinatorLink({
      address: coordinator.grpcAddress,
      joinToken: parseJoinToken(coordinator.joinToken),
      identityPath: join(dir, 'identity.json'),
      name: 'agent-1',
      clock: systemClock,
      logger: agentLogger,
      hello: () => ({
        name: 'agent-1',
        advertiseAddress: '127.0.0.1',
        routerPort: 1,
        capacity: { cpus: 1, memoryMb: 1024, maxInstances: 0 },
        instances: [],
        version: 'test',
        generation: 0,
        logEpoch: s.epoch,
        logAckedSeq: s.acked,
      }),
      onConnected: () => s.onConnected(),
      onDisconnected: () => s.onDisconnected(),
      onLogAck: (seq, epoch) => s.onAck(seq, epoch),
      onDesiredState: () => undefined,
    });
    link.start();

    const api = new ApiClient({ url, token: adminToken });
    t.after(() => api.close());
    const stored = async () => (await api.logs('flood', { n: 1_000_000, source: 'worker' })).map((l) => l.line);
    await waitFor('lines to be stored', async () => (await stored()).length >= 500, 60_000);

    // Fill the disk: what is left of the tmpfs goes to a filler file.
    const filler = join(data, 'filler');
    const fd = openSync(filler, 'w');
    const chunk = Buffer.alloc(1024 * 1024, 1);
    try {
      for (;;) writeSync(fd, chunk);
    } catch (err) {
      assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC');
    }
    try {
      for (;;) writeSync(fd, chunk, 0, 4096);
    } catch {
      // Full to the last page.
    }
    closeSync(fd);
    await waitFor(
      'the coordinator to find its disk full',
      () => readFileSync(logPath, 'utf8').includes("the coordinator's disk is full"),
      60_000,
    );
    const before = (await stored()).length;

    // What the user sees meanwhile: a write through the API is a 507 DISK_FULL with what to do.
    const res = await request(`${url}/v1/apps`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'other' }),
    });
    const body = (await res.body.json()) as { code: string; message: string };
    assert.equal(res.statusCode, 507);
    assert.equal(body.code, 'DISK_FULL');
    assert.match(body.message, /disk is full.*free space in its data dir/);
    const cli = await runCli(['apps:create', 'other'], env);
    assert.notEqual(cli.code, 0);
    assert.match(cli.stderr, /disk is full/);

    // Lines keep coming while the disk stays full: they wait in the agent's spool.
    await waitFor(
      'the app to write 3000 more lines',
      () => countOf(readFileSync(join(dir, 'app.log'), 'utf8'), '\n') > before + 3000,
      60_000,
    );
    assert.ok((await stored()).length <= before + 100, 'nothing much stored while the disk is full');
    assert.equal(coordinator.url, url);

    // Free it: the agent's link comes back and resends what was not acked.
    unlinkSync(filler);
    await waitFor('storing again', () => readFileSync(logPath, 'utf8').includes('storing log lines again'), 60_000);
    writer.kill('SIGTERM');
    await new Promise((resolve) => (writer.exitCode !== null ? resolve(null) : writer.once('exit', resolve)));
    const written = countOf(readFileSync(join(dir, 'app.log'), 'utf8'), '\n');
    const lines = await waitFor(
      `all ${written} lines stored`,
      async () => {
        const l = await stored();
        return l.length >= written ? l : null;
      },
      120_000,
      500,
    );
    assert.equal(lines.length, written);
    const wrong = lines.findIndex((l, i) => l !== `seq ${i + 1}`);
    assert.equal(wrong, -1, `line ${wrong + 1} is "${lines[wrong]}"`);

    // Said once while it lasted (the agent retried every few hundred ms), not on every retry.
    const log = readFileSync(logPath, 'utf8');
    assert.equal(countOf(log, 'could not store log lines'), 1);
    assert.equal((await runCli(['apps:create', 'other'], env)).code, 0, 'writes work again');
  },
);
