import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FIXTURES, startCluster, waitFor } from '../helpers/cluster.js';

/** Every file below `dir` (links not followed) that contains `needle`. */
async function filesContaining(dir: string, needle: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (path: string): Promise<void> => {
    const info = await stat(path).catch(() => null);
    if (!info) return;
    if (info.isDirectory()) {
      for (const name of await readdir(path)) await walk(join(path, name));
    } else if (info.isFile()) {
      const data = await readFile(path).catch(() => Buffer.alloc(0));
      if (data.includes(needle)) found.push(path);
    }
  };
  await walk(dir);
  return found;
}

function uidsOf(pid: number): number[] {
  const status = execFileSync('cat', [`/proc/${pid}/status`], { encoding: 'utf8' });
  const line = status.split('\n').find((l) => l.startsWith('Uid:')) ?? '';
  return line.split(/\s+/).slice(1).map(Number);
}

test(
  'config values are encrypted at rest and masked; apps run as the hangar user when the agent is root',
  { timeout: 300_000 },
  async (t) => {
    const cluster = await startCluster(t, { agents: 1 });
    const agent = cluster.agents[0];
    assert.ok(agent);
    const secret = `s3cr3t-${randomBytes(12).toString('hex')}`;

    assert.equal((await cluster.cli(['apps:create', 'vault'])).code, 0);
    const set = await cluster.cli(['config:set', `VAULT_PASSWORD=${secret}`, 'DJANGO_ALLOWED_HOSTS=.localhost', '-a', 'vault']);
    assert.equal(set.code, 0, set.stderr);
    const deploy = await cluster.cli(['deploy', join(FIXTURES, 'django-app'), '-a', 'vault'], { timeoutMs: 240_000 });
    assert.equal(deploy.code, 0, `${deploy.stdout}\n${deploy.stderr}`);

    // The app gets the value in its environment.
    const env = await waitFor('the app to answer', async () => {
      const res = await cluster.get(agent, 'vault', '/env/VAULT_PASSWORD/');
      return res.status === 200 ? res.body : null;
    });
    assert.match(env, /"set": true/);

    // Masked unless asked for.
    const shown = await cluster.cli(['config', '-a', 'vault']);
    assert.equal(shown.code, 0, shown.stderr);
    assert.ok(!shown.stdout.includes(secret), shown.stdout);
    assert.match(shown.stdout, /VAULT_PASSWORD:\s+\*{8}/);
    const revealed = await cluster.cli(['config', '--reveal', '-a', 'vault']);
    assert.ok(revealed.stdout.includes(secret));
    assert.equal((await cluster.cli(['config:get', 'VAULT_PASSWORD', '-a', 'vault'])).stdout.trim(), secret);

    // A second release (config change) rolls out too, then nothing on disk holds the value in clear:
    // not the SQLite files, not the agent's cached desired state, not instance files, not the logs.
    const psV1 = JSON.parse((await cluster.cli(['ps', '--json', '-a', 'vault'])).stdout) as { pid: number | null }[];
    const v1Pid = psV1[0]?.pid;
    assert.ok(v1Pid);
    const again = await cluster.cli(['config:set', 'OTHER=1', '-a', 'vault'], { timeoutMs: 120_000 });
    assert.equal(again.code, 0, again.stderr);
    // Restart the agent once v1's process is gone (an agent leaves running apps, not half-stopped ones).
    await waitFor('v1 to stop', () => {
      try {
        process.kill(v1Pid, 0);
        return false;
      } catch {
        return true;
      }
    });
    await new Promise((r) => setTimeout(r, 500));
    await agent.close();
    cluster.agents.splice(0, 1);
    const restarted = await cluster.startAgent('agent-1');
    await waitFor('the restarted agent to serve the app from its sealed cache', async () => {
      const res = await cluster.get(restarted, 'vault', '/env/VAULT_PASSWORD/');
      return res.status === 200 && res.body.includes('"set": true');
    });
    const leaks = await filesContaining(cluster.dir, secret);
    assert.deepEqual(leaks, [], `the value is in clear in ${leaks.join(', ')}`);
    for (const key of ['coordinator/secret-key', 'agent-agent-1/secret-key']) {
      assert.equal((await stat(join(cluster.dir, key))).mode & 0o777, 0o600, key);
    }

    // The web process runs as the app's own unprivileged user (hangar-APP), and so did the release phase.
    const ps = await cluster.cli(['ps', '--json', '-a', 'vault']);
    const web = (JSON.parse(ps.stdout) as { type: string; pid: number | null; state: string }[]).find((r) => r.type === 'web');
    assert.ok(web?.pid, ps.stdout);
    const hangarUid = Number(execFileSync('id', ['-u', 'hangar-vault'], { encoding: 'utf8' }).trim());
    assert.notEqual(hangarUid, 0);
    assert.deepEqual(uidsOf(web.pid), [hangarUid, hangarUid, hangarUid, hangarUid]);
    // ...with the value in its environment (root can read it from /proc; the app's user owns it).
    assert.ok((await readFile(`/proc/${web.pid}/environ`)).includes(`VAULT_PASSWORD=${secret}`));
    assert.match(deploy.stdout + deploy.stderr, /Applying notes\.0001_initial/, 'the release phase ran (as hangar, in its slug)');
  },
);
