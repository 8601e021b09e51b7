import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PsRow } from '../../common/api-types.js';
import { startCluster } from '../helpers/cluster.js';
import { deployFixture, ps } from '../helpers/deploy-fixture.js';

const isRoot = process.getuid?.() === 0;

/** Appended to the fixture's settings.py: every process that loads the settings records who it is. */
const RECORD_UID = String.raw`
import json as _json, sys as _sys
if os.environ.get('HANGAR_UID_LOG'):
    try:
        with open(os.environ['HANGAR_UID_LOG'], 'a') as _f:
            _f.write(_json.dumps({'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(),
                                  'argv': _sys.argv[:3], 'instance': os.environ.get('HANGAR_INSTANCE', '')}) + '\n')
    except OSError as _e:
        print('could not record the uid: %s' % _e, file=_sys.stderr, flush=True)
`;

interface UidRecord {
  uid: number;
  euid: number;
  gid: number;
  argv: string[];
  instance: string;
}

function idOf(user: string, flag: '-u' | '-g'): number {
  return Number(execFileSync('id', [flag, user], { encoding: 'utf8' }).trim());
}

/** Every file and directory below `dir` (links not followed) with its owner. */
async function owners(dir: string): Promise<{ path: string; uid: number }[]> {
  const found: { path: string; uid: number }[] = [];
  const walk = async (path: string): Promise<void> => {
    const info = await lstat(path);
    found.push({ path, uid: info.uid });
    if (info.isDirectory()) for (const name of await readdir(path)) await walk(join(path, name));
  };
  await walk(dir);
  return found;
}

/** Python run as `uid`: tries to read each path and to signal each pid, prints what happened. */
const PROBE = String.raw`
import errno, json, os, signal, sys
req = json.loads(sys.argv[1])
out = {}
for p in req['read']:
    try:
        if os.path.isdir(p):
            os.listdir(p)
        else:
            with open(p, 'rb') as f:
                f.read(1)
        out[p] = 'ok'
    except OSError as e:
        out[p] = errno.errorcode.get(e.errno, str(e.errno))
for pid in req['kill']:
    try:
        os.kill(pid, req['signal'])
        out['kill %d' % pid] = 'ok'
    except OSError as e:
        out['kill %d' % pid] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
`;

function probeAs(user: string, read: string[], kill: number[], signal: number): Record<string, string> {
  const res = spawnSync('python3', ['-c', PROBE, JSON.stringify({ read, kill, signal })], {
    uid: idOf(user, '-u'),
    gid: idOf(user, '-g'),
    cwd: '/',
    env: { PATH: '/usr/bin:/bin' },
    encoding: 'utf8',
    timeout: 20_000,
  });
  assert.equal(res.status, 0, res.stderr);
  return JSON.parse(res.stdout) as Record<string, string>;
}

async function webOf(cluster: Parameters<typeof ps>[0], app: string): Promise<PsRow & { pid: number }> {
  const web = (await ps(cluster, app)).find((r) => r.id === 'web.1' && r.state === 'up');
  assert.ok(web?.pid, `${app} has a running web.1`);
  return { ...web, pid: web.pid };
}

test('two apps on one agent: app code never runs as root, and no app reaches another or the agent', { timeout: 900_000 }, async (t) => {
  if (!isRoot) {
    t.skip('apps run as users of their own only when the agent runs as root');
    return;
  }
  const cluster = await startCluster(t);
  const agentDir = join(cluster.dir, 'agent-agent-1');
  const uidLog = join(cluster.appDir, 'iso-a-uids.jsonl');
  await deployFixture(cluster, 'iso-a', {
    settings: RECORD_UID,
    // collectstatic runs too: it is a step that loads the app's settings.
    config: { HANGAR_UID_LOG: uidLog, DJANGO_STATIC_ROOT: 'staticfiles', SECRET_KEY: 'iso-a-secret-key-value' },
  });
  await deployFixture(cluster, 'iso-b', { config: { SECRET_KEY: 'iso-b-secret-key-value' } });
  const aUid = idOf('hangar-iso-a', '-u');
  const bUid = idOf('hangar-iso-b', '-u');
  assert.notEqual(aUid, 0);
  assert.notEqual(bUid, 0);
  assert.notEqual(aUid, bUid, 'each app has a user of its own');

  await t.test('every step that runs the app code runs as its user, never as root', async () => {
    const records = (await readFile(uidLog, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as UidRecord);
    const steps = {
      'Django checks and collectstatic': records.filter((r) => r.argv[0] === '-c'),
      'release phase': records.filter((r) => r.argv.includes('migrate')),
      web: records.filter((r) => r.instance === 'web.1'),
    };
    for (const [step, seen] of Object.entries(steps)) assert.ok(seen.length > 0, `${step} loaded the settings: ${JSON.stringify(records)}`);
    for (const r of records) {
      assert.notEqual(r.uid, 0, `ran as root: ${JSON.stringify(r)}`);
      assert.deepEqual([r.uid, r.euid], [aUid, aUid], `ran as another user than hangar-iso-a: ${JSON.stringify(r)}`);
    }
    // Creating the virtualenv and pip ran as the app's user too: they made every file in it.
    const [venv] = await readdir(join(agentDir, 'venvs', 'iso-a'));
    assert.ok(venv);
    const notTheApps = (await owners(join(agentDir, 'venvs', 'iso-a', venv))).filter(
      (f) => f.uid !== aUid && !f.path.endsWith('.complete'),
    );
    assert.deepEqual(notTheApps, [], 'files of the virtualenv not made by the app');
  });
  await t.test('from inside app A, as its uid, nothing of app B nor of the agent can be read or signalled', async () => {
    const addon = await cluster.cli(['addons:create', 'redis', '-a', 'iso-b'], { timeoutMs: 300_000 });
    assert.equal(addon.code, 0, addon.stderr);
    const [redis] = JSON.parse((await cluster.cli(['addons', '-a', 'iso-b', '--json'])).stdout) as { name: string; state: string }[];
    assert.ok(redis);
    const b = await webOf(cluster, 'iso-b');
    const a = await webOf(cluster, 'iso-a');
    const [bSlug] = await readdir(join(agentDir, 'slugs', 'iso-b'));
    const [bVenv] = await readdir(join(agentDir, 'venvs', 'iso-b'));
    const [bInstance] = (await readdir(join(agentDir, 'instances'))).filter((n) => n.startsWith('iso-b_web.1_'));
    assert.ok(bSlug && bVenv && bInstance);
    const addonDir = join(agentDir, 'addons', redis.name);
    const ofB = [
      `/proc/${b.pid}/environ`,
      join(agentDir, 'slugs', 'iso-b', bSlug, 'manage.py'),
      join(agentDir, 'slugs', 'iso-b', bSlug),
      join(agentDir, 'venvs', 'iso-b', bVenv, 'bin', 'python'),
      join(agentDir, 'venvs', 'iso-b', bVenv),
      join(agentDir, 'instances', bInstance, 'stdout.log'),
      join(agentDir, 'home', 'iso-b'),
      join(addonDir, 'redis.conf'),
      join(addonDir, 'data'),
    ];
    const ofAgent = [
      join(agentDir, 'credential.json'),
      join(agentDir, 'secret-key'),
      join(agentDir, 'desired-state.json'),
      join(agentDir, 'logs'),
      join(agentDir, 'artifacts'),
      join(agentDir, 'tasks'),
      join(agentDir, 'instances'),
      join(agentDir, 'slugs'),
      agentDir,
    ];
    for (const path of [...ofB.slice(1), ...ofAgent]) await lstat(path); // they exist (root sees them)

    // The probe itself works: app B reads its own environment, files and add-on data, and may
    // signal its own processes (which is what app A could do too while both shared one user).
    const own = probeAs('hangar-iso-b', ofB, [b.pid], 0);
    for (const path of ofB) assert.equal(own[path], 'ok', `app B reads its own ${path}`);
    assert.equal(own[`kill ${b.pid}`], 'ok');
    const bEnv = (await readFile(`/proc/${b.pid}/environ`, 'utf8')).split('\0');
    assert.ok(bEnv.includes('SECRET_KEY=iso-b-secret-key-value'));
    // Heroku's DYNO beside HANGAR_INSTANCE.
    assert.ok(
      bEnv.includes('DYNO=web.1') && bEnv.includes('HANGAR_INSTANCE=web.1'),
      bEnv.filter((v) => /^(DYNO|HANGAR_)/.test(v)).join(' '),
    );

    // App A: every read refused, every signal refused (SIGKILL: were it allowed, B would die).
    const fromA = probeAs('hangar-iso-a', [...ofB, ...ofAgent], [b.pid], 9);
    for (const path of [...ofB, ...ofAgent]) assert.equal(fromA[path], 'EACCES', `app A reads ${path}: ${fromA[path]}`);
    assert.equal(fromA[`kill ${b.pid}`], 'EPERM');
    // The agent's own files are closed to app B too.
    const agentFromB = probeAs('hangar-iso-b', ofAgent, [a.pid], 9);
    for (const path of ofAgent) assert.equal(agentFromB[path], 'EACCES', `app B reads ${path}`);
    assert.equal(agentFromB[`kill ${a.pid}`], 'EPERM');
    // B is unharmed.
    assert.equal((await webOf(cluster, 'iso-b')).pid, b.pid);
    assert.equal((await cluster.get(cluster.agents[0]!, 'iso-b')).status, 200);
  });
});
