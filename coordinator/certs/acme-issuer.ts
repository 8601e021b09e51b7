/**
 * The fleet's one ACME client (acme-client, RFC 8555): for every custom domain of an app with
 * `certs:auto:enable`, orders a certificate with the HTTP-01 challenge — answered by every router,
 * which gets the token in desired state — stores it (key sealed) and has it pushed to every
 * router; renews it {@link AcmeIssuerOptions.renewBeforeMs} before it expires. A failure is a
 * `hangar` line in the app's logs and the domain's state (last error, next attempt), retried with
 * exponential backoff. A timer loop drives it; no cron.
 */
import { randomUUID } from 'node:crypto';
import https from 'node:https';
import * as acme from 'acme-client';
import type { Clock } from '../../common/clock.js';
import { describeError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { TimerLoop } from '../../common/timer-loop.js';
import type { CertStore, DomainRow } from './cert-store.js';
import { readCertificate } from './certificate-check.js';
import { bestCertificate } from './tls-state.js';

/** Let's Encrypt's production directory: the default of `--acme-directory`. */
export const LETS_ENCRYPT_DIRECTORY = 'https://acme-v02.api.letsencrypt.org/directory';

/** Options of {@link AcmeIssuer}. */
export interface AcmeIssuerOptions {
  certs: CertStore;
  /** The ACME directory URL. */
  directoryUrl: string;
  /** Extra CA certificates (PEM) to trust for the directory's HTTPS (an internal ACME server). */
  directoryCaPem?: string;
  /** Contact address of the ACME account. Default none. */
  email?: string;
  /** Pending HTTP-01 challenges, token → key authorization; the routers get them in desired state. */
  challenges: Map<string, string>;
  /** Sends desired state and resolves once every connected router applied it. */
  publish(): Promise<void>;
  /** Tells of an app's event (a `hangar` line in its logs). */
  recordEvent(app: string, line: string): void;
  clock: Clock;
  logger: Logger;
  /** Renew this long before expiry, ms. Default 30 days. */
  renewBeforeMs?: number;
  /** First retry after a failure, ms; doubled each failure in a row. Default 5 min. */
  retryBaseMs?: number;
  /** Longest pause between retries, ms. Default 12 h. */
  retryMaxMs?: number;
  /** How often the loop looks for domains due, ms. Default 60 s. */
  intervalMs?: number;
}

const DAY_MS = 86_400_000;

/** The pause before attempt `failures + 1` after `failures` failures in a row. */
export function retryDelayMs(failures: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, failures - 1));
}

/** See the file comment. */
export class AcmeIssuer {
  readonly #o: AcmeIssuerOptions;
  readonly #log: Logger;
  readonly #loop: TimerLoop;
  /** Host names with an order under way. */
  readonly #inFlight = new Set<string>();
  readonly #running = new Set<Promise<void>>();
  #client: Promise<acme.Client> | null = null;
  #closed = false;

  constructor(options: AcmeIssuerOptions) {
    this.#o = options;
    this.#log = options.logger.child({ component: 'acme' });
    this.#loop = new TimerLoop({
      clock: options.clock,
      intervalMs: options.intervalMs ?? 60_000,
      run: () => this.tick(),
      onError: (err) => this.#log.error({ err }, 'ACME loop failed'),
    });
    if (options.directoryCaPem !== undefined) {
      // acme-client talks through one shared axios instance: its agent is the only way in.
      acme.axios.defaults.httpsAgent = new https.Agent({ ca: options.directoryCaPem });
    }
  }

  start(): void {
    this.#loop.start();
    this.tick();
  }

  /** Stops the loop and waits (at most 10 s) for orders under way to end; an order cut short is retried on the next start. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#loop.close();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.#running]),
      new Promise((done) => {
        timer = setTimeout(done, 10_000);
      }),
    ]);
    clearTimeout(timer);
  }

  /** When the domain is due for an order: null when its certificate is good for long enough. */
  dueAt(d: DomainRow, now: number): number | null {
    const cert = bestCertificate(this.#o.certs.listCerts(d.app), d.hostname, now);
    const renewBefore = this.#o.renewBeforeMs ?? 30 * DAY_MS;
    if (cert !== null && cert.notAfter - now > renewBefore) return null;
    if (d.acmeState === 'failed' && d.acmeNextAt !== null) return d.acmeNextAt;
    return now;
  }

  /** Starts an order for every ACME domain that is due (and not already under way). */
  tick(): void {
    if (this.#closed) return;
    const now = this.#o.clock.now();
    for (const d of this.#o.certs.listDomains()) {
      if (this.#inFlight.has(d.hostname) || !this.#o.certs.getTls(d.app).acme) continue;
      const due = this.dueAt(d, now);
      if (due === null) {
        if (d.acmeState !== 'issued')
          this.#o.certs.updateAcme(d.hostname, { acmeState: 'issued', acmeError: null, acmeAttempts: 0, acmeNextAt: null });
        continue;
      }
      if (due > now) continue;
      this.#inFlight.add(d.hostname);
      const run = this.#order(d)
        .catch((err: unknown) => {
          if (!this.#closed) this.#log.error({ err, domain: d.hostname }, 'could not record the outcome of an ACME order');
        })
        .finally(() => {
          this.#inFlight.delete(d.hostname);
          this.#running.delete(run);
        });
      this.#running.add(run);
    }
  }

  async #order(d: DomainRow): Promise<void> {
    const { certs, clock } = this.#o;
    certs.updateAcme(d.hostname, { acmeState: 'issuing', acmeError: d.acmeError, acmeAttempts: d.acmeAttempts, acmeNextAt: null });
    const renewing = bestCertificate(certs.listCerts(d.app), d.hostname, clock.now()) !== null;
    this.#log.info({ app: d.app, domain: d.hostname, renewing }, 'ordering a certificate');
    try {
      const client = await this.#account();
      const [keyPem, csr] = await acme.crypto.createCsr({ commonName: d.hostname, altNames: [d.hostname] });
      const certPem = await client.auto({
        csr,
        termsOfServiceAgreed: true,
        challengePriority: ['http-01'],
        // The routers answer on port 80 of the domain's servers; the CA's own check is the one that counts.
        skipChallengeVerification: true,
        challengeCreateFn: async (_authz, challenge, keyAuthorization) => {
          this.#o.challenges.set(challenge.token, keyAuthorization);
          await this.#o.publish();
        },
        challengeRemoveFn: async (_authz, challenge) => {
          this.#o.challenges.delete(challenge.token);
          await this.#o.publish();
        },
      });
      if (this.#closed || certs.getDomain(d.hostname)?.app !== d.app) return;
      const { facts } = readCertificate(certPem);
      const id = randomUUID();
      certs.transaction(() => {
        certs.insertCert({ id, app: d.app, source: 'acme', keyPem: keyPem.toString(), ...facts, createdAt: clock.now() });
        certs.deleteReplacedAcmeCerts(d.app, d.hostname, id);
        certs.updateAcme(d.hostname, { acmeState: 'issued', acmeError: null, acmeAttempts: 0, acmeNextAt: null });
      });
      await this.#o.publish();
      const until = new Date(facts.notAfter).toISOString();
      this.#o.recordEvent(d.app, `Certificate for ${d.hostname} ${renewing ? 'renewed' : 'issued'} by ACME, valid until ${until}`);
      this.#log.info({ app: d.app, domain: d.hostname, notAfter: until }, renewing ? 'certificate renewed' : 'certificate issued');
    } catch (err) {
      const attempts = d.acmeAttempts + 1;
      const delay = retryDelayMs(attempts, this.#o.retryBaseMs ?? 300_000, this.#o.retryMaxMs ?? 12 * 3_600_000);
      const next = clock.now() + delay;
      const reason = describeError(err).replace(/\s+/g, ' ').slice(0, 500);
      if (certs.getDomain(d.hostname)?.app === d.app) {
        certs.updateAcme(d.hostname, { acmeState: 'failed', acmeError: reason, acmeAttempts: attempts, acmeNextAt: next });
      }
      this.#o.recordEvent(
        d.app,
        `ACME could not get a certificate for ${d.hostname} (attempt ${attempts}): ${reason}. Next attempt at ${new Date(next).toISOString()}; check that ${d.hostname} points at your routers (\`hangar domains -a ${d.app}\`).`,
      );
      this.#log.warn({ app: d.app, domain: d.hostname, attempts, err: reason }, 'ACME order failed');
    }
  }

  /** The ACME client of the account, made (and registered) once and kept sealed in the store. */
  #account(): Promise<acme.Client> {
    this.#client ??= (async () => {
      const { certs, directoryUrl } = this.#o;
      const saved = certs.getAcmeAccount(directoryUrl);
      if (saved) return new acme.Client({ directoryUrl, accountKey: saved.keyPem, accountUrl: saved.url });
      const accountKey = await acme.crypto.createPrivateEcdsaKey();
      const client = new acme.Client({ directoryUrl, accountKey });
      await client.createAccount({
        termsOfServiceAgreed: true,
        ...(this.#o.email ? { contact: [`mailto:${this.#o.email}`] } : {}),
      });
      certs.setAcmeAccount(directoryUrl, { keyPem: accountKey.toString(), url: client.getAccountUrl() });
      this.#log.info({ directoryUrl }, 'ACME account created');
      return client;
    })();
    // A failed registration is tried again on the next order.
    this.#client.catch(() => {
      this.#client = null;
    });
    return this.#client;
  }
}
