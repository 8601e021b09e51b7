import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { startCluster } from '../helpers/cluster.js';
import { deployFixture, ps } from '../helpers/deploy-fixture.js';

/** Whether a TCP connection to `host:port` is accepted. */
function reachable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: 5000 });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

test('a web instance listens on its agent’s advertise address only, not on every address', async (t) => {
  // The agent advertises 127.0.0.1 (a single-agent install, like `hangar dev`); the fixture's
  // Procfile says `--bind 0.0.0.0:$PORT`.
  const cluster = await startCluster(t);
  await deployFixture(cluster, 'bound');
  const web = (await ps(cluster, 'bound')).find((r) => r.id === 'web.1');
  assert.ok(web?.port && web.pid);
  assert.equal(await reachable('127.0.0.1', web.port), true);
  // Another address of this host (all of 127.0.0.0/8 is local): nothing listens there.
  assert.equal(await reachable('127.0.0.2', web.port), false);
  // It is given the coordinator's CA for its PostgreSQL add-ons (sslmode=verify-full).
  const environ = readFileSync(`/proc/${web.pid}/environ`, 'utf8').split('\0');
  assert.ok(environ.includes(`PGSSLROOTCERT=${join(cluster.dir, 'agent-agent-1', 'ca.crt')}`), environ.join('\n'));
  // The router still reaches it.
  assert.equal((await cluster.get(cluster.agents[0]!, 'bound')).status, 200);
});
