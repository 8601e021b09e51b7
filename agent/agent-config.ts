/**
 * The agent's settings and their check. Plain typed checks rather than a zod schema: zod is the
 * largest library an agent would otherwise load (about 13 MB of RSS) for twenty fields read once.
 */
import { hostname, networkInterfaces } from 'node:os';
import { HangarError } from '../common/errors.js';
import { MAX_CPU_CORES, MAX_MEMORY_BYTES, MIN_CPU_CORES, MIN_MEMORY_BYTES } from '../common/resource-limits.js';
import { parseCidr } from './router/trusted-proxies.js';

/** The first non-internal IPv4 address of this host, else loopback. */
export function defaultAdvertiseAddress(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const ni of list ?? []) if (ni.family === 'IPv4' && !ni.internal) return ni.address;
  }
  return '127.0.0.1';
}

/** Settings of an agent, defaults applied. */
export interface AgentSettings {
  /** `HOST:PORT` of the coordinator's gRPC server, or several comma-separated (coordinators sharing a data dir). */
  coordinator: string;
  /** The join token from the coordinator's data dir: `hgr_join_<secret>.<CA fingerprint>`. */
  joinToken: string;
  /** Where builds, instances and the desired-state cache live. */
  dataDir: string;
  /** Name shown in `hangar agents`. Default: the host name. */
  name: string;
  /** Port of the HTTP router. Default 80; 0 picks a free one. */
  routerPort: number;
  /**
   * Port of the router's HTTPS listener (SNI, the certificates of the apps' domains). Default 443;
   * 0 picks a free one; null: no HTTPS listener.
   */
  httpsPort: number | null;
  /** Address the router listens on. Default 0.0.0.0. */
  routerHost: string;
  /**
   * CIDR ranges of proxies (load balancers) in front of the router whose `X-Forwarded-For/Proto/Port`
   * the router believes; from other peers those headers are replaced. Default none.
   */
  trustedProxies: string[];
  /** Address other agents' routers reach this agent's instances on. Default: first non-internal IPv4. */
  advertise: string;
  /**
   * Address web instances listen on (a Procfile's `0.0.0.0:$PORT` becomes it): only where
   * routers reach them. `0.0.0.0` keeps every interface. Default: `advertise` (127.0.0.1 in
   * `hangar dev`).
   */
  instanceAddress?: string | undefined;
  /** Most instances the scheduler may place here. Default 50. */
  maxInstances: number;
  /** Python used for virtualenvs. Default: /usr/bin/python3 when present. */
  python?: string | undefined;
  /** Non-web instances count as up after running this long, ms. Default 1000. */
  settleMs: number;
  /** Interval of metrics reports, ms. Default: what the coordinator asks for (10 s unless configured). */
  metricsIntervalMs?: number | undefined;
  /**
   * Without an acked heartbeat for this long (counted from its sending), the agent stops its
   * singleton instances (clock, beat): the coordinator starts a replacement elsewhere only once
   * this lease (plus the type's stop timeout) has passed since it last heard from the agent, ms.
   * Default 30000.
   */
  singletonLeaseMs: number;
  /** Largest on-disk log spool (lines not yet acked by the coordinator), bytes. Default 256 MiB. */
  logSpoolBytes: number;
  /**
   * When the agent runs as root, every app (its builds, release phases, instances and add-on
   * servers) runs as a system user of its own, `hangar-APP` (created if missing). Setting this
   * runs every app as this one user instead, and apps are then NOT isolated from each other.
   * Default: a user per app.
   */
  appUser?: string | undefined;
  /**
   * Memory limit of an instance whose process type sets none in app.json (`formation.TYPE.memory`),
   * bytes. Enforced with cgroups when the agent runs as root. Default: none.
   */
  defaultMemoryBytes?: number | undefined;
  /** CPU limit in cores of an instance whose process type sets none (`formation.TYPE.cpu`). Default: none. */
  defaultCpu?: number | undefined;
  /**
   * Where the cgroup hierarchy is mounted; `null` turns limits off (they are also off when the
   * agent is not root). Default /sys/fs/cgroup.
   */
  cgroupRoot: string | null;
}

type Defaulted =
  | 'name'
  | 'routerPort'
  | 'httpsPort'
  | 'routerHost'
  | 'trustedProxies'
  | 'advertise'
  | 'maxInstances'
  | 'settleMs'
  | 'singletonLeaseMs'
  | 'logSpoolBytes'
  | 'cgroupRoot';

/** Settings of an agent as a caller writes them: every field with a default may be left out. */
export type AgentConfig = Omit<AgentSettings, Defaulted> & { [K in Defaulted]?: AgentSettings[K] | undefined };

/** One bad field: where it is and what is wrong with it. */
export interface ConfigIssue {
  path: (string | number)[];
  message: string;
}

type Check = (value: unknown, path: (string | number)[], issues: ConfigIssue[]) => void;

function str(options: { min?: number; pattern?: RegExp; message?: string } = {}): Check {
  return (value, path, issues) => {
    if (typeof value !== 'string') issues.push({ path, message: 'expected a string' });
    else if (options.min !== undefined && value.length < options.min) {
      issues.push({ path, message: `must have at least ${options.min} character${options.min === 1 ? '' : 's'}` });
    } else if (options.pattern && !options.pattern.test(value))
      issues.push({ path, message: options.message ?? `must match ${options.pattern}` });
  };
}

function num(options: {
  int?: boolean;
  min?: number;
  max?: number;
  minMessage?: string;
  maxMessage?: string;
  typeMessage?: string;
}): Check {
  return (value, path, issues) => {
    if (typeof value !== 'number' || !Number.isFinite(value)) issues.push({ path, message: options.typeMessage ?? 'expected a number' });
    else if (options.int && !Number.isInteger(value)) issues.push({ path, message: 'expected an integer' });
    else if (options.min !== undefined && value < options.min)
      issues.push({ path, message: options.minMessage ?? `must be at least ${options.min}` });
    else if (options.max !== undefined && value > options.max)
      issues.push({ path, message: options.maxMessage ?? `must be at most ${options.max}` });
  };
}

const port = num({ int: true, min: 0, max: 65535 });

/** Each field: its check, whether null is allowed, and its default (absent: optional without one). */
const FIELDS: Record<keyof AgentSettings, { check: Check; nullable?: boolean; required?: boolean; default?: () => unknown }> = {
  coordinator: {
    check: str({ pattern: /^[^\s:,]+:\d{1,5}(,[^\s:,]+:\d{1,5})*$/, message: 'must be HOST:PORT, or several comma-separated' }),
    required: true,
  },
  joinToken: { check: str({ min: 8 }), required: true },
  dataDir: { check: str({ min: 1 }), required: true },
  name: {
    check: str({ pattern: /^[a-z0-9][a-z0-9.-]{0,62}$/i, message: 'must be letters, digits, dots and dashes' }),
    default: () =>
      hostname()
        .toLowerCase()
        .replace(/[^a-z0-9.-]/g, '-'),
  },
  routerPort: { check: port, default: () => 80 },
  httpsPort: { check: port, nullable: true, default: () => 443 },
  routerHost: { check: str(), default: () => '0.0.0.0' },
  trustedProxies: {
    check: (value, path, issues) => {
      if (!Array.isArray(value)) {
        issues.push({ path, message: 'expected a list of CIDR ranges' });
        return;
      }
      value.forEach((range: unknown, i) => {
        if (typeof range !== 'string') issues.push({ path: [...path, i], message: 'expected a string' });
        else if (parseCidr(range) === null) issues.push({ path: [...path, i], message: 'must be a CIDR range like 10.0.0.0/8' });
      });
    },
    default: () => [],
  },
  advertise: { check: str({ min: 1 }), default: defaultAdvertiseAddress },
  instanceAddress: { check: str({ min: 1 }) },
  maxInstances: { check: num({ int: true, min: 1, minMessage: 'must be positive' }), default: () => 50 },
  python: { check: str() },
  settleMs: { check: num({ int: true, min: 0 }), default: () => 1000 },
  metricsIntervalMs: { check: num({ int: true, min: 1, minMessage: 'must be positive' }) },
  singletonLeaseMs: { check: num({ int: true, min: 1000, max: 3_600_000 }), default: () => 30_000 },
  logSpoolBytes: { check: num({ int: true, min: 1024 * 1024 }), default: () => 256 * 1024 * 1024 },
  appUser: { check: str({ pattern: /^[a-z_][a-z0-9_-]{0,31}$/ }) },
  defaultMemoryBytes: { check: num({ int: true, min: MIN_MEMORY_BYTES, max: MAX_MEMORY_BYTES }) },
  defaultCpu: {
    // The messages of common/resource-limit-schemas.ts's cpuLimitSchema.
    check: num({
      min: MIN_CPU_CORES,
      max: MAX_CPU_CORES,
      typeMessage: 'write a CPU limit as a number of cores such as 0.5 or 2',
      minMessage: 'give at least 0.01 of a core',
      maxMessage: 'give at most 1024 cores',
    }),
  },
  cgroupRoot: { check: str({ min: 1 }), nullable: true, default: () => '/sys/fs/cgroup' },
};

/** The result of {@link agentConfigSchema}'s `safeParse`. */
export type AgentConfigResult = { success: true; data: AgentSettings } | { success: false; error: { issues: ConfigIssue[] } };

function check(config: unknown): AgentConfigResult {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    return { success: false, error: { issues: [{ path: [], message: 'expected an object of agent settings' }] } };
  }
  const input = config as Record<string, unknown>;
  const issues: ConfigIssue[] = [];
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(FIELDS)) {
    const value = input[key];
    if (value === undefined) {
      if (field.default) out[key] = field.default();
      else if (field.required) issues.push({ path: [key], message: 'required' });
    } else if (value === null && field.nullable) {
      out[key] = null;
    } else {
      const before = issues.length;
      field.check(value, [key], issues);
      if (issues.length === before) out[key] = Array.isArray(value) ? [...(value as unknown[])] : value;
    }
  }
  for (const key of Object.keys(input)) if (!(key in FIELDS)) issues.push({ path: [key], message: `unrecognized key "${key}"` });
  return issues.length > 0 ? { success: false, error: { issues } } : { success: true, data: out as unknown as AgentSettings };
}

/** Checks an agent's settings (unknown keys rejected) and applies the defaults. */
export const agentConfigSchema = {
  safeParse: check,
  /** @throws HangarError `BAD_INPUT` listing every bad field. */
  parse(config: unknown): AgentSettings {
    const result = check(config);
    if (result.success) return result.data;
    const list = result.error.issues.map((issue) => `${issue.path.join('.') || '(settings)'} ${issue.message}`).join('; ');
    throw new HangarError('BAD_INPUT', `Invalid agent settings: ${list}.`, { details: { issues: result.error.issues } });
  },
};
