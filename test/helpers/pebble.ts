import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { waitFor } from './cluster.js';
import { TestCa } from './test-certs.js';

/** A port free on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Ports and files of a {@link startPebble} ACME server, chosen before it starts. */
export interface PebblePlan {
  /** The ACME directory URL (`https://127.0.0.1:PORT/dir`). */
  directoryUrl: string;
  /** The CA file to trust for the directory's HTTPS (`--acme-ca`). */
  caFile: string;
  port: number;
  managementPort: number;
  dnsPort: number;
  dir: string;
}

/**
 * Chooses Pebble's ports and makes the certificate of its own HTTPS (a throwaway CA, made with
 * openssl), so the coordinator can be configured before Pebble runs.
 */
export async function planPebble(dir: string): Promise<PebblePlan> {
  const ca = await TestCa.create(dir);
  const cert = await ca.issue(['localhost', 'IP:127.0.0.1']);
  await writeFile(join(dir, 'pebble-cert.pem'), cert.certPem);
  await writeFile(join(dir, 'pebble-key.pem'), cert.keyPem);
  const port = await freePort();
  return {
    directoryUrl: `https://127.0.0.1:${port}/dir`,
    caFile: join(dir, 'ca.pem'),
    port,
    managementPort: await freePort(),
    dnsPort: await freePort(),
    dir,
  };
}

/** Spawns `command` in its own process group; the group is stopped after the test. */
function spawnGroup(t: TestContext, command: string, args: string[], env: Record<string, string>, log: string): ChildProcess {
  const out = createWriteStream(log);
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  child.stdout?.pipe(out);
  child.stderr?.pipe(out);
  t.after(async () => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    process.kill(-child.pid, 'SIGTERM');
    await exited;
  });
  return child;
}

/**
 * Runs Debian's `pebble` (a test ACME server) validating HTTP-01 on `httpPort` of 127.0.0.1 (a
 * router), with `pebble-challtestsrv` as its DNS server answering every name with 127.0.0.1.
 * Resolves once the directory answers; both are stopped after the test. Returns Pebble's root CA
 * (PEM), which signs the certificates it issues.
 */
export async function startPebble(t: TestContext, plan: PebblePlan, httpPort: number): Promise<{ rootPem: string }> {
  const config = join(plan.dir, 'pebble-config.json');
  await writeFile(
    config,
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${plan.port}`,
        managementListenAddress: `127.0.0.1:${plan.managementPort}`,
        certificate: join(plan.dir, 'pebble-cert.pem'),
        privateKey: join(plan.dir, 'pebble-key.pem'),
        httpPort,
        tlsPort: await freePort(),
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
      },
    }),
  );
  spawnGroup(
    t,
    'pebble-challtestsrv',
    [
      '-defaultIPv4',
      '127.0.0.1',
      '-defaultIPv6',
      '',
      '-dns01',
      `127.0.0.1:${plan.dnsPort}`,
      '-http01',
      '',
      '-https01',
      '',
      '-tlsalpn01',
      '',
      '-management',
      `127.0.0.1:${await freePort()}`,
    ],
    {},
    join(plan.dir, 'challtestsrv.log'),
  );
  spawnGroup(
    t,
    'pebble',
    ['-config', config, '-dnsserver', `127.0.0.1:${plan.dnsPort}`],
    { PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0' },
    join(plan.dir, 'pebble.log'),
  );
  const ca = await TestCa.caPemOf(plan.dir);
  await waitFor('pebble to answer', () => fetchText(plan.directoryUrl, ca).then((body) => body.includes('newOrder')), 30_000);
  const rootPem = await fetchText(`https://127.0.0.1:${plan.managementPort}/roots/0`, ca);
  return { rootPem };
}

function fetchText(url: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca, timeout: 5_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}
