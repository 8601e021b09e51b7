import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { resolveRunAs } from '../../agent/workloads/run-as.js';
import { join } from 'node:path';
import type { AddonView } from '../../common/api-types.js';
import { cliOk, psqlResult } from '../helpers/addon-clients.js';
import { startCluster, waitFor } from '../helpers/cluster.js';

const run = promisify(execFile);

test('PostgreSQL add-on: TLS from the coordinator CA (require, verify-full), and an app role that is no superuser', async (t) => {
  const cluster = await startCluster(t);
  const app = 'vault';
  await cliOk(cluster, ['apps:create', app]);
  await cliOk(cluster, ['addons:create', 'postgres', '-a', app]);
  const url = await waitFor('DATABASE_URL of the add-on', async () => {
    const rows = JSON.parse(await cliOk(cluster, ['addons', '-a', app, '--json', '--reveal'])) as AddonView[];
    const pg = rows.find((a) => a.kind === 'postgres');
    return pg?.state === 'up' ? pg.url : null;
  });
  assert.match(url, /^postgres:\/\/vault:[0-9a-f]+@127\.0\.0\.1:\d+\/vault$/);

  // sslmode=require: the session is encrypted.
  const required = await psqlResult(`${url}?sslmode=require`, 'SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
  assert.equal(required.code, 0, required.err);
  assert.match(required.out, /^t\|TLSv1\.[23]$/);

  // verify-full against the coordinator's CA: the certificate names the add-on's host.
  const ca = join(cluster.dir, 'coordinator', 'tls', 'ca.crt');
  const verified = await psqlResult(
    `${url}?sslmode=verify-full&sslrootcert=${ca}`,
    'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()',
  );
  assert.equal(verified.code, 0, verified.err);
  assert.equal(verified.out, 't');
  // The agent places that CA where any app's user reads it, as the instances' PGSSLROOTCERT.
  const placed = join(cluster.dir, 'agent-agent-1', 'ca.crt');
  assert.equal((await stat(placed)).mode & 0o777, 0o644);
  const appUser = await resolveRunAs('hangar-probe-pgtls', null, pino({ level: 'silent' }));
  assert.ok(appUser);
  t.after(() => run('userdel', ['hangar-probe-pgtls']).catch(() => undefined));
  const asApp = await psqlResult(
    `${url}?sslmode=verify-full`,
    'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()',
    { PGSSLROOTCERT: placed },
    appUser,
  );
  assert.equal(asApp.code, 0, asApp.err);
  assert.equal(asApp.out, 't');
  // ... and a CA that did not issue it is refused.
  const system = await psqlResult(`${url}?sslmode=verify-full&sslrootcert=/etc/ssl/certs/ca-certificates.crt`, 'SELECT 1');
  assert.notEqual(system.code, 0);
  assert.match(system.err, /certificate verify failed/);

  // The app's role owns its database (it can make tables) but is no superuser.
  const owner = await psqlResult(
    url,
    'SELECT rolsuper, rolcreaterole, pg_get_userbyid(datdba) FROM pg_roles, pg_database WHERE rolname = current_user AND datname = current_database()',
  );
  assert.equal(owner.out, 'f|f|vault');
  assert.equal(
    (await psqlResult(url, "CREATE TABLE notes (id serial PRIMARY KEY, body text); INSERT INTO notes (body) VALUES ('x')")).code,
    0,
  );
  for (const [sql, refusal] of [
    ['CREATE ROLE intruder LOGIN', /permission denied to create role/],
    ["ALTER SYSTEM SET work_mem = '1GB'", /must be superuser|permission denied/],
    ['SELECT rolpassword FROM pg_authid', /permission denied for table pg_authid/],
    ["COPY notes TO PROGRAM 'id'", /must be superuser|permission denied/],
  ] as const) {
    const res = await psqlResult(url, sql);
    assert.notEqual(res.code, 0, `${sql} should be refused`);
    assert.match(res.err, refusal, sql);
  }
});
