import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { applyInstall, COORDINATOR_USER, planCoordinatorInstall } from '../../cli/service-install.js';
import { resolveRunAs } from '../../agent/workloads/run-as.js';
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
  assert.ok(coordinatorUnit.split('\n').includes('User=hangar-coordinator'), coordinatorUnit);
  assert.match(coordinatorDry.stdout, /would create the system user hangar-coordinator/);
  assert.match(coordinatorDry.stdout, /would create directory \/var\/lib\/hangar \(mode 700, hangar-coordinator:hangar-coordinator\)/);
  const coordinatorPath = join(dir, 'hangar-coordinator.service');
  await writeFile(coordinatorPath, coordinatorUnit);
  const verified = await run('systemd-analyze', ['verify', coordinatorPath]);
  assert.equal(verified.stderr.trim(), '');

  // Several coordinators on PostgreSQL: the URL (its password hidden), address and name go in the config file.
  const several = await runCli(
    [
      'coordinator',
      'install',
      '--dry-run',
      '--database-url',
      'postgres://hangar:s3cret@db.internal/hangar',
      '--advertise',
      '10.0.0.1',
      '--name',
      'c1',
    ],
    {},
  );
  assert.equal(several.code, 0, several.stderr);
  assert.match(several.stdout, /"databaseUrl": "postgres:\/\/hangar:…\(hidden\)@db\.internal\/hangar"/);
  assert.match(several.stdout, /"advertise": "10\.0\.0\.1"/);
  assert.match(several.stdout, /"name": "c1"/);
  assert.doesNotMatch(several.stdout, /s3cret/);
  const badUrl = await runCli(['coordinator', 'install', '--dry-run', '--database-url', 'mysql://db/hangar'], {});
  assert.equal(badUrl.code, 1);
  assert.match(badUrl.stderr, /--database-url must be a postgres:\/\/ URL/);

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

/** Runs `file args` as `uid:gid`; its exit code and stderr. */
function runAs(ids: { uid: number; gid: number }, file: string, args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { uid: ids.uid, gid: ids.gid, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

async function userExists(name: string): Promise<boolean> {
  return run('id', ['-u', name]).then(
    () => true,
    () => false,
  );
}

test(
  'coordinator install: it runs as hangar-coordinator, its data dir is its alone, no app user reads it',
  { timeout: 120_000 },
  async (t) => {
    assert.equal(process.getuid?.(), 0, 'installing for real needs root');
    const root = await tempDir(t, 'hangar-root-');
    // What / looks like on a server: /var/lib reachable by everyone.
    await chmod(root, 0o755);
    await mkdir(join(root, 'var', 'lib'), { recursive: true, mode: 0o755 });
    const hadUser = await userExists(COORDINATOR_USER);
    const probe = 'hangar-probe-limits';
    const plan = planCoordinatorInstall(
      { dataDir: '/var/lib/hangar-coordinator' },
      { node: process.execPath, hangarBin: HANGAR_BIN, root },
    );
    await applyInstall(plan, { root, accounts: true });
    const dataDir = join(root, 'var', 'lib', 'hangar-coordinator');
    const uid = Number((await run('id', ['-u', COORDINATOR_USER])).stdout.trim());
    const gid = Number((await run('id', ['-g', COORDINATOR_USER])).stdout.trim());
    assert.notEqual(uid, 0);
    const dirInfo = await stat(dataDir);
    assert.equal(dirInfo.mode & 0o777, 0o700);
    assert.equal(dirInfo.uid, uid);

    // What ExecStart runs, as the unit's user: the coordinator makes its tokens and keys there.
    const child = spawn(process.execPath, [HANGAR_BIN, 'coordinator', '--data-dir', dataDir, '--http-port', '0', '--grpc-port', '0'], {
      uid,
      gid,
      cwd: '/',
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HANGAR_LOG_LEVEL: 'warn' },
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    t.after(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      // Users go once nothing runs as them any more.
      await run('userdel', [probe]).catch(() => undefined);
      if (!hadUser) await run('userdel', [COORDINATOR_USER]).catch(() => undefined);
    });
    const secrets = ['admin-token', 'join-token', 'secret-key', join('tls', 'ca.key')];
    await waitFor('the coordinator to write its tokens and keys', () => secrets.every((f) => existsSync(join(dataDir, f))), 60_000).catch(
      (err: Error) => {
        throw new Error(`${err.message}\n${output}`);
      },
    );
    for (const f of secrets) {
      const info = await stat(join(dataDir, f));
      assert.equal(info.uid, uid, `${f} is the coordinator's`);
      assert.equal(info.mode & 0o077, 0, `${f} is closed to group and others`);
    }

    // An app's user (what the agent makes for each app) can neither list nor read any of it.
    const app = await resolveRunAs(probe, null, pino({ level: 'silent' }));
    assert.ok(app);
    const listed = await runAs(app, '/bin/ls', [dataDir]);
    assert.notEqual(listed.code, 0);
    assert.match(listed.stderr, /Permission denied/);
    for (const f of secrets) {
      const read = await runAs(app, '/bin/cat', [join(dataDir, f)]);
      assert.notEqual(read.code, 0, `${f} is not readable by an app user`);
      assert.match(read.stderr, /Permission denied/);
    }
    // And no app is ever given the coordinator's user.
    const { appUserName } = await import('../../agent/workloads/app-users.js');
    assert.notEqual(appUserName('coordinator'), COORDINATOR_USER);
  },
);
