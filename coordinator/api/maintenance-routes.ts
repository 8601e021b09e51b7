/**
 * HTTP routes of maintenance mode (see `common/api-types.ts`): while an app is in it, every
 * router answers its requests with a 503 page, except those carrying the bypass header's secret.
 * The state is stored, then pushed with the routes to every agent.
 */
import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { MAINTENANCE_BYPASS_HEADER, type MaintenanceView } from '../../common/api-types.js';
import { appNameSchema } from '../../common/names.js';
import type { MaintenanceRow } from '../store/store.js';
import { needs } from './auth.js';
import type { ApiOptions, ApiServer } from './server.js';
import { parseInput } from './validation.js';

/** What the maintenance routes need of the API's options. */
export type MaintenanceRoutesOptions = Pick<ApiOptions, 'store' | 'sync' | 'clock' | 'logger'>;

/** Largest custom maintenance page, bytes: it travels to every agent with the routes. */
export const MAX_MAINTENANCE_PAGE_BYTES = 64 * 1024;
/** Default `Retry-After`, seconds. */
export const DEFAULT_RETRY_AFTER_SECONDS = 120;

const appParams = z.object({ app: appNameSchema }).strict();
const maintenanceBody = z.discriminatedUnion('enabled', [
  z
    .object({
      enabled: z.literal(true),
      /** Custom HTML page; absent keeps the current one (the default page when turning on). */
      page: z
        .string()
        .min(1, 'the page is empty; leave --page out for the default page')
        .refine(
          (p) => Buffer.byteLength(p) <= MAX_MAINTENANCE_PAGE_BYTES,
          `the page must be at most ${MAX_MAINTENANCE_PAGE_BYTES / 1024} KiB`,
        )
        .optional(),
      /** Use the default page again. */
      defaultPage: z.literal(true).optional(),
      /** Make a new bypass header value (the old one stops working). */
      bypass: z.boolean().optional(),
      retryAfter: z.number().int().min(0).max(86_400).optional(),
    })
    .strict()
    .refine((b) => !(b.page !== undefined && b.defaultPage === true), 'give either page or defaultPage, not both'),
  z.object({ enabled: z.literal(false) }).strict(),
]);

/** The API view of an app's maintenance row (null = off). */
export function maintenanceView(app: string, row: MaintenanceRow | null): MaintenanceView {
  return {
    app,
    enabled: row !== null,
    since: row === null ? null : new Date(row.since).toISOString(),
    page: row === null ? null : row.pageHtml === null ? 'default' : 'custom',
    bypassHeader: row === null || row.bypassSha256 === null ? null : MAINTENANCE_BYPASS_HEADER,
    retryAfter: row?.retryAfterSeconds ?? null,
  };
}

/** SHA-256 (hex) of a bypass value: what the coordinator stores and the routers compare. */
export function bypassDigest(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex');
}

/** Registers the maintenance routes on the API. */
export function registerMaintenanceRoutes(app: ApiServer, o: MaintenanceRoutesOptions): void {
  app.get('/v1/apps/:app/maintenance', needs('read'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    o.store.requireApp(name);
    return { maintenance: maintenanceView(name, o.store.getMaintenance(name)) };
  });

  app.put('/v1/apps/:app/maintenance', needs('deploy'), async (request) => {
    const { app: name } = parseInput(appParams, request.params, 'app name');
    const body = parseInput(maintenanceBody, request.body ?? {}, 'maintenance');
    o.store.requireApp(name);
    if (!body.enabled) {
      const was = o.store.clearMaintenance(name);
      if (was) {
        o.sync.requestSync();
        o.logger.info({ app: name }, 'maintenance mode off');
      }
      return { maintenance: maintenanceView(name, null) };
    }
    const current = o.store.getMaintenance(name);
    const secret = body.bypass === true ? randomBytes(24).toString('base64url') : undefined;
    const row: MaintenanceRow = {
      app: name,
      pageHtml: body.defaultPage === true ? null : (body.page ?? current?.pageHtml ?? null),
      bypassSha256: secret !== undefined ? bypassDigest(secret) : body.bypass === false ? null : (current?.bypassSha256 ?? null),
      retryAfterSeconds: body.retryAfter ?? current?.retryAfterSeconds ?? DEFAULT_RETRY_AFTER_SECONDS,
      since: current?.since ?? o.clock.now(),
    };
    o.store.setMaintenance(row);
    o.sync.requestSync();
    o.logger.info(
      { app: name, page: row.pageHtml === null ? 'default' : 'custom', bypass: row.bypassSha256 !== null },
      'maintenance mode on',
    );
    return {
      maintenance: maintenanceView(name, row),
      ...(secret === undefined ? {} : { bypassHeader: { name: MAINTENANCE_BYPASS_HEADER, value: secret } }),
    };
  });
}
