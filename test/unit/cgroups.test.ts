import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectCgroups } from '../../agent/limits/cgroup.js';

// A fake /sys/fs/cgroup: the kernel's files are plain files here (what a user never runs).
function fakeRoot(t: TestContext, files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'hangar-cgroup-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(root, path, '..'), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

const read = (path: string) => readFileSync(path, 'utf8');

/** Empties a fake cgroup directory, as the kernel's rmdir would not need. */
function clearFiles(dir: string): void {
  for (const name of readdirSync(dir)) unlinkSync(join(dir, name));
}

test('v1: a memory and a cpu,cpuacct hierarchy; limits, soft line, swap, quota, entering, counters, removal', (t) => {
  const root = fakeRoot(t, {
    'memory/memory.limit_in_bytes': '9223372036854771712\n',
    'cpu,cpuacct/cpu.cfs_quota_us': '-1\n',
    'cpuset/cpuset.cpus': '0-1\n',
  });
  const hierarchy = detectCgroups(root);
  assert.equal(hierarchy?.version, 'v1');
  const cg = hierarchy.instance('shop', 'shop_worker.1_v3');
  assert.equal(cg.path, 'hangar/shop/shop_worker.1_v3');
  const mem = join(root, 'memory/hangar/shop/shop_worker.1_v3');
  const cpu = join(root, 'cpu,cpuacct/hangar/shop/shop_worker.1_v3');
  // The host has swap accounting: memory + swap gets the same limit.
  mkdirSync(mem, { recursive: true });
  writeFileSync(join(mem, 'memory.memsw.limit_in_bytes'), '9223372036854771712\n');

  cg.apply({ memoryBytes: 64 * 1024 ** 2, softMemoryBytes: 57 * 1024 ** 2, cpu: 0.5 });
  assert.equal(read(join(mem, 'memory.limit_in_bytes')), String(64 * 1024 ** 2));
  assert.equal(read(join(mem, 'memory.memsw.limit_in_bytes')), String(64 * 1024 ** 2));
  assert.equal(read(join(mem, 'memory.soft_limit_in_bytes')), String(57 * 1024 ** 2));
  assert.equal(read(join(cpu, 'cpu.cfs_period_us')), '100000');
  assert.equal(read(join(cpu, 'cpu.cfs_quota_us')), '50000');

  cg.enter(4242);
  assert.equal(read(join(mem, 'cgroup.procs')), '4242');
  assert.equal(read(join(cpu, 'cgroup.procs')), '4242');

  writeFileSync(join(mem, 'memory.usage_in_bytes'), `${10 * 1024 ** 2}\n`);
  writeFileSync(join(mem, 'memory.oom_control'), 'oom_kill_disable 0\nunder_oom 0\noom_kill 0\n');
  assert.deepEqual(cg.usage(), { memoryBytes: 10 * 1024 ** 2, oomKills: 0, overSoft: false });
  writeFileSync(join(mem, 'memory.usage_in_bytes'), `${60 * 1024 ** 2}\n`);
  writeFileSync(join(mem, 'memory.oom_control'), 'oom_kill_disable 0\nunder_oom 0\noom_kill 2\n');
  assert.deepEqual(cg.usage(), { memoryBytes: 60 * 1024 ** 2, oomKills: 2, overSoft: true });

  // Limits taken away again: -1 is "none" in v1.
  cg.apply({ memoryBytes: null, softMemoryBytes: null, cpu: null });
  assert.equal(read(join(mem, 'memory.limit_in_bytes')), '-1');
  assert.equal(read(join(mem, 'memory.memsw.limit_in_bytes')), '-1');
  assert.equal(read(join(cpu, 'cpu.cfs_quota_us')), '-1');

  // A cgroup that still holds something stays; once empty it goes, with the app's parent.
  assert.equal(cg.remove(), false);
  clearFiles(mem);
  clearFiles(cpu);
  assert.equal(cg.remove(), true);
  assert.ok(!existsSync(join(root, 'memory/hangar/shop')));
  assert.ok(!existsSync(join(root, 'cpu,cpuacct/hangar/shop')));
  assert.ok(existsSync(join(root, 'memory/hangar')));
  assert.equal(cg.usage(), null);
});

test('v1 without a cpu hierarchy limits memory only', (t) => {
  const root = fakeRoot(t, { 'memory/memory.limit_in_bytes': '9223372036854771712\n', 'cpu/tasks': '' });
  const cg = detectCgroups(root)?.instance('shop', 'web');
  assert.ok(cg);
  cg.apply({ memoryBytes: 128 * 1024 ** 2, softMemoryBytes: null, cpu: 1 });
  cg.enter(7);
  assert.equal(read(join(root, 'memory/hangar/shop/web/memory.limit_in_bytes')), String(128 * 1024 ** 2));
  assert.ok(!existsSync(join(root, 'cpu/hangar')));
});

test('v2: controllers enabled down the tree; memory.max, memory.high, swap, cpu.max, events, removal', (t) => {
  const root = fakeRoot(t, { 'cgroup.controllers': 'cpuset cpu io memory hugetlb pids rdma misc\n', 'cgroup.subtree_control': 'cpu\n' });
  const hierarchy = detectCgroups(root);
  assert.equal(hierarchy?.version, 'v2');
  const cg = hierarchy.instance('shop', 'shop_web.1_v3');
  const dir = join(root, 'hangar/shop/shop_web.1_v3');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'memory.swap.max'), 'max\n');

  cg.apply({ memoryBytes: 512 * 1024 ** 2, softMemoryBytes: 460 * 1024 ** 2, cpu: 2 });
  // Only what was missing is enabled at the root; hangar/ and hangar/shop/ get both.
  assert.equal(read(join(root, 'cgroup.subtree_control')), '+memory');
  assert.equal(read(join(root, 'hangar/cgroup.subtree_control')), '+memory +cpu');
  assert.equal(read(join(root, 'hangar/shop/cgroup.subtree_control')), '+memory +cpu');
  assert.equal(read(join(dir, 'memory.max')), String(512 * 1024 ** 2));
  assert.equal(read(join(dir, 'memory.high')), String(460 * 1024 ** 2));
  assert.equal(read(join(dir, 'memory.swap.max')), '0');
  assert.equal(read(join(dir, 'cpu.max')), '200000 100000');

  cg.enter(99);
  assert.equal(read(join(dir, 'cgroup.procs')), '99');

  writeFileSync(join(dir, 'memory.current'), `${100 * 1024 ** 2}\n`);
  writeFileSync(join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n');
  assert.deepEqual(cg.usage(), { memoryBytes: 100 * 1024 ** 2, oomKills: 0, overSoft: false });
  // memory.high throttles the group below the line: a new `high` event is what says it was reached.
  writeFileSync(join(dir, 'memory.events'), 'low 0\nhigh 3\nmax 1\noom 1\noom_kill 1\n');
  assert.deepEqual(cg.usage(), { memoryBytes: 100 * 1024 ** 2, oomKills: 1, overSoft: true });
  assert.deepEqual(cg.usage(), { memoryBytes: 100 * 1024 ** 2, oomKills: 1, overSoft: false });

  cg.apply({ memoryBytes: null, softMemoryBytes: null, cpu: null });
  assert.equal(read(join(dir, 'memory.max')), 'max');
  assert.equal(read(join(dir, 'cpu.max')), 'max 100000');

  assert.equal(cg.remove(), false);
  clearFiles(dir);
  rmSync(join(root, 'hangar/shop/cgroup.subtree_control'));
  assert.equal(cg.remove(), true);
  assert.ok(!existsSync(join(root, 'hangar/shop')));
});

test('no memory controller, no limits', (t) => {
  assert.equal(detectCgroups(fakeRoot(t, { 'cgroup.controllers': 'cpu pids\n' })), null);
  assert.equal(detectCgroups(fakeRoot(t, { 'cpu/cpu.cfs_quota_us': '-1\n' })), null);
  assert.equal(detectCgroups(join(tmpdir(), 'hangar-no-such-cgroup-root')), null);
});
