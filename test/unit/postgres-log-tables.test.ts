import assert from 'node:assert/strict';
import { test } from 'node:test';
import { installWriteFence, isFencedError } from '../../coordinator/ha/write-fence.js';
import { migrateDatabase, openSqlDatabase } from '../../coordinator/store/store.js';
import {
  dayStart,
  dropDayPartitionsBefore,
  ensureDayPartitions,
  existingDayPartitions,
  partitionName,
} from '../../coordinator/store/postgres-partitions.js';
import { testPostgres } from '../helpers/postgres-server.js';

const DAY = 86_400_000;
const insertLine = `INSERT INTO log_lines (id, stream_id, seq, ts, app, source, fd, line) VALUES (?, 1, ?, ?, 'a', 'web.1', 'stdout', 'x')`;

test('PostgreSQL step 2: log lines, samples and rollups are partitioned by range, pg_trgm is there', async () => {
  const db = openSqlDatabase((await testPostgres()).createDatabase('logtables'));
  try {
    migrateDatabase(db);
    const partitioned = db
      .prepare(`SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid ORDER BY c.relname`)
      .pluck()
      .all();
    assert.deepEqual(partitioned, ['log_lines', 'metric_rollups', 'metric_samples']);
    assert.equal(db.prepare(`SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'`).pluck().get(), 1);
    assert.deepEqual(db.prepare('SELECT id, bytes, lines FROM log_usage').all(), [{ id: 1, bytes: 0, lines: 0 }]);
    // A line without a day partition for it is refused: the store must create partitions ahead.
    assert.throws(() => db.prepare(insertLine).run(1, 1, 5), /no partition/);
  } finally {
    db.close();
  }
});

test('the write fence covers partitioned parents, also for a day partition created after it was installed', async () => {
  const db = openSqlDatabase((await testPostgres()).createDatabase('logfence'));
  try {
    migrateDatabase(db);
    db.exec(`CREATE TABLE log_lines_d0 PARTITION OF log_lines FOR VALUES FROM (0) TO (${DAY})`);
    let fenced = 0;
    installWriteFence(db, 1, () => fenced++);
    db.prepare('UPDATE coordinator_lease SET epoch = 1 WHERE id = 1').run();
    db.prepare(insertLine).run(1, 1, 5);
    db.prepare('UPDATE coordinator_lease SET epoch = 2 WHERE id = 1').run();
    assert.throws(
      () => db.prepare(insertLine).run(2, 2, 6),
      (err) => isFencedError(err),
    );
    db.exec(`CREATE TABLE log_lines_d1 PARTITION OF log_lines FOR VALUES FROM (${DAY}) TO (${2 * DAY})`);
    assert.throws(
      () => db.prepare(insertLine).run(3, 3, DAY + 5),
      (err) => isFencedError(err),
    );
    assert.equal(fenced, 2);
    assert.equal(db.prepare('SELECT count(*) FROM log_lines').pluck().get(), 1);
  } finally {
    db.close();
  }
});

test('day partitions: created ahead for a range of days, listed, and dropped by whole days before a cut-off', async () => {
  const db = openSqlDatabase((await testPostgres()).createDatabase('logdays'));
  try {
    migrateDatabase(db);
    const t0 = Date.UTC(2026, 11, 30, 15);
    ensureDayPartitions(db, 'log_lines', t0, t0 + 2 * DAY);
    ensureDayPartitions(db, 'log_lines', t0 + DAY, t0 + 3 * DAY); // overlaps: only the missing day is added
    assert.deepEqual(
      existingDayPartitions(db, 'log_lines').map((p) => p.name),
      ['log_lines_20261230', 'log_lines_20261231', 'log_lines_20270101', 'log_lines_20270102'],
    );
    db.prepare(insertLine).run(1, 1, t0);
    db.prepare(insertLine).run(2, 2, t0 + 2 * DAY);
    // A cut-off inside 2026-12-31 drops only 2026-12-30, the one day wholly before it.
    assert.deepEqual(dropDayPartitionsBefore(db, 'log_lines', Date.UTC(2026, 11, 31, 12)), ['log_lines_20261230']);
    assert.deepEqual(db.prepare('SELECT id FROM log_lines ORDER BY id').pluck().all(), [2]);
    assert.equal(partitionName('metric_rollups', dayStart(t0)), 'metric_rollups_20261230');
    assert.equal(dayStart(t0), Date.UTC(2026, 11, 30));
  } finally {
    db.close();
  }
});
