/**
 * The router as the agent runs it, in a process of its own, for bench/router.ts: the agent's
 * {@link Router} with its defaults, one app routed to the upstream given, and every request's
 * access entry handled as in production: appended to the router's access journal as the router
 * process does (router-host.ts), read back every second and written as access lines to the
 * agent's log spool (the {@link LogShipper}, disconnected, so lines stay on disk) as the agent does
 * (router-client.ts, agent.ts). Both halves run in this process, so their CPU is the router's in
 * the benchmark's figures. With `--cert` and `--key` (PEM files) it listens on HTTPS too, that
 * certificate loaded through {@link Router.setTls} for the domain as the agent loads it. Prints
 * `{"port": N, "httpsPort": M}` once listening (M 0 without HTTPS); SIGTERM closes it.
 *
 * `--workers N` (default 1) runs N such routers in `node:cluster` workers sharing the listening
 * sockets (the primary only forks and waits): each has its own Router with the same routes and
 * certificate, and its own log spool (in the agent they would send their access lines to it). It
 * measures what more than one router process buys; the agent runs one.
 *
 *   node dist/bench/router-server.js --upstream 127.0.0.1:PORT --domain bench.localhost --dir DIR [--cert PEM --key PEM] [--workers N]
 */
import cluster from 'node:cluster';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { systemClock } from '../common/clock.js';
import { accessLine } from '../agent/logs/log-lines.js';
import { LogShipper } from '../agent/logs/log-shipper.js';
import { AccessJournalReader, AccessJournalWriter } from '../agent/router/access-journal.js';
import { Router } from '../agent/router/router.js';

/** How often the agent reads the router's access journal (router-client.ts's ACCESS_POLL_MS). */
const ACCESS_POLL_MS = 1000;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** The cluster primary: picks the ports, forks the workers, prints the ports once all listen. */
async function primary(workers: number, https: boolean): Promise<void> {
  const ports = { port: await freePort(), httpsPort: https ? await freePort() : 0 };
  let listening = 0;
  for (let i = 0; i < workers; i++) {
    const worker = cluster.fork({ HANGAR_BENCH_WORKER: String(i), HANGAR_BENCH_PORTS: JSON.stringify(ports) });
    worker.on('message', (m: unknown) => {
      if (m === 'listening' && ++listening === workers) process.stdout.write(`${JSON.stringify(ports)}\n`);
    });
    worker.on('exit', (code, signal) => {
      if (signal !== 'SIGTERM' && code !== 0) {
        process.stderr.write(`router worker ${i} exited (${code ?? signal})\n`);
        process.exit(1);
      }
    });
  }
  // SIGTERM reaches the workers too (one process group); the primary ends when they have.
  process.once('SIGTERM', () => cluster.disconnect(() => process.exit(0)));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      upstream: { type: 'string' },
      domain: { type: 'string', default: 'bench.localhost' },
      dir: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      workers: { type: 'string', default: '1' },
    },
  });
  const workers = Number(values.workers);
  if (!Number.isInteger(workers) || workers < 1) throw new Error('--workers takes a whole number ≥ 1');
  if (workers > 1 && cluster.isPrimary) return primary(workers, values.cert !== undefined);
  const worker = process.env.HANGAR_BENCH_WORKER;
  const ports =
    worker === undefined
      ? { port: 0, httpsPort: 0 }
      : (JSON.parse(process.env.HANGAR_BENCH_PORTS ?? '{}') as { port: number; httpsPort: number });
  const [host, port] = (values.upstream ?? '').split(':');
  if (host === undefined || port === undefined || values.dir === undefined) {
    throw new Error('usage: router-server --upstream HOST:PORT --dir DIR [--domain NAME]');
  }
  const logger = pino({ level: 'info' }, createWriteStream(join(values.dir, 'router.log'), { flags: 'a' }));
  const logs = new LogShipper({
    dir: join(values.dir, worker === undefined ? 'spool' : `spool-${worker}`),
    send: () => false,
    clock: systemClock,
    logger,
  });
  logs.start();
  const domain = values.domain;
  const journalDir = join(values.dir, worker === undefined ? 'access' : `access-${worker}`);
  const journal = new AccessJournalWriter({ dir: journalDir, logger });
  const reader = new AccessJournalReader({
    dir: journalDir,
    offsetFile: `${journalDir}.offset`,
    logger,
    onEntries: (entries) =>
      logs.writeMany(entries.flatMap((e) => (e.app ? [{ app: e.app, source: 'router', line: accessLine(e, domain), ts: e.ts }] : []))),
  });
  const readTimer = setInterval(() => {
    for (let i = 0; i < 16 && reader.read(); i++);
  }, ACCESS_POLL_MS);
  const router = new Router({
    port: ports.port,
    host: '127.0.0.1',
    ...(values.cert === undefined ? {} : { httpsPort: ports.httpsPort }),
    logger,
    onAccess: (e) => journal.append(e),
  });
  router.setRoutes([{ app: 'bench', domains: [domain], backends: [{ instanceKey: 'bench:web.1:v1', host, port: Number(port) }] }]);
  if (values.cert !== undefined && values.key !== undefined) {
    const [certPem, keyPem] = await Promise.all([readFile(values.cert, 'utf8'), readFile(values.key, 'utf8')]);
    router.setTls({ certificates: [{ id: 'bench', domains: [domain], certPem, keyPem }], challenges: new Map() });
  }
  const started = await router.start();
  if (worker === undefined) process.stdout.write(`${JSON.stringify(started)}\n`);
  else process.send?.('listening');
  process.once('SIGTERM', () => {
    void (async () => {
      await router.close();
      clearInterval(readTimer);
      journal.close();
      reader.read();
      logs.close();
      process.exit(0);
    })();
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
