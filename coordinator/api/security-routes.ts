/**
 * Admin routes of the HTTP API that manage who may reach the coordinator: API tokens and agents.
 *
 *   GET    /v1/tokens                         -> { tokens: TokenView[] }                  (admin)
 *   POST   /v1/tokens { scope, name? }        -> 201 { token: TokenView & { token } }    (admin; the token is shown once)
 *   DELETE /v1/tokens/:id                     -> { ok: true }                            (admin)
 *   DELETE /v1/agents/:name                   -> { ok: true, apps: string[] }            (admin)
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyBaseLogger, FastifyInstance, RawServerDefault } from 'fastify';
import { z } from 'zod';
import type { CreatedTokenView, TokenView } from '../../common/api-types.js';
import { HangarError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { TOKEN_SCOPES, needs, type Authenticator } from './auth.js';
import type { ApiTokenRow, Store } from '../store/store.js';
import { parseInput } from './validation.js';

/** Options of {@link registerSecurityRoutes}. */
export interface SecurityRoutesOptions {
  store: Store;
  auth: Authenticator;
  logger: Logger;
  /** Revokes an agent's credential, ends its stream and drops its placements; false when unknown. */
  removeAgent(name: string): { removed: boolean; apps: string[] };
}

const createTokenBody = z
  .object({
    scope: z.enum(TOKEN_SCOPES),
    name: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,62}$/, 'must be 1-63 letters, digits, spaces, dots, dashes, underscores or @')
      .optional(),
  })
  .strict();
const tokenParams = z.object({ id: z.string().regex(/^tok_[A-Za-z0-9_-]{1,64}$/, 'must be a token id (tok_...)') }).strict();
const agentParams = z.object({ name: z.string().regex(/^[a-z0-9][a-z0-9.-]{0,62}$/i, 'must be an agent name') }).strict();

function tokenView(row: ApiTokenRow): TokenView {
  return {
    id: row.id,
    name: row.name,
    scope: row.scope,
    createdAt: new Date(row.createdAt).toISOString(),
  };
}

/** Registers the token and agent-removal routes, all of scope admin. */
export function registerSecurityRoutes<L extends FastifyBaseLogger>(
  app: FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, L>,
  o: SecurityRoutesOptions,
): void {
  app.get('/v1/tokens', needs('admin'), async () => ({ tokens: o.store.listTokens().map(tokenView) }));

  app.post('/v1/tokens', needs('admin'), async (request, reply) => {
    const { scope, name } = parseInput(createTokenBody, request.body ?? {}, 'token');
    const { token, row } = o.auth.create(scope, name ?? `${scope} token`);
    o.logger.info({ tokenId: row.id, scope, by: request.caller?.tokenId }, 'API token created');
    const created: CreatedTokenView = { ...tokenView(row), token };
    return reply.status(201).send({ token: created });
  });

  app.delete('/v1/tokens/:id', needs('admin'), async (request) => {
    const { id } = parseInput(tokenParams, request.params, 'token id');
    if (!o.store.deleteToken(id)) throw new HangarError('NOT_FOUND', `No token ${id}; see \`hangar tokens\`.`);
    o.logger.info({ tokenId: id, by: request.caller?.tokenId }, 'API token revoked');
    return { ok: true };
  });

  app.delete('/v1/agents/:name', needs('admin'), async (request) => {
    const { name } = parseInput(agentParams, request.params, 'agent name');
    const { removed, apps } = o.removeAgent(name);
    if (!removed) throw new HangarError('NOT_FOUND', `No agent named ${name}; see \`hangar agents\`.`);
    o.logger.info({ agent: name, apps }, 'agent removed; its credential is revoked');
    return { ok: true, apps };
  });
}
