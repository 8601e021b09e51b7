import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HangarError } from '../../common/errors.js';
import { parseAppJson, type AppJsonProblem } from '../../common/app-json.js';
import { formatMemorySize, parseMemorySize } from '../../common/resource-limits.js';

function badInput(fn: () => unknown): HangarError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof HangarError, `expected a HangarError, got ${String(err)}`);
    assert.equal(err.code, 'BAD_INPUT');
    return err;
  }
  assert.fail('expected BAD_INPUT');
}

test('parses every honoured field', () => {
  const appJson = parseAppJson(
    JSON.stringify({
      name: 'notes',
      description: 'A note-taking app',
      scripts: { dokku: { predeploy: 'python manage.py check', postdeploy: 'echo done' }, postdeploy: 'python seed.py' },
      formation: { web: { quantity: 2 }, worker: { quantity: 0, size: 'standard-1x' } },
      healthchecks: { web: { path: '/health/', timeout: 2.5, attempts: 4 } },
      env: {
        DJANGO_DEBUG: '0',
        SECRET_KEY: { description: 'Django secret', generator: 'secret' },
        SENTRY_DSN: { required: false, value: '' },
      },
    }),
  );
  assert.equal(appJson.name, 'notes');
  assert.equal(appJson.description, 'A note-taking app');
  assert.deepEqual(appJson.scripts, {
    dokku: { predeploy: 'python manage.py check', postdeploy: 'echo done' },
    postdeploy: 'python seed.py',
  });
  assert.deepEqual(appJson.formation, { web: { quantity: 2 }, worker: { quantity: 0 } });
  assert.deepEqual(appJson.healthchecks?.web, { path: '/health/', timeout: 2.5, attempts: 4 });
  assert.deepEqual(appJson.env, {
    DJANGO_DEBUG: '0',
    SECRET_KEY: { description: 'Django secret', generator: 'secret' },
    SENTRY_DSN: { required: false, value: '' },
  });
});

test('an empty object is valid and unknown top-level keys are kept', () => {
  assert.deepEqual(parseAppJson('{}'), {});
  const appJson = parseAppJson(
    '{"name":"x","buildpacks":[{"url":"heroku/python"}],"addons":["heroku-postgresql"],"stack":"heroku-22","repository":"https://example.com"}',
  );
  assert.equal(appJson.name, 'x');
  assert.deepEqual(appJson.buildpacks, [{ url: 'heroku/python' }]);
  assert.deepEqual(appJson.addons, ['heroku-postgresql']);
  assert.equal(appJson.stack, 'heroku-22');
});

test("Dokku's list of health checks is reduced to the first check with a path", () => {
  const appJson = parseAppJson(
    JSON.stringify({
      healthchecks: {
        web: [
          { type: 'startup', name: 'uptime', uptime: 5 },
          { type: 'startup', name: 'web check', path: '/ready', attempts: 3, timeout: 5, wait: 2 },
          { type: 'liveness', path: '/live' },
        ],
      },
    }),
  );
  assert.deepEqual(appJson.healthchecks?.web, { path: '/ready', attempts: 3, timeout: 5 });
  assert.equal(parseAppJson('{"healthchecks":{"web":[{"type":"startup","command":["true"]}]}}').healthchecks?.web, undefined);
});

test('tolerates a byte-order mark', () => {
  assert.equal(parseAppJson('\uFEFF{"name":"bom"}').name, 'bom');
});

test('invalid JSON is BAD_INPUT', () => {
  const err = badInput(() => parseAppJson('{"name": "x",'));
  assert.match(err.message, /app\.json is not valid JSON/);
});

test('a top level that is not an object is BAD_INPUT', () => {
  for (const text of ['[]', '"x"', '42', 'null']) {
    const err = badInput(() => parseAppJson(text));
    assert.match(err.message, /\(top level\)/);
  }
});

test('every bad field is listed in the message and in details', () => {
  const err = badInput(() =>
    parseAppJson(
      JSON.stringify({
        name: 3,
        description: ['x'],
        scripts: { postdeploy: 7, dokku: { predeploy: false } },
        formation: {
          web: { quantity: -1 },
          worker: { quantity: 1.5 },
          'bad name': { quantity: 1 },
          clock: { memory: 'lots' },
          beat: { cpu: 0 },
        },
        healthchecks: { web: { path: 'health', timeout: 0, attempts: 0 } },
        env: { '1BAD': 'x', GOOD: 5, GEN: { generator: 'uuid' }, REQ: { required: 'yes' } },
      }),
    ),
  );
  const paths = (err.details as AppJsonProblem[]).map((p) => p.path).sort();
  assert.deepEqual(
    paths,
    [
      'description',
      'env.1BAD',
      'env.GEN.generator',
      'env.GOOD',
      'env.REQ.required',
      'formation.bad name',
      'formation.beat.cpu',
      'formation.clock.memory',
      'formation.web.quantity',
      'formation.worker.quantity',
      'healthchecks.web.attempts',
      'healthchecks.web.path',
      'healthchecks.web.timeout',
      'name',
      'scripts.dokku.predeploy',
      'scripts.postdeploy',
    ].sort(),
  );
  for (const path of paths) assert.ok(err.message.includes(`${path}:`), `message names ${path}`);
  assert.match(err.message, /healthchecks\.web\.path: the health check path must start with "\/"/);
  assert.match(err.message, /env\.1BAD: invalid name/);
});

test('a health check of the wrong shape says what is expected', () => {
  const err = badInput(() => parseAppJson('{"healthchecks":{"web":"/health"}}'));
  assert.match(err.message, /healthchecks\.web: expected an object such as \{"path": "\/health"\}/);
  const bad = badInput(() => parseAppJson('{"healthchecks":{"web":[{"path":"nope"}]}}'));
  assert.match(bad.message, /healthchecks\.web\.0\.path/);
});

test('out-of-range numbers are refused', () => {
  badInput(() => parseAppJson('{"formation":{"web":{"quantity":100000}}}'));
  badInput(() => parseAppJson('{"healthchecks":{"web":{"path":"/","timeout":601}}}'));
  badInput(() => parseAppJson('{"healthchecks":{"web":{"path":"/","attempts":2.5}}}'));
});

test('formation limits: memory as a size, CPU in cores, each optional', () => {
  const appJson = parseAppJson(
    JSON.stringify({ formation: { web: { quantity: 2, memory: '512M', cpu: 0.5 }, worker: { memory: '1.5G' }, clock: {} } }),
  );
  assert.deepEqual(appJson.formation, { web: { quantity: 2, memory: '512M', cpu: 0.5 }, worker: { memory: '1.5G' }, clock: {} });
  // What is stored is parsed again: the result must parse to itself.
  assert.deepEqual(parseAppJson(JSON.stringify(appJson)), appJson);
  assert.match(
    badInput(() => parseAppJson('{"formation":{"web":{"memory":"16M"}}}')).message,
    /formation\.web\.memory: 16M is out of range/,
  );
  assert.match(badInput(() => parseAppJson('{"formation":{"web":{"memory":512}}}')).message, /formation\.web\.memory/);
  assert.match(badInput(() => parseAppJson('{"formation":{"web":{"cpu":"half"}}}')).message, /formation\.web\.cpu/);
});

test('memory sizes parse like Heroku and Docker write them', () => {
  assert.equal(parseMemorySize('512M'), 512 * 1024 * 1024);
  assert.equal(parseMemorySize('1G'), 1024 ** 3);
  assert.equal(parseMemorySize('1.5g'), 1.5 * 1024 ** 3);
  assert.equal(parseMemorySize('65536KiB'), 65536 * 1024);
  assert.equal(parseMemorySize('268435456'), 268435456);
  assert.equal(parseMemorySize('512MB'), 512 * 1024 * 1024);
  for (const bad of ['', 'M', '-1M', '1X', '1 2M', 'lots']) assert.equal(parseMemorySize(bad), null, bad);
  assert.equal(formatMemorySize(512 * 1024 * 1024), '512M');
  assert.equal(formatMemorySize(1.5 * 1024 ** 3), '1.5G');
});
