/**
 * The life of a deploy (and of its release): build (and release phase) on one agent, health-gated rollout, then
 * succeeded; or a rollback to the previous release, then failed. The status lives in the deploy
 * row; every change goes through {@link DEPLOY_TRANSITIONS}.
 */
import type { DeployStatus, ReleaseStatus } from '../store/store.js';
import type { TransitionTable } from '../store/transition-table.js';

/** Every legal move of a deploy's status. `succeeded` and `failed` are final. */
export const DEPLOY_TRANSITIONS: TransitionTable<DeployStatus> = {
  pending: ['building', 'failed'],
  building: ['releasing', 'rolling_out', 'failed'],
  // The agent went away: the build starts again on another one.
  releasing: ['building', 'rolling_out', 'failed'],
  rolling_out: ['rolling_back', 'postdeploy', 'succeeded', 'failed'],
  rolling_back: ['failed'],
  // The release is live: a failing postdeploy script fails the deploy but rolls nothing back.
  postdeploy: ['succeeded', 'failed'],
  succeeded: [],
  failed: [],
};

/** The deploy is finished. */
export function isFinished(status: DeployStatus): boolean {
  return DEPLOY_TRANSITIONS[status].length === 0;
}

/** The deploy's build (or release phase) runs on its task agent. */
export function isBuildTask(status: DeployStatus): boolean {
  return status === 'building' || status === 'releasing';
}

/** The deploy has a task on its task agent: the build (and release phase), or the postdeploy scripts. */
export function hasAgentTask(status: DeployStatus): boolean {
  return isBuildTask(status) || status === 'postdeploy';
}

/** The deploy places the app's instances itself, batch by batch (formation changes wait for it). */
export function holdsPlacement(status: DeployStatus): boolean {
  return status === 'rolling_out' || status === 'rolling_back';
}

/** Every legal move of a release's status: it serves (`running`) until a later one does (`succeeded`). */
export const RELEASE_TRANSITIONS: TransitionTable<ReleaseStatus> = {
  pending: ['running', 'failed', 'rolled_back'],
  running: ['succeeded'],
  succeeded: [],
  failed: [],
  rolled_back: [],
};
