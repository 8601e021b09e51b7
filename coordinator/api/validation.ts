import type { z } from 'zod';
import { HangarError } from '../../common/errors.js';

/**
 * Validates `value` against `schema` and returns the typed result, or throws BAD_INPUT whose
 * message lists every bad field (and whose details carry them for clients).
 */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const fields = result.error.issues.map((issue) => ({
    path: issue.path.map(String).join('.') || what,
    message: issue.message,
  }));
  const list = fields.map((f) => `${f.path}: ${f.message}`).join('; ');
  throw new HangarError('BAD_INPUT', `Bad ${what}: ${list}.`, { details: { fields } });
}
