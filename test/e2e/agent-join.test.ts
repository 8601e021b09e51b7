import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { parseJoinToken } from '../../common/join-token.js';
import { startCluster, waitFor } from '../helpers/cluster.js';

async function agentNames(cli: (args: string[]) => Promise<{ code: number | null; stdout: string; stderr: string }>): Promise<string[]> {
  const r = await cli(['agents', '--json']);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { name: string }[]).map((a) => a.name).sort();
}

test('the gRPC port speaks TLS with the CA the join token pins', { timeout: 60_000 }, async (t) => {
  const cluster = await startCluster(t, { agents: 0 });
  const { caFingerprint } = parseJoinToken(cluster.coordinator.joinToken);
  assert.equal(caFingerprint, cluster.coordinator.caFingerprint);
  const caPem = await readFile(join(cluster.dir, 'coordinator', 'tls', 'ca.crt'), 'utf8');
  assert.equal(createHash('sha256').update(new X509Certificate(caPem).raw).digest('hex'), caFingerprint);
  assert.equal((await stat(join(cluster.dir, 'coordinator', 'tls', 'ca.key'))).mode & 0o777, 0o600);
  assert.equal((await stat(join(cluster.dir, 'coordinator', 'join-token'))).mode & 0o777, 0o600);

  const handshake = await new Promise<{ authorized: boolean; protocol: string | false | null }>((resolve, reject) => {
    const socket = connect({
      host: '127.0.0.1',
      port: cluster.coordinator.grpcPort,
      ca: caPem,
      servername: 'hangar-coordinator',
      ALPNProtocols: ['h2'],
    });
    socket.once('secureConnect', () => {
      resolve({ authorized: socket.authorized, protocol: socket.alpnProtocol });
      socket.destroy();
    });
    socket.once('error', reject);
  });
  assert.deepEqual(handshake, { authorized: true, protocol: 'h2' });

  // Verified against the system's CAs instead, the certificate is not trusted.
  const untrusted = await new Promise<string>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: cluster.coordinator.grpcPort, servername: 'hangar-coordinator' });
    socket.once('secureConnect', () => {
      resolve('connected');
      socket.destroy();
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
  assert.notEqual(untrusted, 'connected');
});

test(
  'agents join with the token, get their own credential, and are refused when it is wrong or revoked',
  { timeout: 120_000 },
  async (t) => {
    const cluster = await startCluster(t, { agents: 0 });
    const { secret, caFingerprint } = parseJoinToken(cluster.coordinator.joinToken);

    // Another CA's fingerprint: the agent refuses the coordinator before sending its secret.
    const otherFingerprint = randomBytes(32).toString('hex');
    await cluster.startAgent('pinned-elsewhere', { joinToken: `${secret}.${otherFingerprint}` });
    // A bogus secret with the right fingerprint: the coordinator refuses the join.
    await cluster.startAgent('bogus', { joinToken: `hgr_join_${randomBytes(24).toString('base64url')}.${caFingerprint}` });
    // The real token joins.
    await cluster.startAgent('good');

    await waitFor('the good agent to be listed', async () => (await agentNames((args) => cluster.cli(args))).includes('good'), 30_000);
    const readLog = (name: string) => readFile(join(cluster.dir, `agent-${name}.log`), 'utf8');
    await waitFor('the refusals to be logged', async () => {
      const elsewhere = await readLog('pinned-elsewhere');
      const bogus = await readLog('bogus');
      return elsewhere.includes('does not present the CA this join token pins') && bogus.includes('join token is wrong');
    });
    assert.deepEqual(await agentNames((args) => cluster.cli(args)), ['good'], 'a wrong join token never joins');
    assert.ok(!existsSync(join(cluster.dir, 'agent-pinned-elsewhere', 'credential.json')));
    assert.ok(!existsSync(join(cluster.dir, 'agent-bogus', 'credential.json')));
    const coordinatorLog = await readFile(join(cluster.dir, 'coordinator.log'), 'utf8');
    assert.match(coordinatorLog, /wrong join token/);
    assert.ok(!(await readLog('pinned-elsewhere')).includes(secret), 'the join secret is never logged');

    const credentialPath = join(cluster.dir, 'agent-good', 'credential.json');
    assert.equal((await stat(credentialPath)).mode & 0o777, 0o600);
    const identity = JSON.parse(await readFile(credentialPath, 'utf8')) as { credential: string; caFingerprint: string };
    assert.match(identity.credential, /^hgr_agent_/);
    assert.equal(identity.caFingerprint, caFingerprint);

    // Removing the agent revokes its credential: it is cut off and cannot come back.
    const removed = await cluster.cli(['agents:remove', 'good']);
    assert.equal(removed.code, 0, removed.stderr);
    await waitFor('the removed agent to be refused', async () => {
      return (await readLog('good')).includes('the coordinator refused this agent');
    });
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(await agentNames((args) => cluster.cli(args)), [], 'a removed agent stays out');
    const again = await cluster.cli(['agents:remove', 'good']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /No agent named good/);
  },
);
