/** The SECRET_KEY a new app gets (as Heroku's Django users expect: a strong one from the start). */
import { randomBytes } from 'node:crypto';

/** Length of a generated SECRET_KEY; Django's W009 wants at least 50 characters and 5 distinct ones. */
export const SECRET_KEY_LENGTH = 64;

/** Distinct characters Django's W009 asks of a SECRET_KEY. */
export const SECRET_KEY_MIN_UNIQUE = 5;

/**
 * A random SECRET_KEY of {@link SECRET_KEY_LENGTH} URL-safe characters. Draws again in the
 * (astronomically unlikely) case of too few distinct characters, so W009 never fires.
 */
export function generateSecretKey(random: (bytes: number) => Buffer = randomBytes): string {
  for (let attempt = 0; attempt < 100; attempt++) {
    const key = random((SECRET_KEY_LENGTH * 3) / 4).toString('base64url');
    if (new Set(key).size >= SECRET_KEY_MIN_UNIQUE) return key;
  }
  throw new Error('the random source keeps returning keys with too few distinct characters');
}
