/**
 * The three ways an app gets a new release — a deploy of uploaded source, a config change, a
 * rollback — each made here and handed to {@link Rollouts} to roll out. HTTP handlers and add-ons
 * call these; they only parse and format.
 */
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { Clock } from '../../common/clock.js';
import { HangarError } from '../../common/errors.js';
import type { DeployRow, ReleaseRow, Store } from '../store/store.js';
import type { ArtifactChunks } from './artifact-chunks.js';
import type { Rollouts } from './rollout.js';
import { inspectSource } from './source-inspector.js';

/** Options of {@link Releases}. */
export interface ReleasesOptions {
  store: Store;
  rollouts: Rollouts;
  clock: Clock;
  /** Where artifacts are kept (`<dir>/<sha256>.tar.gz`). */
  artifactDir: string;
  /** Largest accepted upload, bytes: the unpacked source may be 8 times that. */
  maxUploadBytes: number;
  /** Artifacts kept in the database too (PostgreSQL: any coordinator serves them). Default: only `artifactDir`. */
  chunks?: ArtifactChunks;
}

/** An uploaded source archive, stored in a temporary file. */
export interface Upload {
  path: string;
  sha256: string;
  size: number;
}

/** A new release and the deploy rolling it out. */
export interface StartedRelease {
  release: ReleaseRow;
  deploy: DeployRow;
  /** The release that was current before (null before the first deploy). */
  previous: number | null;
}

/** Makes releases: deploy, config change, rollback. */
export class Releases {
  readonly #o: ReleasesOptions;

  constructor(options: ReleasesOptions) {
    this.#o = options;
  }

  /**
   * The app's current release.
   *
   * @throws HangarError `NO_RELEASE` before its first deploy, `APP_NOT_FOUND`.
   */
  current(app: string): ReleaseRow {
    const row = this.#o.store.requireApp(app);
    const release = row.currentRelease === null ? null : this.#o.store.getRelease(app, row.currentRelease);
    if (!release) {
      throw new HangarError('NO_RELEASE', `${app} has no release yet; deploy it first with \`hangar deploy -a ${app}\`.`);
    }
    return release;
  }

  /**
   * Checks that the app exists and no deploy of it runs, before an upload is read.
   *
   * @throws HangarError `APP_NOT_FOUND`, `ROLLOUT_IN_PROGRESS`.
   */
  assertCanDeploy(app: string): void {
    this.#o.store.requireApp(app);
    this.#o.rollouts.assertIdle(app);
  }

  /**
   * Deploys uploaded source: inspects it (Procfile, app.json), keeps it as an artifact, and
   * starts a release of it. The caller removes `upload.path` afterwards.
   *
   * @throws HangarError `BAD_INPUT` for an empty or invalid archive, `ROLLOUT_IN_PROGRESS`, `NO_AGENTS`.
   */
  async deploy(app: string, upload: Upload, createdBy: string): Promise<StartedRelease> {
    if (upload.size === 0) throw new HangarError('BAD_INPUT', 'The upload is empty; send the gzipped tar of your source.');
    const info = await inspectSource(upload.path, { maxBytes: this.#o.maxUploadBytes * 8 });
    const artifact = join(this.#o.artifactDir, `${upload.sha256}.tar.gz`);
    await rename(upload.path, artifact);
    // Before the artifact's row: a coordinator that finds the row finds every chunk.
    await this.#o.chunks?.put(upload.sha256, artifact);
    this.#o.store.putArtifact(upload.sha256, upload.size, this.#o.clock.now());
    const previous = this.#o.store.requireApp(app).currentRelease;
    const started = this.#o.rollouts.start({
      app,
      artifactSha256: upload.sha256,
      procfile: info.procfile,
      appJson: info.appJson,
      description: `Deploy ${upload.sha256.slice(0, 7)}`,
      createdBy,
    });
    return { ...started, previous };
  }

  /**
   * Sets (string) and unsets (null) config vars. Once the app has a release, that is a new
   * release of the same build with the new config, rolled out like a deploy; before, the config
   * is only stored (and `started` is null).
   *
   * @throws HangarError `ROLLOUT_IN_PROGRESS` while a deploy of an app that has a release runs.
   */
  changeConfig(
    app: string,
    patch: Readonly<Record<string, string | null>>,
    createdBy: string,
    description: string = describeConfigChange(patch),
  ): { config: Record<string, string>; started: StartedRelease | null } {
    const store = this.#o.store;
    return store.transaction(() => {
      const row = store.requireApp(app);
      if (row.currentRelease !== null) this.#o.rollouts.assertIdle(app);
      store.patchConfig(app, patch);
      const config = store.getConfig(app);
      if (row.currentRelease === null) return { config, started: null };
      const current = this.current(app);
      const started = this.#o.rollouts.start({
        app,
        artifactSha256: current.artifactSha256,
        procfile: current.procfile,
        appJson: current.appJson,
        config,
        description,
        createdBy,
      });
      return { config, started: { ...started, previous: row.currentRelease } };
    });
  }

  /**
   * A release of the current build and config, rolled out like a config change (new processes
   * first, health-gated, the old ones drained), so that every process starts with the app's
   * current environment — `HANGAR_DOMAINS` after a domain change. Null when the app has no
   * release yet, or a deploy or restart is under way (the processes it starts get it anyway).
   */
  refreshEnvironment(app: string, description: string, createdBy: string): StartedRelease | null {
    const rollouts = this.#o.rollouts;
    if (this.#o.store.requireApp(app).currentRelease === null || rollouts.activeDeploy(app) || rollouts.restarts.active(app)) return null;
    return this.changeConfig(app, {}, createdBy, description).started;
  }

  /**
   * Rolls back to release `version`, or to the last one before the current that served: a new
   * release of its build and config, without the release phase (as Heroku does).
   *
   * @throws HangarError `RELEASE_NOT_FOUND`, `NO_RELEASE`, `BAD_INPUT` for the current release.
   */
  rollback(app: string, version: number | undefined, createdBy: string): StartedRelease {
    const store = this.#o.store;
    return store.transaction(() => {
      const current = this.current(app);
      const candidates = store
        .listReleases(app)
        // Releases that served; one that was rolled back automatically never did (name it to go back to it).
        .filter((r) => r.version < current.version && (r.status === 'succeeded' || r.status === 'running'));
      const target = version === undefined ? candidates[0] : store.getRelease(app, version);
      if (!target) {
        throw version === undefined
          ? new HangarError('RELEASE_NOT_FOUND', `${app} has no earlier release to roll back to; see \`hangar releases -a ${app}\`.`)
          : new HangarError('RELEASE_NOT_FOUND', `${app} has no release v${version}; see \`hangar releases -a ${app}\`.`);
      }
      if (target.version === current.version) {
        throw new HangarError('BAD_INPUT', `v${target.version} is already the current release of ${app}.`);
      }
      store.patchConfig(app, configPatchTo(store.getConfig(app), target.config));
      const started = this.#o.rollouts.start({
        app,
        artifactSha256: target.artifactSha256,
        procfile: target.procfile,
        appJson: target.appJson,
        config: target.config,
        description: `Rollback to v${target.version}`,
        createdBy,
        runReleasePhase: false,
      });
      return { ...started, previous: current.version };
    });
  }
}

/** `Set A, B; Unset C`: the description of a config change. */
export function describeConfigChange(patch: Readonly<Record<string, string | null>>): string {
  const set = Object.keys(patch).filter((k) => patch[k] !== null);
  const unset = Object.keys(patch).filter((k) => patch[k] === null);
  return [set.length ? `Set ${set.join(', ')}` : '', unset.length ? `Unset ${unset.join(', ')}` : ''].filter(Boolean).join('; ');
}

/** The patch that turns config `from` into `to` (vars missing from `to` are unset). */
export function configPatchTo(from: Readonly<Record<string, string>>, to: Readonly<Record<string, string>>): Record<string, string | null> {
  const patch: Record<string, string | null> = { ...to };
  for (const key of Object.keys(from)) if (!(key in to)) patch[key] = null;
  return patch;
}
