/**
 * Leader election between coordinators sharing one database: a one-row lease (holder, epoch,
 * expiry). A coordinator takes it when it is free or expired, bumping the epoch in the same
 * IMMEDIATE transaction (the epoch is the fencing token of coordinator/ha/write-fence.ts); the
 * leader renews it every `renewMs`, and steps down on its own monotonic clock once its last
 * successful renewal is older than `leaseMs - marginMs`, before the lease can expire anywhere
 * (unless a renewal at that moment finds the row still under its epoch: nobody led meanwhile).
 * Every coordinator also keeps its row in `coordinators` fresh (`hangar coordinator status`).
 *
 * The expiry is wall-clock time of the database's host (here: the one host every coordinator on
 * a shared SQLite file runs on); the step-down deadline is the leader's monotonic time.
 */
import { systemClock, type Clock } from '../../common/clock.js';
import type { Logger } from '../../common/logger.js';
import { PostgresDatabase } from '../store/postgres.js';
import type { SqlDatabase } from '../store/sql.js';
import { migrateDatabase, openSqlDatabase } from '../store/store.js';

/** Any number PostgreSQL's advisory locks know first-start set-up by. */
const SETUP_LOCK = 7_081_003;

/** Who this coordinator is, as the others and agents see it. */
export interface CoordinatorIdentity {
  /** Unique among the coordinators of one database. */
  name: string;
  /** `http(s)://HOST:PORT` of its HTTP API. */
  apiUrl: string;
  /** `HOST:PORT` agents dial. */
  grpcAddress: string;
}

/** The lease row. */
export interface LeaseState {
  /** Null: released (or never taken). */
  holder: string | null;
  epoch: number;
  /** Unix ms. */
  expiresAt: number;
  apiUrl: string | null;
  grpcAddress: string | null;
}

/** A row of `coordinators`. */
export interface CoordinatorRow {
  name: string;
  apiUrl: string;
  grpcAddress: string;
  role: 'leader' | 'follower';
  /** Unix ms. */
  lastSeen: number;
}

/** Options of {@link LeaderLease}. */
export interface LeaderLeaseOptions {
  /** The shared SQLite file (hangar.db). */
  path: string;
  /** How long a lease lasts after each renewal, ms. Default 10 s. */
  leaseMs?: number;
  /** How often the leader renews (and a follower tries to take the lease), ms. Default 2 s. */
  renewMs?: number;
  /** The leader steps down when its last renewal is older than `leaseMs - marginMs`, ms. Default 3 s. */
  marginMs?: number;
  /** Wall clock of the lease's expiry. Default: the system's. */
  clock?: Clock;
  /** Monotonic milliseconds of the step-down deadline. Default: `performance.now`. */
  monotonic?: () => number;
  logger: Logger;
}

/** What the lease tells its owner. */
export interface LeaseEvents {
  /** This coordinator now leads under `epoch`. */
  onElected(epoch: number): void;
  /** It no longer does (`reason` says why); it must stop acting as leader at once. */
  onLost(reason: string): void;
}

type Row = Record<string, unknown>;

/**
 * One coordinator's side of the election, on a connection of its own. {@link tick} does one step
 * (tests drive it by hand); {@link start} runs it every `renewMs`.
 */
export class LeaderLease {
  readonly #db: SqlDatabase;
  readonly #leaseMs: number;
  readonly #renewMs: number;
  readonly #marginMs: number;
  readonly #clock: Clock;
  readonly #monotonic: () => number;
  readonly #logger: Logger;
  #identity: CoordinatorIdentity | null = null;
  #events: LeaseEvents | null = null;
  #epoch: number | null = null;
  /** Monotonic time at which the last successful renewal (or election) began. */
  #renewedAt = 0;
  #timer: NodeJS.Timeout | null = null;
  #deadlineTimer: NodeJS.Timeout | null = null;
  #closed = false;
  #lastError = '';
  /** Only this process's first election may take over a lease held under its own name. */
  #firstAttempt = true;

  constructor(options: LeaderLeaseOptions) {
    this.#leaseMs = options.leaseMs ?? 10_000;
    this.#renewMs = options.renewMs ?? 2000;
    this.#marginMs = options.marginMs ?? 3000;
    if (this.#marginMs <= 0 || this.#marginMs >= this.#leaseMs || this.#renewMs >= this.#leaseMs - this.#marginMs) {
      throw new Error('lease settings must satisfy 0 < renewMs < leaseMs - marginMs and 0 < marginMs < leaseMs');
    }
    this.#clock = options.clock ?? systemClock;
    this.#monotonic = options.monotonic ?? (() => performance.now());
    this.#logger = options.logger.child({ component: 'leader-lease' });
    this.#db = openSqlDatabase(options.path, { busyTimeoutMs: 2000 });
    // PostgreSQL: an election waits at most this long for a (stalled) writer's lock on the row.
    if (this.#db instanceof PostgresDatabase) this.#db.addSessionSetting("SET lock_timeout = '2s'");
    migrateDatabase(this.#db);
  }

  /** The lease's length, ms. */
  get leaseMs(): number {
    return this.#leaseMs;
  }

  /** The epoch this coordinator leads under, or null when it follows. */
  get epoch(): number | null {
    return this.#epoch;
  }

  /** True while this coordinator leads and its last renewal is recent enough by its own monotonic clock. */
  isLeader(): boolean {
    return this.#epoch !== null && this.#monotonic() - this.#renewedAt < this.#leaseMs - this.#marginMs;
  }

  /**
   * Runs `fn` in a transaction of the lease's connection holding the database's write lock
   * (SQLite) or an advisory lock (PostgreSQL), so other coordinators wait: first-start set-up of
   * what they share (CA, tokens) is made once, not raced. A throw of `fn` rolls its writes back.
   */
  async exclusive<T>(fn: (db: SqlDatabase) => Promise<T>): Promise<T> {
    if (this.#db instanceof PostgresDatabase) {
      this.#db.exec('BEGIN');
      // Making a CA takes a moment: the others wait longer than an election would.
      this.#db.exec("SET LOCAL lock_timeout = '60s'");
      this.#db.prepare('SELECT pg_advisory_xact_lock(?)').get(SETUP_LOCK);
    } else {
      this.#db.exec('BEGIN IMMEDIATE');
    }
    let result: T;
    try {
      result = await fn(this.#db);
    } catch (err) {
      this.#db.exec('ROLLBACK');
      throw err;
    }
    this.#db.exec('COMMIT');
    return result;
  }

  /** Says who this coordinator is and whom to tell; then {@link tick} or {@link start}. */
  configure(identity: CoordinatorIdentity, events: LeaseEvents): void {
    this.#identity = identity;
    this.#events = events;
  }

  /**
   * Ticks now and then every `renewMs` while leading (its deadline checked in between); while
   * following, a full step every `renewMs / 2` and a read of the lease row between, every
   * `renewMs / 8`: a released lease is taken within about that (a graceful handover in a fraction
   * of a second), without taking the write lock more often. Until {@link pause} or {@link close}.
   * Idempotent.
   */
  start(): void {
    if (this.#timer || this.#closed) return;
    this.tick();
    let turn = 0;
    this.#timer = setInterval(
      () => {
        turn = (turn + 1) % 8;
        if (this.#epoch !== null) {
          if (turn === 0) this.tick();
          else if (turn === 4) this.#checkDeadline();
          return;
        }
        if (turn % 4 === 0 || this.#leaseLooksFree()) this.tick();
      },
      Math.max(1, Math.round(this.#renewMs / 8)),
    );
  }

  /** A follower's cheap look: is the lease free or expired (worth an election step now)? */
  #leaseLooksFree(): boolean {
    try {
      const s = this.state();
      return s.holder === null || s.expiresAt <= this.#clock.now();
    } catch {
      return false;
    }
  }

  /** Stops ticking (a coordinator shutting down); the lease is kept until {@link close}. */
  pause(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** The lease row as stored (`lock`: for an update in this transaction; PostgreSQL locks the row). */
  state(lock = false): LeaseState {
    const forUpdate = lock && this.#db.engine === 'postgres' ? ' FOR UPDATE' : '';
    const r = this.#db.prepare(`SELECT * FROM coordinator_lease WHERE id = 1${forUpdate}`).get() as Row;
    return {
      holder: (r.holder as string | null) ?? null,
      epoch: r.epoch as number,
      expiresAt: r.expires_at as number,
      apiUrl: (r.api_url as string | null) ?? null,
      grpcAddress: (r.grpc_address as string | null) ?? null,
    };
  }

  /** The live leader as stored (null when the lease is free or expired). */
  leader(): (LeaseState & { holder: string }) | null {
    const s = this.state();
    return s.holder !== null && s.expiresAt > this.#clock.now() ? (s as LeaseState & { holder: string }) : null;
  }

  /** Every coordinator seen within `withinMs` (default: 3 leases), newest first. */
  coordinators(withinMs = 3 * this.#leaseMs): CoordinatorRow[] {
    const rows = this.#db
      .prepare('SELECT * FROM coordinators WHERE last_seen >= ? ORDER BY last_seen DESC, name')
      .all(this.#clock.now() - withinMs) as Row[];
    return rows.map((r) => ({
      name: r.name as string,
      apiUrl: r.api_url as string,
      grpcAddress: r.grpc_address as string,
      role: r.role as CoordinatorRow['role'],
      lastSeen: r.last_seen as number,
    }));
  }

  /** One step: the leader renews (or finds it lost the lease); a follower takes a free or expired lease. */
  tick(): void {
    if (this.#closed || !this.#identity) return;
    if (this.#epoch !== null && !this.isLeader()) {
      this.#checkDeadline();
      return;
    }
    this.#attempt(() => (this.#epoch !== null ? this.#renew() : this.#tryAcquire()));
    this.#checkDeadline();
  }

  /** Runs one step against the database; a failure is logged once (the leader's deadline still runs). */
  #attempt(step: () => void): void {
    try {
      step();
      this.#lastError = '';
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (message !== this.#lastError) this.#logger.warn({ err }, 'could not reach the lease in the database');
      this.#lastError = message;
    }
  }

  #tryAcquire(): void {
    const me = this.#identity as CoordinatorIdentity;
    const startedAt = this.#monotonic();
    const epoch = this.#db
      .transaction((): number | null => {
        const s = this.state(true);
        const now = this.#clock.now();
        this.#touch('follower', now);
        // A lease held under this very name is a predecessor's (names are unique, and this one
        // holds its ports): taken over at once, under a new epoch like any other election.
        const free = s.holder === null || s.expiresAt <= now || (this.#firstAttempt && s.holder === me.name);
        this.#firstAttempt = false;
        if (!free) return null;
        const next = s.epoch + 1;
        this.#db
          .prepare('UPDATE coordinator_lease SET holder = ?, epoch = ?, expires_at = ?, api_url = ?, grpc_address = ? WHERE id = 1')
          .run(me.name, next, now + this.#leaseMs, me.apiUrl, me.grpcAddress);
        this.#touch('leader', now);
        return next;
      })
      .immediate();
    if (epoch === null) return;
    this.#epoch = epoch;
    this.#renewedAt = startedAt;
    this.#armDeadline();
    this.#logger.info({ epoch, name: me.name }, 'elected leader');
    this.#events?.onElected(epoch);
  }

  #renew(): void {
    const me = this.#identity as CoordinatorIdentity;
    const startedAt = this.#monotonic();
    const held = this.#db
      .transaction((): boolean => {
        const now = this.#clock.now();
        const changed = this.#db
          .prepare('UPDATE coordinator_lease SET expires_at = ? WHERE id = 1 AND holder = ? AND epoch = ?')
          .run(now + this.#leaseMs, me.name, this.#epoch).changes;
        this.#touch(changed === 1 ? 'leader' : 'follower', now);
        return changed === 1;
      })
      .immediate();
    if (!held) {
      this.#lose('another coordinator holds the lease now');
      return;
    }
    // Renewed in time: the lease row proves nobody else was elected meanwhile.
    if (this.#epoch !== null) {
      this.#renewedAt = startedAt;
      this.#armDeadline();
    }
  }

  #touch(role: CoordinatorRow['role'], now: number): void {
    const me = this.#identity as CoordinatorIdentity;
    this.#db
      .prepare(
        `INSERT INTO coordinators (name, api_url, grpc_address, role, last_seen) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET api_url = excluded.api_url, grpc_address = excluded.grpc_address,
           role = excluded.role, last_seen = excluded.last_seen`,
      )
      .run(me.name, me.apiUrl, me.grpcAddress, role, now);
  }

  /** Steps down when the last renewal is too old (a stalled process, a database that would not answer). */
  #checkDeadline(): void {
    if (this.#epoch === null || this.isLeader()) return;
    const late = Math.round(this.#monotonic() - this.#renewedAt);
    // Past the deadline (a stalled process, a busy database), the lease row decides before
    // anything else runs: still this epoch's (elections always bump it), nobody led meanwhile
    // and it carries on; taken, or not answering, it steps down.
    this.#attempt(() => this.#renew());
    if (this.#epoch !== null && !this.isLeader()) this.#lose(`no renewal of the lease for ${late} ms`);
  }

  #armDeadline(): void {
    if (this.#deadlineTimer) clearTimeout(this.#deadlineTimer);
    const wait = this.#renewedAt + this.#leaseMs - this.#marginMs - this.#monotonic();
    this.#deadlineTimer = setTimeout(() => this.#checkDeadline(), Math.max(0, wait) + 1);
    this.#deadlineTimer.unref();
  }

  /**
   * Stops leading now, without writing (whoever holds the lease keeps it): after a fenced write,
   * or on the monotonic deadline.
   */
  stepDown(reason: string): void {
    this.#lose(reason);
  }

  #lose(reason: string): void {
    if (this.#epoch === null) return;
    const epoch = this.#epoch;
    this.#epoch = null;
    if (this.#deadlineTimer) clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = null;
    this.#logger.warn({ epoch, reason }, 'stepped down as leader');
    this.#events?.onLost(reason);
  }

  /**
   * Gives the lease up (a graceful stop): a follower takes it at its next tick instead of
   * waiting for the expiry. The epoch stays, so the next leader's is higher.
   */
  release(): void {
    const epoch = this.#epoch;
    if (epoch === null || !this.#identity) return;
    this.#epoch = null;
    if (this.#deadlineTimer) clearTimeout(this.#deadlineTimer);
    try {
      this.#db
        .prepare('UPDATE coordinator_lease SET holder = NULL, expires_at = 0 WHERE id = 1 AND holder = ? AND epoch = ?')
        .run(this.#identity.name, epoch);
      this.#logger.info({ epoch }, 'released the lease');
    } catch (err) {
      this.#logger.warn({ err }, 'could not release the lease; it expires by itself');
    }
  }

  /** Stops ticking, releases a held lease, forgets this coordinator's row; idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#deadlineTimer) clearTimeout(this.#deadlineTimer);
    this.release();
    try {
      if (this.#identity) this.#db.prepare('DELETE FROM coordinators WHERE name = ?').run(this.#identity.name);
    } catch (err) {
      this.#logger.debug({ err }, 'could not remove this coordinator from the list');
    }
    this.#db.close();
  }
}
