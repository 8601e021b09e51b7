import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../../common/clock.js';
import { hashToken } from '../api/auth.js';
import type { AgentCredentials } from '../fleet/agent-hub.js';
import type { Store } from '../store/store.js';

/**
 * Each agent's own credential, issued when it joins with the join token: only its hash is kept
 * (in the store), and every later call of the agent is checked against it in constant time.
 */
export function agentCredentials(store: Store, clock: Clock): AgentCredentials {
  return {
    issue: (agent) => {
      const credential = `hgr_agent_${randomBytes(32).toString('base64url')}`;
      store.setAgentCredential(agent, hashToken(credential), clock.now());
      return credential;
    },
    verify: (agent, credential) => {
      const stored = store.getAgentCredentialHash(agent);
      if (stored === null) return false;
      return timingSafeEqual(Buffer.from(stored, 'hex'), Buffer.from(hashToken(credential), 'hex'));
    },
  };
}
