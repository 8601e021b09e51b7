import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { agentConfigSchema } from '../../agent/agent-config.js';
import { isHangarError } from '../../common/errors.js';
import { cpuLimitSchema } from '../../common/resource-limit-schemas.js';

const base = { coordinator: 'c.example.com:7081', joinToken: 'hgr_join_x.y', dataDir: '/tmp/agent' };

describe('agent settings', () => {
  it('applies every default to what a caller leaves out', () => {
    const s = agentConfigSchema.parse({ ...base, name: 'web-1' });
    assert.equal(s.name, 'web-1');
    assert.equal(s.routerPort, 80);
    assert.equal(s.httpsPort, 443);
    assert.equal(s.routerHost, '0.0.0.0');
    assert.equal(s.maxInstances, 50);
    assert.equal(s.settleMs, 1000);
    assert.equal(s.singletonLeaseMs, 30_000);
    assert.equal(s.logSpoolBytes, 256 * 1024 * 1024);
    assert.equal(s.cgroupRoot, '/sys/fs/cgroup');
    assert.match(s.advertise, /^\d+\.\d+\.\d+\.\d+$/);
    assert.equal(s.instanceAddress, undefined);
    assert.equal(s.defaultCpu, undefined);
    // null where null means "off".
    const off = agentConfigSchema.parse({ ...base, httpsPort: null, cgroupRoot: null });
    assert.equal(off.httpsPort, null);
    assert.equal(off.cgroupRoot, null);
  });

  it('names every bad field in one BAD_INPUT error, unknown keys too', () => {
    let caught: unknown;
    try {
      agentConfigSchema.parse({
        ...base,
        coordinator: 'no-port',
        routerPort: 70000,
        maxInstances: 0,
        settleMs: 1.5,
        appUser: 'Root!',
        httpsPort: null,
        routerHost: null,
        colour: 'blue',
      });
    } catch (err) {
      caught = err;
    }
    assert.ok(isHangarError(caught) && caught.code === 'BAD_INPUT', 'a BAD_INPUT error');
    assert.equal(
      caught.message,
      'Invalid agent settings: coordinator must be HOST:PORT, or several comma-separated; routerPort must be at most 65535; ' +
        'routerHost expected a string; maxInstances must be positive; settleMs expected an integer; ' +
        'appUser must match /^[a-z_][a-z0-9_-]{0,31}$/; colour unrecognized key "colour".',
    );
    assert.equal(agentConfigSchema.safeParse({ ...base, joinToken: undefined }).success, false);
    assert.equal(agentConfigSchema.safeParse('coordinator=x').success, false);
  });

  it('checks a default CPU limit with the same words as app.json limits', () => {
    for (const bad of [0.001, 5000, 'two']) {
      const ours = agentConfigSchema.safeParse({ ...base, defaultCpu: bad });
      const theirs = cpuLimitSchema.safeParse(bad);
      assert.equal(ours.success, false);
      assert.equal(theirs.success, false);
      assert.equal(ours.success ? '' : ours.error.issues[0]?.message, theirs.success ? '' : theirs.error.issues[0]?.message);
    }
    assert.equal(agentConfigSchema.parse({ ...base, defaultCpu: 0.5 }).defaultCpu, 0.5);
  });
});
