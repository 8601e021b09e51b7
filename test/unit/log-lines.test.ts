import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { accessLine, lifecycleLine } from '../../agent/logs/log-lines.js';
import { formatLogJson, formatLogLine, parseLogsFlags } from '../../cli/commands/logs.js';

describe('agent log lines', () => {
  it('writes router access lines Heroku style', () => {
    const line = accessLine(
      {
        ts: 0,
        app: 'shop',
        method: 'GET',
        path: '/a "b"',
        status: 200,
        durationMs: 12.4,
        instanceKey: 'shop:web.1:v3',
        bytes: 512,
        requestId: 'r1',
        attempts: 1,
      },
      'shop.localhost',
    );
    assert.equal(
      line,
      'at=info method=GET path="/a \\"b\\"" host=shop.localhost request_id=r1 dyno=web.1 service=12ms status=200 bytes=512',
    );
    const failed = accessLine(
      {
        ts: 0,
        app: 'shop',
        method: 'GET',
        path: '/',
        status: 503,
        durationMs: 1,
        instanceKey: null,
        bytes: 0,
        requestId: 'r2',
        attempts: 0,
        failure: 'NO_BACKENDS',
      },
      'shop.localhost',
    );
    assert.match(failed, /^at=error code=NO_BACKENDS method=GET .* dyno=router .* status=503/);
  });

  it('describes lifecycle events as hangar lines', () => {
    const status = { key: 'shop:worker.1:v2', state: 'crashed', pid: 42, restarts: 3, message: '' };
    assert.deepEqual(lifecycleLine(status, 'exited', { code: 1, signal: null }), {
      app: 'shop',
      line: 'worker.1 (v2): Process exited with status 1',
    });
    assert.equal(lifecycleLine(status, 'exited', { code: null, signal: 'SIGKILL' })?.line, 'worker.1 (v2): Process was killed by SIGKILL');
    assert.equal(lifecycleLine(status, 'healthy')?.line, 'worker.1 (v2): State changed from starting to up');
    assert.equal(lifecycleLine({ key: '' }, 'healthy'), null);
  });
});

describe('hangar logs output and flags', () => {
  const l = { ts: '2026-01-02T03:04:05.678Z', source: 'web.1', stream: 'stdout' as const, agent: 'a1', line: 'hi' };
  it("prints Heroku's format and exactly the JSON fields of the contract", () => {
    assert.equal(formatLogLine(l), '2026-01-02T03:04:05.678Z app[web.1]: hi\n');
    assert.equal(formatLogLine({ ...l, source: 'router' }), '2026-01-02T03:04:05.678Z router: hi\n');
    assert.deepEqual(Object.keys(JSON.parse(formatLogJson({ ...l, extra: 1 } as typeof l)) as object), [
      'ts',
      'source',
      'stream',
      'agent',
      'line',
    ]);
  });

  it('validates flags before any request, listing every problem', () => {
    assert.deepEqual(parseLogsFlags({ num: '20', source: 'web', since: '10m', grep: 'x' }), {
      n: 20,
      source: 'web',
      since: '10m',
      grep: 'x',
    });
    assert.deepEqual(parseLogsFlags({ num: '200000', until: '5m' }), { n: 200_000, until: '5m' }, 'more than a page: paged');
    assert.deepEqual(parseLogsFlags({ until: '2026-01-02T03:04:05Z' }), { until: '2026-01-02T03:04:05Z' });
    assert.throws(() => parseLogsFlags({ num: '60000', follow: true }), /-n must be a whole number from 0 to 50000 with -f/);
    assert.throws(() => parseLogsFlags({ until: '5m', follow: true }), /--until cannot be used with -f/);
    assert.throws(() => parseLogsFlags({ until: 'soon' }), /--until "soon" is neither/);
    assert.throws(
      () => parseLogsFlags({ num: '-1', source: 'a b', since: 'later' }),
      (err: Error) => /-n must be/.test(err.message) && /--source "a b"/.test(err.message) && /--since "later"/.test(err.message),
    );
  });
});
