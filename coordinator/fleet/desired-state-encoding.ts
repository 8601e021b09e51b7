import type { CoordinatorMessage, DesiredState } from '../../proto/loader.js';

/** Encodes a CoordinatorMessage to its protobuf bytes (the Connect stream's response serializer). */
export type CoordinatorMessageSerializer = (message: CoordinatorMessage) => Buffer;

/** The part of a desired state that is the same for every agent of one sync. */
type SharedPart = Pick<DesiredState, 'routes' | 'certificates' | 'acmeChallenges'>;

/** Field 2 (`desired_state`) of CoordinatorMessage, length-delimited: the first byte of its encoding. */
const DESIRED_STATE_TAG = (2 << 3) | 2;

/**
 * Encodes desired-state messages, the routes, certificates and ACME challenges once per sync
 * rather than once per agent. Every agent is sent the fleet-wide routes: encoding them for each of
 * N agents made a sync cost N² (most of a large fleet's sync time). The bytes are those of the
 * whole message: protobuf decodes a message's fields in any order and appends repeated ones, so
 * the agent's own fields followed by the shared ones decode to the same state (no proto change).
 */
export class DesiredStateEncoder {
  readonly #serialize: CoordinatorMessageSerializer;
  /** The shared part last encoded, by identity of its lists (one snapshot hands every agent the same ones). */
  #shared: { of: SharedPart; body: Buffer } | null = null;

  constructor(serialize: CoordinatorMessageSerializer) {
    this.#serialize = serialize;
  }

  /** The bytes of `{ desiredState: state }`. */
  encode(state: DesiredState): Buffer {
    const { routes, certificates, acmeChallenges, ...own } = state;
    const shared = this.#sharedBody({ routes, certificates, acmeChallenges });
    const ownBody = bodyOf(this.#serialize({ desiredState: own }));
    if (shared === null || ownBody === null) return this.#serialize({ desiredState: state });
    const length = ownBody.length + shared.length;
    return Buffer.concat([Buffer.from([DESIRED_STATE_TAG]), varint(length), ownBody, shared], 1 + varintLength(length) + length);
  }

  #sharedBody(part: SharedPart): Buffer | null {
    const last = this.#shared;
    if (
      last &&
      last.of.routes === part.routes &&
      last.of.certificates === part.certificates &&
      last.of.acmeChallenges === part.acmeChallenges
    ) {
      return last.body;
    }
    const body = bodyOf(this.#serialize({ desiredState: part }));
    this.#shared = body === null ? null : { of: part, body };
    return body;
  }
}

/** The DesiredState bytes inside an encoded `{ desiredState }` message, or null if it is not one. */
function bodyOf(message: Buffer): Buffer | null {
  if (message[0] !== DESIRED_STATE_TAG) return null;
  let i = 1;
  let length = 0;
  let scale = 1;
  for (;;) {
    const byte = message[i++];
    if (byte === undefined) return null;
    length += (byte & 0x7f) * scale;
    scale *= 128;
    if (byte < 0x80) break;
  }
  return i + length === message.length ? message.subarray(i) : null;
}

function varint(n: number): Buffer {
  const bytes: number[] = [];
  while (n >= 0x80) {
    bytes.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  bytes.push(n);
  return Buffer.from(bytes);
}

function varintLength(n: number): number {
  let length = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    length++;
  }
  return length;
}
