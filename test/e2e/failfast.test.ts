import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, cp, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FIXTURES, startCluster, tempDir, type CliResult } from '../helpers/cluster.js';
import { deployFixture, ps } from '../helpers/deploy-fixture.js';

const APP = 'shop';

function out(r: CliResult): string {
  return `${r.stdout}\n${r.stderr}`;
}

test(
  'deploys fail fast and say why: an unimportable release fails its build with file and line; a failing health check names status and page',
  { timeout: 420_000 },
  async (t) => {
    const cluster = await startCluster(t, { agents: 1, coordinator: { healthTimeoutMs: 30_000 } });
    const variants = await tempDir(t, 'hangar-failfast-');
    await deployFixture(cluster, APP);
    const viewsLines = (await readFile(join(FIXTURES, 'django-app', 'notes', 'views.py'), 'utf8')).split('\n').length;

    const variant = async (name: string, append: string): Promise<string> => {
      const dir = join(variants, name);
      await cp(join(FIXTURES, 'django-app'), dir, { recursive: true });
      await appendFile(join(dir, 'notes', 'views.py'), append);
      return dir;
    };

    await t.test('a syntax error in views.py: the build fails naming notes/views.py and its line', async () => {
      const dir = await variant('syntax', '\n\ndef broken(:\n    pass\n');
      const started = Date.now();
      const res = await cluster.cli(['deploy', dir, '-a', APP], { timeoutMs: 300_000 });
      const seconds = (Date.now() - started) / 1000;
      assert.notEqual(res.code, 0, out(res));
      assert.match(res.stderr, new RegExp(`notes/views\\.py, line ${viewsLines + 2}: SyntaxError`), out(res));
      assert.doesNotMatch(out(res), /Starting v2/, 'nothing was started');
      t.diagnostic(`syntax error: deploy failed after ${seconds.toFixed(1)} s`);
      assert.ok(seconds < 60, `${seconds} s`);
      const rows = await ps(cluster, APP);
      assert.ok(
        rows.every((r) => r.release === 'v1' && r.state === 'up'),
        JSON.stringify(rows),
      );
    });

    await t.test('an ImportError in views.py: manage.py check fails the build with the file and line', async () => {
      const dir = await variant('import', '\n\nimport hangar_no_such_module  # noqa\n');
      const res = await cluster.cli(['deploy', dir, '-a', APP], { timeoutMs: 300_000 });
      assert.notEqual(res.code, 0, out(res));
      assert.match(res.stderr, /the app cannot be imported/, out(res));
      assert.match(res.stderr, new RegExp(`notes/views\\.py, line ${viewsLines + 2}: ModuleNotFoundError`), out(res));
      assert.doesNotMatch(out(res), /Starting v3/, 'nothing was started');
      const rows = await ps(cluster, APP);
      assert.ok(
        rows.every((r) => r.release === 'v1' && r.state === 'up'),
        JSON.stringify(rows),
      );
    });

    await t.test('a health check that fails says why (status and page) in the deploy output and the logs, summarised', async () => {
      // With the settings autopilot off for ALLOWED_HOSTS (it would add shop.localhost back).
      const set = await cluster.cli(['config:set', 'DJANGO_ALLOWED_HOSTS=example.com', 'HANGAR_DJANGO_ALLOWED_HOSTS=0', '-a', APP], {
        timeoutMs: 200_000,
      });
      assert.notEqual(set.code, 0, out(set));
      assert.match(out(set), /HTTP 400 from GET \/ \(Host shop\.localhost\)/);
      assert.match(out(set), /did not become healthy within 30 s .*last health check: HTTP 400/);
      const logs = await cluster.cli(['logs', '-a', APP, '-n', '2000', '--grep', 'Health check failed']);
      assert.equal(logs.code, 0, logs.stderr);
      const health = logs.stdout.split('\n').filter((l) => /Health check failed/.test(l));
      assert.ok(health.length >= 1, logs.stdout);
      // 30 s of polls 4 times a second, summarised: a handful of lines, not one a poll.
      assert.ok(health.length <= 6, health.join('\n'));
      const rows = await ps(cluster, APP);
      assert.ok(
        rows.every((r) => r.release === 'v1' && r.state === 'up'),
        JSON.stringify(rows),
      );
    });
  },
);
