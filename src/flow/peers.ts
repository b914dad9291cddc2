import { Clock } from './clock.js';

/** Unsigned 32-bit words per entry key: address (4, IPv4 in the first), then port << 8 | family. */
const KEY_WORDS = 5;
/** Entries per set: a lookup or insert looks at this many slots, never more. */
const WAYS = 4;

/**
 * Ports that never enter the cache: below 1024, and well-known services above it whose servers
 * a BitTorrent client may also talk to (a VPN endpoint, STUN/TURN, SIP, DNS over TLS...). A
 * cached endpoint turns every new flow to it into BitTorrent, so a shared service must never be one.
 */
const NEVER_CACHED_PORTS = new Set([
  1194, 1701, 1723, 1812, 1813, 3306, 3389, 3478, 3479, 4500, 5060, 5061, 5222, 5349, 5353, 5432, 8080, 8443, 19302, 51820,
]);

/**
 * Endpoints (address and port) known to speak BitTorrent: proven by a flow, or announced as peers
 * by DHT nodes, PEX or trackers. A new flow to or from one is BitTorrent from its first packet,
 * even when it is encrypted from its first byte.
 *
 * A bounded set-associative cache over typed arrays: each endpoint hashes to one set of WAYS
 * slots; an insert takes an empty or expired slot, else the one closest to expiry. Nothing grows.
 */
export class PeerCache {
  readonly capacity: number;
  readonly ttlMs: number;
  /** Lookups that found an endpoint, inserts, inserts refused by the port rule. */
  hits = 0;
  inserts = 0;
  refused = 0;

  private readonly keys: Uint32Array;
  private readonly expiresMs: Float64Array;
  private readonly setMask: number;
  private readonly probe = new Uint32Array(KEY_WORDS);

  constructor(
    capacity: number,
    ttlMs: number,
    private readonly clock: Clock,
    /** Operator's allowlist: an address for which this returns true is never cached. */
    private readonly isAllowlisted: (family: number, buf: Uint8Array, addrOff: number) => boolean = () => false,
  ) {
    let sets = 1;
    while (sets * WAYS < capacity) sets <<= 1;
    this.capacity = sets * WAYS;
    this.ttlMs = ttlMs;
    this.setMask = sets - 1;
    this.keys = new Uint32Array(this.capacity * KEY_WORDS);
    this.expiresMs = new Float64Array(this.capacity);
  }

  /** Whether an endpoint may be cached at all. */
  accepts(family: number, buf: Uint8Array, addrOff: number, port: number): boolean {
    return port >= 1024 && !NEVER_CACHED_PORTS.has(port) && !isUnusableAddress(family, buf, addrOff) && !this.isAllowlisted(family, buf, addrOff);
  }

  /** Caches the endpoint whose address is at buf[addrOff] (4 or 16 bytes) until now + ttl. Returns false when refused. */
  add(family: number, buf: Uint8Array, addrOff: number, port: number): boolean {
    if (!this.accepts(family, buf, addrOff, port)) {
      this.refused++;
      return false;
    }
    const set = this.setOf(family, buf, addrOff, port);
    const now = this.clock.nowMs;
    let slot = this.find(set);
    if (slot < 0) {
      // The slot to take: empty or expired first, else the one that would expire soonest.
      slot = set;
      for (let way = 0; way < WAYS; way++) {
        if (this.expiresMs[set + way] <= now) {
          slot = set + way;
          break;
        }
        if (this.expiresMs[set + way] < this.expiresMs[slot]) slot = set + way;
      }
      this.keys.set(this.probe, slot * KEY_WORDS);
    }
    this.expiresMs[slot] = now + this.ttlMs;
    this.inserts++;
    return true;
  }

  /** Whether the endpoint is cached and not expired. */
  has(family: number, buf: Uint8Array, addrOff: number, port: number): boolean {
    const slot = this.find(this.setOf(family, buf, addrOff, port));
    if (slot < 0 || this.expiresMs[slot] <= this.clock.nowMs) return false;
    this.hits++;
    return true;
  }

  /**
   * Caches every endpoint of a compact list (BEP 23 peers, BEP 5 nodes, BEP 11 added): `count`
   * entries of `entryLen` bytes from `off`, each with its address at `addrAt` within the entry and
   * the port right after the address.
   */
  addCompact(family: number, buf: Uint8Array, off: number, count: number, entryLen: number, addrAt: number): void {
    const addrLen = family === 4 ? 4 : 16;
    for (let i = 0; i < count; i++) {
      const addr = off + i * entryLen + addrAt;
      this.add(family, buf, addr, (buf[addr + addrLen] << 8) | buf[addr + addrLen + 1]);
    }
  }

  /** Forgets everything (a new capture file is a new network): an entry past its expiry is as good as empty. */
  clear(): void {
    this.expiresMs.fill(0);
  }

  /** Writes the key into `probe` and returns the first slot of its set. */
  private setOf(family: number, buf: Uint8Array, addrOff: number, port: number): number {
    const probe = this.probe;
    const words = family === 4 ? 1 : 4;
    let h = (port << 8) ^ family;
    for (let w = 0; w < 4; w++) {
      const at = addrOff + w * 4;
      const word = w < words ? (buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3] : 0;
      probe[w] = word;
      h = Math.imul(h ^ word, 0x9e3779b1);
      h ^= h >>> 15;
    }
    probe[4] = (port << 8) | family;
    return (h & this.setMask) * WAYS;
  }

  private find(set: number): number {
    const keys = this.keys;
    const probe = this.probe;
    for (let way = 0; way < WAYS; way++) {
      const base = (set + way) * KEY_WORDS;
      if (keys[base + 4] === probe[4] && keys[base] === probe[0] && keys[base + 1] === probe[1] && keys[base + 2] === probe[2] && keys[base + 3] === probe[3]) {
        return set + way;
      }
    }
    return -1;
  }
}

/** Unspecified, loopback, multicast and broadcast addresses are never peers worth remembering. */
function isUnusableAddress(family: number, buf: Uint8Array, off: number): boolean {
  if (family === 4) {
    const first = buf[off];
    return first === 0 || first === 127 || first >= 224;
  }
  if (buf[off] === 0xff) return true;
  for (let i = 0; i < 15; i++) if (buf[off + i] !== 0) return false;
  return buf[off + 15] <= 1;
}
