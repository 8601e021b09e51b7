import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isHangarError } from '../../common/errors.js';
import { PostgresDatabase, numberPlaceholders } from '../../coordinator/store/postgres.js';
import { testPostgres } from '../helpers/postgres-server.js';

test('placeholders: ? and @name become $n, quoted text and comments stay', () => {
  assert.deepEqual(numberPlaceholders(`SELECT '?', "a?" FROM t WHERE a = ? AND b = ? -- why?\n`), {
    text: `SELECT '?', "a?" FROM t WHERE a = $1 AND b = $2 -- why?\n`,
    count: 2,
    names: null,
  });
  assert.deepEqual(numberPlaceholders('UPDATE t SET a = @a, b = @b WHERE id = @id AND a <> @a'), {
    text: 'UPDATE t SET a = $1, b = $2 WHERE id = $3 AND a <> $1',
    count: 3,
    names: ['a', 'b', 'id'],
  });
  assert.throws(() => numberPlaceholders('SELECT ? WHERE a = @a'), /mixes/);
});

test('PostgreSQL engine: numbers, bytes, named parameters, pluck and changes', async () => {
  const db = new PostgresDatabase({ url: (await testPostgres()).createDatabase('engine') });
  try {
    db.exec('CREATE TABLE t (id BIGINT PRIMARY KEY, n NUMERIC, b BYTEA, s TEXT)');
    const insert = db.prepare('INSERT INTO t (id, n, b, s) VALUES (@id, @n, @b, @s)');
    assert.equal(insert.run({ id: 1796239815166, n: 2.5, b: Buffer.from([0, 255, 7]), s: "it's" }).changes, 1);
    const row = db.prepare('SELECT * FROM t WHERE id = ?').get(1796239815166) as Record<string, unknown>;
    assert.deepEqual(row, { id: 1796239815166, n: 2.5, b: Buffer.from([0, 255, 7]), s: "it's" });
    assert.equal(db.prepare('SELECT COUNT(*) FROM t').pluck().get(), 1);
    assert.deepEqual(db.prepare('SELECT id FROM t').pluck().all(), [1796239815166]);
    assert.equal(db.prepare('DELETE FROM t WHERE id = ?').run(42).changes, 0);
    assert.throws(() => insert.run({ id: 2 }), /missing named parameter @n/);
    assert.throws(() => db.prepare('SELECT ?').get(true), /cannot bind a value of type boolean/);
  } finally {
    db.close();
  }
});

test('PostgreSQL engine: a failed transaction leaves nothing; a failed nested one only its own part', async () => {
  const db = new PostgresDatabase({ url: (await testPostgres()).createDatabase('engine') });
  try {
    db.exec('CREATE TABLE t (id BIGINT PRIMARY KEY)');
    const insert = db.prepare('INSERT INTO t (id) VALUES (?)');
    assert.throws(() =>
      db.transaction(() => {
        insert.run(1);
        insert.run(1);
      })(),
    );
    assert.equal(db.prepare('SELECT COUNT(*) FROM t').pluck().get(), 0);
    db.transaction(() => {
      insert.run(2);
      assert.throws(() =>
        db.transaction(() => {
          insert.run(3);
          throw new Error('inner');
        })(),
      );
      insert.run(4);
    })();
    assert.deepEqual(db.prepare('SELECT id FROM t ORDER BY id').pluck().all(), [2, 4]);
  } finally {
    db.close();
  }
});

test('PostgreSQL engine: a connection the server ended is opened again, session settings and all', async () => {
  const pg = await testPostgres();
  const db = new PostgresDatabase({ url: pg.createDatabase('engine'), onConnect: ["SET application_name = 'hangar-test'"] });
  const admin = new PostgresDatabase({ url: pg.url });
  try {
    db.addSessionSetting("SET statement_timeout = '7s'");
    const pid = db.prepare('SELECT pg_backend_pid() AS pid').pluck().get() as number;
    admin.prepare('SELECT pg_terminate_backend(?)').get(pid);
    assert.equal(db.prepare("SELECT current_setting('statement_timeout')").pluck().get(), '7s');
    assert.equal(db.prepare("SELECT current_setting('application_name')").pluck().get(), 'hangar-test');
    assert.notEqual(db.prepare('SELECT pg_backend_pid()').pluck().get(), pid);
    // Inside a transaction a lost connection fails the transaction (the caller retries it whole).
    assert.throws(
      () =>
        db.transaction(() => {
          admin.prepare('SELECT pg_terminate_backend(?)').get(db.prepare('SELECT pg_backend_pid()').pluck().get());
          db.prepare('SELECT 1').get();
        })(),
      (err: unknown) => isHangarError(err, 'DATABASE_UNAVAILABLE'),
    );
    assert.equal(db.prepare('SELECT 1 AS one').pluck().get(), 1);
  } finally {
    db.close();
    admin.close();
  }
});

test('PostgreSQL engine: an unreachable server is a clear DATABASE_UNAVAILABLE', () => {
  assert.throws(
    () => new PostgresDatabase({ url: 'postgres://hangar@127.0.0.1:1/none' }),
    (err: unknown) => isHangarError(err, 'DATABASE_UNAVAILABLE') && /--database-url/.test(err.message),
  );
});
