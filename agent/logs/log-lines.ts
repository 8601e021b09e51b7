import { instanceName, parseInstanceKey } from '../../common/vocabulary.js';
import { formatMemorySize } from '../../common/resource-limits.js';
import type { InstanceStatus } from '../../proto/loader.js';
import type { AccessEntry } from '../router/router.js';

/**
 * The router's access line, Heroku style:
 * `at=info method=GET path="/" host=shop.localhost request_id=… dyno=web.1 service=12ms status=200 bytes=512`.
 */
export function accessLine(e: AccessEntry, host: string): string {
  const id = e.instanceKey ? parseInstanceKey(e.instanceKey) : null;
  const dyno = id ? instanceName(id) : 'router';
  const at = e.failure ? `at=error code=${e.failure}` : 'at=info';
  const path = e.path.replace(/["\\]/g, (c) => `\\${c}`).replace(/[\r\n]/g, '');
  const retry = e.attempts > 1 ? ` attempts=${e.attempts}` : '';
  return `${at} method=${e.method} path="${path}" host=${host} request_id=${e.requestId} dyno=${dyno} service=${Math.round(e.durationMs)}ms status=${e.status} bytes=${e.bytes}${retry}`;
}

/**
 * A lifecycle event of an instance as a `hangar` line, e.g. `web.1: State changed from starting to up`
 * or `worker.1: Process exited with status 1`. Null for events not worth a line.
 */
export function lifecycleLine(
  status: InstanceStatus,
  kind: string,
  exit?: { code: number | null; signal: string | null },
): { app: string; line: string } | null {
  const id = parseInstanceKey(status.key ?? '');
  if (!id) return null;
  const app = id.app;
  const who = `${instanceName(id)} (v${id.release})`;
  switch (kind) {
    case 'building':
      return { app, line: `${who}: Preparing the release` };
    case 'started':
      return { app, line: `${who}: Starting process (pid ${status.pid ?? 0})` };
    case 'healthy':
    case 'up':
      return { app, line: `${who}: State changed from starting to up` };
    case 'exited': {
      const how = exit?.signal ? `was killed by ${exit.signal}` : `exited with status ${exit?.code ?? 'unknown'}`;
      return { app, line: `${who}: Process ${how}${status.reason === 'oom' ? ' (out of memory: the OOM killer ended it)' : ''}` };
    }
    case 'memory_quota':
      return {
        app,
        line: `${who}: Error R14 (Memory quota exceeded): ${formatMemorySize(Number(status.memoryBytes ?? 0))} of its ${limitText(status)} limit`,
      };
    case 'oom_killed':
      return {
        app,
        line: `${who}: Error R15 (Memory quota vastly exceeded): the kernel's OOM killer ended a process at its ${limitText(status)} limit`,
      };
    case 'adopted':
      return { app, line: `${who}: Adopted by a restarted agent (pid ${status.pid ?? 0})` };
    case 'restarting':
      return { app, line: `${who}: Restarting (restart ${status.restarts ?? 0})` };
    case 'crash_loop':
    case 'crashed':
      return { app, line: `${who}: Crashed too often; waiting before the next start${status.message ? ` (${status.message})` : ''}` };
    case 'stopping':
      return { app, line: `${who}: Stopping` };
    case 'stopped':
      return { app, line: `${who}: Stopped` };
    case 'failed':
      return { app, line: `${who}: Could not start${status.message ? `: ${status.message}` : ''}` };
    case 'health_failed':
      return { app, line: `${who}: ${status.message ?? 'Health check failed'}` };
    default:
      return { app, line: `${who}: ${kind}${status.message ? ` (${status.message})` : ''}` };
  }
}

function limitText(status: InstanceStatus): string {
  const limit = Number(status.memoryLimitBytes ?? 0);
  return limit > 0 ? formatMemorySize(limit) : 'memory';
}
