/**
 * What an agent is told, assembled in one place: the instances placed on it, the build and
 * release-phase tasks assigned to it, the add-on servers and one-off runs it runs, and the
 * fleet-wide routes. Pure
 * reads of the store; {@link DesiredStateSync} sends the result.
 */
import { processSettingsOf } from '../../common/app-json.js';
import { parseMemorySize } from '../../common/resource-limits.js';
import { instanceName } from '../../common/vocabulary.js';
import { routerLimitsOf } from '../../common/app-json.js';
import type { AddonSpec, AppRoutes, DesiredState, InstanceSpec, Task } from '../../proto/loader.js';
import { MEMCACHED_MB, databaseNameOf } from '../addons/addon-connection.js';
import { RunStore } from '../runs/run-store.js';
import { runSpecsFor } from '../runs/runs.js';
import { hasAgentTask } from '../releases/deploy-status.js';
import { postdeployScriptsOf, predeployOf } from '../releases/deploy-scripts.js';
import type { AddonRow, DeployRow, InstanceRow, ReleaseRow, Store } from '../store/store.js';
import { healthCheckOf, healthPathOf } from './health-check.js';
import type { TlsSnapshot } from '../certs/tls-state.js';
import { defaultDomain, routeTable } from './route-table.js';

/** Options of {@link DesiredStateAssembler}. */
export interface DesiredStateOptions {
  store: Store;
  /** Apps are served at APP.<domain>. */
  domain: string;
  /** Seconds between the stop signal and SIGKILL when an instance stops, unless app.json sets `stop_timeout`. */
  graceSeconds: number;
  /** Custom domains, HTTPS settings, certificates and ACME challenges. Default: none. */
  tls?: { snapshot(): TlsSnapshot };
}

/** The desired state of every agent at one moment; {@link forAgent} cuts out one agent's part. */
export interface DesiredStateSnapshot {
  forAgent(agent: string): Omit<DesiredState, 'generation'>;
}

/**
 * The environment of every process of a release: its config vars plus `HANGAR_APP`,
 * `HANGAR_RELEASE`, `HANGAR_INSTANCE`, `HANGAR_DOMAINS` (the app's domains, comma-separated, as
 * its routes match them: the agent's Django hook adds them to ALLOWED_HOSTS) and
 * `PYTHONUNBUFFERED=1` unless the app sets it.
 */
export function processEnv(release: ReleaseRow, instance: string, domains: readonly string[]): Record<string, string> {
  return {
    ...release.config,
    HANGAR_APP: release.app,
    HANGAR_RELEASE: `v${release.version}`,
    HANGAR_INSTANCE: instance,
    HANGAR_DOMAINS: domains.join(','),
    PYTHONUNBUFFERED: release.config.PYTHONUNBUFFERED ?? '1',
  };
}

/** Builds each agent's desired state from the store. */
export class DesiredStateAssembler {
  readonly #o: DesiredStateOptions;
  readonly #runs: RunStore;

  constructor(options: DesiredStateOptions) {
    this.#o = options;
    this.#runs = new RunStore(options.store);
  }

  /**
   * Reads what every agent shares (routes, deploys, add-ons, runs, certificates) once; each
   * agent's own instances are read when its state is cut, by the agent's index. Reading every
   * instance of a large fleet for each sync held the event loop for as long as a second while
   * agents reconnected (a sync per batch of hellos); the routes need only the routable web ones.
   */
  snapshot(): DesiredStateSnapshot {
    const store = this.#o.store;
    const releases = new Map<string, ReleaseRow | null>();
    const releaseOf = (app: string, version: number): ReleaseRow | null => {
      const k = `${app}:${version}`;
      if (!releases.has(k)) releases.set(k, store.getRelease(app, version));
      return releases.get(k) ?? null;
    };
    const deploysOn = groupBy(
      store.activeDeploys().filter((d) => d.taskAgent !== null && hasAgentTask(d.status)),
      (d) => d.taskAgent ?? '',
    );
    const running = store.listAddons().filter((a) => a.desired === 'run');
    const standbys = new Map(store.listAddonStandbys().map((s) => [s.addon, s]));
    const addressOf = new Map(store.listAgents().map((a) => [a.name, a.address]));
    const addonsOn = groupBy(
      running.map((a) => ({ agent: a.agent, spec: addonSpec(a, standbys.has(a.name) ? 'primary' : '') })),
      (a) => a.agent,
    );
    // A standby follows its primary once the primary is ready to stream to it (and its port is known).
    for (const a of running) {
      const s = standbys.get(a.name);
      if (!s || s.role === 'pending' || a.port === null) continue;
      const spec: AddonSpec = {
        ...addonSpec(a, 'standby'),
        port: s.port ?? 0,
        standbyUpstreamHost: addressOf.get(a.agent) ?? '127.0.0.1',
        standbyUpstreamPort: a.port,
        standbyReplicationPassword: s.replicationPassword,
      };
      const list = addonsOn.get(s.agent);
      if (list) list.push({ agent: s.agent, spec });
      else addonsOn.set(s.agent, [{ agent: s.agent, spec }]);
    }
    const tls = this.#o.tls?.snapshot();
    const maintenance = new Map(store.listMaintenance().map((m) => [m.app, m]));
    const apps = store.listApps();
    const currentRelease = new Map(apps.map((a) => [a.name, a.currentRelease]));
    const routes: AppRoutes[] = routeTable(
      apps,
      store.listAgents(),
      store.listRoutableInstances(),
      this.#o.domain,
      (app) => {
        const version = currentRelease.get(app) ?? null;
        const release = version === null ? null : releaseOf(app, version);
        return { maintenance: maintenance.get(app) ?? null, limits: routerLimitsOf(release?.appJson ?? null) };
      },
      tls?.routes,
    );
    // Every router serves every app's domains, so every agent gets the certificates of them all.
    const certificates = tls?.certificates ?? [];
    const acmeChallenges = tls?.challenges ?? [];
    // The domains a process is told are the ones its router matches, read from the same routes.
    const domainsOf = new Map(routes.map((r) => [r.app, r.domains]));
    const domains = (app: string): readonly string[] => domainsOf.get(app) ?? [defaultDomain(app, this.#o.domain)];
    const activeRuns = this.#runs.active();
    const runs = { active: () => activeRuns };
    return {
      forAgent: (agent) => ({
        instances: store.listInstances({ agent }).flatMap((i) => {
          const release = releaseOf(i.app, i.release);
          return release ? [this.#instanceSpec(i, release, domains(i.app))] : [];
        }),
        routes,
        tasks: (deploysOn.get(agent) ?? []).flatMap((d) => {
          const release = d.release === null ? null : releaseOf(d.app, d.release);
          return release ? [taskSpec(d, release, domains(d.app))] : [];
        }),
        addons: (addonsOn.get(agent) ?? []).map((a) => a.spec),
        runs: runSpecsFor(runs, agent, releaseOf, domains),
        certificates,
        acmeChallenges,
      }),
    };
  }

  #instanceSpec(i: InstanceRow, release: ReleaseRow, domains: readonly string[]): InstanceSpec {
    const web = i.type === 'web';
    const health = healthCheckOf(release.appJson);
    const stop = processSettingsOf(release.appJson, i.type);
    const limits = release.appJson?.formation?.[i.type];
    return {
      key: i.key,
      app: i.app,
      type: i.type,
      index: i.idx,
      release: i.release,
      artifactSha256: release.artifactSha256,
      command: release.procfile[i.type] ?? '',
      env: processEnv(release, instanceName(i), domains),
      healthPath: web ? healthPathOf(release.appJson) : '',
      drainSeconds: web ? routerLimitsOf(release.appJson).drainSeconds : 0,
      domain: defaultDomain(i.app, this.#o.domain),
      graceSeconds: stop.stopTimeoutS ?? this.#o.graceSeconds,
      stopSignal: stop.stopSignal,
      singleton: stop.singleton,
      restartNonce: i.restartNonce,
      healthTimeoutMs: web ? health.timeoutMs : 0,
      healthChecksInARow: web ? health.inARow : 0,
      // Validated at deploy (app.json); 0 leaves it to the agent's default.
      memoryLimitBytes: parseMemorySize(limits?.memory ?? '') ?? 0,
      cpuLimit: limits?.cpu ?? 0,
    };
  }
}

/**
 * The build (and release phase: predeploy script, release command) of a deploy, or its postdeploy
 * scripts once the release is live, for the agent it is assigned to.
 */
function taskSpec(d: DeployRow, release: ReleaseRow, domains: readonly string[]): Task {
  const postdeploy = d.status === 'postdeploy';
  return {
    id: d.id,
    app: d.app,
    release: release.version,
    artifactSha256: release.artifactSha256,
    releaseCommand: postdeploy || d.skipReleasePhase ? '' : (release.procfile.release ?? ''),
    env: processEnv(release, 'release.1', domains),
    predeployCommand: postdeploy ? '' : predeployOf(release.appJson),
    phase: postdeploy ? 'postdeploy' : '',
    postdeployScripts: postdeploy ? postdeployScriptsOf(release.appJson, d.previousRelease === null) : [],
  };
}

function addonSpec(a: AddonRow, standbyRole: '' | 'primary' | 'standby'): AddonSpec {
  return {
    standbyRole,
    id: a.id,
    name: a.name,
    app: a.app,
    kind: a.kind,
    port: a.port ?? 0,
    password: a.password,
    database: databaseNameOf(a.app),
    memoryMb: a.kind === 'memcached' ? MEMCACHED_MB : 0,
    tlsCertPem: a.tls?.certPem ?? '',
    tlsKeyPem: a.tls?.keyPem ?? '',
    adminPassword: a.adminPassword,
  };
}

function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const list = groups.get(k);
    if (list) list.push(item);
    else groups.set(k, [item]);
  }
  return groups;
}
