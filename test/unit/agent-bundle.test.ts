import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { ROUTER_ENTRY } from '../../agent/router/router-protocol.js';
import { PACKAGE_ROOT } from '../../common/package-root.js';
import { PROTO_PATH } from '../../proto/loader.js';

const run = promisify(execFile);
const HANGAR = join(PACKAGE_ROOT, 'bin', 'hangar.js');

describe('the agent bundle', () => {
  it('finds the package root and the files found through it', () => {
    assert.equal((JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { name: string }).name, 'hangar');
    assert.ok(existsSync(PROTO_PATH), PROTO_PATH);
    assert.ok(existsSync(ROUTER_ENTRY), ROUTER_ENTRY);
    assert.equal(ROUTER_ENTRY, join(PACKAGE_ROOT, 'dist', 'agent', 'router', 'router-main.js'));
  });

  it('is built, and `hangar agent` runs from it', async () => {
    assert.ok(existsSync(join(PACKAGE_ROOT, 'dist', 'bundle', 'hangar.js')), 'npm run build writes dist/bundle/');
    // A bad flag: commander in the bundle answers, so the bundled CLI loaded and parsed it.
    await assert.rejects(run(process.execPath, [HANGAR, 'agent', '--no-such-flag']), (err: { code?: number; stderr?: string }) => {
      assert.notEqual(err.code, 0);
      assert.match(err.stderr ?? '', /--no-such-flag/);
      return true;
    });
    const help = await run(process.execPath, [HANGAR, 'agent', '--help']);
    assert.match(help.stdout, /--coordinator/);
    // What a bundled agent process loads from node_modules at start: none of gRPC, protobufjs,
    // pino or commander (they are inside the bundle), none of the coordinator's packages.
    const probe = await run(process.execPath, [
      '--input-type=module',
      '-e',
      [
        "import { createRequire } from 'node:module';",
        `process.argv = [process.argv[0], ${JSON.stringify(HANGAR)}, 'agent', '--help'];`,
        `const { run } = await import(${JSON.stringify(join(PACKAGE_ROOT, 'dist', 'bundle', 'hangar.js'))});`,
        'await run(process.argv);',
        'const cache = Object.keys(createRequire(import.meta.url).cache);',
        "console.log('LOADED ' + JSON.stringify(cache.filter((f) => f.includes('node_modules'))));",
      ].join('\n'),
    ]);
    const line = probe.stdout.split('\n').find((l) => l.startsWith('LOADED '));
    assert.ok(line, probe.stdout);
    assert.deepEqual(JSON.parse(line.slice('LOADED '.length)), []);
  });
});
