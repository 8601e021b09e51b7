/**
 * A state held together with its transition table: every move is checked against the table and
 * an illegal one throws, so a lifecycle cannot drift into a state its code never planned for.
 */
import { HangarError } from './errors.js';

/**
 * The current state of one component and the moves it may make. `table[s]` lists the states
 * reachable from `s`; a state with no way out maps to `[]`.
 */
export class StateMachine<S extends string> {
  #state: S;
  readonly #table: Record<S, readonly S[]>;
  readonly #name: string;

  /**
   * @param initial the state the component starts in
   * @param table for every state, the states it may move to
   * @param name names the component in the error of an illegal move, e.g. `instance shop:web.1:v3`
   */
  constructor(initial: S, table: Record<S, readonly S[]>, name: string) {
    this.#state = initial;
    this.#table = table;
    this.#name = name;
  }

  /** The current state. */
  get state(): S {
    return this.#state;
  }

  /** True when the table allows moving from the current state to `next`. */
  can(next: S): boolean {
    return this.#table[this.#state].includes(next);
  }

  /** Moves to `next`; throws a HangarError `INTERNAL` when the table does not allow it. */
  to(next: S): void {
    if (!this.can(next)) {
      throw new HangarError('INTERNAL', `${this.#name}: illegal transition ${this.#state} -> ${next}`);
    }
    this.#state = next;
  }
}
