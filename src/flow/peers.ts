import type { Clock } from './clock.js';
import type { PacketInfo } from '../packet/packet.js';
import { claimSlot, releaseSlot } from './seqlock.js';

/**
 * Unsigned 32-bit words per entry key: the endpoint's address (4, IPv4 in the first), port << 8 |
 * family | scope family << 4, then, in a scoped cache, the address of the host the entry is for (4).
 */
const ENDPOINT_WORDS = 5;
const SCOPE_WORDS = 4;
/** Entries per set: a lookup or insert looks at this many slots, never more. */
const WAYS = 4;

/**
 * Ports that never enter the cache: below 1024, and well-known services above it whose servers
 * a BitTorrent client may also talk to (a VPN endpoint, STUN/TURN, SIP, DNS over TLS...), and
 * proxies (SOCKS 1080, Squid 3128, Tor 9050/9150): read from the middle of a proxied connection,
 * the tunnelled peer wire looks like the proxy's own bytes. A cached endpoint turns every new flow
 * to it into BitTorrent, so a shared service must never be one.
 */
const NEVER_CACHED_PORTS = new Set([
  1080, 1194, 1701, 1723, 1812, 1813, 3128, 3306, 3389, 3478, 3479, 4500, 5060, 5061, 5222, 5349, 5353, 5432, 8080, 8443, 9050,
  9150, 19302, 51820,
]);

/** Bytes before the slots: the hash seed (shared by every thread that uses the memory), padded to 8. */
const HEADER_BYTES = 8;

/**
 * Endpoints (address and port) known to speak BitTorrent, each until its time to live runs out.
 * Unscoped, an entry holds for every host (peers proven by their own bytes); scoped, it holds only
 * for the one host it was told to (peers a tracker, DHT node or PEX message listed to that host).
 *
 * A bounded set-associative cache over typed arrays: each key hashes to one set of WAYS slots; an
 * insert takes an empty or expired slot, else the one closest to expiry. Nothing grows; the hash
 * is seeded per daemon, so no sender can aim its entries at one set.
 *
 * The arrays can live in a SharedArrayBuffer that every queue worker of a daemon maps, so what one
 * queue proves every queue knows at once. No lock on the lookup path: each slot has a sequence
 * stamp (./seqlock.ts), and a lookup trusts a slot only when its stamp is the same even value
 * before and after. A writer that finds the slot claimed by another thread gives its insert up
 * (counted in `contended`): two queues proving one peer in the same microsecond lose nothing.
 */
export class PeerCache {
  readonly capacity: number;
  readonly ttlMs: number;
  /** Memory of the whole cache, bytes. */
  readonly bytes: number;
  /** The memory the tables live in: give it to another thread's PeerCache to share them. */
  readonly memory: ArrayBufferLike;
  /** Lookups that found an endpoint, inserts, inserts refused by the port rule, inserts lost to another thread's write of the same slot. */
  hits = 0;
  inserts = 0;
  refused = 0;
  contended = 0;

  private readonly keyWords: number;
  private readonly stamps: Int32Array;
  private readonly keys: Uint32Array;
  private readonly expiresMs: Float64Array;
  private readonly setMask: number;
  private readonly probe: Uint32Array;
  private readonly seed: number;
  /** countLive's pass: where it is, what it has counted so far, and the last whole pass's count. */
  private liveCursor = 0;
  private liveCounting = 0;
  private liveCounted = 0;

  constructor(
    capacity: number,
    ttlMs: number,
    private readonly clock: Clock,
    /** Operator's allowlist: an address for which this returns true is never cached. */
    private readonly isAllowlisted: (family: number, buf: Uint8Array, addrOff: number) => boolean = () => false,
    /** Whether every entry belongs to one host (the scope passed to add and has). */
    readonly scoped = false,
    /** Memory from PeerCache.allocate (shared between threads when it is a SharedArrayBuffer); a private one when absent. */
    memory: ArrayBufferLike = PeerCache.allocate(capacity, scoped, false),
  ) {
    const sets = PeerCache.setsFor(capacity);
    this.capacity = sets * WAYS;
    this.ttlMs = ttlMs;
    this.setMask = sets - 1;
    this.keyWords = ENDPOINT_WORDS + (scoped ? SCOPE_WORDS : 0);
    this.bytes = PeerCache.bytesFor(capacity, scoped);
    if (memory.byteLength !== this.bytes) throw new RangeError(`a ${scoped ? 'scoped ' : ''}peer cache of ${capacity} entries takes ${this.bytes} bytes, not ${memory.byteLength}`);
    this.memory = memory;
    this.probe = new Uint32Array(this.keyWords);
    this.seed = new Uint32Array(memory, 0, 1)[0];
    this.stamps = new Int32Array(memory, HEADER_BYTES, this.capacity);
    this.expiresMs = new Float64Array(memory, HEADER_BYTES + this.capacity * 4, this.capacity);
    this.keys = new Uint32Array(memory, HEADER_BYTES + this.capacity * 12, this.capacity * this.keyWords);
  }

  private static setsFor(capacity: number): number {
    let sets = 1;
    while (sets * WAYS < capacity) sets <<= 1;
    return sets;
  }

  /** What a cache of this capacity takes (`bytes` once built), computed without allocating it. */
  static bytesFor(capacity: number, scoped: boolean): number {
    const entries = PeerCache.setsFor(capacity) * WAYS;
    return HEADER_BYTES + entries * ((ENDPOINT_WORDS + (scoped ? SCOPE_WORDS : 0)) * 4 + 8 + 4);
  }

  /** Zeroed memory for a cache, with its hash seed; `shared`: a SharedArrayBuffer, for caches in several threads. */
  static allocate(capacity: number, scoped: boolean, shared: boolean): ArrayBufferLike {
    const bytes = PeerCache.bytesFor(capacity, scoped);
    const memory = shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
    new Uint32Array(memory, 0, 1)[0] = (Math.random() * 0x100000000) >>> 0;
    return memory;
  }

  /** Whether an endpoint may be cached at all. */
  accepts(family: number, buf: Uint8Array, addrOff: number, port: number): boolean {
    return port >= 1024 && !NEVER_CACHED_PORTS.has(port) && !isUnusableAddress(family, buf, addrOff) && !this.isAllowlisted(family, buf, addrOff);
  }

  /**
   * Caches the endpoint whose address is at buf[addrOff] (4 or 16 bytes) until now + ttl; in a
   * scoped cache, for the host whose address (of `scopeFamily`) is at scopeBuf[scopeOff]. Returns
   * false when refused, or lost to another thread writing the same slot.
   */
  add(family: number, buf: Uint8Array, addrOff: number, port: number, scopeFamily = 0, scopeBuf = buf, scopeOff = 0): boolean {
    if (!this.accepts(family, buf, addrOff, port)) {
      this.refused++;
      return false;
    }
    const set = this.setOf(family, buf, addrOff, port, scopeFamily, scopeBuf, scopeOff);
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
    }
    const stamp = claimSlot(this.stamps, slot);
    if (stamp < 0) {
      this.contended++;
      return false;
    }
    this.keys.set(this.probe, slot * this.keyWords);
    this.expiresMs[slot] = now + this.ttlMs;
    releaseSlot(this.stamps, slot, stamp);
    this.inserts++;
    return true;
  }

  /** Whether the endpoint is cached (for that host, when scoped) and not expired. */
  has(family: number, buf: Uint8Array, addrOff: number, port: number, scopeFamily = 0, scopeBuf = buf, scopeOff = 0): boolean {
    const set = this.setOf(family, buf, addrOff, port, scopeFamily, scopeBuf, scopeOff);
    for (let way = 0; way < WAYS; way++) {
      const slot = set + way;
      // Most lookups miss: a slot whose key differs costs no atomic read. One that matches is read
      // again between two loads of its stamp; a slot being written is one this lookup does not see yet.
      if (!this.keyIs(slot)) continue;
      const stamp = Atomics.load(this.stamps, slot);
      const live = this.keyIs(slot) && this.expiresMs[slot] > this.clock.nowMs;
      if ((stamp & 1) !== 0 || Atomics.load(this.stamps, slot) !== stamp || !live) continue;
      this.hits++;
      return true;
    }
    return false;
  }

  /**
   * Entries not expired, as of the last whole pass over the table: each call looks at `slots`
   * more slots (the worker calls it once a second for the metrics), so a table of millions of
   * entries never holds up the packet path for long; a pass over it takes capacity / slots calls.
   */
  countLive(nowMs: number, slots: number): number {
    const end = Math.min(this.capacity, this.liveCursor + slots);
    for (let slot = this.liveCursor; slot < end; slot++) if (this.expiresMs[slot] > nowMs) this.liveCounting++;
    this.liveCursor = end;
    if (end === this.capacity) {
      this.liveCounted = this.liveCounting;
      this.liveCounting = 0;
      this.liveCursor = 0;
    }
    return this.liveCounted;
  }

  /** Forgets everything (a new capture file is a new network): an entry past its expiry is as good as empty. */
  clear(): void {
    this.expiresMs.fill(0);
  }

  /** Writes the key into `probe` and returns the first slot of its set. */
  private setOf(family: number, buf: Uint8Array, addrOff: number, port: number, scopeFamily: number, scopeBuf: Uint8Array, scopeOff: number): number {
    const probe = this.probe;
    const scope = this.scoped ? scopeFamily : 0;
    let h = this.seed ^ (port << 8) ^ family;
    h = mixAddress(probe, 0, h, family, buf, addrOff);
    probe[4] = (port << 8) | family | (scope << 4);
    h = Math.imul(h ^ probe[4], 0x9e3779b1);
    if (this.scoped) h = mixAddress(probe, ENDPOINT_WORDS, h, scope, scopeBuf, scopeOff);
    h ^= h >>> 15;
    return (h & this.setMask) * WAYS;
  }

  /** Whether the slot holds the key in `probe`. */
  private keyIs(slot: number): boolean {
    const keys = this.keys;
    const probe = this.probe;
    const words = this.keyWords;
    const base = slot * words;
    for (let w = 0; w < words; w++) if (keys[base + w] !== probe[w]) return false;
    return true;
  }

  /** The slot of the set that holds the key in `probe`, or -1. */
  private find(set: number): number {
    for (let way = 0; way < WAYS; way++) if (this.keyIs(set + way)) return set + way;
    return -1;
  }
}

/** Writes an address's four key words (zeros past an IPv4 address) into probe[at...] and mixes them into h. */
export function mixAddress(probe: Uint32Array, at: number, h: number, family: number, buf: Uint8Array, off: number): number {
  const words = family === 4 ? 1 : 4;
  for (let w = 0; w < 4; w++) {
    const byte = off + w * 4;
    const word = w < words ? (buf[byte] << 24) | (buf[byte + 1] << 16) | (buf[byte + 2] << 8) | buf[byte + 3] : 0;
    probe[at + w] = word;
    h = Math.imul(h ^ word, 0x9e3779b1);
    h ^= h >>> 15;
  }
  return h;
}

/** The port of every key of TorrentingHosts: a host is one key, whatever ports it used (the cache's port rule lets this one through). */
const HOST_KEY_PORT = 0xffff;
/**
 * Keys of the shape sightings, scoped to the host seen: the other end of a shaped flow (one key
 * per address, whatever its port), and the host's count of such ends so far (one key per step).
 */
const SIGHTED_END_PORT = 0xfffe;
/** One step per end before the one that marks the host: two different ends in all. */
const SIGHTINGS_COUNTED_PORTS = [0xfffd];
/** The sightings table holds this share of the hosts table's entries: a host takes a few, and only shaped flows add any. */
const SIGHTINGS_SHARE = 16;

/** TorrentingHosts' memory: the hosts, and the shape sightings that may add one. */
export interface TorrentingMemory {
  hosts: ArrayBufferLike;
  sightings: ArrayBufferLike;
}

function sightingsCapacity(capacity: number): number {
  return Math.max(1024, Math.floor(capacity / SIGHTINGS_SHARE));
}

/**
 * Hosts whose flows showed BitTorrent protocol bytes (exact or response evidence: a DHT message,
 * a handshake, a uTP exchange, a tracker announce), each for the peer time to live: the context in
 * which shape-only evidence (MSE's lengths) may name a flow. Random-looking traffic of a host that
 * never spoke BitTorrent is never named by one shape. Names mark no one; a peer-cache hit marks the
 * end that talks with the known endpoint (decided at its first packet, the flow shows no more of
 * its bytes, inline or not); shapes mark a host only when it showed the shape with two different
 * ends (a client with encryption required and an announce nobody can read, as a private
 * tracker's over HTTPS, has many peers): random-looking flows take the shape about once in a
 * million (`npm run bench` mse-shape), so a host needs about a million random-looking flows to
 * different ends before two of them do, and then only flows of the shape are named.
 */
export class TorrentingHosts {
  private readonly hosts: PeerCache;
  private readonly sightings: PeerCache;
  /** An IPv6 end's /64, the rest zero: the key of its sightings. */
  private readonly endPrefix = new Uint8Array(16);

  constructor(
    capacity: number,
    ttlMs: number,
    clock: Clock,
    isAllowlisted?: (family: number, buf: Uint8Array, addrOff: number) => boolean,
    /** Memory from TorrentingHosts.allocate, shared between threads like the peer tables'; private when absent. */
    memory?: TorrentingMemory,
  ) {
    this.hosts = new PeerCache(capacity, ttlMs, clock, isAllowlisted, false, memory?.hosts);
    this.sightings = new PeerCache(sightingsCapacity(capacity), ttlMs, clock, isAllowlisted, true, memory?.sightings);
  }

  static allocate(capacity: number, shared: boolean): TorrentingMemory {
    return { hosts: PeerCache.allocate(capacity, false, shared), sightings: PeerCache.allocate(sightingsCapacity(capacity), true, shared) };
  }

  /** Memory of the whole table, bytes. */
  get bytes(): number {
    return this.hosts.bytes + this.sightings.bytes;
  }

  /** What a table of this capacity takes, computed without allocating it. */
  static bytesFor(capacity: number): number {
    return PeerCache.bytesFor(capacity, false) + PeerCache.bytesFor(sightingsCapacity(capacity), true);
  }

  /**
   * The host at buf[hostOff] showed a shape (MSE's lengths) in a flow with the end at
   * buf[endOff], both of `family`: returns true, having marked the host, once it has done so with
   * two different ends (an IPv6 end is its /64). The same end again counts once.
   */
  sighted(family: number, buf: Uint8Array, hostOff: number, endOff: number): boolean {
    const sightings = this.sightings;
    // An IPv6 end is its /64: one network's many addresses (privacy addresses, a server's pool) are one end.
    let endBuf = buf;
    let endAt = endOff;
    if (family === 6) {
      endBuf = this.endPrefix;
      endAt = 0;
      for (let i = 0; i < 8; i++) endBuf[i] = buf[endOff + i];
    }
    if (sightings.has(family, endBuf, endAt, SIGHTED_END_PORT, family, buf, hostOff)) return false;
    if (!sightings.add(family, endBuf, endAt, SIGHTED_END_PORT, family, buf, hostOff)) return false;
    for (let i = 0; i < SIGHTINGS_COUNTED_PORTS.length; i++) {
      const step = SIGHTINGS_COUNTED_PORTS[i];
      if (sightings.has(family, buf, hostOff, step, family, buf, hostOff)) continue;
      sightings.add(family, buf, hostOff, step, family, buf, hostOff);
      return false;
    }
    this.mark(family, buf, hostOff);
    return true;
  }

  /** Marks the host whose address (4 or 16 bytes) is at buf[addrOff]. */
  mark(family: number, buf: Uint8Array, addrOff: number): void {
    this.hosts.add(family, buf, addrOff, HOST_KEY_PORT);
  }

  /** Whether the host was marked within the time to live. */
  has(family: number, buf: Uint8Array, addrOff: number): boolean {
    return this.hosts.has(family, buf, addrOff, HOST_KEY_PORT);
  }

  clear(): void {
    this.hosts.clear();
    this.sightings.clear();
  }
}

/**
 * What detectors write peer lists into: the scoped cache, with the host that receives the
 * current packet (its destination) as the scope. A list a tracker, DHT node or PEX message sends
 * to one host drops that host's new flows to the listed endpoints, no one else's.
 */
export class PeerLists {
  constructor(
    readonly cache: PeerCache,
    private readonly pkt: PacketInfo,
  ) {}

  /** Lists the endpoint at buf[addrOff] (4 or 16 bytes) to the current packet's receiver. */
  add(family: number, buf: Uint8Array, addrOff: number, port: number): boolean {
    const pkt = this.pkt;
    return this.cache.add(family, buf, addrOff, port, pkt.family, pkt.buf, pkt.dstOff);
  }

  /** Whether an endpoint may be listed at all (see PeerCache.accepts). */
  accepts(family: number, buf: Uint8Array, addrOff: number, port: number): boolean {
    return this.cache.accepts(family, buf, addrOff, port);
  }

  /**
   * Lists every endpoint of a compact list (BEP 23 peers, BEP 5 nodes, BEP 11 added): `count`
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
