/**
 * HTTP routes of custom domains, certificates and TLS settings (see `common/api-types.ts`):
 * `/v1/apps/:app/domains`, `/v1/apps/:app/certs`, `/v1/apps/:app/tls`. Handlers parse and format;
 * {@link Domains} checks and stores.
 */
import { z } from 'zod';
import { appNameSchema } from '../../common/names.js';
import type { Domains } from '../certs/domains.js';
import type { Releases } from '../releases/releases.js';
import type { Rollouts } from '../releases/rollout.js';
import type { Logger } from '../../common/logger.js';
import type { DeployView, ReleaseView } from '../../common/api-types.js';
import { releaseView } from './app-routes.js';
import { needs } from './auth.js';
import type { ApiServer } from './server.js';
import { parseInput } from './validation.js';

/** What the domain routes need. */
export interface DomainRoutesOptions {
  domains: Domains;
  releases: Releases;
  rollouts: Rollouts;
  logger: Logger;
}

/** Largest PEM accepted (a certificate chain or a key), characters. */
const MAX_PEM = 64 * 1024;

const appParams = z.object({ app: appNameSchema }).strict();
const domainParams = z.object({ app: appNameSchema, hostname: z.string().min(1).max(300) }).strict();
const addDomainBody = z.object({ hostname: z.string().max(300) }).strict();
const addCertBody = z
  .object({
    cert: z.string().min(1).max(MAX_PEM),
    key: z.string().min(1).max(MAX_PEM),
  })
  .strict();
const tlsBody = z
  .object({ acme: z.boolean().optional(), redirect: z.boolean().optional(), hsts: z.boolean().optional() })
  .strict()
  .refine((b) => Object.keys(b).length > 0, 'give at least one of acme, redirect, hsts');

/** Registers the domain, certificate and TLS routes on the API. */
export function registerDomainRoutes(server: ApiServer, o: DomainRoutesOptions): void {
  const { domains } = o;

  /**
   * After a domain change: a release of the same build and config, so every process starts with
   * the new HANGAR_DOMAINS (Django's ALLOWED_HOSTS, CSRF_TRUSTED_ORIGINS). The change stands
   * whatever happens to it; its failure is logged, and the next release carries the domains.
   */
  const release = (app: string, description: string, by: string): { release: ReleaseView | null; deploy: DeployView | null } => {
    try {
      const started = o.releases.refreshEnvironment(app, description, by);
      if (started !== null) {
        return { release: releaseView(started.release, started.previous), deploy: o.rollouts.view(started.deploy.id, app, 0) };
      }
    } catch (err) {
      o.logger.warn({ err, app }, 'could not release the app with its new domains; its next release carries them');
    }
    return { release: null, deploy: null };
  };

  server.get('/v1/apps/:app/domains', needs('read'), async (request) => {
    const { app } = parseInput(appParams, request.params, 'app name');
    return { domains: await domains.list(app) };
  });

  server.post('/v1/apps/:app/domains', needs('deploy'), async (request, reply) => {
    const { app } = parseInput(appParams, request.params, 'app name');
    const { hostname } = parseInput(addDomainBody, request.body ?? {}, 'domain');
    const added = domains.add(app, hostname);
    return reply.status(201).send({ ...added, ...release(app, `Add domain ${added.domain.hostname}`, request.caller?.name ?? 'admin') });
  });

  server.delete('/v1/apps/:app/domains/:hostname', needs('deploy'), async (request) => {
    const { app, hostname } = parseInput(domainParams, request.params, 'domain');
    const removed = domains.remove(app, hostname);
    return { ok: true, ...release(app, `Remove domain ${removed}`, request.caller?.name ?? 'admin') };
  });

  server.get('/v1/apps/:app/certs', needs('read'), async (request) => {
    const { app } = parseInput(appParams, request.params, 'app name');
    return domains.listCerts(app);
  });

  server.post('/v1/apps/:app/certs', needs('deploy'), async (request, reply) => {
    const { app } = parseInput(appParams, request.params, 'app name');
    const { cert, key } = parseInput(addCertBody, request.body ?? {}, 'certificate');
    return reply.status(201).send({ cert: domains.addCert(app, cert, key) });
  });

  server.patch('/v1/apps/:app/tls', needs('deploy'), async (request) => {
    const { app } = parseInput(appParams, request.params, 'app name');
    const patch = parseInput(tlsBody, request.body ?? {}, 'TLS settings');
    return { tls: domains.setTls(app, patch) };
  });
}
