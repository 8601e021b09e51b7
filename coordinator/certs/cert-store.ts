/**
 * Custom domains, certificates and apps' TLS settings in SQLite (shares the {@link Store}'s one
 * connection). Private keys are sealed with the coordinator's {@link SecretBox}, like config values.
 */
import { HangarError } from '../../common/errors.js';
import { isConstraintError, type SqlDatabase } from '../store/sql.js';
import type { SecretBox } from '../../common/secret-box.js';
import type { Store } from '../store/store.js';

/** Where a domain is in getting a certificate from ACME. */
export type AcmeState = 'none' | 'pending' | 'issuing' | 'issued' | 'failed';

/** A custom domain of an app. */
export interface DomainRow {
  hostname: string;
  app: string;
  createdAt: number;
  acmeState: AcmeState;
  /** The last ACME failure, as a sentence (null once one succeeded). */
  acmeError: string | null;
  /** Failures in a row (the backoff grows with them). */
  acmeAttempts: number;
  /** Unix ms of the next ACME attempt (null: none planned). */
  acmeNextAt: number | null;
}

/** `uploaded` by `hangar certs:add`, or issued by `acme`. */
export type CertSource = 'uploaded' | 'acme';

/** A certificate of an app, with its key. */
export interface CertRow {
  id: string;
  app: string;
  source: CertSource;
  /** DNS names it covers (its subject alternative names; may hold wildcards). */
  names: string[];
  /** The leaf certificate and its chain, PEM. */
  certPem: string;
  /** The private key, PEM (sealed in the database). Never logged. */
  keyPem: string;
  notBefore: number;
  notAfter: number;
  issuer: string;
  /** SHA-256 fingerprint of the leaf, `AA:BB:…`. */
  fingerprint: string;
  createdAt: number;
}

/** An app's TLS settings. */
export interface AppTls {
  /** Certificates of its custom domains come from ACME (`certs:auto:enable`). */
  acme: boolean;
  /** Plain HTTP requests to a domain with a certificate get a 308 to HTTPS. Default on. */
  redirect: boolean;
  /** HTTPS responses carry `Strict-Transport-Security`. Default off (opt in). */
  hsts: boolean;
}

type Row = Record<string, unknown>;

const DEFAULT_TLS: AppTls = { acme: false, redirect: true, hsts: false };

function domainFrom(r: Row): DomainRow {
  return {
    hostname: r.hostname as string,
    app: r.app as string,
    createdAt: r.created_at as number,
    acmeState: r.acme_state as AcmeState,
    acmeError: (r.acme_error as string | null) ?? null,
    acmeAttempts: r.acme_attempts as number,
    acmeNextAt: (r.acme_next_at as number | null) ?? null,
  };
}

/** See the file comment. */
export class CertStore {
  readonly #db: SqlDatabase;
  readonly #secrets: SecretBox;

  constructor(store: Store, secrets: SecretBox) {
    this.#db = store.database;
    this.#secrets = secrets;
  }

  /** Runs `fn` in one transaction. */
  transaction<T>(fn: () => T): T {
    return this.#db.transaction(fn)();
  }

  // ---------------------------------------------------------------- domains

  getDomain(hostname: string): DomainRow | null {
    const r = this.#db.prepare('SELECT * FROM domains WHERE hostname = ?').get(hostname) as Row | undefined;
    return r ? domainFrom(r) : null;
  }

  /** An app's custom domains (all apps' when none is given), in the order they were added. */
  listDomains(app?: string): DomainRow[] {
    const rows =
      app === undefined
        ? this.#db.prepare('SELECT * FROM domains ORDER BY app, created_at, hostname').all()
        : this.#db.prepare('SELECT * FROM domains WHERE app = ? ORDER BY created_at, hostname').all(app);
    return (rows as Row[]).map(domainFrom);
  }

  /** @throws HangarError `DOMAIN_TAKEN` when an app (this one or another) has the domain already. */
  insertDomain(hostname: string, app: string, now: number): DomainRow {
    try {
      this.#db.prepare('INSERT INTO domains (hostname, app, created_at) VALUES (?, ?, ?)').run(hostname, app, now);
    } catch (err) {
      if (!isConstraintError(err, 'unique')) throw err;
      throw new HangarError(
        'DOMAIN_TAKEN',
        `${hostname} belongs to an app already; remove it there first with \`hangar domains:remove\`.`,
        {
          cause: err,
        },
      );
    }
    return { hostname, app, createdAt: now, acmeState: 'none', acmeError: null, acmeAttempts: 0, acmeNextAt: null };
  }

  /** True when there was such a domain of the app. */
  deleteDomain(hostname: string, app: string): boolean {
    return this.#db.prepare('DELETE FROM domains WHERE hostname = ? AND app = ?').run(hostname, app).changes > 0;
  }

  updateAcme(hostname: string, patch: Pick<DomainRow, 'acmeState' | 'acmeError' | 'acmeAttempts' | 'acmeNextAt'>): void {
    this.#db
      .prepare('UPDATE domains SET acme_state = ?, acme_error = ?, acme_attempts = ?, acme_next_at = ? WHERE hostname = ?')
      .run(patch.acmeState, patch.acmeError, patch.acmeAttempts, patch.acmeNextAt, hostname);
  }

  // ---------------------------------------------------------------- certificates

  insertCert(c: CertRow): void {
    this.#db
      .prepare(
        `INSERT INTO certificates (id, app, source, names, cert_pem, key_pem, not_before, not_after, issuer, fingerprint, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        c.id,
        c.app,
        c.source,
        JSON.stringify(c.names),
        c.certPem,
        this.#secrets.seal(c.keyPem),
        c.notBefore,
        c.notAfter,
        c.issuer,
        c.fingerprint,
        c.createdAt,
      );
  }

  /** An app's certificates (all apps' when none is given), newest first. */
  listCerts(app?: string): CertRow[] {
    const rows =
      app === undefined
        ? this.#db.prepare('SELECT * FROM certificates ORDER BY created_at DESC, id').all()
        : this.#db.prepare('SELECT * FROM certificates WHERE app = ? ORDER BY created_at DESC, id').all(app);
    return (rows as Row[]).map((r) => ({
      id: r.id as string,
      app: r.app as string,
      source: r.source as CertSource,
      names: JSON.parse(r.names as string) as string[],
      certPem: r.cert_pem as string,
      keyPem: this.#secrets.open(r.key_pem as string),
      notBefore: r.not_before as number,
      notAfter: r.not_after as number,
      issuer: r.issuer as string,
      fingerprint: r.fingerprint as string,
      createdAt: r.created_at as number,
    }));
  }

  /** Deletes the app's ACME certificates that `keep` replaced and that cover only `hostname`. */
  deleteReplacedAcmeCerts(app: string, hostname: string, keep: string): void {
    for (const c of this.listCerts(app)) {
      if (c.source === 'acme' && c.id !== keep && c.names.length === 1 && c.names[0] === hostname) {
        this.#db.prepare('DELETE FROM certificates WHERE id = ?').run(c.id);
      }
    }
  }

  // ---------------------------------------------------------------- settings

  getTls(app: string): AppTls {
    const r = this.#db.prepare('SELECT * FROM app_tls WHERE app = ?').get(app) as Row | undefined;
    return r ? { acme: r.acme === 1, redirect: r.redirect === 1, hsts: r.hsts === 1 } : { ...DEFAULT_TLS };
  }

  /** Every app's settings that differ from the defaults, by app. */
  allTls(): Map<string, AppTls> {
    const rows = this.#db.prepare('SELECT * FROM app_tls').all() as Row[];
    return new Map(rows.map((r) => [r.app as string, { acme: r.acme === 1, redirect: r.redirect === 1, hsts: r.hsts === 1 }]));
  }

  setTls(app: string, patch: Partial<AppTls>): AppTls {
    const next = { ...this.getTls(app), ...patch };
    this.#db
      .prepare(
        `INSERT INTO app_tls (app, acme, redirect, hsts) VALUES (?, ?, ?, ?)
         ON CONFLICT(app) DO UPDATE SET acme = excluded.acme, redirect = excluded.redirect, hsts = excluded.hsts`,
      )
      .run(app, next.acme ? 1 : 0, next.redirect ? 1 : 0, next.hsts ? 1 : 0);
    return next;
  }

  // ---------------------------------------------------------------- ACME account

  /** The ACME account (key PEM and URL) of a directory, or null before the first order. */
  getAcmeAccount(directoryUrl: string): { keyPem: string; url: string } | null {
    const r = this.#db.prepare('SELECT value FROM meta WHERE key = ?').get(`acme_account:${directoryUrl}`) as { value: string } | undefined;
    return r ? (JSON.parse(this.#secrets.open(r.value)) as { keyPem: string; url: string }) : null;
  }

  setAcmeAccount(directoryUrl: string, account: { keyPem: string; url: string }): void {
    this.#db
      .prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value')
      .run(`acme_account:${directoryUrl}`, this.#secrets.seal(JSON.stringify(account)));
  }
}
