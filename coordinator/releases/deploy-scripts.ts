/**
 * The app.json scripts of a deploy, Heroku's and Dokku's: `scripts.dokku.predeploy` runs on the
 * build agent after the build and before the Procfile's `release:` command (a failure fails the
 * deploy before anything is switched); once the rollout is healthy, `scripts.postdeploy` runs
 * after the app's first successful deploy only (as Heroku runs it once, for a new review app, and
 * Dokku once for a new app), then `scripts.dokku.postdeploy` after every deploy. A failing
 * postdeploy script fails the deploy but the healthy release stays live.
 */
import type { AppJson } from '../../common/app-json.js';
import type { TaskScript } from '../../proto/loader.js';

/** `scripts.dokku.predeploy`, or `''`. */
export function predeployOf(appJson: AppJson | null): string {
  return appJson?.scripts?.dokku?.predeploy?.trim() ?? '';
}

/** The postdeploy scripts of a deploy, in the order they run; `firstDeploy`: the app had no release serving before. */
export function postdeployScriptsOf(appJson: AppJson | null, firstDeploy: boolean): TaskScript[] {
  const scripts: TaskScript[] = [];
  const once = appJson?.scripts?.postdeploy?.trim() ?? '';
  const every = appJson?.scripts?.dokku?.postdeploy?.trim() ?? '';
  if (firstDeploy && once) scripts.push({ name: 'scripts.postdeploy', command: once });
  if (every) scripts.push({ name: 'scripts.dokku.postdeploy', command: every });
  return scripts;
}
