/**
 * `hangar logs --grep` over a week of logs: 1M lines (default) of one app spread over 7 days are
 * stored through the real LogStore in a fresh coordinator database (the store's own rate, no
 * index work on that path), then the background indexer's step (LogSearchIndex, what the worker
 * thread runs) catches up and its rate is printed. Searches are timed through `LogStore.query`
 * (what `GET /v1/apps/APP/logs?grep=` runs): a rare word (a full search), a word in every 1000th
 * line, a common one, a rare one with `--since 1d`, none at all; three ways: before the index
 * (a plain scan of every line, as before the index existed), with the index caught up, and with
 * the index lagging `--lag` lines behind (those scanned).
 *
 *   npm run build && node dist/bench/log-search.js [--lines 1000000] [--runs 5] [--lag 50000]
 *
 * Prints the median time of each search beside the goal (< 1 s) and whether it was met.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SecretBox } from '../common/secret-box.js';
import { LogSearchIndex } from '../coordinator/logs/log-search.js';
import { LogStore, type IncomingLogLine, type LogQuery } from '../coordinator/logs/log-store.js';
import { Store } from '../coordinator/store/store.js';

const GOAL_MS = 1000;
const WEEK_MS = 7 * 86_400_000;

const { values: args } = parseArgs({
  options: {
    lines: { type: 'string', default: '1000000' },
    runs: { type: 'string', default: '5' },
    lag: { type: 'string', default: '50000' },
  },
});

function lineOf(i: number): string {
  if (i % 250_000 === 7) return `ERROR payment gateway said NeedleToken-${i} for order ${i}`;
  if (i % 1000 === 3) return `WARNING slow query took ${i % 9000} ms on /api/orders/${i}`;
  const path = ['/api/items/', '/static/app.css', '/accounts/login/', '/api/cart/'][i % 4] ?? '/';
  return `10.0.${i % 256}.${(i >> 8) % 256} - - "GET ${path}${i} HTTP/1.1" 200 ${i % 5000} ${(i * 7919) % 1000}ms ua=Mozilla/5.0`;
}

function main(): void {
  const total = Number(args.lines);
  const runs = Number(args.runs);
  const dir = mkdtempSync(join(tmpdir(), 'hangar-bench-search-'));
  const path = join(dir, 'hangar.db');
  const store = new Store({ path, secrets: new SecretBox(randomBytes(32)) });
  const logs = new LogStore({ path, maxAgeMs: 30 * 86_400_000, maxBytes: 100 * 1024 ** 3 });
  const search = new LogSearchIndex({ sourcePath: path, path: join(dir, 'log-search.db') });
  try {
    const now = Date.now();
    const start = now - WEEK_MS;
    const t0 = performance.now();
    const batchSize = 2000;
    for (let from = 1; from <= total; from += batchSize) {
      const batch: IncomingLogLine[] = [];
      for (let seq = from; seq < from + batchSize && seq <= total; seq++) {
        batch.push({
          seq,
          ts: start + Math.floor((seq / total) * WEEK_MS),
          app: 'shop',
          source: `web.${(seq % 3) + 1}`,
          stream: 'stdout',
          line: lineOf(seq),
        });
      }
      logs.ingest('agent-1', 'epoch-1', batch);
    }
    const ingestS = (performance.now() - t0) / 1000;
    console.log(
      `stored ${total} lines over 7 days in ${ingestS.toFixed(1)} s (${Math.round(total / ingestS)} lines/s); database ${(statSync(path).size / 1024 ** 2).toFixed(0)} MB`,
    );

    const searches: { name: string; query: LogQuery }[] = [
      { name: 'rare word, whole week (-n 100 --grep needletoken)', query: { app: 'shop', n: 100, grep: 'needletoken' } },
      { name: 'every 1000th line (-n 100 --grep "slow query")', query: { app: 'shop', n: 100, grep: 'slow query' } },
      { name: 'common word (-n 100 --grep mozilla)', query: { app: 'shop', n: 100, grep: 'mozilla' } },
      {
        name: 'rare word, last day (--since 1d --grep needletoken)',
        query: { app: 'shop', n: 100, grep: 'NEEDLETOKEN', since: now - 86_400_000 },
      },
      { name: 'no match at all (--grep nosuchthing)', query: { app: 'shop', n: 100, grep: 'nosuchthing' } },
    ];
    let allMet = true;
    const time = (label: string, goal: boolean) => {
      for (const s of searches) {
        const times: number[] = [];
        let found = 0;
        for (let r = 0; r < runs; r++) {
          const t = performance.now();
          found = logs.query(s.query).length;
          times.push(performance.now() - t);
        }
        times.sort((a, b) => a - b);
        const median = times[Math.floor(times.length / 2)] ?? 0;
        const met = median < GOAL_MS;
        if (goal) allMet &&= met;
        console.log(
          `${label}: ${s.name}: ${median.toFixed(1)} ms median of ${runs} (${found} lines)` +
            (goal ? `  goal < ${GOAL_MS} ms: ${met ? 'met' : 'missed'}` : ''),
        );
      }
    };
    time('before the index (scan)', false);

    const lag = Math.min(total, Number(args.lag));
    const t1 = performance.now();
    let indexed = 0;
    while (indexed < total - lag) indexed += search.step(Math.min(2000, total - lag - indexed)).indexed;
    const indexS = (performance.now() - t1) / 1000;
    console.log(
      `background index step: ${indexed} lines in ${indexS.toFixed(1)} s (${Math.round(indexed / indexS)} lines/s, off the ingestion path); ` +
        `index file ${(statSync(join(dir, 'log-search.db')).size / 1024 ** 2).toFixed(0)} MB`,
    );
    time(`index ${lag} lines behind (they are scanned)`, true);
    search.catchUp();
    time('index caught up', true);
    console.log(`grep over ${total} lines: goal < ${GOAL_MS} ms ${allMet ? 'met' : 'missed'}`);
  } finally {
    search.close();
    logs.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main();
