/**
 * The proxies (load balancers, CDNs) whose `X-Forwarded-*` headers the router believes: a list of
 * CIDR ranges, checked once per client connection.
 */
import { BlockList, isIP } from 'node:net';
import { HangarError } from '../../common/errors.js';

/** `::ffff:10.0.0.1` → `10.0.0.1`: the form a dual-stack listener reports IPv4 peers in. */
export function plainAddress(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

/**
 * `10.0.0.0/8`, `2001:db8::/32` or a bare address (a range of one) as `[address, prefix, family]`;
 * null when malformed.
 */
export function parseCidr(cidr: string): [address: string, prefix: number, family: 'ipv4' | 'ipv6'] | null {
  const slash = cidr.indexOf('/');
  const address = plainAddress((slash === -1 ? cidr : cidr.slice(0, slash)).trim());
  const version = isIP(address);
  if (version === 0) return null;
  const max = version === 4 ? 32 : 128;
  const prefixText = slash === -1 ? String(max) : cidr.slice(slash + 1).trim();
  if (!/^\d{1,3}$/.test(prefixText)) return null;
  const prefix = Number(prefixText);
  if (prefix > max) return null;
  return [address, prefix, version === 4 ? 'ipv4' : 'ipv6'];
}

/** A set of CIDR ranges; {@link TrustedProxies.has} tells whether an address is in one. */
export class TrustedProxies {
  readonly #list = new BlockList();
  readonly #empty: boolean;

  /** Throws `BAD_INPUT` naming every malformed range. */
  constructor(cidrs: readonly string[]) {
    const bad: string[] = [];
    for (const cidr of cidrs) {
      const parsed = parseCidr(cidr);
      if (parsed === null) bad.push(cidr);
      else this.#list.addSubnet(...parsed);
    }
    if (bad.length > 0) {
      throw new HangarError(
        'BAD_INPUT',
        `Not a CIDR range (like 10.0.0.0/8 or 2001:db8::/32): ${bad.map((b) => JSON.stringify(b)).join(', ')}. Fix --trusted-proxy.`,
      );
    }
    this.#empty = cidrs.length === 0;
  }

  /** True when `address` (a socket peer, IPv4-mapped IPv6 allowed) is in one of the ranges. */
  has(address: string | undefined): boolean {
    if (this.#empty || address === undefined) return false;
    const plain = plainAddress(address);
    const version = isIP(plain);
    return version !== 0 && this.#list.check(plain, version === 4 ? 'ipv4' : 'ipv6');
  }
}
