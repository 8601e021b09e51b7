import { HangarError } from '../../common/errors.js';

/** An agent as the scheduler sees it. */
export interface SchedulerAgent {
  name: string;
  /** Only agents that are up receive new instances. */
  up: boolean;
  maxInstances: number;
  /** Instances placed on it now, all apps. */
  load: number;
}

/** An instance already placed, as the scheduler sees it. */
export interface PlacedInstance {
  agent: string;
  app: string;
  type: string;
}

/** One new instance to place. */
export interface PlacementRequest {
  app: string;
  type: string;
}

/**
 * Places new instances across agents: spread first (the agent with the fewest instances of the
 * same app and process type), then least loaded (fewest instances overall), then by name so the
 * result is deterministic. Agents that are down or full are never chosen.
 *
 * Returns one agent name per request, in order; counts are updated as it goes, so placing three
 * instances over two agents gives 2 + 1. Throws NO_CAPACITY (or NO_AGENTS) when a request
 * cannot be placed.
 */
export function placeInstances(
  agents: readonly SchedulerAgent[],
  placed: readonly PlacedInstance[],
  requests: readonly PlacementRequest[],
): string[] {
  const candidates = agents.filter((a) => a.up);
  if (candidates.length === 0) {
    throw new HangarError(
      'NO_AGENTS',
      'No agent is connected, so nothing can run; start one with `hangar agent --coordinator HOST:PORT --join-token TOKEN`.',
    );
  }
  const load = new Map(candidates.map((a) => [a.name, a.load]));
  const sameKind = new Map<string, number>();
  const kindKey = (agent: string, app: string, type: string) => `${agent}\u0000${app}\u0000${type}`;
  for (const p of placed) {
    const k = kindKey(p.agent, p.app, p.type);
    sameKind.set(k, (sameKind.get(k) ?? 0) + 1);
  }

  return requests.map((req) => {
    let best: SchedulerAgent | undefined;
    let bestScore: [number, number] | undefined;
    for (const agent of candidates) {
      const agentLoad = load.get(agent.name) ?? 0;
      if (agentLoad >= agent.maxInstances) continue;
      const score: [number, number] = [sameKind.get(kindKey(agent.name, req.app, req.type)) ?? 0, agentLoad];
      if (
        !bestScore ||
        score[0] < bestScore[0] ||
        (score[0] === bestScore[0] && score[1] < bestScore[1]) ||
        (score[0] === bestScore[0] && score[1] === bestScore[1] && best !== undefined && agent.name < best.name)
      ) {
        best = agent;
        bestScore = score;
      }
    }
    if (!best) {
      const total = candidates.reduce((sum, a) => sum + a.maxInstances, 0);
      throw new HangarError(
        'NO_CAPACITY',
        `Every agent is full (${total} instance slots in all); scale something down or add an agent (or raise its --max-instances).`,
      );
    }
    load.set(best.name, (load.get(best.name) ?? 0) + 1);
    const k = kindKey(best.name, req.app, req.type);
    sameKind.set(k, (sameKind.get(k) ?? 0) + 1);
    return best.name;
  });
}

/**
 * The smallest instance indexes (1-based) not in `used`, `count` of them: new instances fill the
 * gaps so names stay `web.1 … web.N` like Heroku's dynos.
 */
export function freeIndexes(used: Iterable<number>, count: number): number[] {
  const taken = new Set(used);
  const out: number[] = [];
  for (let i = 1; out.length < count; i++) if (!taken.has(i)) out.push(i);
  return out;
}
