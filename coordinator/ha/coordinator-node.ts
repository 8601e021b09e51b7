/**
 * `hangar coordinator` as one of several sharing a data dir: it takes part in the election
 * (leader-lease.ts); while it follows it serves only the follower shell (follower-shell.ts); once
 * elected it closes the shell and starts the full coordinator on the same ports, exactly as a
 * restart would (rollouts resume from the store; agents get their whole desired state when they
 * say hello); when it loses the lease (a fenced write, its own monotonic deadline) it closes the
 * coordinator and follows again. Alone on its data dir it is elected at once. On PostgreSQL each
 * has its own data dir with a copy of `secret-key`; the rest they share is in the database
 * (shared-files.ts, artifact chunks).
 */
import { mkdir, readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import type { CoordinatorsView, LeaderView } from '../../common/api-types.js';
import { createLogger } from '../../common/logger.js';
import { SecretBox } from '../../common/secret-box.js';
import { HANGAR_VERSION } from '../../common/version.js';
import { parseInput } from '../api/validation.js';
import {
  coordinatorConfigSchema,
  databaseLocation,
  startCoordinator,
  type CoordinatorConfig,
  type CoordinatorDeps,
  type RunningCoordinator,
} from '../coordinator.js';
import { ensureCoordinatorTls } from '../security/certificate-authority.js';
import { ensureJoinToken, ensureToken } from '../security/token-files.js';
import { FollowerShell } from './follower-shell.js';
import { shareCoordinatorFiles } from './shared-files.js';
import { LeaderLease } from './leader-lease.js';

/** Settings of a coordinator among several; every field has a default. */
export const haConfigSchema = z
  .object({
    /** Unique among the coordinators of one data dir. Default `HOSTNAME:HTTP_PORT`. */
    name: z
      .string()
      .regex(/^[a-z0-9][a-z0-9.:_-]{0,99}$/i, 'use letters, digits and . : _ -')
      .optional(),
    /**
     * `HOST` (or `HOST:PORT`, the gRPC port agents dial) the other coordinators, agents and the CLI
     * reach this one on. Default: the listening address, or the host name when listening on all.
     */
    advertise: z
      .string()
      .regex(/^[^\s:/]+(:\d{1,5})?$/, 'must be HOST or HOST:PORT')
      .optional(),
    /** Length of the leader's lease, ms. Default 10 s. */
    leaseMs: z.number().int().positive().default(10_000),
    /** How often the leader renews it, ms. Default 2 s. */
    renewMs: z.number().int().positive().default(2000),
    /** The leader steps down this long before its lease could expire, ms. Default 3 s. */
    marginMs: z.number().int().positive().default(3000),
  })
  .strict();

export type HaConfig = z.input<typeof haConfigSchema>;

/** A coordinator taking part in the election. */
export interface RunningCoordinatorNode {
  name: string;
  /** `http(s)://HOST:PORT` of its API as advertised. */
  url: string;
  httpPort: number;
  grpcPort: number;
  /** `HOST:PORT` agents dial, as advertised. */
  grpcAddress: string;
  adminToken: string;
  joinToken: string;
  caFingerprint: string;
  /** `leader` once the full coordinator runs here. */
  role(): 'leader' | 'follower';
  /** Resolves once this coordinator leads (or rejects when it closes first). */
  whenLeader(): Promise<RunningCoordinator>;
  close(): Promise<void>;
}

/**
 * Starts a coordinator that leads when elected and follows otherwise. On SQLite the data dir
 * (hangar.db, CA, tokens, secret-key, artifacts) is shared by every coordinator of the group; on
 * PostgreSQL only `secret-key` is copied, the rest is in the database.
 */
export async function startCoordinatorNode(
  config: CoordinatorConfig,
  ha: HaConfig = {},
  deps: CoordinatorDeps = {},
): Promise<RunningCoordinatorNode> {
  const c = parseInput(coordinatorConfigSchema, config, 'coordinator config');
  const h = parseInput(haConfigSchema, ha, 'coordinator settings');
  const rootLogger = deps.logger ?? createLogger();
  const logger = rootLogger.child({ component: 'coordinator-node' });
  await mkdir(c.dataDir, { recursive: true, mode: 0o700 });
  const lease = new LeaderLease({
    path: databaseLocation(c),
    leaseMs: h.leaseMs,
    renewMs: h.renewMs,
    marginMs: h.marginMs,
    logger: rootLogger,
    ...(deps.clock ? { clock: deps.clock } : {}),
  });
  const anyAddress = (host: string) => host === '0.0.0.0' || host === '::';
  let shell: FollowerShell;
  let files!: { adminToken: string; joinToken: string; caFingerprint: string };
  let nodeName = h.name ?? '';
  try {
    // The first of several starting on an empty data dir (or database) makes the CA and tokens;
    // the others wait. On PostgreSQL they are shared through the database, each data dir its own.
    const tls = await lease.exclusive(async (db) => {
      if (c.databaseUrl !== undefined) {
        const host = (h.advertise ?? '').split(':')[0] || (anyAddress(c.grpcHost) ? hostname() : c.grpcHost);
        await shareCoordinatorFiles({ db, dataDir: c.dataDir, advertisedHost: host, now: Date.now() });
      }
      const made = await ensureCoordinatorTls(c.dataDir);
      const adminToken = await ensureToken(join(c.dataDir, 'admin-token'), 'hgr_admin');
      const joinToken = await ensureJoinToken(join(c.dataDir, 'join-token'), made.caFingerprint);
      await SecretBox.fromKeyFile(join(c.dataDir, 'secret-key'));
      files = { adminToken, joinToken, caFingerprint: made.caFingerprint };
      return made;
    });
    shell = new FollowerShell({
      httpHost: c.httpHost,
      httpPort: c.httpPort,
      grpcHost: c.grpcHost,
      grpcPort: c.grpcPort,
      ...(c.tlsCert && c.tlsKey ? { https: { cert: await readFile(c.tlsCert), key: await readFile(c.tlsKey) } } : {}),
      tls: { certChainPem: tls.certChainPem, keyPem: tls.keyPem },
      name: () => nodeName,
      version: HANGAR_VERSION,
      leader: () => leaderView(lease),
      logger: rootLogger,
    });
    await shell.start();
    // Unique without --name: no two coordinators on one host listen on one port.
    nodeName ||= `${hostname()}:${shell.ports.httpPort}`;
  } catch (err) {
    lease.close();
    throw err;
  }
  const { httpPort, grpcPort } = shell.ports;
  const [advertisedHost, advertisedPort] = (h.advertise ?? '').split(':');
  const host = advertisedHost || (anyAddress(c.httpHost) ? hostname() : c.httpHost);
  const grpcHost = advertisedHost || (anyAddress(c.grpcHost) ? hostname() : c.grpcHost);
  const name = nodeName;
  const identity = {
    name,
    apiUrl: `${c.tlsCert ? 'https' : 'http'}://${host}:${httpPort}`,
    grpcAddress: `${grpcHost}:${advertisedPort ?? grpcPort}`,
  };

  const coordinators = (): CoordinatorsView => {
    const s = lease.state();
    return {
      leader: {
        name: s.holder ?? name,
        address: s.grpcAddress ?? identity.grpcAddress,
        url: s.apiUrl ?? identity.apiUrl,
        epoch: s.epoch,
        leaseExpiresAt: s.expiresAt,
      },
      followers: lease
        .coordinators()
        .filter((r) => r.name !== s.holder)
        .map((r) => ({ name: r.name, address: r.grpcAddress, url: r.apiUrl, role: r.role, lastSeen: r.lastSeen })),
    };
  };

  let running: RunningCoordinator | null = null;
  let closing = false;
  const waiting: { resolve: (r: RunningCoordinator) => void; reject: (err: Error) => void }[] = [];
  // Role changes one at a time, in the order the lease asked for them.
  let chain: Promise<void> = Promise.resolve();
  const enqueue = (step: () => Promise<void>) => {
    chain = chain.then(step).catch((err: unknown) => logger.error({ err }, 'a change of role failed'));
  };
  const lead = async (epoch: number) => {
    if (closing || lease.epoch !== epoch) return;
    const startedAt = performance.now();
    await shell.close();
    try {
      running = await startCoordinator(
        { ...config, httpPort, grpcPort },
        {
          ...deps,
          leadership: {
            epoch,
            onFenced: () => lease.stepDown('a write was fenced: another coordinator was elected'),
            coordinators,
          },
        },
      );
    } catch (err) {
      logger.error({ err, epoch }, 'could not start as the leader; following again');
      lease.release();
      await shell.start();
      return;
    }
    logger.info({ epoch, startMs: Math.round(performance.now() - startedAt) }, 'leading: the full coordinator runs here');
    for (const w of waiting.splice(0)) w.resolve(running);
  };
  const follow = async () => {
    const was = running;
    running = null;
    if (was) await was.close();
    if (!closing) await shell.start();
  };
  lease.configure(identity, {
    onElected: (epoch) => enqueue(() => lead(epoch)),
    onLost: () => enqueue(follow),
  });
  lease.start();
  // Elected at the first tick (alone on the data dir, or the lease was free): resolve leading.
  await chain;

  let closed: Promise<void> | null = null;
  return {
    name,
    url: identity.apiUrl,
    httpPort,
    grpcPort,
    grpcAddress: identity.grpcAddress,
    ...files,
    role: () => (running ? 'leader' : 'follower'),
    whenLeader: () =>
      running ? Promise.resolve(running) : new Promise<RunningCoordinator>((resolve, reject) => waiting.push({ resolve, reject })),
    close() {
      closed ??= (async () => {
        closing = true;
        lease.pause();
        await chain;
        const was = running;
        running = null;
        if (was) await was.close();
        // Released after the coordinator stopped writing: a follower takes over at its next look (every renewMs / 8).
        lease.close();
        await shell.close();
        for (const w of waiting.splice(0)) w.reject(new Error('the coordinator was stopped before it was elected'));
        logger.info('coordinator node stopped');
      })();
      return closed;
    },
  };
}

/** The live leader as the lease names it, or null during an election. */
function leaderView(lease: LeaderLease): LeaderView | null {
  const l = lease.leader();
  if (!l) return null;
  return { name: l.holder, address: l.grpcAddress ?? '', url: l.apiUrl ?? '', epoch: l.epoch, leaseExpiresAt: l.expiresAt };
}
