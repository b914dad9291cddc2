import type { Cidr } from './config.js';

/** IPv4 and IPv6 prefixes, tested against addresses in packet bytes without allocating. */
export class CidrSet {
  private readonly v4: { bytes: Uint8Array; prefix: number }[];
  private readonly v6: { bytes: Uint8Array; prefix: number }[];

  constructor(cidrs: readonly Cidr[]) {
    const parse = (c: Cidr) => ({ bytes: addressBytes(c.family, c.address), prefix: c.prefix });
    this.v4 = cidrs.filter((c) => c.family === 4).map(parse);
    this.v6 = cidrs.filter((c) => c.family === 6).map(parse);
  }

  get size(): number {
    return this.v4.length + this.v6.length;
  }

  /** Whether the address at buf[off] (4 bytes for family 4, 16 for 6) is inside any prefix. */
  contains(family: number, buf: Uint8Array, off: number): boolean {
    const list = family === 4 ? this.v4 : this.v6;
    for (let i = 0; i < list.length; i++) if (matches(list[i].bytes, list[i].prefix, buf, off)) return true;
    return false;
  }
}

function matches(prefixBytes: Uint8Array, prefix: number, buf: Uint8Array, off: number): boolean {
  const whole = prefix >> 3;
  for (let i = 0; i < whole; i++) if (buf[off + i] !== prefixBytes[i]) return false;
  const rest = prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (buf[off + whole] & mask) === (prefixBytes[whole] & mask);
}

/** Binary form of a textual address that node's isIP already accepted. */
export function addressBytes(family: 4 | 6, text: string): Uint8Array {
  if (family === 4) return Uint8Array.from(text.split('.').map(Number));
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const groups = (part: string | undefined) => (part ? part.split(':') : []);
  let headGroups = groups(head);
  let tailGroups = groups(tail);
  // An embedded IPv4 tail (::ffff:192.0.2.1) is two groups.
  const expand = (list: string[]) =>
    list.flatMap((g) => {
      if (!g.includes('.')) return [g];
      const [a, b, c, d] = g.split('.').map(Number);
      return [((a << 8) | b).toString(16), ((c << 8) | d).toString(16)];
    });
  headGroups = expand(headGroups);
  tailGroups = expand(tailGroups);
  const zeros = tail === undefined ? 0 : 8 - headGroups.length - tailGroups.length;
  const all = [...headGroups, ...Array<string>(zeros).fill('0'), ...tailGroups];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    const v = parseInt(g, 16);
    bytes[i * 2] = v >> 8;
    bytes[i * 2 + 1] = v & 0xff;
  });
  return bytes;
}

/** Private, shared and link-local ranges: where a gateway's own clients live when LOCAL_CIDRS says nothing. */
export const PRIVATE_CIDRS: readonly Cidr[] = [
  { family: 4, address: '10.0.0.0', prefix: 8 },
  { family: 4, address: '172.16.0.0', prefix: 12 },
  { family: 4, address: '192.168.0.0', prefix: 16 },
  { family: 4, address: '100.64.0.0', prefix: 10 },
  { family: 4, address: '169.254.0.0', prefix: 16 },
  { family: 6, address: 'fc00::', prefix: 7 },
  { family: 6, address: 'fe80::', prefix: 10 },
];
