/**
 * Streaming replication of PostgreSQL add-ons. The primary has a login role `hangar_replicator`
 * (REPLICATION, its SCRAM verifier from the coordinator's password), `host replication` lines in
 * pg_hba.conf and the physical slot `hangar_standby`, so it keeps the WAL its standby has not
 * received. The standby is a `pg_basebackup` of it with `standby.signal`, started with
 * `primary_conninfo` and `hot_standby`; the replication password is only in the server's
 * environment (`PGPASSWORD`, which its WAL receiver's libpq reads), never in a file or on a
 * command line. A standby is promoted with `pg_promote()`; a primary is demoted (planned
 * failover) by a clean shutdown, which sends all of its WAL to the connected standby first, and
 * the `fenced` marker, which keeps it from ever starting as a primary again.
 *
 * Synchronous replication (`--standby=sync`) is `synchronous_standby_names` naming the standby's
 * application_name ({@link SLOT}, set in its primary_conninfo) with `synchronous_commit = on`,
 * set with ALTER SYSTEM and a reload, never a restart; the coordinator turns it off while the
 * standby is away (see coordinator/addons/addon-standbys.ts). A promoted standby starts async:
 * its copy of postgresql.auto.conf may name itself, and nothing would confirm its commits.
 */
import { appendFile, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../../common/errors.js';
import type { AddonContext } from './addon-kind.js';
import { ADMIN, adminMarker, adminQuery, exists } from './postgres-client.js';
import { chownTree } from '../workloads/run-as.js';
import { runChecked } from './run-command.js';

/** The role standbys replicate as. */
export const REPLICATOR = 'hangar_replicator';
/** The physical replication slot of the standby on its primary; also its application_name. */
export const SLOT = 'hangar_standby';

const HBA_MARK = '# Hangar: streaming replication to the standby';

/** DATA/addons/NAME/fenced: this server was a primary that another server replaced; it never starts as one again. */
export function fencedMarker(ctx: AddonContext): string {
  return join(ctx.paths.root, 'fenced');
}

function signalFile(ctx: AddonContext): string {
  return join(ctx.paths.data, 'standby.signal');
}

/** Adds the replication lines to pg_hba.conf when missing; true when it did. */
export async function ensureReplicationHba(ctx: AddonContext): Promise<boolean> {
  const hba = join(ctx.paths.data, 'pg_hba.conf');
  const text = await readFile(hba, 'utf8');
  if (text.includes(HBA_MARK)) return false;
  await appendFile(
    hba,
    `\n${HBA_MARK}\nhost replication ${REPLICATOR} 0.0.0.0/0 scram-sha-256\nhost replication ${REPLICATOR} ::/0 scram-sha-256\n`,
  );
  return true;
}

async function query(ctx: AddonContext, bin: string, sql: string, what: string): Promise<string> {
  const { out, error } = await adminQuery(ctx, bin, sql);
  if (out === null) throw new HangarError('ADDON_FAILED', `${what} failed on ${ctx.host}: ${error.split('\n').slice(-2).join(' ')}`);
  return out;
}

async function ensureSlot(ctx: AddonContext, bin: string): Promise<void> {
  const found = await query(ctx, bin, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = '${SLOT}'`, 'looking up the slot');
  if (found === '0') await query(ctx, bin, `SELECT pg_create_physical_replication_slot('${SLOT}', true)`, 'creating the slot');
}

/**
 * Makes the running primary ready for a standby: the replication role with `password` (its
 * verifier only), the pg_hba.conf lines (reloaded), the slot.
 */
export async function prepareSource(ctx: AddonContext, bin: string, password: string, verifier: (p: string) => string): Promise<void> {
  if (!password) throw new HangarError('BAD_INPUT', 'no replication password');
  if (await ensureReplicationHba(ctx)) await query(ctx, bin, 'SELECT pg_reload_conf()', 'reloading pg_hba.conf');
  const role = await query(ctx, bin, `SELECT count(*) FROM pg_roles WHERE rolname = '${REPLICATOR}'`, 'looking up the replication role');
  const verb = role === '0' ? 'CREATE' : 'ALTER';
  await query(
    ctx,
    bin,
    `${verb} ROLE ${REPLICATOR} WITH REPLICATION LOGIN PASSWORD '${verifier(password)}'`,
    'setting up the replication role',
  );
  await ensureSlot(ctx, bin);
}

/** What a server says of its replication (the `replication` job's report). */
export interface ReplicationReport {
  role: 'primary' | 'standby';
  /** Primary: its flushed WAL position; standby: the last one it replayed. */
  lsn: string;
  /** Primary: its standby as pg_stat_replication sees it (null: none is streaming). */
  standby: { state: string; replayLsn: string; lagBytes: number; lagSeconds: number } | null;
}

/** The server's replication state. */
export async function replicationStatus(ctx: AddonContext, bin: string): Promise<ReplicationReport> {
  const recovery = await query(ctx, bin, 'SELECT pg_is_in_recovery()', 'reading the replication state');
  if (recovery === 't') {
    const lsn = await query(ctx, bin, "SELECT COALESCE(pg_last_wal_replay_lsn(), '0/0')", 'reading the replay position');
    return { role: 'standby', lsn, standby: null };
  }
  const row = await query(
    ctx,
    bin,
    `SELECT pg_current_wal_flush_lsn() || '|' || COALESCE((SELECT state || '|' || COALESCE(replay_lsn, '0/0') || '|' ||
       pg_wal_lsn_diff(pg_current_wal_flush_lsn(), COALESCE(replay_lsn, '0/0'))::bigint || '|' ||
       COALESCE(EXTRACT(EPOCH FROM replay_lag), 0) FROM pg_stat_replication WHERE application_name = '${SLOT}' LIMIT 1), '')`,
    'reading the replication state',
  );
  const [lsn = '0/0', state, replayLsn, bytes, seconds] = row.split('|');
  return {
    role: 'primary',
    lsn,
    standby:
      state === undefined || state === ''
        ? null
        : { state, replayLsn: replayLsn ?? '0/0', lagBytes: Math.max(0, Number(bytes) || 0), lagSeconds: Number(seconds) || 0 },
  };
}

/**
 * Synchronous replication on (the primary waits for its standby to flush each commit) or off; by
 * reload. Commits that wait for an away standby go through once it is off.
 */
export async function setSynchronous(ctx: AddonContext, bin: string, on: boolean): Promise<void> {
  const recovery = await query(ctx, bin, 'SELECT pg_is_in_recovery()', 'reading the replication state');
  if (recovery === 't')
    throw new HangarError('CONFLICT', `${ctx.spec.name} on ${ctx.host} is a standby; synchronous replication is set on its primary`);
  if (on) {
    await query(ctx, bin, `ALTER SYSTEM SET synchronous_standby_names = '"${SLOT}"'`, 'turning synchronous replication on');
    await query(ctx, bin, 'ALTER SYSTEM SET synchronous_commit = on', 'turning synchronous replication on');
  } else {
    await query(ctx, bin, 'ALTER SYSTEM RESET synchronous_standby_names', 'turning synchronous replication off');
  }
  await query(ctx, bin, 'SELECT pg_reload_conf()', 'reloading the configuration');
}

/** Promotes the running standby (waits until it accepts writes), asynchronous, with the slot of its future standby. */
export async function promote(ctx: AddonContext, bin: string): Promise<void> {
  const recovery = await query(ctx, bin, 'SELECT pg_is_in_recovery()', 'reading the replication state');
  if (recovery === 't') {
    const done = await query(ctx, bin, 'SELECT pg_promote(true, 60)', 'promoting the standby');
    if (done !== 't') throw new HangarError('ADDON_FAILED', `${ctx.spec.name} on ${ctx.host} was not promoted within 60 s`);
  }
  await setSynchronous(ctx, bin, false);
  await rm(fencedMarker(ctx), { force: true });
  await ensureSlot(ctx, bin);
}

/** Writes the fence: from now on the server never starts as a primary (see prepare). */
export async function fence(ctx: AddonContext): Promise<void> {
  await writeFile(fencedMarker(ctx), 'fenced: a standby replaces this primary\n', { mode: 0o644 });
}

/** Takes the fence down again (a planned failover that did not happen): it may start as the primary. */
export async function unfence(ctx: AddonContext): Promise<void> {
  await rm(signalFile(ctx), { force: true });
  await rm(fencedMarker(ctx), { force: true });
}

/**
 * After a clean shutdown of the fenced primary: `standby.signal`, and the position of its
 * shutdown checkpoint, the last WAL it wrote (its standby must have replayed up to there).
 */
export async function demoteStopped(ctx: AddonContext, bin: string): Promise<string> {
  const control = await runChecked('pg_controldata', join(bin, 'pg_controldata'), [ctx.paths.data], {
    runAs: ctx.runAs,
    env: { LC_ALL: 'C' },
    timeoutMs: 30_000,
  });
  const state = /Database cluster state:\s*(.+)/.exec(control)?.[1]?.trim();
  const lsn = /Latest checkpoint location:\s*([0-9A-F]+\/[0-9A-F]+)/i.exec(control)?.[1];
  if (state !== 'shut down' || !lsn) {
    throw new HangarError('ADDON_FAILED', `${ctx.spec.name} on ${ctx.host} did not shut down cleanly (${state ?? 'unknown state'})`);
  }
  await writeFile(signalFile(ctx), '', { mode: 0o600 });
  await chownTree(ctx.paths.root, ctx.runAs);
  return lsn;
}

/**
 * The data of a standby: kept when it is one (standby.signal), else (a first start, a fenced
 * former primary) moved aside to data.before-standby and copied from the primary with
 * pg_basebackup through the slot. Returns the server's extra settings and environment.
 */
export async function prepareStandby(ctx: AddonContext, bin: string): Promise<{ args: string[]; env: Record<string, string> }> {
  const { spec, paths } = ctx;
  if (!spec.standbyUpstreamHost || !spec.standbyUpstreamPort || !spec.standbyReplicationPassword) {
    throw new HangarError('BAD_INPUT', `${spec.name}: a standby needs its primary's address and the replication password`);
  }
  const sslmode = spec.tlsCertPem ? 'require' : 'disable';
  if (!(await exists(join(paths.data, 'PG_VERSION'))) || !(await exists(signalFile(ctx)))) {
    const partial = `${paths.data}.partial`;
    await rm(partial, { recursive: true, force: true });
    await chownTree(paths.root, ctx.runAs);
    ctx.logger.info(
      { addon: spec.name, primary: `${spec.standbyUpstreamHost}:${spec.standbyUpstreamPort}` },
      'copying the primary (pg_basebackup)',
    );
    await runChecked('pg_basebackup', join(bin, 'pg_basebackup'), ['-D', partial, '-X', 'stream', '-S', SLOT, '--checkpoint=fast', '-w'], {
      env: {
        PGHOST: spec.standbyUpstreamHost,
        PGPORT: String(spec.standbyUpstreamPort),
        PGUSER: REPLICATOR,
        PGPASSWORD: spec.standbyReplicationPassword,
        PGSSLMODE: sslmode,
        PGCONNECT_TIMEOUT: '5',
        PGAPPNAME: SLOT,
      },
      runAs: ctx.runAs,
      cwd: paths.root,
      timeoutMs: 6 * 3600_000,
    });
    if (await exists(paths.data)) {
      const aside = `${paths.data}.before-standby`;
      await rm(aside, { recursive: true, force: true });
      await rename(paths.data, aside);
      ctx.logger.warn({ addon: spec.name, aside }, 'the former data of this server is kept aside; it is now a standby');
    }
    await rename(partial, paths.data);
    await writeFile(signalFile(ctx), '', { mode: 0o600 });
    if (spec.adminPassword) await writeFile(adminMarker(ctx), `${ADMIN}\n`, { mode: 0o644 });
    await chownTree(paths.root, ctx.runAs);
  }
  await rm(fencedMarker(ctx), { force: true });
  const conninfo = [
    `host=${spec.standbyUpstreamHost}`,
    `port=${spec.standbyUpstreamPort}`,
    `user=${REPLICATOR}`,
    `application_name=${SLOT}`,
    `sslmode=${sslmode}`,
    'connect_timeout=5',
  ].join(' ');
  return {
    args: ['-c', 'hot_standby=on', '-c', `primary_conninfo=${conninfo}`, '-c', `primary_slot_name=${SLOT}`],
    env: { PGPASSWORD: spec.standbyReplicationPassword },
  };
}
