import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { matchesFilter } from '../../coordinator/logs/log-hub.js';
import { parseSince } from '../../coordinator/logs/log-query.js';
import { pino } from 'pino';
import { LogIndexer } from '../../coordinator/logs/log-indexer.js';
import { LogSearchIndex } from '../../coordinator/logs/log-search.js';
import { LogStore, parseErrorLine, type IncomingLogLine, type LogStorage } from '../../coordinator/logs/log-store.js';
import { PostgresLogStore, type PostgresLogStoreOptions } from '../../coordinator/logs/postgres-log-store.js';
import { ensureDayPartitions } from '../../coordinator/store/postgres-partitions.js';
import { testPostgres } from '../helpers/postgres-server.js';
import { Store } from '../../coordinator/store/store.js';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { SecretBox } from '../../common/secret-box.js';

type Engine = 'sqlite' | 'postgres';
const ENGINES: readonly Engine[] = ['sqlite', 'postgres'];

/** A SQLite data dir (log store, Store and grep index on it) or a fresh PostgreSQL database. */
function open(t: TestContext, options: { maxAgeMs?: number; maxBytes?: number } = {}) {
  const d = mkdtempSync(join(tmpdir(), 'hangar-logstore-'));
  const path = join(d, 'hangar.db');
  const store = new Store({ path, secrets: new SecretBox(randomBytes(32)) });
  const logs = new LogStore({ path, ...options });
  // The background indexer's work, stepped by hand.
  const search = new LogSearchIndex({ sourcePath: path, path: join(d, 'log-search.db') });
  t.after(() => {
    search.close();
    logs.close();
    store.close();
    rmSync(d, { recursive: true, force: true });
  });
  return { path, store, logs, search, dir: d };
}

async function openOn(
  t: TestContext,
  engine: Engine,
  options: Omit<PostgresLogStoreOptions, 'database'> = {},
): Promise<{ store: Store; logs: LogStorage; reopen: () => LogStorage; search: LogSearchIndex | null }> {
  if (engine === 'sqlite') {
    const { path, store, logs, search } = open(t, options);
    return { store, logs, search, reopen: () => new LogStore({ path, ...options }) };
  }
  const store = new Store({ path: (await testPostgres()).createDatabase('logs'), secrets: new SecretBox(randomBytes(32)) });
  const make = () => new PostgresLogStore({ database: store.database, ...options });
  const logs = make();
  t.after(() => {
    logs.close();
    store.close();
  });
  return { store, logs, search: null, reopen: make };
}

/** Lines of the index holding a trigram. */
function indexed(search: LogSearchIndex, trigram: string): number {
  const db = new Database(search.path, { readonly: true });
  try {
    return db.prepare('SELECT count(*) FROM log_search WHERE log_search MATCH ?').pluck().get(`"${trigram}"`) as number;
  } finally {
    db.close();
  }
}

function batch(from: number, to: number, extra: Partial<IncomingLogLine> = {}): IncomingLogLine[] {
  const out: IncomingLogLine[] = [];
  for (let seq = from; seq <= to; seq++)
    out.push({ seq, ts: 1000 + seq, app: 'shop', source: 'web.1', stream: 'stdout', line: `line ${seq}`, ...extra });
  return out;
}

function errorLine(type: string, line: number, release = 'v1'): string {
  return `hangar-error ${JSON.stringify({ type, message: 'bad', file: 'notes/views.py', line, function: 'boom', traceback: `Traceback\n${type}: bad`, release })}`;
}

for (const engine of ENGINES) {
  describe(`LogStore on ${engine}`, () => {
    it('stores each (agent epoch, seq) once, acks the highest stored, and survives a reopen', async (t) => {
      const { logs, reopen } = await openOn(t, engine);
      assert.equal(logs.ingest('a1', 'e1', batch(1, 100)).acked, 100);
      const again = logs.ingest('a1', 'e1', batch(50, 150));
      assert.equal(again.acked, 150);
      assert.deepEqual(
        again.inserted.map((l) => l.line),
        batch(101, 150).map((l) => l.line),
        'only new lines are stored and published',
      );
      assert.equal(logs.count(), 150);
      // Another agent, or the same agent with a new spool (wiped data dir), counts on its own.
      assert.equal(logs.ingest('a2', 'e1', batch(1, 10)).acked, 10);
      assert.equal(logs.ingest('a1', 'e2', batch(1, 10)).acked, 10);
      assert.equal(logs.count(), 170);
      logs.close();
      const reopened = reopen();
      t.after(() => reopened.close());
      assert.equal(reopened.acked('a1', 'e1'), 150);
      assert.equal(reopened.ingest('a1', 'e1', batch(140, 160)).inserted.length, 10);
      assert.equal(reopened.count(), 180);
    });

    it('skips over seqs the agent dropped (its spool was full)', async (t) => {
      const { logs } = await openOn(t, engine);
      logs.ingest('a1', 'e1', batch(1, 10));
      const r = logs.ingest('a1', 'e1', batch(500, 510));
      assert.equal(r.acked, 510);
      assert.equal(r.inserted.length, 11);
    });

    it('answers queries: newest n oldest first, by process type or instance, grep, since', async (t) => {
      const { logs } = await openOn(t, engine);
      logs.ingest('a1', 'e1', [
        ...batch(1, 5),
        ...batch(6, 8, { source: 'web.2' }),
        ...batch(9, 9, { source: 'router', line: 'method=GET path="/" status=200' }),
        ...batch(10, 10, { source: 'webhook.1', line: 'not web' }),
        ...batch(11, 11, { app: 'other' }),
        ...batch(12, 12, { line: 'Hello 50% World_', stream: 'stderr' }),
      ]);
      const q = (extra: Partial<Parameters<LogStore['query']>[0]>) => logs.query({ app: 'shop', n: 100, ...extra }).map((l) => l.line);
      assert.deepEqual(q({ n: 2 }), ['not web', 'Hello 50% World_']);
      assert.equal(q({ source: 'web' }).length, 9, 'web means web.1 and web.2, not webhook.1');
      assert.equal(q({ source: 'web.2' }).length, 3);
      assert.deepEqual(q({ source: 'router' }), ['method=GET path="/" status=200']);
      assert.deepEqual(q({ grep: 'hello 50%' }), ['Hello 50% World_']);
      assert.deepEqual(q({ grep: '0%' }), ['Hello 50% World_'], '% is literal');
      assert.deepEqual(q({ grep: 'd_' }), ['Hello 50% World_'], '_ is literal');
      assert.deepEqual(q({ since: 1011 }), ['Hello 50% World_']);
      const [line] = logs.query({ app: 'shop', n: 1 });
      assert.deepEqual(line && { stream: line.stream, agent: line.agent, ts: line.ts }, { stream: 'stderr', agent: 'a1', ts: 1012 });
    });

    it('pages through more lines than a page holds: in order, each once, the window fixed at the first page', async (t) => {
      const { logs, search } = await openOn(t, engine);
      logs.ingest(
        'a1',
        'e1',
        batch(1, 2500, { line: 'x' }).map((l) => ({ ...l, line: `line ${l.seq}${l.seq % 2 ? ' odd' : ''}` })),
      );
      const all = (q: Omit<Parameters<LogStore['page']>[0], 'app'>, pageSize: number) => {
        const out: string[] = [];
        let page = logs.page({ app: 'shop', ...q }, pageSize);
        let pages = 1;
        out.push(...page.lines.map((l) => l.line));
        // Lines stored after the first page are not part of this answer.
        logs.ingest('a1', 'e1', batch(logs.acked('a1', 'e1') + 1, logs.acked('a1', 'e1') + 1, { line: 'later', ts: 10_000_000 }));
        while (page.next) {
          page = logs.page({ app: 'shop', ...q }, pageSize, page.next);
          out.push(...page.lines.map((l) => l.line));
          assert.ok(++pages < 100);
        }
        return { out, pages };
      };
      const newest = all({ n: 2000 }, 300);
      assert.equal(newest.out.length, 2000);
      assert.equal(newest.out[0], 'line 501 odd');
      assert.equal(newest.out.at(-1), 'line 2500');
      assert.equal(new Set(newest.out).size, 2000);
      assert.equal(newest.pages, 7);
      // Half the lines indexed: pages of a grep run over the index and then the scanned tail.
      search?.step(1250);
      const odd = all({ n: 700, grep: 'ODD' }, 256);
      assert.deepEqual(
        odd.out,
        Array.from({ length: 700 }, (_, i) => `line ${1101 + 2 * i} odd`),
      );
      const more = all({ n: 100_000, grep: 'odd' }, 1000);
      assert.equal(more.out.length, 1250, 'fewer lines than asked: all of them');
      // until and since bound by time (ts = 1000 + seq).
      const window = all({ n: 100_000, since: 1000 + 101, until: 1000 + 1100 }, 256);
      assert.equal(window.out.length, 1000);
      assert.equal(window.out[0], 'line 101 odd');
      assert.equal(window.out.at(-1), 'line 1100');
      assert.deepEqual(logs.page({ app: 'shop', n: 5, until: 1003 }, 100), {
        lines: logs.query({ app: 'shop', n: 3, until: 1003 }),
        next: null,
      });
    });

    it('groups Python errors by type and location, keeping the last traceback and release', async (t) => {
      const { logs } = await openOn(t, engine);
      logs.ingest('a1', 'e1', [
        ...batch(1, 1, { line: errorLine('ValueError', 10), stream: 'stderr' }),
        ...batch(2, 2, { line: errorLine('ValueError', 10, 'v2'), stream: 'stderr' }),
        ...batch(3, 3, { line: errorLine('KeyError', 10), stream: 'stderr' }),
        ...batch(4, 4, { line: 'hangar-error {not json' }),
      ]);
      const groups = logs.errors('shop');
      assert.equal(groups.length, 2);
      const value = groups.find((g) => g.type === 'ValueError');
      assert.equal(value?.count, 2);
      assert.equal(value?.location, 'notes/views.py:10:boom');
      assert.equal(value?.release, 'v2');
      assert.equal(value?.firstSeen, new Date(1001).toISOString());
      assert.equal(value?.lastSeen, new Date(1002).toISOString());
      assert.equal(groups.find((g) => g.type === 'KeyError')?.count, 1);
      assert.equal(parseErrorLine('hangar-error {"message": "no type"}'), null);
    });

    it('counts only log lines against the size limit, not other tables in the file', async (t) => {
      const { store, logs } = await openOn(t, engine, { maxBytes: 200_000 });
      if (engine === 'postgres') ensureDayPartitions(store.database, 'metric_rollups', 0, 2000 * 60_000);
      // Metrics rollups share the file: 2 MB of them, ten times the log limit.
      const insert = store.database.prepare(
        'INSERT INTO metric_rollups (minute, agent, scope, app, subject, data) VALUES (?, ?, ?, ?, ?, ?)',
      );
      store.transaction(() => {
        for (let i = 0; i < 2000; i++) insert.run(i * 60_000, 'a1', 'app', 'shop', 'web', 'x'.repeat(1000));
      });
      logs.ingest('a1', 'e1', batch(1, 1000));
      const stored = logs.storedBytes();
      assert.ok(stored > 0 && stored < 200_000, `${stored} bytes of lines stay under the limit`);
      assert.equal(logs.prune(2000), 0, 'logs under the limit: no line deleted however big the file');
      assert.equal(logs.count(), 1000);

      // Lines past the limit: the oldest go, until the lines fit again.
      const long = batch(1001, 3000).map((l) => ({ ...l, line: `${l.line} ${'y'.repeat(100)}` }));
      logs.ingest('a1', 'e1', long);
      assert.ok(logs.storedBytes() > 200_000);
      const deleted = logs.prune(4000);
      assert.ok(deleted > 0);
      assert.ok(logs.storedBytes() <= 200_000, `${logs.storedBytes()} bytes left`);
      const left = logs.query({ app: 'shop', n: 50_000 });
      assert.equal(left.length, 3000 - deleted);
      assert.equal(left.at(-1)?.line, long.at(-1)?.line, 'the newest line is kept');
      assert.equal(left[0]?.line, `line ${deleted + 1}${deleted + 1 > 1000 ? ` ${'y'.repeat(100)}` : ''}`, 'the oldest went first');
      assert.ok(logs.storedBytes() > 200_000 - 500, 'no more than needed was deleted');
    });

    it('keeps the running byte total across reopens, deletes and a migrated database', async (t) => {
      const { store, logs, reopen } = await openOn(t, engine);
      logs.ingest('a1', 'e1', batch(1, 100, { line: 'héllo wörld' }));
      logs.ingest('a1', 'e1', batch(101, 150, { app: 'other' }));
      logs.deleteApp('other');
      const sql = (
        store.database
          .prepare(
            engine === 'sqlite'
              ? 'SELECT sum(length(CAST(line AS BLOB)) + length(CAST(app AS BLOB)) + length(CAST(source AS BLOB)) + 48) AS b FROM log_lines'
              : 'SELECT sum(octet_length(line) + octet_length(app) + octet_length(source) + 48) AS b FROM log_lines',
          )
          .get() as { b: number }
      ).b;
      assert.equal(logs.storedBytes(), sql);
      logs.close();
      const reopened = reopen();
      t.after(() => reopened.close());
      assert.equal(reopened.storedBytes(), sql);
    });
  });
}

describe('LogStore on SQLite: its grep index, age retention by rows', () => {
  it('greps with the meaning of LIKE (substring, ASCII case folded, literal % _ "), before and after the index caught up', (t) => {
    const { logs, search } = open(t, { maxAgeMs: 1000 });
    logs.ingest('a1', 'e1', [
      ...batch(1, 300),
      ...batch(301, 301, { line: 'ERROR Payment "declined" 100%_done' }),
      ...batch(302, 302, { line: 'Ünïcode ÉCOLE straße' }),
      ...batch(303, 303, { line: 'payment ok', app: 'other' }),
    ]);
    const q = (grep: string) => logs.query({ app: 'shop', n: 100, grep }).map((l) => l.line);
    const expectations = () => {
      assert.deepEqual(q('PAYMENT'), ['ERROR Payment "declined" 100%_done']);
      assert.deepEqual(q('"declined"'), ['ERROR Payment "declined" 100%_done'], 'a double quote is literal');
      assert.deepEqual(q('0%_d'), ['ERROR Payment "declined" 100%_done']);
      assert.deepEqual(q('t "d'), ['ERROR Payment "declined" 100%_done'], 'spaces count');
      assert.deepEqual(q('école'), [], 'non-ASCII letters are not folded, as LIKE does not fold them');
      assert.deepEqual(q('ÉCOLE'), ['Ünïcode ÉCOLE straße']);
      assert.deepEqual(q('%_d'), ['ERROR Payment "declined" 100%_done'], 'three characters');
      assert.equal(q('ne').length, 100, 'shorter than a trigram: still found (by a scan)');
      assert.deepEqual(q('line 29'), ['line 29', ...Array.from({ length: 10 }, (_, i) => `line ${290 + i}`)]);
    };
    expectations();
    assert.equal(search.catchUp(), 303);
    assert.equal(indexed(search, 'pay'), 2, 'the lines are in the index now');
    expectations();
    // Lines stored since: the index covers the older ones, a scan the newer; the answer is whole.
    logs.ingest('a1', 'e1', batch(304, 400, { line: 'late payment' }));
    search.step(50);
    assert.deepEqual(q('payment'), ['ERROR Payment "declined" 100%_done', ...Array<string>(97).fill('late payment')]);
    assert.equal(logs.query({ app: 'shop', n: 3, grep: 'payment' }).length, 3);
    search.catchUp();
    // Deleted lines leave the index once below the oldest line; ids are never given out again.
    logs.deleteApp('other');
    assert.equal(logs.prune(10_000_000), 399, 'age retention');
    search.catchUp();
    assert.equal(indexed(search, 'pay'), 0);
    logs.ingest('a1', 'e1', batch(401, 401, { line: 'payment after', ts: 10_000_000 }));
    assert.deepEqual(q('payment'), ['payment after']);
    search.catchUp();
    assert.deepEqual(q('payment'), ['payment after']);
    assert.equal(indexed(search, 'pay'), 1);
  });

  it("never gives a deleted line's id to a new one, even across a restart (the index keys on ids)", (t) => {
    const { path, logs, search } = open(t);
    logs.ingest('a1', 'e1', batch(1, 10));
    logs.ingest('a2', 'e1', batch(1, 10, { app: 'other', line: 'needle' }));
    search.catchUp();
    logs.deleteApp('other');
    logs.close();
    const again = new LogStore({ path });
    t.after(() => again.close());
    again.ingest('a1', 'e1', batch(11, 20, { line: 'hay' }));
    search.catchUp();
    assert.deepEqual(again.query({ app: 'shop', n: 100, grep: 'needle' }), [], 'no old index entry matches a new line');
    assert.equal(again.query({ app: 'shop', n: 100, grep: 'hay' }).length, 10);
    assert.ok((again.query({ app: 'shop', n: 1 })[0]?.id ?? 0) > 20);
  });

  it('fills a new index file from the lines stored before it (a deleted index is made again)', (t) => {
    const { logs, search, dir } = open(t);
    logs.ingest('a1', 'e1', [...batch(1, 5), ...batch(6, 6, { line: 'old needle' })]);
    search.close();
    for (const f of ['log-search.db', 'log-search.db-wal', 'log-search.db-shm']) rmSync(join(dir, f), { force: true });
    const fresh = new LogSearchIndex({ sourcePath: join(dir, 'hangar.db'), path: join(dir, 'log-search.db') });
    t.after(() => fresh.close());
    assert.equal(fresh.catchUp(), 6);
    assert.equal(indexed(fresh, 'eed'), 1);
  });

  it("is kept filled by the indexer's worker thread, which stops with close", async (t) => {
    const { path, logs, dir } = open(t);
    const indexer = new LogIndexer({ sourcePath: path, path: join(dir, 'log-search.db'), logger: pino({ level: 'silent' }), idleMs: 10 });
    t.after(() => indexer.close());
    indexer.start();
    logs.ingest('a1', 'e1', [...batch(1, 3000), ...batch(3001, 3001, { line: 'a needle here' })]);
    const last = logs.query({ app: 'shop', n: 1 })[0]?.id ?? 0;
    await indexer.reached(last);
    assert.equal(indexer.indexedTo, last);
    const db = new Database(join(dir, 'log-search.db'), { readonly: true });
    t.after(() => db.close());
    assert.equal(db.prepare('SELECT count(*) FROM log_search WHERE log_search MATCH \'"eed"\'').pluck().get(), 1);
    assert.deepEqual(
      logs.query({ app: 'shop', n: 10, grep: 'NEEDLE' }).map((l) => l.line),
      ['a needle here'],
    );
    await indexer.close();
    await indexer.close();
  });

  it('deletes lines past the age limit', (t) => {
    const { logs } = open(t, { maxAgeMs: 1000 });
    logs.ingest('a1', 'e1', batch(1, 100));
    assert.equal(logs.prune(1000 + 50 + 1000), 49);
    assert.equal(logs.count(), 51);
  });
});

describe('log filters', () => {
  it('live filters mean what queries mean', () => {
    const l = { id: 1, ts: 1, app: 'shop', source: 'web.2', stream: 'stdout' as const, agent: 'a', line: 'Hello' };
    assert.ok(matchesFilter({ app: 'shop' }, l));
    assert.ok(matchesFilter({ app: 'shop', source: 'web' }, l));
    assert.ok(matchesFilter({ app: 'shop', source: 'web.2', grep: 'hell' }, l));
    assert.ok(!matchesFilter({ app: 'shop', source: 'web.1' }, l));
    assert.ok(!matchesFilter({ app: 'shop', source: 'we' }, l));
    assert.ok(!matchesFilter({ app: 'other' }, l));
    assert.ok(!matchesFilter({ app: 'shop', grep: 'bye' }, l));
  });

  it('--since takes durations and ISO times', () => {
    assert.equal(parseSince('10m', 1_000_000), 400_000);
    assert.equal(parseSince('2h', 10_000_000), 10_000_000 - 7_200_000);
    assert.equal(parseSince('2026-01-02T03:04:05Z', 0), Date.parse('2026-01-02T03:04:05Z'));
    assert.equal(parseSince('soon', 0), null);
  });
});
