import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAppJson } from '../../common/app-json.js';
import { postdeployScriptsOf, predeployOf } from '../../coordinator/releases/deploy-scripts.js';

const manifest = parseAppJson(
  JSON.stringify({
    scripts: { postdeploy: 'python manage.py loaddata seed', dokku: { predeploy: 'make assets', postdeploy: './notify' } },
  }),
);

test('scripts.dokku.predeploy is the predeploy command; none without it', () => {
  assert.equal(predeployOf(manifest), 'make assets');
  assert.equal(predeployOf(parseAppJson('{"scripts": {"postdeploy": "x"}}')), '');
  assert.equal(predeployOf(null), '');
});

test('scripts.postdeploy runs after the first deploy only, before scripts.dokku.postdeploy which runs after every deploy', () => {
  assert.deepEqual(postdeployScriptsOf(manifest, true), [
    { name: 'scripts.postdeploy', command: 'python manage.py loaddata seed' },
    { name: 'scripts.dokku.postdeploy', command: './notify' },
  ]);
  assert.deepEqual(postdeployScriptsOf(manifest, false), [{ name: 'scripts.dokku.postdeploy', command: './notify' }]);
  assert.deepEqual(postdeployScriptsOf(parseAppJson('{"scripts": {"dokku": {"postdeploy": "  "}}}'), true), []);
  assert.deepEqual(postdeployScriptsOf(null, true), []);
});
