/**
 * Host names of custom domains (`www.shop.com`): what `hangar domains:add` accepts, in the form
 * the routers match (lower-case, no trailing dot). Pure functions, shared by the CLI (checked at the
 * edge) and the coordinator (checked again with the fleet's own rules).
 */
import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import { HangarError } from './errors.js';

/** Longest host name (RFC 1035: 253 characters in text form). */
const MAX_NAME = 253;
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/**
 * The host name as stored and routed: trimmed, lower-cased, a trailing dot dropped, an
 * internationalised name in its ASCII (punycode) form.
 *
 * @throws HangarError `BAD_INPUT` with a sentence saying what is wrong: an IP address, a port, a
 *   scheme or path, a wildcard, a single label, a bad label, or a name too long.
 */
export function parseDomainName(input: string): string {
  const raw = input.trim();
  const quoted = JSON.stringify(raw.length > 80 ? `${raw.slice(0, 80)}…` : raw);
  const bad = (why: string) => new HangarError('BAD_INPUT', `${quoted} is not a domain name you can add: ${why}.`);
  if (raw === '') throw bad('it is empty; give a host name like www.example.com');
  if (isIP(raw) !== 0 || isIP(raw.replace(/^\[|\]$/g, '')) !== 0) {
    throw bad('it is an IP address; give a host name like www.example.com and point its DNS record at the address');
  }
  if (/[/:?#@\s]/.test(raw)) throw bad('give the host name alone, without a scheme, port, path or spaces (like www.example.com)');
  if (raw.includes('*')) throw bad('wildcards are not domains; add each host name (a wildcard certificate can cover them)');
  const name = domainToASCII(raw.replace(/\.$/, '').toLowerCase());
  if (name === '') throw bad('it holds characters a host name cannot');
  if (name.length > MAX_NAME) throw bad(`it is longer than ${MAX_NAME} characters`);
  const labels = name.split('.');
  if (labels.length < 2) throw bad('it has a single label; give a full host name like www.example.com');
  for (const label of labels) {
    if (!LABEL.test(label)) {
      throw bad(`the label ${JSON.stringify(label)} must be 1–63 letters, digits or dashes, not starting or ending with a dash`);
    }
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1] ?? '')) throw bad('its last label is a number, so it reads as an IP address');
  return name;
}

/** True when `name` is `zone` or below it (`a.b.example.com` is below `example.com`). */
export function isWithinZone(name: string, zone: string): boolean {
  const z = zone.toLowerCase().replace(/\.$/, '');
  return name === z || name.endsWith(`.${z}`);
}
