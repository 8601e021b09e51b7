/**
 * Where a workload is in the {@link WorkloadRunner}'s hands, and the moves it may make. Once
 * `running`, the supervisor's own state (starting, up, crashed) says the rest.
 */
import { StateMachine } from '../../common/state-machine.js';

/**
 * `preparing`: built or provisioned before it can run; `running`: its supervisor has it;
 * `failed`: preparing failed, tried again later as a new workload; `stopping`: being stopped;
 * `stopped`: gone (the runner has forgotten it).
 */
export type WorkloadPhase = 'preparing' | 'running' | 'failed' | 'stopping' | 'stopped';

/** The moves between phases; anything else is a bug and throws. */
export const WORKLOAD_TRANSITIONS: Record<WorkloadPhase, readonly WorkloadPhase[]> = {
  preparing: ['running', 'failed', 'stopping'],
  running: ['stopping'],
  failed: ['stopping'],
  stopping: ['stopped'],
  stopped: [],
};

/** The phase of workload `key`, starting at `initial` (`running` for an adopted one). */
export function workloadPhase(key: string, initial: WorkloadPhase): StateMachine<WorkloadPhase> {
  return new StateMachine(initial, WORKLOAD_TRANSITIONS, `workload ${key}`);
}
