import { z } from 'zod';

/** App names, Heroku's rules: lowercase letters, digits and dashes, starting with a letter, 2–30 long. */
export const appNameSchema = z
  .string()
  .regex(/^[a-z][a-z0-9-]{1,29}$/, 'must be 2–30 lowercase letters, digits or dashes, starting with a letter');

/** Procfile process types. */
export const processTypeSchema = z.string().regex(/^[A-Za-z0-9_-]{1,63}$/, 'must be letters, digits, dashes or underscores (at most 63)');

/** Config var names: what a POSIX shell accepts. */
export const configKeySchema = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]{0,254}$/, 'must start with a letter or underscore and hold only letters, digits and underscores');

/** Most instances of one process type. */
export const MAX_QUANTITY = 100;
