/**
 * The pure part of a rolling rollout: given the instances of an app and the release to converge
 * to, decide the next step per process type. {@link Rollouts} calls it on every tick (it is
 * level-triggered: the state is the instance rows in SQLite, so a restarted coordinator simply
 * plans again and carries on).
 *
 * One batch of a process type: start `surge` new instances → wait until every one of them is
 * healthy → drain as many old ones as new ones came up (out of every router first; they are
 * stopped once every router acked) → wait for that drain → next batch. At any time the instances
 * that serve (new up + old up) are at least the wanted count, and at most wanted + surge run.
 */

import { surgeSchema, type AppJson } from '../../common/app-json.js';
import type { InstanceState } from '../../common/vocabulary.js';

/** An instance as the planner sees it. */
export interface PlanInstance {
  key: string;
  type: string;
  idx: number;
  release: number;
  /** `run`: wanted (routed once up); `drain`: on its way out of the routers. */
  desired: 'run' | 'drain';
  state: InstanceState;
}

/** How many new instances a batch starts: a count, or a share of the wanted count (`25%`). */
export type Surge = number | `${number}%`;

/** Default surge: a quarter of the wanted instances, rounded up (at least 1). */
export const DEFAULT_SURGE: Surge = '25%';

/** What to do now for one process type. */
export interface TypeStep {
  type: string;
  /** Instances wanted of the target release. */
  wanted: number;
  /** Batch size. */
  surge: number;
  /** New instances of the target release to place now (indexes to use). */
  start: number[];
  /** Old instances that serve traffic: take them out of the routers, then stop them. */
  drain: string[];
  /** Instances that serve nothing (not up, or not web): stop them at once. */
  remove: string[];
  /** Instances of the target release still starting (the batch waits for them). */
  pending: string[];
  /** Instances being drained (the next batch waits for them). */
  draining: string[];
  /** Old instances still running (not drained yet). */
  oldLeft: number;
  /** Target instances up. */
  up: number;
  done: boolean;
}

/** The plan for a whole app. */
export interface RolloutPlan {
  steps: TypeStep[];
  /** Every type is done. */
  done: boolean;
}

/** Batch size for `wanted` instances: `surge` as given, or its share rounded up; at least 1. */
export function surgeCount(surge: Surge, wanted: number): number {
  if (typeof surge === 'number') return Math.max(1, Math.floor(surge));
  const pct = Number(surge.slice(0, -1));
  if (!Number.isFinite(pct) || pct <= 0) return 1;
  return Math.max(1, Math.ceil((wanted * pct) / 100));
}

/** app.json's `hangar.surge` (validated by its schema: a count, or a share `"N%"`), else the default. */
export function surgeOf(appJson: AppJson | null): Surge {
  const parsed = surgeSchema.safeParse(appJson?.hangar?.surge);
  if (!parsed.success) return DEFAULT_SURGE;
  // The schema's pattern admits only `N%` strings.
  return typeof parsed.data === 'number' ? parsed.data : (parsed.data as `${number}%`);
}

/** The smallest indexes (1-based) not in `used`. */
function freeIndexes(used: Iterable<number>, count: number): number[] {
  const taken = new Set(used);
  const out: number[] = [];
  for (let i = 1; out.length < count; i++) if (!taken.has(i)) out.push(i);
  return out;
}

/**
 * Plans the next step of converging an app's instances to `target` with `formation` (wanted
 * count per process type of the target release; other types go to 0).
 */
export function planRollout(input: {
  target: number;
  formation: Readonly<Record<string, number>>;
  instances: readonly PlanInstance[];
  surge: Surge;
  /** Types rolled out stop-then-start: every old instance goes before a new one is placed. */
  singletons?: ReadonlySet<string>;
}): RolloutPlan {
  const types = new Set<string>([...Object.keys(input.formation), ...input.instances.map((i) => i.type)]);
  const steps = [...types].sort().map((type) =>
    planType(
      type,
      input.formation[type] ?? 0,
      input.target,
      input.instances.filter((i) => i.type === type),
      input.surge,
      input.singletons?.has(type) ?? false,
    ),
  );
  return { steps, done: steps.every((s) => s.done) };
}

function planType(
  type: string,
  wanted: number,
  target: number,
  rows: readonly PlanInstance[],
  surgeSpec: Surge,
  singleton: boolean,
): TypeStep {
  const surge = surgeCount(surgeSpec, wanted);
  const isWeb = type === 'web';
  const fresh = rows.filter((i) => i.release === target && i.desired === 'run').sort((a, b) => a.idx - b.idx);
  const old = rows.filter((i) => i.release !== target && i.desired === 'run').sort((a, b) => b.idx - a.idx);
  const draining = rows.filter((i) => i.desired === 'drain').map((i) => i.key);
  const step: TypeStep = {
    type,
    wanted,
    surge,
    start: [],
    drain: [],
    remove: [],
    pending: [],
    draining,
    oldLeft: 0,
    up: 0,
    done: false,
  };
  const drainOrRemove = (i: PlanInstance): void => {
    if (isWeb && i.state === 'up') step.drain.push(i.key);
    else step.remove.push(i.key);
  };

  if (singleton) return planSingleton(step, wanted, target, rows, fresh, old, drainOrRemove);

  // Old instances that serve nothing can go at once: no router sends them anything.
  const oldServing = old.filter((i) => i.state === 'up');
  for (const i of old) if (i.state !== 'up') step.remove.push(i.key);

  // Too many of the target (the formation went down meanwhile): highest indexes go.
  const keep = fresh.slice(0, wanted);
  for (const i of fresh.slice(wanted)) drainOrRemove(i);
  const up = keep.filter((i) => i.state === 'up');
  step.up = up.length;
  step.pending = keep.filter((i) => i.state !== 'up').map((i) => i.key);

  // As many old ones go as the new ones that are up allow, keeping `wanted` serving.
  const excess = Math.max(0, up.length + oldServing.length - wanted);
  const drained = oldServing.slice(0, Math.min(excess, oldServing.length));
  for (const i of drained) drainOrRemove(i);
  const oldLeft = oldServing.length - drained.length;
  step.oldLeft = oldLeft;

  // Next batch: only once the last one is healthy and its old instances are out of the routers.
  const missing = wanted - keep.length;
  if (missing > 0 && step.pending.length === 0 && draining.length === 0 && drained.length === 0) {
    // Nothing old left to keep serving: no reason to hold back (first deploy, scale-up).
    const room = Math.max(0, wanted + surge - keep.length - oldLeft);
    const count = oldLeft === 0 ? missing : Math.min(missing, surge, room);
    const used = rows.filter((i) => i.release === target).map((i) => i.idx);
    step.start = freeIndexes(used, count);
  }
  step.done =
    keep.length === wanted &&
    step.pending.length === 0 &&
    oldLeft === 0 &&
    draining.length === 0 &&
    step.drain.length === 0 &&
    step.remove.length === 0;
  return step;
}

/**
 * A singleton type: stop-then-start. Every old instance goes first; a new one is placed only once
 * none is left, not even draining (the caller also waits until no agent still runs a copy).
 */
function planSingleton(
  step: TypeStep,
  wanted: number,
  target: number,
  rows: readonly PlanInstance[],
  fresh: readonly PlanInstance[],
  old: readonly PlanInstance[],
  drainOrRemove: (i: PlanInstance) => void,
): TypeStep {
  step.surge = 1;
  for (const i of old) drainOrRemove(i);
  const keep = fresh.slice(0, wanted);
  for (const i of fresh.slice(wanted)) drainOrRemove(i);
  step.up = keep.filter((i) => i.state === 'up').length;
  step.pending = keep.filter((i) => i.state !== 'up').map((i) => i.key);
  step.oldLeft = 0;
  const missing = wanted - keep.length;
  if (missing > 0 && old.length === 0 && step.draining.length === 0 && fresh.length <= wanted) {
    step.start = freeIndexes(
      rows.filter((i) => i.release === target).map((i) => i.idx),
      missing,
    );
  }
  step.done =
    keep.length === wanted &&
    step.pending.length === 0 &&
    old.length === 0 &&
    step.draining.length === 0 &&
    step.remove.length === 0 &&
    step.drain.length === 0;
  return step;
}
