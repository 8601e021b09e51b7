/**
 * The TLS part of every agent's desired state: the apps' custom domains and HTTPS settings (for
 * the route table), each certificate with the exact host names it is served for, and the ACME
 * HTTP-01 challenges every router answers. Pure reads; the desired-state assembler calls it.
 */
import type { Clock } from '../../common/clock.js';
import type { AcmeChallenge, TlsCertificate } from '../../proto/loader.js';
import type { RouteExtras } from '../fleet/route-table.js';
import { appDomains } from '../fleet/route-table.js';
import type { CertRow, CertStore } from './cert-store.js';
import { nameCovers } from './certificate-check.js';

/** What {@link TlsState.snapshot} reads. */
export interface TlsSnapshot {
  routes: RouteExtras;
  certificates: TlsCertificate[];
  challenges: AcmeChallenge[];
}

/** The certificate served for `hostname`: of its app, in date, covering it, expiring last. */
export function bestCertificate(certs: readonly CertRow[], hostname: string, now: number): CertRow | null {
  let best: CertRow | null = null;
  for (const c of certs) {
    if (c.notAfter <= now || c.notBefore > now || !c.names.some((n) => nameCovers(n, hostname))) continue;
    if (best === null || c.notAfter > best.notAfter) best = c;
  }
  return best;
}

/** Options of {@link TlsState}. */
export interface TlsStateOptions {
  certs: CertStore;
  /** Apps are served at APP.<domain>. */
  domain: string;
  /** Pending HTTP-01 challenges: token → key authorization. */
  challenges: ReadonlyMap<string, string>;
  clock: Clock;
}

/** See the file comment. */
export class TlsState {
  readonly #o: TlsStateOptions;

  constructor(options: TlsStateOptions) {
    this.#o = options;
  }

  snapshot(): TlsSnapshot {
    const { certs, domain, clock } = this.#o;
    const now = clock.now();
    const customDomains = new Map<string, string[]>();
    for (const d of certs.listDomains()) {
      const list = customDomains.get(d.app);
      if (list) list.push(d.hostname);
      else customDomains.set(d.app, [d.hostname]);
    }
    const settings = certs.allTls();
    const byApp = new Map<string, CertRow[]>();
    for (const c of certs.listCerts()) {
      const list = byApp.get(c.app);
      if (list) list.push(c);
      else byApp.set(c.app, [c]);
    }
    const served = new Map<string, { cert: CertRow; domains: string[] }>();
    for (const [app, appCerts] of byApp) {
      for (const hostname of appDomains(app, domain, customDomains.get(app))) {
        const cert = bestCertificate(appCerts, hostname, now);
        if (cert === null) continue;
        const entry = served.get(cert.id);
        if (entry) entry.domains.push(hostname);
        else served.set(cert.id, { cert, domains: [hostname] });
      }
    }
    return {
      routes: { customDomains, https: settings },
      certificates: [...served.values()].map(({ cert, domains }) => ({
        id: cert.id,
        domains,
        certPem: cert.certPem,
        keyPem: cert.keyPem,
        notAfter: cert.notAfter,
      })),
      challenges: [...this.#o.challenges].map(([token, keyAuthorization]) => ({ token, keyAuthorization })),
    };
  }
}
