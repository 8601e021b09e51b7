import { HangarError } from '../../common/errors.js';

/** For each status, the statuses it may move to. A status not listed as a key is unknown. */
export type TransitionTable<S extends string> = Readonly<Record<S, readonly S[]>>;

/**
 * Checks one move of a status kept in a store row (deploys, add-ons). Staying in the same status
 * is no move and always allowed (a patch of other fields).
 *
 * @throws HangarError `INTERNAL` on a move the table does not list: a bug, never a user error.
 */
export function assertTransition<S extends string>(table: TransitionTable<S>, from: S, to: S, what: string): void {
  if (from === to) return;
  if (!table[from].includes(to)) {
    throw new HangarError('INTERNAL', `Illegal ${what} transition from ${from} to ${to}.`);
  }
}
