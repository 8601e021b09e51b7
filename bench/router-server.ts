/**
 * The router as the agent runs it, in a process of its own, for bench/router.ts: the agent's
 * {@link Router} with its defaults, one app routed to the upstream given, and every request's
 * access line written to the agent's log spool (the {@link LogShipper}, disconnected, so lines stay
 * on disk) as the agent does. With `--cert` and `--key` (PEM files) it listens on HTTPS too, that
 * certificate loaded through {@link Router.setTls} for the domain as the agent loads it. Prints
 * `{"port": N, "httpsPort": M}` once listening (M 0 without HTTPS); SIGTERM closes it.
 *
 *   node dist/bench/router-server.js --upstream 127.0.0.1:PORT --domain bench.localhost --dir DIR [--cert PEM --key PEM]
 */
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { systemClock } from '../common/clock.js';
import { accessLine } from '../agent/logs/log-lines.js';
import { LogShipper } from '../agent/logs/log-shipper.js';
import { Router } from '../agent/router/router.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      upstream: { type: 'string' },
      domain: { type: 'string', default: 'bench.localhost' },
      dir: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
    },
  });
  const [host, port] = (values.upstream ?? '').split(':');
  if (host === undefined || port === undefined || values.dir === undefined) {
    throw new Error('usage: router-server --upstream HOST:PORT --dir DIR [--domain NAME]');
  }
  const logger = pino({ level: 'info' }, createWriteStream(join(values.dir, 'router.log')));
  const logs = new LogShipper({ dir: join(values.dir, 'spool'), send: () => false, clock: systemClock, logger });
  logs.start();
  const domain = values.domain;
  const router = new Router({
    port: 0,
    host: '127.0.0.1',
    ...(values.cert === undefined ? {} : { httpsPort: 0 }),
    logger,
    onAccess: (e) => {
      if (e.app) logs.write({ app: e.app, source: 'router', line: accessLine(e, domain), ts: e.ts });
    },
  });
  router.setRoutes([{ app: 'bench', domains: [domain], backends: [{ instanceKey: 'bench:web.1:v1', host, port: Number(port) }] }]);
  if (values.cert !== undefined && values.key !== undefined) {
    const [certPem, keyPem] = await Promise.all([readFile(values.cert, 'utf8'), readFile(values.key, 'utf8')]);
    router.setTls({ certificates: [{ id: 'bench', domains: [domain], certPem, keyPem }], challenges: new Map() });
  }
  const started = await router.start();
  process.stdout.write(`${JSON.stringify(started)}\n`);
  process.once('SIGTERM', () => {
    void (async () => {
      await router.close();
      logs.close();
      process.exit(0);
    })();
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
