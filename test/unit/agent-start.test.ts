import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { agentConfigSchema, startAgent } from '../../agent/agent.js';
import { silentLogger } from '../../common/logger.js';

describe('startAgent', () => {
  it('closes what it had started when a later step fails (the router port is taken)', async (t) => {
    const dataDir = mkdtempSync(join(tmpdir(), 'hangar-agent-start-'));
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    t.after(() => {
      blocker.close();
      rmSync(dataDir, { recursive: true, force: true });
    });
    const before = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    await assert.rejects(
      startAgent(
        {
          coordinator: '127.0.0.1:1',
          joinToken: 'hgr_join_secretsecretsecret.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
          dataDir,
          name: 'agent-start-test',
          routerHost: '127.0.0.1',
          routerPort: (blocker.address() as AddressInfo).port,
          httpsPort: 0,
          advertise: '127.0.0.1',
        },
        { logger: silentLogger() },
      ),
      /EADDRINUSE/,
    );
    // The log shipper started before the router: its poll timer must be gone again.
    const after = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    assert.equal(after, before);
  });

  it('takes trusted proxies as CIDR ranges, none by default, and names a malformed one', () => {
    const base = { coordinator: 'c.example.com:7081', joinToken: 'hgr_join_x.y', dataDir: '/tmp/agent' };
    assert.deepEqual(agentConfigSchema.parse(base).trustedProxies, []);
    assert.deepEqual(agentConfigSchema.parse({ ...base, trustedProxies: ['10.0.0.0/8', '::1'] }).trustedProxies, ['10.0.0.0/8', '::1']);
    const bad = agentConfigSchema.safeParse({ ...base, trustedProxies: ['10.0.0.0/8', '10.0.0.0/99'] });
    assert.equal(bad.success, false);
    assert.deepEqual(
      bad.error?.issues.map((i) => i.path),
      [['trustedProxies', 1]],
    );
  });
});
