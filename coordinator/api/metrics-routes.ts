/**
 * HTTP routes of metrics and autoscaling: `/v1/apps/:app/metrics`, `/v1/agents/:agent/metrics`,
 * `/v1/apps/:app/autoscale[/:type]` (under the API's bearer token like every `/v1/` route) and
 * `/metrics` for Prometheus, which also asks for the admin token (`Authorization: Bearer TOKEN`,
 * Prometheus' `authorization` / `bearer_token_file` scrape setting): the series name every app
 * and instance of the fleet.
 */
import { z } from 'zod';
import type { AutoscaleView } from '../../common/api-types.js';
import type { Clock } from '../../common/clock.js';
import { HangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { MAX_QUANTITY, appNameSchema, processTypeSchema } from '../../common/names.js';
import type { ApiServer } from './server.js';
import { needs } from './auth.js';
import type { AutoscaleStore } from '../autoscale/autoscale-store.js';
import type { Autoscaler } from '../autoscale/autoscaler.js';
import { runnableTypes } from '../fleet/fleet.js';
import type { FleetViews } from '../fleet/fleet-views.js';
import type { MetricsStore } from '../metrics/metrics-store.js';
import { parseDuration } from '../../common/duration.js';
import type { PrometheusExporter } from '../metrics/prometheus-exporter.js';
import type { Store } from '../store/store.js';
import { parseInput } from './validation.js';

/** What {@link registerMetricsRoutes} needs. */
export interface MetricsRoutesOptions {
  store: Store;
  views: Pick<FleetViews, 'agentViews'>;
  metrics: MetricsStore;
  exporter: PrometheusExporter;
  policies: AutoscaleStore;
  autoscaler: Autoscaler;
  clock: Clock;
  logger: Logger;
}

/** Longest `since`: the rollups' retention. */
const MAX_SINCE_MS = 30 * 86_400_000;

const sinceSchema = z
  .string()
  .default('1h')
  .transform((text, ctx) => {
    const ms = parseDuration(text);
    if (ms === null || ms <= 0 || ms > MAX_SINCE_MS) {
      ctx.addIssue({ code: 'custom', message: 'must be a duration like 30s, 15m, 1h or 7d (at most 30d)' });
      return z.NEVER;
    }
    return ms;
  });
const appParams = z.object({ app: appNameSchema }).strict();
const agentParams = z.object({ agent: z.string().regex(/^[a-z0-9][a-z0-9.-]{0,62}$/i, 'must be an agent name') }).strict();
const typeParams = z.object({ app: appNameSchema, type: processTypeSchema }).strict();
const sinceQuery = z.object({ since: sinceSchema }).strict();
const policyBody = z
  .object({
    min: z.number().int().min(0).max(MAX_QUANTITY),
    max: z.number().int().min(1).max(MAX_QUANTITY),
    p95Ms: z.number().int().positive().max(600_000).nullable().default(null),
    cpuPct: z.number().positive().max(10_000).nullable().default(null),
  })
  .strict()
  .refine((p) => p.min <= p.max, { message: 'min must not be above max', path: ['min'] })
  .refine((p) => p.p95Ms !== null || p.cpuPct !== null, { message: 'give a target: p95Ms and/or cpuPct', path: ['p95Ms'] });

/** Adds the routes to the API server. */
export function registerMetricsRoutes(app: ApiServer, o: MetricsRoutesOptions): void {
  const logger = o.logger.child({ component: 'metrics-api' });

  const autoscaleView = (name: string): AutoscaleView => {
    const formation = o.store.getFormation(name);
    return {
      app: name,
      policies: o.policies.listPolicies(name).map((p) => ({
        type: p.type,
        min: p.min,
        max: p.max,
        p95Ms: p.p95Ms,
        cpuPct: p.cpuPct,
        quantity: formation[p.type] ?? 0,
      })),
      decisions: o.policies.listDecisions(name).map((d) => ({
        ts: new Date(d.ts).toISOString(),
        type: d.type,
        from: d.from,
        to: d.to,
        reason: d.reason,
      })),
    };
  };

  app.get('/metrics', needs('read'), async (request, reply) => {
    const text = await o.exporter.text();
    return reply.header('content-type', o.exporter.contentType).send(text);
  });

  app.get('/v1/apps/:app/metrics', needs('read'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    const { since } = parseInput(sinceQuery, request.query ?? {}, 'query');
    o.store.requireApp(name);
    return { metrics: o.metrics.appMetrics(name, since, o.store.listInstances({ app: name })) };
  });

  app.get('/v1/agents/:agent/metrics', needs('read'), async (request) => {
    const { agent } = parseInput(agentParams, request.params, 'agent name');
    const { since } = parseInput(sinceQuery, request.query ?? {}, 'query');
    const view = o.views.agentViews().find((a) => a.name === agent);
    if (!view) throw new HangarError('NOT_FOUND', `No agent ${agent}; \`hangar agents\` lists them.`);
    return { metrics: o.metrics.agentMetrics(agent, since, view.state) };
  });

  app.get('/v1/apps/:app/autoscale', needs('read'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    o.store.requireApp(name);
    return { autoscale: autoscaleView(name) };
  });

  app.put('/v1/apps/:app/autoscale/:type', needs('deploy'), async (request) => {
    const { app: name, type } = parseInput(typeParams, request.params, 'app and process type');
    const body = parseInput(policyBody, request.body ?? {}, 'autoscale policy');
    const row = o.store.requireApp(name);
    const release = row.currentRelease === null ? null : o.store.getRelease(name, row.currentRelease);
    if (release && !runnableTypes(release).includes(type)) {
      throw new HangarError(
        'UNKNOWN_PROCESS_TYPE',
        `No process type ${type} in ${name}'s Procfile (v${release.version} has ${runnableTypes(release).join(', ') || 'none'}).`,
      );
    }
    o.policies.setPolicy({ app: name, type, ...body }, o.clock.now());
    o.autoscaler.reset(name, type);
    logger.info({ app: name, type, policy: body }, 'autoscale policy set');
    return { autoscale: autoscaleView(name) };
  });

  app.delete('/v1/apps/:app/autoscale/:type', needs('deploy'), async (request) => {
    const { app: name, type } = parseInput(typeParams, request.params, 'app and process type');
    o.store.requireApp(name);
    if (!o.policies.deletePolicy(name, type)) {
      throw new HangarError('NOT_FOUND', `${name} has no autoscale policy for ${type}; \`hangar autoscale -a ${name}\` lists them.`);
    }
    o.autoscaler.reset(name, type);
    logger.info({ app: name, type }, 'autoscale policy removed');
    return { autoscale: autoscaleView(name) };
  });
}
