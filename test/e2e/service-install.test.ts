import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HANGAR_BIN, runCli, startCluster, tempDir, waitFor } from '../helpers/cluster.js';

const run = promisify(execFile);

/** The unit file printed by a dry run. */
function unitFrom(output: string, path: string): string {
  const start = output.indexOf(`--- ${path}\n`);
  const end = output.indexOf(`--- end of ${path}`);
  assert.ok(start >= 0 && end > start, output);
  return `${output.slice(start + `--- ${path}\n`.length, end).trimEnd()}\n`;
}

test('agent install --dry-run prints a unit systemd-analyze verify accepts, and writes nothing', { timeout: 120_000 }, async (t) => {
  const cluster = await startCluster(t, { agents: 0 });
  const dir = await tempDir(t);
  const systemPaths = ['/etc/hangar/agent.json', '/etc/systemd/system/hangar-agent.service'];
  const before = systemPaths.map((p) => existsSync(p));
  const dry = await runCli(
    ['agent', 'install', '--coordinator', cluster.coordinator.grpcAddress, '--join-token', cluster.coordinator.joinToken, '--dry-run'],
    {},
  );
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /would write \/etc\/hangar\/agent\.json \(mode 600/);
  assert.match(dry.stdout, /would run: systemctl enable --now hangar-agent\.service/);
  assert.ok(!dry.stdout.includes(cluster.coordinator.joinToken), 'the join token is not printed');
  assert.deepEqual(
    systemPaths.map((p) => existsSync(p)),
    before,
    'a dry run writes nothing',
  );

  const unit = unitFrom(dry.stdout, '/etc/systemd/system/hangar-agent.service');
  for (const line of [
    'Restart=always',
    'After=network-online.target',
    'Wants=network-online.target',
    'KillMode=process',
    'LimitNOFILE=65536',
    'WantedBy=multi-user.target',
  ]) {
    assert.ok(unit.split('\n').includes(line), `the unit has ${line}`);
  }
  assert.match(unit, new RegExp(`^ExecStart=${process.execPath} ${HANGAR_BIN} agent --config /etc/hangar/agent\\.json$`, 'm'));
  const unitPath = join(dir, 'hangar-agent.service');
  await writeFile(unitPath, unit);
  const verify = await run('systemd-analyze', ['verify', unitPath]).then(
    (r) => ({ code: 0, stderr: r.stderr }),
    (err: { code?: number; stderr?: string }) => ({ code: err.code ?? 1, stderr: err.stderr ?? '' }),
  );
  assert.equal(verify.code, 0, verify.stderr);
  assert.equal(verify.stderr.trim(), '', 'systemd-analyze has no complaint');

  const coordinatorDry = await runCli(['coordinator', 'install', '--dry-run'], {});
  assert.equal(coordinatorDry.code, 0, coordinatorDry.stderr);
  const coordinatorUnit = unitFrom(coordinatorDry.stdout, '/etc/systemd/system/hangar-coordinator.service');
  assert.ok(coordinatorUnit.includes('User=hangar'));
  const coordinatorPath = join(dir, 'hangar-coordinator.service');
  await writeFile(coordinatorPath, coordinatorUnit);
  const verified = await run('systemd-analyze', ['verify', coordinatorPath]);
  assert.equal(verified.stderr.trim(), '');

  const bad = await runCli(['agent', 'install', '--coordinator', 'h:7081', '--join-token', 'hgr_join_nope', '--dry-run'], {});
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /join token is malformed/);
});

test('agent install writes its files idempotently, and the unit command runs the agent from them', { timeout: 120_000 }, async (t) => {
  const cluster = await startCluster(t, { agents: 0 });
  const root = await tempDir(t, 'hangar-root-');
  const dataDir = join(cluster.dir, 'installed-agent');
  const args = [
    'agent',
    'install',
    '--coordinator',
    cluster.coordinator.grpcAddress,
    '--join-token',
    cluster.coordinator.joinToken,
    '--data-dir',
    dataDir,
    '--name',
    'installed',
    '--router-port',
    '0',
    '--https-port',
    '0',
    '--advertise',
    '127.0.0.1',
    '--root',
    root,
  ];
  const first = await runCli(args, {});
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /Installed the Hangar agent/);
  const configPath = join(root, 'etc', 'hangar', 'agent.json');
  assert.equal((await stat(configPath)).mode & 0o777, 0o600);
  assert.equal((await stat(join(root, 'etc/systemd/system/hangar-agent.service'))).mode & 0o777, 0o644);
  const second = await runCli(args, {});
  assert.equal(second.code, 0, second.stderr);
  assert.match(second.stdout, /already installed this way; nothing changed/);

  // What ExecStart runs: `hangar agent --config FILE`.
  const child = spawn(process.execPath, [HANGAR_BIN, 'agent', '--config', configPath], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HANGAR_LOG_LEVEL: 'warn' },
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  t.after(async () => {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
  });
  await waitFor(
    'the installed agent to join',
    async () => {
      const agents = await cluster.cli(['agents', '--json']);
      return (JSON.parse(agents.stdout) as { name: string; state: string }[]).some((a) => a.name === 'installed' && a.state === 'up');
    },
    30_000,
  ).catch((err: Error) => {
    throw new Error(`${err.message}\n${output}`);
  });
  assert.equal((JSON.parse(await readFile(join(dataDir, 'credential.json'), 'utf8')) as { name: string }).name, 'installed');

  const removed = await runCli(['agent', 'uninstall', '--root', root], {});
  assert.equal(removed.code, 0, removed.stderr);
  await assert.rejects(stat(configPath));
});
