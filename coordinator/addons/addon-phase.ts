/**
 * The phases of an add-on as the coordinator records them: what its agent last reported (any
 * live state, in any order: the agent supervises the server), until it is destroyed, which is final.
 */
import { ADDON_STATES, type AddonState } from '../../common/vocabulary.js';
import type { TransitionTable } from '../store/transition-table.js';

/** An add-on's recorded phase: a state its agent reports, or `destroyed`. */
export type AddonPhase = AddonState | 'destroyed';

const LIVE_OR_DESTROYED: readonly AddonPhase[] = [...ADDON_STATES, 'destroyed'];

/** Every legal move of an add-on's phase. */
export const ADDON_TRANSITIONS: TransitionTable<AddonPhase> = {
  provisioning: LIVE_OR_DESTROYED,
  starting: LIVE_OR_DESTROYED,
  up: LIVE_OR_DESTROYED,
  crashed: LIVE_OR_DESTROYED,
  stopping: LIVE_OR_DESTROYED,
  failed: LIVE_OR_DESTROYED,
  destroyed: [],
};
