/**
 * The words agent, coordinator and CLI share about workloads, declared once: instance states,
 * add-on kinds and states, and the instance key. Every other module imports them from here.
 */

/** States of an app instance as the fleet reports and `hangar ps` shows them. */
export const INSTANCE_STATES = ['starting', 'up', 'crashed', 'stopping'] as const;
export type InstanceState = (typeof INSTANCE_STATES)[number];

/** The kinds of add-on Hangar provisions. */
export const ADDON_KINDS = ['postgres', 'redis', 'memcached'] as const;
export type AddonKind = (typeof ADDON_KINDS)[number];

/** States of an add-on server as its agent reports them. */
export const ADDON_STATES = ['provisioning', 'starting', 'up', 'crashed', 'stopping', 'failed'] as const;
export type AddonState = (typeof ADDON_STATES)[number];

/** True when `value` is one of `words` (narrows a string from the wire or the store). */
export function isOneOf<T extends string>(words: readonly T[], value: string): value is T {
  return (words as readonly string[]).includes(value);
}

/** An instance's identity: app, process type, index and release number. */
export interface InstanceId {
  app: string;
  type: string;
  idx: number;
  release: number;
}

/** `shop:web.1:v3`: how agent and coordinator name one instance of one release. */
export function instanceKey(id: InstanceId): string {
  return `${id.app}:${id.type}.${id.idx}:v${id.release}`;
}

/** `shop:web.2:v3` → its parts; null when the key is not in that shape. */
export function parseInstanceKey(key: string): InstanceId | null {
  const m = /^([^:]+):([^.:]+)\.(\d+):v(\d+)$/.exec(key);
  if (!m) return null;
  return { app: m[1] as string, type: m[2] as string, idx: Number(m[3]), release: Number(m[4]) };
}

/** `web.1`: the dyno-style name of an instance. */
export function instanceName(id: Pick<InstanceId, 'type' | 'idx'>): string {
  return `${id.type}.${id.idx}`;
}

/** Signals a process type may ask to be stopped with (systemd's `KillSignal=`). */
export const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGHUP', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH'] as const;

/** A signal a process type may be stopped with. */
export type StopSignal = (typeof STOP_SIGNALS)[number];

/** Default `hangar.drain_seconds`. */
export const DEFAULT_DRAIN_SECONDS = 30;
