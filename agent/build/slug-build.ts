/**
 * Fetching an artifact and building (or reusing) the app's slug and virtualenv as the app's own
 * user: the first step of everything that runs an app's code on an agent (instances, build and
 * release tasks, one-off runs).
 */
import type { Logger } from '../../common/logger.js';
import type { RunAs } from '../workloads/run-as.js';
import type { ArtifactStore } from './artifact-store.js';
import type { BuildOptions, BuildResult } from './builder.js';

/** What a workload needs to build an app's slug on this agent. */
export interface SlugBuildDeps {
  artifacts: ArtifactStore;
  build: (options: BuildOptions) => Promise<BuildResult>;
  buildDataDir: string;
  python?: string;
  /**
   * The unprivileged user of an app (when the agent is root): its build, Django checks, release
   * phase and processes run as it. Default: this process's user.
   */
  userFor?: (app: string) => Promise<RunAs | null>;
}

/** Fetches artifact `sha256` and builds (or reuses) `app`'s slug from it, as the app's user. */
export async function buildSlug(
  deps: SlugBuildDeps,
  app: string,
  sha256: string,
  logger: Logger,
  more: Pick<BuildOptions, 'onOutput' | 'signal'> = {},
): Promise<{ build: BuildResult; user: RunAs | null }> {
  const artifactPath = await deps.artifacts.get(sha256);
  const user = (await deps.userFor?.(app)) ?? null;
  const build = await deps.build({
    dataDir: deps.buildDataDir,
    app,
    user,
    artifactPath,
    sha256,
    ...(deps.python ? { python: deps.python } : {}),
    ...more,
    logger,
  });
  return { build, user };
}
