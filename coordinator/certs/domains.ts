/**
 * Custom domains and certificates of apps, as the API offers them: add a domain (validated,
 * unique across the fleet, outside the coordinator's own `*.<domain>`), remove it, list domains
 * with a DNS check and their certificate's state, upload a certificate (checked before anything
 * is stored), and the app's TLS settings. Every change goes to the routers through desired state.
 */
import { randomUUID } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import type { CertView, DnsCheck, DnsRecordView, DomainView, TlsSettingsView } from '../../common/api-types.js';
import type { Clock } from '../../common/clock.js';
import { isWithinZone, parseDomainName } from '../../common/domain-name.js';
import { HangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { appDomains, defaultDomain } from '../fleet/route-table.js';
import type { Store } from '../store/store.js';
import type { AppTls, CertRow, CertStore, DomainRow } from './cert-store.js';
import { checkCertificate, coveredBy } from './certificate-check.js';
import { bestCertificate } from './tls-state.js';

/** A certificate expiring within this is `expiring`. */
const EXPIRING_MS = 30 * 86_400_000;
/** A DNS check gives up after this, ms. */
const DNS_TIMEOUT_MS = 2_000;

/** Options of {@link Domains}. */
export interface DomainsOptions {
  store: Store;
  certs: CertStore;
  /** Apps are served at APP.<domain>; names below it are the coordinator's own. */
  domain: string;
  sync: { requestSync(): void };
  /** Told after a change that may need ACME (a domain added, ACME enabled). */
  onChange?: () => void;
  /** Resolves a host name to its addresses (default: the system resolver). */
  resolve?: (hostname: string) => Promise<string[]>;
  clock: Clock;
  logger: Logger;
}

async function systemResolve(hostname: string): Promise<string[]> {
  const answers = await lookup(hostname, { all: true });
  return answers.map((a) => a.address);
}

/** See the file comment. */
export class Domains {
  readonly #o: DomainsOptions;
  readonly #log: Logger;

  constructor(options: DomainsOptions) {
    this.#o = options;
    this.#log = options.logger.child({ component: 'domains' });
  }

  /** The app's domains, the default one first, each with its DNS check and certificate. */
  async list(app: string): Promise<DomainView[]> {
    this.#o.store.requireApp(app);
    const rows = this.#o.certs.listDomains(app);
    const byName = new Map(rows.map((r) => [r.hostname, r]));
    const certs = this.#o.certs.listCerts(app);
    const tls = this.#o.certs.getTls(app);
    const agents = new Set(this.#o.store.listAgents().map((a) => a.address));
    const names = appDomains(
      app,
      this.#o.domain,
      rows.map((r) => r.hostname),
    );
    return Promise.all(
      names.map(async (hostname) => {
        const row = byName.get(hostname) ?? null;
        return {
          hostname,
          kind: row === null ? 'default' : 'custom',
          dns: await this.#dnsCheck(hostname, agents),
          certificate: this.#certificateOf(hostname, row, certs, tls),
          createdAt: row === null ? null : new Date(row.createdAt).toISOString(),
        } satisfies DomainView;
      }),
    );
  }

  /**
   * Adds a custom domain to an app; the routers serve it from the next desired state.
   *
   * @throws HangarError `BAD_INPUT` for a malformed name, an IP address or a name in the
   *   coordinator's own domain; `DOMAIN_TAKEN` when an app has it already.
   */
  add(app: string, input: string): { domain: DomainView; dns: DnsRecordView[] } {
    this.#o.store.requireApp(app);
    const hostname = parseDomainName(input);
    if (isWithinZone(hostname, this.#o.domain)) {
      throw new HangarError(
        'BAD_INPUT',
        `${hostname} is in ${this.#o.domain}, the coordinator's own domain: every app is already served at APP.${this.#o.domain}; add a domain of your own instead.`,
      );
    }
    const row = this.#o.certs.transaction(() => {
      const existing = this.#o.certs.getDomain(hostname);
      if (existing !== null) {
        throw new HangarError(
          'DOMAIN_TAKEN',
          existing.app === app
            ? `${hostname} is already a domain of ${app}; see \`hangar domains -a ${app}\`.`
            : `${hostname} is already a domain of another app; remove it there first (\`hangar domains:remove ${hostname} -a APP\`).`,
        );
      }
      return this.#o.certs.insertDomain(hostname, app, this.#o.clock.now());
    });
    this.#log.info({ app, domain: hostname }, 'domain added');
    this.#o.sync.requestSync();
    this.#o.onChange?.();
    const tls = this.#o.certs.getTls(app);
    return {
      domain: {
        hostname,
        kind: 'custom',
        dns: { check: 'unresolved', addresses: [] },
        certificate: this.#certificateOf(hostname, row, this.#o.certs.listCerts(app), tls),
        createdAt: new Date(row.createdAt).toISOString(),
      },
      dns: this.dnsRecords(app, hostname),
    };
  }

  /** The records that point `hostname` at the routers: a CNAME to the default domain, or A records. */
  dnsRecords(app: string, hostname: string): DnsRecordView[] {
    const apex = hostname.split('.').length === 2;
    const records: DnsRecordView[] = [];
    // A CNAME needs a name that resolves to the routers: the default domain, unless that is local.
    if (!apex && this.#o.domain !== 'localhost') {
      records.push({ type: 'CNAME', name: hostname, value: defaultDomain(app, this.#o.domain) });
    }
    const addresses = [...new Set(this.#o.store.listAgents().map((a) => a.address))];
    for (const address of addresses) records.push({ type: 'A', name: hostname, value: address });
    return records;
  }

  /** Returns the name removed, normalised. @throws HangarError `DOMAIN_NOT_FOUND` when the app has no such custom domain. */
  remove(app: string, input: string): string {
    this.#o.store.requireApp(app);
    const hostname = parseDomainName(input);
    if (!this.#o.certs.deleteDomain(hostname, app)) {
      const reason =
        hostname === defaultDomain(app, this.#o.domain)
          ? `${hostname} is the default domain of ${app}; it cannot be removed.`
          : `${app} has no custom domain ${hostname}; see \`hangar domains -a ${app}\`.`;
      throw new HangarError('DOMAIN_NOT_FOUND', reason);
    }
    this.#log.info({ app, domain: hostname }, 'domain removed');
    this.#o.sync.requestSync();
    return hostname;
  }

  /** The app's certificates, newest first, and its TLS settings. */
  listCerts(app: string): { certs: CertView[]; tls: TlsSettingsView } {
    this.#o.store.requireApp(app);
    const hostnames = this.#hostnames(app);
    return { certs: this.#o.certs.listCerts(app).map((c) => this.#certView(c, hostnames)), tls: this.#o.certs.getTls(app) };
  }

  /**
   * Stores an uploaded certificate and key once they are checked: the key matches, the
   * certificate is in date and covers one of the app's domains. Nothing is stored otherwise.
   */
  addCert(app: string, certPem: string, keyPem: string): CertView {
    this.#o.store.requireApp(app);
    const hostnames = this.#hostnames(app);
    const { facts } = checkCertificate(certPem, keyPem, hostnames, this.#o.clock.now());
    const row: CertRow = { id: randomUUID(), app, source: 'uploaded', keyPem, ...facts, createdAt: this.#o.clock.now() };
    this.#o.certs.insertCert(row);
    this.#log.info({ app, cert: row.id, names: facts.names, notAfter: new Date(facts.notAfter).toISOString() }, 'certificate added');
    this.#o.sync.requestSync();
    return this.#certView(row, hostnames);
  }

  /** Changes the app's TLS settings; enabling ACME starts ordering certificates at once. */
  setTls(app: string, patch: Partial<AppTls>): TlsSettingsView {
    this.#o.store.requireApp(app);
    const tls = this.#o.certs.setTls(app, patch);
    if (patch.acme === true) {
      for (const d of this.#o.certs.listDomains(app)) {
        if (d.acmeState === 'none' || d.acmeState === 'failed') {
          this.#o.certs.updateAcme(d.hostname, { acmeState: 'pending', acmeError: d.acmeError, acmeAttempts: 0, acmeNextAt: null });
        }
      }
    }
    this.#log.info({ app, ...tls }, 'TLS settings changed');
    this.#o.sync.requestSync();
    this.#o.onChange?.();
    return tls;
  }

  #hostnames(app: string): string[] {
    return appDomains(
      app,
      this.#o.domain,
      this.#o.certs.listDomains(app).map((d) => d.hostname),
    );
  }

  #certView(c: CertRow, hostnames: readonly string[]): CertView {
    const now = this.#o.clock.now();
    return {
      id: c.id,
      source: c.source,
      names: c.names,
      domains: coveredBy(c.names, hostnames),
      issuer: c.issuer,
      fingerprint: c.fingerprint,
      notBefore: new Date(c.notBefore).toISOString(),
      notAfter: new Date(c.notAfter).toISOString(),
      state: c.notAfter <= now ? 'expired' : c.notAfter - now <= EXPIRING_MS ? 'expiring' : 'valid',
      createdAt: new Date(c.createdAt).toISOString(),
    };
  }

  #certificateOf(hostname: string, row: DomainRow | null, certs: readonly CertRow[], tls: AppTls): DomainView['certificate'] {
    const now = this.#o.clock.now();
    const cert = bestCertificate(certs, hostname, now);
    const acme = row !== null && tls.acme;
    const lastError = acme ? row.acmeError : null;
    const nextAttemptAt = acme && row.acmeNextAt !== null ? new Date(row.acmeNextAt).toISOString() : null;
    if (cert !== null) {
      return {
        state: cert.notAfter - now <= EXPIRING_MS ? 'expiring' : 'valid',
        id: cert.id,
        source: cert.source,
        expiresAt: new Date(cert.notAfter).toISOString(),
        lastError,
        nextAttemptAt,
      };
    }
    const state = !acme ? 'none' : row.acmeState === 'failed' ? 'failed' : row.acmeState === 'issuing' ? 'issuing' : 'pending';
    return { state, id: null, source: null, expiresAt: null, lastError, nextAttemptAt };
  }

  async #dnsCheck(hostname: string, agents: ReadonlySet<string>): Promise<{ check: DnsCheck; addresses: string[] }> {
    const resolve = this.#o.resolve ?? systemResolve;
    let timer: NodeJS.Timeout | undefined;
    try {
      const addresses = await Promise.race([
        resolve(hostname),
        new Promise<string[]>((done) => {
          timer = setTimeout(() => done([]), DNS_TIMEOUT_MS);
        }),
      ]);
      if (addresses.length === 0) return { check: 'unresolved', addresses };
      return { check: addresses.some((a) => agents.has(a)) ? 'ok' : 'elsewhere', addresses };
    } catch {
      return { check: 'unresolved', addresses: [] };
    } finally {
      clearTimeout(timer);
    }
  }
}
