import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { matchesFilter } from '../../coordinator/logs/log-hub.js';
import { parseSince } from '../../coordinator/logs/log-query.js';
import { LogStore, parseErrorLine, type IncomingLogLine } from '../../coordinator/logs/log-store.js';
import { Store } from '../../coordinator/store/store.js';
import { randomBytes } from 'node:crypto';
import { SecretBox } from '../../common/secret-box.js';

function open(t: TestContext, options: { maxAgeMs?: number; maxBytes?: number } = {}) {
  const d = mkdtempSync(join(tmpdir(), 'hangar-logstore-'));
  const path = join(d, 'hangar.db');
  const store = new Store({ path, secrets: new SecretBox(randomBytes(32)) });
  const logs = new LogStore({ path, ...options });
  t.after(() => {
    logs.close();
    store.close();
    rmSync(d, { recursive: true, force: true });
  });
  return { path, store, logs };
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

describe('LogStore', () => {
  it('stores each (agent epoch, seq) once, acks the highest stored, and survives a reopen', (t) => {
    const { path, logs } = open(t);
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
    const reopened = new LogStore({ path });
    t.after(() => reopened.close());
    assert.equal(reopened.acked('a1', 'e1'), 150);
    assert.equal(reopened.ingest('a1', 'e1', batch(140, 160)).inserted.length, 10);
    assert.equal(reopened.count(), 180);
  });

  it('skips over seqs the agent dropped (its spool was full)', (t) => {
    const { logs } = open(t);
    logs.ingest('a1', 'e1', batch(1, 10));
    const r = logs.ingest('a1', 'e1', batch(500, 510));
    assert.equal(r.acked, 510);
    assert.equal(r.inserted.length, 11);
  });

  it('answers queries: newest n oldest first, by process type or instance, grep, since', (t) => {
    const { logs } = open(t);
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

  it('groups Python errors by type and location, keeping the last traceback and release', (t) => {
    const { logs } = open(t);
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

  it('counts only log lines against the size limit, not other tables in the file', (t) => {
    const { store, logs } = open(t, { maxBytes: 200_000 });
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

  it('keeps the running byte total across reopens, deletes and a migrated database', (t) => {
    const { path, store, logs } = open(t);
    logs.ingest('a1', 'e1', batch(1, 100, { line: 'héllo wörld' }));
    logs.ingest('a1', 'e1', batch(101, 150, { app: 'other' }));
    logs.deleteApp('other');
    const sql = (
      store.database
        .prepare(
          'SELECT sum(length(CAST(line AS BLOB)) + length(CAST(app AS BLOB)) + length(CAST(source AS BLOB)) + 48) AS b FROM log_lines',
        )
        .get() as { b: number }
    ).b;
    assert.equal(logs.storedBytes(), sql);
    logs.close();
    const reopened = new LogStore({ path });
    t.after(() => reopened.close());
    assert.equal(reopened.storedBytes(), sql);
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
