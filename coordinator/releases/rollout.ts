import { randomUUID } from 'node:crypto';
import type { AppJson } from '../../common/app-json.js';
import type { Clock } from '../../common/clock.js';
import type { Logger } from '../../common/logger.js';
import type { DeployLine, DeployView } from '../../common/api-types.js';
import { HangarError, type ErrorCode } from '../../common/errors.js';
import { instanceName, parseInstanceKey } from '../../common/vocabulary.js';
import type { TaskOutput__Output } from '../../proto/loader.js';
import type { DesiredStateSync } from '../fleet/desired-state-sync.js';
import { runnableTypes, type Fleet } from '../fleet/fleet.js';
import type { FleetViews } from '../fleet/fleet-views.js';
import { DEPLOY_TRANSITIONS, RELEASE_TRANSITIONS, hasAgentTask, isBuildTask, isFinished } from './deploy-status.js';
import { postdeployScriptsOf } from './deploy-scripts.js';
import { configPatchTo } from './releases.js';
import { planRollout, surgeOf, type RolloutPlan } from './rollout-planner.js';
import { RollingRestarts } from './rolling-restart.js';
import type { SingletonFence } from '../fleet/singleton-fence.js';
import { processSettingsOf } from '../../common/app-json.js';
import type { DeployRow, DeployStatus, InstanceRow, ReleaseRow, ReleaseStatus, Store } from '../store/store.js';
import { assertTransition } from '../store/transition-table.js';

/** Log lines of a failing instance shown by a failed deploy. */
const LOG_TAIL_LINES = 20;
/** Longest the app.json postdeploy scripts of a deploy may run, ms (the agent's own bound is the release command's). */
const POSTDEPLOY_TIMEOUT_MS = 30 * 60_000;

/** How many of a type a first deploy runs: app.json `formation.TYPE.quantity`, else web=1 and 0 of the others. */
export function initialQuantity(appJson: AppJson | null, type: string): number {
  return appJson?.formation?.[type]?.quantity ?? (type === 'web' ? 1 : 0);
}

/** Options of {@link Rollouts}. */
export interface RolloutOptions {
  store: Store;
  fleet: Pick<Fleet, 'place' | 'drain' | 'remove' | 'routesApplied'>;
  views: Pick<FleetViews, 'agentViews'>;
  sync: Pick<DesiredStateSync, 'requestSync'>;
  clock: Clock;
  logger: Logger;
  /** How long new instances have to become healthy before the release is rolled back, ms. */
  healthTimeoutMs: number;
  /** A new instance that crashed this many times fails the rollout at once. */
  crashLimit: number;
  /** Whether a singleton's new copy may start (no agent still runs the old one). */
  fence: Pick<SingletonFence, 'blockerFor'>;
}

/** What a new release is made of. */
export interface NewRelease {
  app: string;
  artifactSha256: string;
  procfile: Record<string, string>;
  appJson: AppJson | null;
  /** Config vars of the release; default: the app's current config. */
  config?: Record<string, string>;
  description: string;
  createdBy: string;
  /** Run the Procfile's `release:` command (not on rollback, as Heroku does). Default true. */
  runReleasePhase?: boolean;
}

/**
 * Deploys: build and release phase on one agent, then a health-gated rollout of the new release's
 * instances, then a drain of the old ones. A release whose instances do not become healthy in time
 * is removed and the previous release keeps serving. One rollout per app at a time.
 *
 * State lives in the store (deploy and instance rows), so a coordinator restart resumes where it
 * was: {@link tick} is level-triggered.
 */
export class Rollouts {
  readonly #o: RolloutOptions;
  readonly #logger: Logger;
  /** Singleton types of a deploy already said to wait for their old copy (only to print it once). */
  readonly #waitingSaid = new Set<string>();
  /** Batches already reported healthy, per deploy (only to print each once). */
  readonly #reported = new Map<string, Set<string>>();
  /** The last health-check failure reason per instance key (bounded: pruned as instances go). */
  readonly #healthReasons = new Map<string, string>();
  /** `hangar restart`: health-gated like a rollout, moved on by the same {@link tick}. */
  readonly restarts: RollingRestarts;
  constructor(options: RolloutOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'rollout' });
    this.restarts = new RollingRestarts(options);
  }

  /** The deploy under way for an app, if any. */
  activeDeploy(app: string): DeployRow | null {
    return this.#o.store.activeDeploys().find((d) => d.app === app) ?? null;
  }

  /**
   * Refuses a new release while a deploy of the app runs.
   *
   * @throws HangarError `ROLLOUT_IN_PROGRESS`.
   */
  assertIdle(app: string): void {
    const active = this.activeDeploy(app);
    if (active) {
      throw new HangarError(
        'ROLLOUT_IN_PROGRESS',
        `A deploy of ${app} is in progress${active.release ? ` (v${active.release})` : ''}; wait for it to finish (hangar releases -a ${app}) and try again.`,
      );
    }
    if (this.restarts.active(app)) {
      throw new HangarError(
        'ROLLOUT_IN_PROGRESS',
        `A restart of ${app} is in progress; wait for it to finish (hangar ps -a ${app}) and try again.`,
      );
    }
  }

  /**
   * Creates a release and starts deploying it. Throws ROLLOUT_IN_PROGRESS while another deploy of
   * the app runs and NO_AGENTS when no agent could build it.
   */
  start(input: NewRelease): { release: ReleaseRow; deploy: DeployRow } {
    const store = this.#o.store;
    const now = this.#o.clock.now();
    return store.transaction(() => {
      const app = store.requireApp(input.app);
      this.assertIdle(input.app);
      const builder = this.#pickBuilder();
      const release = store.createRelease({
        app: input.app,
        artifactSha256: input.artifactSha256,
        procfile: input.procfile,
        config: input.config ?? store.getConfig(input.app),
        appJson: input.appJson,
        status: 'pending',
        description: input.description,
        createdBy: input.createdBy,
        createdAt: now,
      });
      const skipReleasePhase = input.runReleasePhase === false && Boolean(input.procfile.release);
      const deploy: DeployRow = {
        id: randomUUID(),
        app: input.app,
        release: release.version,
        previousRelease: app.currentRelease,
        status: 'building',
        error: null,
        errorCode: null,
        taskAgent: builder,
        skipReleasePhase,
        deadline: null,
        createdAt: now,
        finishedAt: null,
      };
      store.createDeploy(deploy);
      this.#line(deploy.id, 'hangar', `-----> Building v${release.version} on ${builder}`);
      if (skipReleasePhase) this.#line(deploy.id, 'hangar', '-----> Skipping the release phase (rollback)');
      this.#logger.info({ app: input.app, release: release.version, deploy: deploy.id, agent: builder }, 'deploy started');
      this.#o.sync.requestSync();
      return { release, deploy };
    });
  }

  /**
   * Why a health check of `key` failed (the agent already summarises repeats): a line of the
   * deploy rolling it out, and the reason kept for the error should it never become healthy.
   */
  onHealthFailure(key: string, line: string): void {
    const id = parseInstanceKey(key);
    if (!id || line === '') return;
    // The reason of the latest failure said in the line (a line may end a summary and start anew).
    const latest = line.slice(Math.max(0, line.lastIndexOf('Health check failed')));
    this.#healthReasons.set(key, latest.replace(/^Health check failed[^:]*: /, ''));
    const deploy = this.activeDeploy(id.app);
    if (!deploy || (deploy.status !== 'rolling_out' && deploy.status !== 'rolling_back')) return;
    this.#line(deploy.id, `app[${instanceName(id)}]`, `-----> ${instanceName(id)} (v${id.release}): ${line}`, 'stderr');
  }

  onTaskOutput(agent: string, out: TaskOutput__Output): void {
    const deploy = this.#o.store.getDeploy(out.taskId);
    if (!deploy || deploy.taskAgent !== agent || isFinished(deploy.status)) return;
    if (out.source === 'release' && deploy.status === 'building') {
      this.#move(deploy.id, 'releasing');
    }
    this.#o.store.appendDeployLine(deploy.id, {
      ts: Number(out.ts) || this.#o.clock.now(),
      source: out.source || 'build',
      stream: out.stream === 'stderr' ? 'stderr' : 'stdout',
      line: out.line,
    });
  }

  onTaskResult(agent: string, result: { taskId: string; ok: boolean; error: string; errorCode: string; phase?: string }): void {
    const deploy = this.#o.store.getDeploy(result.taskId);
    if (!deploy || deploy.taskAgent !== agent) return;
    if (deploy.status === 'postdeploy') {
      if (result.phase === 'postdeploy') this.#finishPostdeploy(deploy, result.ok ? null : result.error || 'the postdeploy script failed');
      return;
    }
    // An outcome of the postdeploy phase never moves a build (nor a build's outcome sent again).
    if (!isBuildTask(deploy.status) || (result.phase ?? '') !== '') return;
    if (!result.ok) {
      const code: ErrorCode = result.errorCode === 'RELEASE_PHASE_FAILED' ? 'RELEASE_PHASE_FAILED' : 'BUILD_FAILED';
      this.#fail(deploy, code, result.error || 'The build failed; see the output above.');
      return;
    }
    this.#beginRollout(deploy);
  }

  /** An agent went away: a build assigned to it moves to another agent; its postdeploy scripts are given up. */
  onAgentGone(agent: string): void {
    for (const d of this.#o.store.activeDeploys()) {
      if (d.taskAgent !== agent || !hasAgentTask(d.status)) continue;
      if (d.status === 'postdeploy') {
        this.#finishPostdeploy(d, `${agent} went away before the postdeploy scripts finished`);
        continue;
      }
      try {
        const builder = this.#pickBuilder();
        this.#move(d.id, 'building', { taskAgent: builder });
        this.#line(d.id, 'hangar', `-----> ${agent} went away; building on ${builder} instead`);
      } catch {
        // No agent left: the deploy waits for one; tick() fails it at its deadline.
      }
    }
    this.#o.sync.requestSync();
  }

  #beginRollout(deploy: DeployRow): void {
    const store = this.#o.store;
    const version = deploy.release as number;
    const release = store.getRelease(deploy.app, version);
    if (!release) return;
    const now = this.#o.clock.now();
    try {
      store.transaction(() => {
        const formation = store.getFormation(deploy.app);
        const defaults: Record<string, number> = {};
        for (const type of runnableTypes(release)) {
          if (formation[type] === undefined) defaults[type] = initialQuantity(release.appJson, type);
        }
        store.setFormation(deploy.app, defaults);
        store.setCurrentRelease(deploy.app, version);
        this.#move(deploy.id, 'rolling_out', { deadline: now + this.#o.healthTimeoutMs });
        const wanted = store.getFormation(deploy.app);
        const summary = runnableTypes(release)
          .map((t) => `${t}=${wanted[t] ?? 0}`)
          .join(' ');
        this.#line(deploy.id, 'hangar', `-----> Starting v${version}: ${summary || 'no process types'}`);
      });
      this.#logger.info({ app: deploy.app, release: version }, 'rolling out');
      this.tick();
    } catch (err) {
      const code = err instanceof HangarError ? err.code : 'INTERNAL';
      this.#fail(store.getDeploy(deploy.id) ?? deploy, code, err instanceof Error ? err.message : String(err));
    }
  }

  /** Level-triggered: moves every rollout on (batches, health gate, deadline, finish). */
  tick(): void {
    const now = this.#o.clock.now();
    this.restarts.tick();
    for (const deploy of this.#o.store.activeDeploys()) {
      try {
        if (deploy.status === 'rolling_out' || deploy.status === 'rolling_back') this.#advance(deploy, now);
        else if (deploy.status === 'postdeploy') {
          if (deploy.deadline !== null && now > deploy.deadline) {
            this.#finishPostdeploy(deploy, `the postdeploy scripts did not finish in ${POSTDEPLOY_TIMEOUT_MS / 60_000} minutes`);
          }
        } else if (deploy.deadline === null) this.#o.store.updateDeploy(deploy.id, { deadline: now + 30 * 60_000 });
        else if (now > deploy.deadline) this.#fail(deploy, 'BUILD_FAILED', 'The build did not finish in 30 minutes.');
      } catch (err) {
        this.#logger.error({ err, deploy: deploy.id }, 'rollout step failed');
      }
    }
  }

  #advance(deploy: DeployRow, now: number): void {
    const store = this.#o.store;
    const rollingBack = deploy.status === 'rolling_back';
    const version = deploy.release as number;
    const target = rollingBack ? deploy.previousRelease : version;
    const release = target === null ? null : store.getRelease(deploy.app, target);
    if (target === null || !release) {
      this.#finishRollback(deploy, now, 'nothing to go back to');
      return;
    }
    const instances = store.listInstances({ app: deploy.app });
    if (!rollingBack) {
      const crashed = instances.find(
        (i) => i.release === version && i.desired === 'run' && i.state === 'crashed' && i.restarts >= this.#o.crashLimit,
      );
      if (crashed) {
        this.#rollBack(
          deploy,
          'RELEASE_UNHEALTHY',
          `${instanceName(crashed)} of v${version} keeps crashing (${crashed.message || `restarted ${crashed.restarts} times`}).`,
          crashed,
        );
        return;
      }
    }
    const formation = store.getFormation(deploy.app);
    const wanted: Record<string, number> = {};
    for (const type of runnableTypes(release)) wanted[type] = formation[type] ?? 0;
    const plan = planRollout({
      target,
      formation: wanted,
      instances: instances.map((i) => ({
        key: i.key,
        type: i.type,
        idx: i.idx,
        release: i.release,
        desired: i.desired,
        state: i.state,
      })),
      surge: surgeOf(release.appJson),
      singletons: new Set(runnableTypes(release).filter((t) => processSettingsOf(release.appJson, t).singleton)),
    });

    const pending = plan.steps.flatMap((s) => s.pending);
    if (pending.length > 0 && deploy.deadline !== null && now > deploy.deadline) {
      const first = instances.find((i) => i.key === pending[0]);
      const seconds = Math.round(this.#o.healthTimeoutMs / 1000);
      const health = first ? this.#healthReasons.get(first.key) : undefined;
      const why = health ? `; last health check: ${health}` : '';
      const message = `${first ? instanceName(first) : 'An instance'} of v${target} did not become healthy within ${seconds} s (state ${first?.state ?? 'unknown'}${first?.message ? `: ${first.message}` : ''}${why}).`;
      if (rollingBack) this.#finishRollback(deploy, now, message);
      else this.#rollBack(deploy, 'RELEASE_UNHEALTHY', message, first ?? null);
      return;
    }

    const byKey = new Map(instances.map((i) => [i.key, i]));
    try {
      this.#apply(deploy, release, plan, byKey, now);
    } catch (err) {
      // Nowhere to place the next batch (NO_CAPACITY, NO_AGENTS): agents may come back (e.g.
      // right after a coordinator restart) or drained instances free room, until the deadline.
      const code: ErrorCode = err instanceof HangarError ? err.code : 'INTERNAL';
      const message = err instanceof Error ? err.message : String(err);
      if (deploy.deadline === null || now <= deploy.deadline) {
        this.#logger.warn({ app: deploy.app, code }, `cannot place the next batch yet: ${message}`);
        return;
      }
      if (rollingBack) this.#finishRollback(deploy, now, message);
      else this.#rollBack(deploy, code, message, null);
      return;
    }
    if (!plan.done) return;
    if (rollingBack) {
      this.#finishRollback(deploy, now, null);
      return;
    }
    const up = instances.filter((i) => i.release === version && i.desired === 'run').length;
    const scripts = postdeployScriptsOf(release.appJson, deploy.previousRelease === null);
    store.transaction(() => {
      for (const r of store.listReleases(deploy.app)) {
        if (r.version === version) this.#setReleaseStatus(r, 'running');
        else if (r.status === 'running') this.#setReleaseStatus(r, 'succeeded');
      }
      this.#line(deploy.id, 'hangar', `-----> v${version} is up: ${up} instance(s) healthy`);
      if (scripts.length > 0) {
        // The release is live; its postdeploy scripts run on the agent that built it.
        this.#move(deploy.id, 'postdeploy', { deadline: now + POSTDEPLOY_TIMEOUT_MS });
      } else {
        this.#move(deploy.id, 'succeeded', { finishedAt: now });
      }
    });
    if (scripts.length > 0) this.#o.sync.requestSync();
    this.#reported.delete(deploy.id);
    this.#forgetWaiting(deploy.id);
    this.#forgetHealth(deploy.app);
    this.#logger.info({ app: deploy.app, release: version }, 'release is live');
  }

  /** Carries out one tick's plan: removes, drains and places instances, in one transaction. */
  #apply(deploy: DeployRow, release: ReleaseRow, plan: RolloutPlan, byKey: ReadonlyMap<string, InstanceRow>, now: number): void {
    const store = this.#o.store;
    const target = release.version;
    const instances = [...byKey.values()];
    store.transaction(() => {
      let started = false;
      for (const step of plan.steps) {
        this.#reportBatch(deploy, step.type, target, instances, step.pending.length === 0 && step.up > 0, step.wanted);
        const remove = step.remove.flatMap((k) => byKey.get(k) ?? []);
        const drain = step.drain.flatMap((k) => byKey.get(k) ?? []);
        this.#o.fleet.remove(remove);
        if (drain.length > 0) {
          this.#o.fleet.drain(drain);
          const from = [...new Set(drain.map((i) => `v${i.release}`))].join(', ');
          this.#line(deploy.id, 'hangar', `-----> ${step.type}: draining ${drain.length} old (${from}) from the routers`);
        }
        // A singleton's old copy must be gone from every agent first (stop-then-start).
        const blocked = step.start.length > 0 ? this.#o.fence.blockerFor(release, step.type) : null;
        if (blocked !== null) {
          const said = `${deploy.id}:${step.type}:${target}`;
          if (!this.#waitingSaid.has(said)) {
            this.#waitingSaid.add(said);
            this.#line(deploy.id, 'hangar', `-----> ${step.type} is a singleton: ${blocked} before starting v${target}`);
          }
        } else if (step.start.length > 0) {
          this.#o.fleet.place(
            deploy.app,
            target,
            step.start.map((idx) => ({ type: step.type, idx })),
          );
          started = true;
          const have = step.up + step.pending.length + step.start.length;
          this.#line(
            deploy.id,
            'hangar',
            `-----> ${step.type}: starting ${step.start.length} of v${target} (${have}/${step.wanted}, ${step.surge} at a time)`,
          );
        }
      }
      // Each batch gets the whole health timeout.
      if (started) store.updateDeploy(deploy.id, { deadline: now + this.#o.healthTimeoutMs });
    });
  }

  /**
   * Once per batch: says it is healthy, with how long the app took to boot (process start to
   * health check passed, the slowest of the batch) and the batch's wall time.
   */
  #reportBatch(deploy: DeployRow, type: string, target: number, instances: readonly InstanceRow[], healthy: boolean, wanted: number): void {
    if (!healthy) return;
    const mine = instances.filter((i) => i.release === target && i.type === type && i.desired === 'run');
    const createdAt = Math.max(...mine.map((i) => i.createdAt));
    const batch = mine.filter((i) => i.createdAt === createdAt && i.state === 'up');
    // Instances placed before this deploy (a rollback's target) were no batch of it.
    if (batch.length === 0 || createdAt < deploy.createdAt) return;
    const seen = this.#reported.get(deploy.id) ?? new Set<string>();
    this.#reported.set(deploy.id, seen);
    const id = `${type}:${target}:${createdAt}`;
    if (seen.has(id)) return;
    seen.add(id);
    const boots = batch.flatMap((i) => (i.startedAt !== null && i.upAt !== null ? [i.upAt - i.startedAt] : []));
    const upAt = Math.max(...batch.map((i) => i.upAt ?? i.since));
    const boot = boots.length > 0 ? `app boot ${(Math.max(...boots) / 1000).toFixed(2)} s` : 'app boot unknown';
    this.#line(
      deploy.id,
      'hangar',
      `-----> ${type}: ${batch.length} of v${target} healthy (${mine.filter((i) => i.state === 'up').length}/${wanted}; batch ${((upAt - createdAt) / 1000).toFixed(2)} s, ${boot})`,
    );
  }

  /**
   * The new release did not get healthy: it is marked rolled back and the previous release is
   * rolled out again (its remaining instances never stopped serving). Without a previous release
   * the deploy simply fails.
   */
  #rollBack(deploy: DeployRow, code: ErrorCode, message: string, culprit: InstanceRow | null): void {
    const store = this.#o.store;
    const version = deploy.release as number;
    const previous = deploy.previousRelease === null ? null : store.getRelease(deploy.app, deploy.previousRelease);
    if (culprit) this.#showLogTail(deploy.id, culprit);
    if (!previous) {
      this.#fail(deploy, code, message);
      return;
    }
    const now = this.#o.clock.now();
    store.transaction(() => {
      this.#setReleaseStatus(store.getRelease(deploy.app, version), 'rolled_back');
      store.setCurrentRelease(deploy.app, previous.version);
      this.#restoreConfig(deploy.app, previous);
      this.#move(deploy.id, 'rolling_back', {
        error: `${message} Rolled back: v${previous.version} keeps serving.`,
        errorCode: code,
        deadline: now + this.#o.healthTimeoutMs,
      });
      this.#line(deploy.id, 'hangar', `-----> v${version} failed: ${message}`, 'stderr');
      this.#line(deploy.id, 'hangar', `-----> Rolling back to v${previous.version}`, 'stderr');
    });
    this.#logger.warn({ app: deploy.app, release: version, code }, `rolling back: ${message}`);
    this.#advance(store.getDeploy(deploy.id) ?? deploy, now);
  }

  /** The previous release serves again (or could not be restored: `problem`); the deploy failed. */
  #finishRollback(deploy: DeployRow, now: number, problem: string | null): void {
    const store = this.#o.store;
    const serving = store
      .listInstances({ app: deploy.app })
      .filter((i) => i.release === deploy.previousRelease && i.desired === 'run' && i.state === 'up').length;
    store.transaction(() => {
      this.#move(deploy.id, 'failed', { finishedAt: now });
      if (problem === null) {
        this.#line(
          deploy.id,
          'hangar',
          `-----> Rolled back: v${deploy.previousRelease ?? '?'} serves (${serving} instance(s) healthy)`,
          'stderr',
        );
      } else {
        this.#line(deploy.id, 'hangar', `-----> Could not fully restore v${deploy.previousRelease ?? '?'}: ${problem}`, 'stderr');
      }
    });
    this.#reported.delete(deploy.id);
    this.#forgetWaiting(deploy.id);
    this.#forgetHealth(deploy.app);
    this.#o.sync.requestSync();
  }

  #forgetWaiting(deployId: string): void {
    for (const said of this.#waitingSaid) if (said.startsWith(`${deployId}:`)) this.#waitingSaid.delete(said);
  }

  /**
   * The postdeploy scripts ended: the deploy succeeded, or failed with `problem` while its
   * release stays live (nothing is rolled back: the release is healthy).
   */
  #finishPostdeploy(deploy: DeployRow, problem: string | null): void {
    const now = this.#o.clock.now();
    const version = deploy.release ?? 0;
    if (problem === null) {
      this.#move(deploy.id, 'succeeded', { finishedAt: now });
    } else {
      const message = `v${version} is live, but ${problem.replace(/^The /, 'the ')}. It was not rolled back (its instances are healthy): fix the script and deploy again.`;
      this.#o.store.transaction(() => {
        this.#move(deploy.id, 'failed', { error: message, errorCode: 'POSTDEPLOY_FAILED', finishedAt: now });
        this.#line(deploy.id, 'hangar', `-----> ${message}`, 'stderr');
      });
      this.#logger.warn({ app: deploy.app, release: version }, `postdeploy failed: ${problem}`);
    }
    this.#o.sync.requestSync();
  }

  /** Drops the health reasons of instances that are gone. */
  #forgetHealth(app: string): void {
    const keys = new Set(this.#o.store.listInstances({ app }).map((i) => i.key));
    for (const key of this.#healthReasons.keys()) if (parseInstanceKey(key)?.app === app && !keys.has(key)) this.#healthReasons.delete(key);
  }

  /** Prints the last lines the failing instance wrote, as its agent read them. */
  #showLogTail(deployId: string, i: InstanceRow): void {
    const lines = i.logTail.split('\n').filter((l) => l.trim() !== '');
    if (lines.length === 0) {
      this.#line(deployId, 'hangar', `-----> ${instanceName(i)} (v${i.release}) wrote no output`, 'stderr');
      return;
    }
    this.#line(deployId, 'hangar', `-----> Last log lines of ${instanceName(i)} (v${i.release}):`, 'stderr');
    for (const l of lines.slice(-LOG_TAIL_LINES)) this.#line(deployId, `app[${instanceName(i)}]`, `       ${l}`, 'stderr');
  }

  /** Makes the app's config what `release` ran with (a failed config change does not stick). */
  #restoreConfig(app: string, release: ReleaseRow): void {
    this.#o.store.patchConfig(app, configPatchTo(this.#o.store.getConfig(app), release.config));
  }

  /** Fails a deploy before or without a rollback: its instances go, the previous release (if any) stays. */
  #fail(deploy: DeployRow, code: ErrorCode, message: string): void {
    const store = this.#o.store;
    const now = this.#o.clock.now();
    const version = deploy.release;
    store.transaction(() => {
      if (version !== null) {
        const fresh = store.listInstances({ app: deploy.app }).filter((i) => i.release === version);
        this.#o.fleet.drain(fresh.filter((i) => i.desired === 'run' && i.state === 'up' && i.type === 'web'));
        this.#o.fleet.remove(fresh.filter((i) => !(i.desired === 'run' && i.state === 'up' && i.type === 'web')));
        this.#setReleaseStatus(store.getRelease(deploy.app, version), 'failed');
        const app = store.getApp(deploy.app);
        if (app && app.currentRelease === version) store.setCurrentRelease(deploy.app, deploy.previousRelease);
        const previous = deploy.previousRelease === null ? null : store.getRelease(deploy.app, deploy.previousRelease);
        if (previous) this.#restoreConfig(deploy.app, previous);
      }
      const keeps = deploy.previousRelease !== null ? ` v${deploy.previousRelease} keeps serving.` : '';
      this.#move(deploy.id, 'failed', { error: message + keeps, errorCode: code, finishedAt: now });
      this.#line(deploy.id, 'hangar', `-----> Deploy failed: ${message}${keeps}`, 'stderr');
    });
    this.#reported.delete(deploy.id);
    this.#logger.warn({ app: deploy.app, release: version, code }, `deploy failed: ${message}`);
    this.#o.sync.requestSync();
  }

  /** Moves a deploy to `to` (with other fields of its row), as {@link DEPLOY_TRANSITIONS} allows. */
  #move(id: string, to: DeployStatus, patch: Omit<Parameters<Store['updateDeploy']>[1], 'status'> = {}): void {
    const from = this.#o.store.getDeploy(id)?.status;
    if (from === undefined) return;
    assertTransition(DEPLOY_TRANSITIONS, from, to, 'deploy');
    this.#o.store.updateDeploy(id, { ...patch, status: to });
  }

  /** Moves a release to `to`, as {@link RELEASE_TRANSITIONS} allows. */
  #setReleaseStatus(release: ReleaseRow | null, to: ReleaseStatus): void {
    if (!release) return;
    assertTransition(RELEASE_TRANSITIONS, release.status, to, 'release');
    this.#o.store.setReleaseStatus(release.app, release.version, to);
  }

  #pickBuilder(): string {
    const agents = this.#o.views.agentViews().filter((a) => a.state === 'up');
    if (agents.length === 0) {
      throw new HangarError(
        'NO_AGENTS',
        'No agent is connected, so nothing can be built; start one with `hangar agent --coordinator HOST:PORT --join-token TOKEN`.',
      );
    }
    agents.sort((a, b) => a.instances - b.instances || a.name.localeCompare(b.name));
    return (agents[0] as (typeof agents)[number]).name;
  }

  #line(deployId: string, source: string, line: string, stream: 'stdout' | 'stderr' = 'stdout'): void {
    this.#o.store.appendDeployLine(deployId, { ts: this.#o.clock.now(), source, stream, line });
  }

  /** A deploy as the API shows it, with output lines after `after`. */
  view(id: string, app: string, after: number): DeployView {
    const d = this.#o.store.getDeploy(id);
    if (!d || d.app !== app) throw new HangarError('DEPLOY_NOT_FOUND', `No deploy ${id} for ${app}.`);
    const lines: DeployLine[] = this.#o.store.deployLines(id, after).map((l) => ({
      seq: l.seq,
      ts: new Date(l.ts).toISOString(),
      source: l.source,
      stream: l.stream === 'stderr' ? 'stderr' : 'stdout',
      line: l.line,
    }));
    return {
      id: d.id,
      app: d.app,
      release: d.release === null ? null : `v${d.release}`,
      status: d.status,
      error: d.error,
      errorCode: d.errorCode,
      lines,
      next: lines.length > 0 ? (lines[lines.length - 1] as DeployLine).seq : after,
      createdAt: new Date(d.createdAt).toISOString(),
      finishedAt: d.finishedAt === null ? null : new Date(d.finishedAt).toISOString(),
    };
  }
}
