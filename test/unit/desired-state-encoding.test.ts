import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DesiredStateEncoder, type CoordinatorMessageSerializer } from '../../coordinator/fleet/desired-state-encoding.js';
import { loadProto, type AppRoutes, type CoordinatorMessage__Output, type DesiredState } from '../../proto/loader.js';

const connect = loadProto().hangar.v1.AgentService.service.Connect;
const serialize = connect.responseSerialize as CoordinatorMessageSerializer;
const decode = (bytes: Buffer): CoordinatorMessage__Output => connect.responseDeserialize(bytes);

/** Enough routes that the shared part's length takes a varint of three bytes. */
function manyRoutes(apps: number): AppRoutes[] {
  return Array.from({ length: apps }, (_, a) => ({
    app: `app${a}`,
    domains: [`app${a}.localhost`, `www.app${a}.example.com`],
    backends: Array.from({ length: 20 }, (_, b) => ({ instanceKey: `app${a}.web.${b + 1}.v3`, host: `10.0.${a}.${b}`, port: 20_000 + b })),
    maxBodyBytes: a % 2 === 0 ? 1_048_576 : 0,
    httpsRedirect: a % 3 === 0,
  }));
}

function stateOf(agent: string, routes: AppRoutes[], certificates: DesiredState['certificates'] = []): DesiredState {
  return {
    generation: 7_000_000_001,
    leaderEpoch: 3,
    instances: [
      {
        key: `${agent}.web.1.v3`,
        app: 'app1',
        type: 'web',
        index: 1,
        release: 3,
        command: 'gunicorn app.wsgi',
        env: { HANGAR_APP: 'app1', SECRET_KEY: 'x' },
        memoryLimitBytes: 512 * 1024 * 1024,
      },
    ],
    routes,
    tasks: [{ id: 'd1', app: 'app1', release: 3, env: { A: 'b' } }],
    addons: [],
    runs: [],
    certificates,
    acmeChallenges: [{ token: 'tok', keyAuthorization: 'tok.key' }],
  };
}

test('an encoded desired state decodes to the same message as one encoded whole', () => {
  const encoder = new DesiredStateEncoder(serialize);
  const routes = manyRoutes(300);
  const certificates = [{ id: 'c1', domains: ['www.app0.example.com'], certPem: 'CERT', keyPem: 'KEY', notAfter: 1_900_000_000_000 }];
  for (const agent of ['a1', 'a2']) {
    const state = stateOf(agent, routes, certificates);
    const bytes = encoder.encode(state);
    assert.ok(bytes.length > 128 * 128, 'the length prefix takes three bytes');
    assert.deepEqual(decode(bytes), decode(serialize({ desiredState: state })));
  }
});

test('a new snapshot (other route lists) is encoded again, not served from the last one', () => {
  const encoder = new DesiredStateEncoder(serialize);
  const first = encoder.encode(stateOf('a1', manyRoutes(2)));
  const second = stateOf('a1', manyRoutes(3));
  const bytes = encoder.encode(second);
  assert.notDeepEqual(decode(bytes), decode(first));
  assert.deepEqual(decode(bytes), decode(serialize({ desiredState: second })));
  assert.equal(decode(bytes).desiredState?.routes.length, 3);
});

test('an empty desired state encodes as the serializer does', () => {
  const encoder = new DesiredStateEncoder(serialize);
  const empty: DesiredState = { generation: 1, routes: [], certificates: [], acmeChallenges: [] };
  assert.deepEqual(decode(encoder.encode(empty)), decode(serialize({ desiredState: empty })));
});
