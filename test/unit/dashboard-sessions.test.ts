import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Clock } from '../../common/clock.js';
import { isHangarError } from '../../common/errors.js';
import { hashToken } from '../../coordinator/api/auth.js';
import { DashboardSessions } from '../../coordinator/dashboard/dashboard-sessions.js';
import type { ApiTokenRow } from '../../coordinator/store/store.js';

function fakeClock(start = 1_000_000): Clock & { advance(ms: number): void } {
  let now = start;
  return {
    now: () => now,
    setTimeout: () => ({}),
    clearTimeout: () => undefined,
    advance(ms) {
      now += ms;
    },
  };
}

function setup() {
  const clock = fakeClock();
  const tokens = new Map<string, ApiTokenRow>();
  const add = (token: string, scope: ApiTokenRow['scope']) =>
    tokens.set(hashToken(token), {
      id: `tok_${scope}`,
      name: `${scope} token`,
      scope,
      hash: hashToken(token),
      createdAt: 0,
      lastUsedAt: null,
    });
  add('hgr_tok_read', 'read');
  add('hgr_tok_deploy', 'deploy');
  const sessions = new DashboardSessions({
    findToken: (hash) => tokens.get(hash) ?? null,
    clock,
    loginCodeTtlMs: 60_000,
    sessionIdleMs: 600_000,
    sessionMaxMs: 3_600_000,
  });
  return { clock, tokens, sessions };
}

test('a login code opens one session of its token scope, once', () => {
  const { sessions } = setup();
  const { code } = sessions.createLoginCode('hgr_tok_deploy');
  const opened = sessions.redeem(code);
  assert.equal(opened.scope, 'deploy');
  assert.match(opened.token, /^hgr_sess_/);
  assert.deepEqual(sessions.lookup(opened.token), { tokenId: 'tok_deploy', name: 'deploy token', scope: 'deploy' });
  assert.throws(
    () => sessions.redeem(code),
    (err) => isHangarError(err, 'UNAUTHORIZED'),
  );
});

test('a login code expires after its lifetime', () => {
  const { sessions, clock } = setup();
  const { code } = sessions.createLoginCode('hgr_tok_read');
  clock.advance(60_001);
  assert.throws(
    () => sessions.redeem(code),
    (err) => isHangarError(err, 'UNAUTHORIZED'),
  );
});

test('unknown codes and API tokens are not login codes', () => {
  const { sessions } = setup();
  assert.throws(
    () => sessions.redeem('hgr_login_nope'),
    (err) => isHangarError(err, 'UNAUTHORIZED'),
  );
  assert.throws(
    () => sessions.redeem('hgr_tok_read'),
    (err) => isHangarError(err, 'UNAUTHORIZED'),
  );
});

test('a session ends when idle, at its maximum age, or when its token is revoked', () => {
  const { sessions, clock, tokens } = setup();
  const idle = sessions.openForToken('hgr_tok_read');
  clock.advance(600_000);
  assert.equal(sessions.lookup(idle.token), null, 'idle for the idle time');

  const busy = sessions.openForToken('hgr_tok_read');
  for (let i = 0; i < 6; i++) {
    clock.advance(590_000);
    assert.ok(sessions.lookup(busy.token), 'used within the idle time');
  }
  clock.advance(590_000);
  assert.equal(sessions.lookup(busy.token), null, 'past the maximum age however used');

  const revoked = sessions.openForToken('hgr_tok_deploy');
  assert.ok(sessions.lookup(revoked.token));
  tokens.delete(hashToken('hgr_tok_deploy'));
  assert.equal(sessions.lookup(revoked.token), null);
});

test('a session cannot open another session, and is not an API token', () => {
  const { sessions } = setup();
  const s = sessions.openForToken('hgr_tok_read');
  assert.throws(
    () => sessions.openForToken(s.token),
    (err) => isHangarError(err, 'FORBIDDEN'),
  );
  assert.equal(sessions.lookup('hgr_tok_read'), null);
  assert.equal(sessions.end(s.token), true);
  assert.equal(sessions.lookup(s.token), null);
});
