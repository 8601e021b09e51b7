import assert from 'node:assert/strict';
import { appendFile, cp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PsRow } from '../../common/api-types.js';
import { FIXTURES, waitFor, type Cluster } from './cluster.js';

/** `hangar ps -a APP --json`. */
export async function ps(cluster: Cluster, app: string): Promise<PsRow[]> {
  const res = await cluster.cli(['ps', '-a', app, '--json']);
  assert.equal(res.code, 0, res.stderr);
  return JSON.parse(res.stdout) as PsRow[];
}

/** Polls `ps` until `check` holds; bounded. */
export function waitForPs(
  cluster: Cluster,
  app: string,
  what: string,
  check: (rows: PsRow[]) => boolean,
  timeoutMs = 90_000,
): Promise<PsRow[]> {
  return waitFor(
    what,
    async () => {
      const rows = await ps(cluster, app);
      return check(rows) ? rows : null;
    },
    timeoutMs,
    300,
  );
}

/**
 * Creates APP and deploys the fixture Django app to it (web=1), optionally with another Procfile,
 * more lines at the end of its settings.py, an app.json and more config vars; resolves when web.1 is up.
 */
export async function deployFixture(
  cluster: Cluster,
  app: string,
  options: { procfile?: string; settings?: string; config?: Record<string, string>; appJson?: unknown } = {},
): Promise<void> {
  assert.equal((await cluster.cli(['apps:create', app])).code, 0);
  const set = await cluster.cli([
    'config:set',
    `DATABASE_URL=sqlite:///${join(cluster.appDir, `${app}.sqlite3`)}`,
    'DJANGO_ALLOWED_HOSTS=.localhost',
    ...Object.entries(options.config ?? {}).map(([k, v]) => `${k}=${v}`),
    '-a',
    app,
  ]);
  assert.equal(set.code, 0, set.stderr);
  let source = join(FIXTURES, 'django-app');
  if (options.procfile !== undefined || options.settings !== undefined || options.appJson !== undefined) {
    source = join(cluster.dir, `${app}-source`);
    await cp(join(FIXTURES, 'django-app'), source, { recursive: true });
    if (options.procfile !== undefined) await writeFile(join(source, 'Procfile'), options.procfile);
    if (options.appJson !== undefined) await writeFile(join(source, 'app.json'), JSON.stringify(options.appJson));
    if (options.settings !== undefined) await appendFile(join(source, 'mysite', 'settings.py'), `\n${options.settings}\n`);
  }
  const deploy = await cluster.cli(['deploy', source, '-a', app], { timeoutMs: 300_000 });
  assert.equal(deploy.code, 0, `deploy failed:\n${deploy.stdout}\n${deploy.stderr}`);
  await waitForPs(cluster, app, 'web.1 up', (r) => r.some((x) => x.id === 'web.1' && x.state === 'up'));
}
