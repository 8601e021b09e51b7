/**
 * memcached add-ons: `memcached -p PORT -l ADDR -m MB -U 0`. memcached has no authentication, so
 * it listens on the agent's advertise address only (keep that address on a private network).
 * Health: the text protocol's `version`.
 */
import type { AddonDriver, PreparedServer } from './addon-kind.js';
import { shellWords } from './addon-kind.js';
import { chownTree } from '../workloads/run-as.js';
import { findBinary } from './server-binaries.js';
import { socketExchange } from './socket-exchange.js';

/** Default memory limit, MB. */
export const DEFAULT_MEMCACHED_MB = 64;

/** The version memcached at host:port reports, or null when it does not answer. */
export async function memcachedVersion(host: string, port: number, timeoutMs = 2000): Promise<string | null> {
  try {
    const answer = await socketExchange({ host, port, request: 'version\r\n', complete: (r) => r.includes('\r\n'), timeoutMs });
    const match = /^VERSION (\S+)\r\n/.exec(answer);
    return match?.[1] ?? null;
  } catch {
    return null;
  }
}

/** The memcached driver. */
export function memcachedDriver(): AddonDriver {
  return {
    kind: 'memcached',
    preferredPort: 11211,
    async prepare(ctx): Promise<PreparedServer> {
      const bin = await findBinary('memcached', 'memcached', ctx.host);
      await chownTree(ctx.paths.root, ctx.runAs);
      const mb = ctx.spec.memoryMb || DEFAULT_MEMCACHED_MB;
      return {
        command: shellWords([bin, '-p', String(ctx.port), '-l', ctx.advertise, '-m', String(mb), '-U', '0', '-c', '1024']),
        env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' },
        cwd: ctx.paths.root,
        healthCheck: async () => (await memcachedVersion(ctx.advertise, ctx.port)) !== null,
      };
    },
  };
}
