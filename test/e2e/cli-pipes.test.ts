import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HANGAR_BIN, startCluster, tempDir } from '../helpers/cluster.js';

/** Runs `sh -c SCRIPT` and returns its output and the CLI's own exit code (PIPESTATUS via `$?` of a subshell). */
function shell(script: string, env: Record<string, string>, cwd?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', script], { env: { ...process.env, ...env }, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

test(
  'the CLI stops quietly when its reader goes away, takes --json on whoami and config:get, and finds the app in .hangar',
  { timeout: 180_000 },
  async (t) => {
    const cluster = await startCluster(t, { agents: 0 });
    const env = {
      HANGAR_URL: cluster.coordinator.url,
      HANGAR_TOKEN: cluster.coordinator.adminToken,
      HANGAR_CREDENTIALS: join(cluster.dir, 'none.json'),
    };
    assert.equal((await cluster.cli(['apps:create', 'shop'])).code, 0);
    // More output than a pipe buffers (64 KiB), so the CLI is still writing when `head` exits.
    const big = Array.from({ length: 4 }, (_v, i) => `BIG_${i}=${String(i).repeat(30_000)}`);
    const set = await cluster.cli(['config:set', ...big, '-a', 'shop']);
    assert.equal(set.code, 0, set.stderr);

    const piped = await shell(`node ${HANGAR_BIN} config --reveal -a shop | head -c 20; exit \${PIPESTATUS[0]}`, env);
    assert.equal(piped.stdout.length, 20);
    assert.doesNotMatch(piped.stderr, /EPIPE|Error|at /, piped.stderr);
    assert.equal(piped.code, 0, `the CLI exits 0 on a closed pipe: ${piped.stderr}`);

    const who = await cluster.cli(['whoami', '--json']);
    assert.equal(who.code, 0, who.stderr);
    const me = JSON.parse(who.stdout) as { url: string; source: string; version: string };
    assert.equal(me.url, cluster.coordinator.url);
    assert.equal(me.source, 'env');
    assert.match(me.version, /\d/);

    const got = await cluster.cli(['config:get', 'BIG_1', '--json', '-a', 'shop']);
    assert.equal(got.code, 0, got.stderr);
    assert.deepEqual(JSON.parse(got.stdout), { key: 'BIG_1', value: '1'.repeat(30_000) });

    // The app from a .hangar file in the project folder, or a folder above it.
    const project = await tempDir(t);
    await mkdir(join(project, 'shop', 'templates'), { recursive: true });
    await writeFile(join(project, '.hangar'), '# this project\napp=shop\n');
    const fromFile = await shell(`node ${HANGAR_BIN} config:get BIG_0`, env, join(project, 'shop', 'templates'));
    assert.equal(fromFile.code, 0, fromFile.stderr);
    assert.equal(fromFile.stdout.trim(), '0'.repeat(30_000));
    const elsewhere = await shell(`node ${HANGAR_BIN} config:get BIG_0`, env, cluster.dir);
    assert.equal(elsewhere.code, 2);
    assert.match(elsewhere.stderr, /No app given: .*\.hangar file/);
  },
);
