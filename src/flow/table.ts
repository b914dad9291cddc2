import { Clock } from './clock.js';
import { IPPROTO_TCP, TCP_ACK, TCP_SYN, type PacketInfo } from '../packet/packet.js';

/** Unsigned 32-bit words in one flow key: endpoint A's address (4), B's address (4), ports, family and l4. */
const KEY_WORDS = 10;
const NONE = -1;

/**
 * Bidirectional flow table with a fixed capacity, preallocated as typed arrays (struct of arrays).
 *
 * A flow is keyed by l4 protocol and the unordered pair of endpoints, so both directions of a
 * connection land in the same slot. Slots are chained per hash bucket and kept on one LRU list
 * ordered by last packet. A flow idle past the timeout is released when its endpoints are seen
 * again or when it reaches the old end of the list as new flows arrive; a full table evicts that end. Nothing grows after construction; `bytesPerFlow` is the exact memory cost of one slot.
 *
 * Direction 0 is the flow's initiator (the sender of its first packet, or the receiver when that
 * first packet is a SYN-ACK), direction 1 the responder; per-direction arrays are indexed flow*2+dir.
 */
export class FlowTable {
  readonly capacity: number;
  readonly idleTimeoutMs: number;
  /** Detector scratch bytes per flow, zeroed when the slot is taken. */
  readonly stateBytes: number;
  /** Memory of one flow slot across every array, including its share of the hash buckets. */
  readonly bytesPerFlow: number;

  /** Key words (see KEY_WORDS), in canonical endpoint order. */
  readonly keys: Uint32Array;
  /** 1 when endpoint A (the lower one) is the initiator. */
  readonly initiatorIsA: Uint8Array;
  readonly firstSeenMs: Float64Array;
  readonly lastSeenMs: Float64Array;
  /** Per direction: all packets, packets with payload, payload bytes, TCP flags ORed together. */
  readonly packets: Uint32Array;
  readonly payloadPackets: Uint32Array;
  readonly payloadBytes: Float64Array;
  readonly tcpFlags: Uint8Array;
  /** TCP only, per direction: the sequence number of its SYN (valid when tcpFlags has TCP_SYN). */
  readonly synSeq: Uint32Array;
  /** Verdict code and the rule (detector index + 1, 0 = none) that decided it; owned by the engine. */
  readonly verdict: Uint8Array;
  readonly rule: Uint8Array;
  /** The deciding evidence: its strength (STRENGTH_*) and the direction whose bytes matched. */
  readonly strength: Uint8Array;
  readonly producer: Uint8Array;
  /** Bit i set: detector i has given up on this flow. */
  readonly detectorsDone: Uint32Array;
  /** Detector scratch space, stateBytes per flow. */
  readonly state: Uint8Array;

  /** Live flows. */
  size = 0;
  /** Flows removed for idleness and for room, since construction. */
  expired = 0;
  evicted = 0;
  /** Set by the last `lookup`: direction of the packet (0 from the initiator) and whether the flow is new. */
  direction = 0;
  created = false;
  /** Called just before a flow's slot is released (idle expiry, eviction for room, clear). */
  onRelease: ((flow: number) => void) | null = null;

  private readonly bucketMask: number;
  private readonly buckets: Int32Array;
  private readonly chainNext: Int32Array;
  private readonly lruPrev: Int32Array;
  private readonly lruNext: Int32Array;
  /** Most recently used flow; the LRU end is lruTail. */
  private lruHead = NONE;
  private lruTail = NONE;
  private readonly freeSlots: Int32Array;
  private freeCount: number;
  private readonly probe = new Uint32Array(KEY_WORDS);
  /** Per process: a sender who knows the hash cannot aim its flows at one bucket chain. */
  private readonly hashSeed = (Math.random() * 0x100000000) | 0;

  constructor(
    capacity: number,
    idleTimeoutMs: number,
    stateBytes: number,
    readonly clock = new Clock(),
  ) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 26) {
      throw new RangeError(`flow table capacity must be an integer from 1 to ${1 << 26}, got ${capacity}`);
    }
    this.capacity = capacity;
    this.idleTimeoutMs = idleTimeoutMs;
    this.stateBytes = stateBytes;
    let bucketCount = 1;
    while (bucketCount < capacity) bucketCount <<= 1;
    this.bucketMask = bucketCount - 1;
    this.buckets = new Int32Array(bucketCount).fill(NONE);
    this.keys = new Uint32Array(capacity * KEY_WORDS);
    this.initiatorIsA = new Uint8Array(capacity);
    this.firstSeenMs = new Float64Array(capacity);
    this.lastSeenMs = new Float64Array(capacity);
    this.packets = new Uint32Array(capacity * 2);
    this.payloadPackets = new Uint32Array(capacity * 2);
    this.payloadBytes = new Float64Array(capacity * 2);
    this.tcpFlags = new Uint8Array(capacity * 2);
    this.synSeq = new Uint32Array(capacity * 2);
    this.verdict = new Uint8Array(capacity);
    this.rule = new Uint8Array(capacity);
    this.strength = new Uint8Array(capacity);
    this.producer = new Uint8Array(capacity);
    this.detectorsDone = new Uint32Array(capacity);
    this.state = new Uint8Array(capacity * stateBytes);
    this.chainNext = new Int32Array(capacity);
    this.lruPrev = new Int32Array(capacity);
    this.lruNext = new Int32Array(capacity);
    this.freeSlots = new Int32Array(capacity);
    for (let i = 0; i < capacity; i++) this.freeSlots[i] = capacity - 1 - i;
    this.freeCount = capacity;
    this.bytesPerFlow = FlowTable.bytesPerFlowFor(capacity, stateBytes);
  }

  /** What one slot of a table of this capacity costs, across every array (the daemon checks memory with it before allocating). */
  static bytesPerFlowFor(capacity: number, stateBytes: number): number {
    let bucketCount = 1;
    while (bucketCount < capacity) bucketCount <<= 1;
    return KEY_WORDS * 4 + 1 + 8 + 8 + 2 * (4 + 4 + 8 + 1 + 4) + 1 + 1 + 1 + 1 + 4 + stateBytes + 4 * 4 + (bucketCount / capacity) * 4;
  }

  /**
   * Finds or creates the flow of a decoded TCP/UDP packet seen at `clock.nowMs` and counts the
   * packet in it. Sets `direction` and `created`. Returns the flow index.
   */
  track(pkt: PacketInfo): number {
    const nowMs = this.clock.nowMs;
    const forward = this.buildKey(pkt);
    const probe = this.probe;
    const hash = hashKeyAt(probe, 0, this.hashSeed);
    let flow = this.find(probe, hash);
    // A flow idle past the timeout is over: the same endpoints now start a new one.
    if (flow !== NONE && this.lastSeenMs[flow] < nowMs - this.idleTimeoutMs) {
      this.release(flow);
      this.expired++;
      flow = NONE;
    }
    this.created = flow === NONE;
    if (flow === NONE) {
      this.expireOldest();
      flow = this.allocate(probe, hash);
      // A SYN-ACK seen first means we missed the SYN: its receiver opened the connection.
      const synAck = pkt.l4 === IPPROTO_TCP && (pkt.tcpFlags & (TCP_SYN | TCP_ACK)) === (TCP_SYN | TCP_ACK);
      this.initiatorIsA[flow] = forward !== synAck ? 1 : 0;
    } else {
      this.touch(flow);
    }
    this.lastSeenMs[flow] = nowMs;
    const dir = forward === (this.initiatorIsA[flow] === 1) ? 0 : 1;
    this.direction = dir;
    const slot = flow * 2 + dir;
    this.packets[slot]++;
    if (pkt.payloadLen > 0) {
      this.payloadPackets[slot]++;
      this.payloadBytes[slot] += pkt.payloadLen;
    }
    if (pkt.l4 === IPPROTO_TCP) {
      // The first SYN of a direction: a retransmitted or forged later one cannot move it.
      if ((pkt.tcpFlags & TCP_SYN) !== 0 && (this.tcpFlags[slot] & TCP_SYN) === 0) this.synSeq[slot] = pkt.tcpSeq;
      this.tcpFlags[slot] |= pkt.tcpFlags;
    }
    return flow;
  }

  /** Releases every flow, oldest first. */
  clear(): void {
    while (this.lruTail !== NONE) this.release(this.lruTail);
  }

  /** Calls `visit` for each live flow, most recently used first. */
  forEach(visit: (flow: number) => void): void {
    for (let flow = this.lruHead; flow !== NONE; flow = this.lruNext[flow]) visit(flow);
  }

  /** Address family (4 or 6) and l4 protocol of a flow. */
  family(flow: number): number {
    return this.keys[flow * KEY_WORDS + 9] >>> 8;
  }

  l4(flow: number): number {
    return this.keys[flow * KEY_WORDS + 9] & 0xff;
  }

  /** Port of the initiator (dir 0) or responder (dir 1). */
  port(flow: number, dir: number): number {
    const ports = this.keys[flow * KEY_WORDS + 8];
    return (this.initiatorIsA[flow] === 1) === (dir === 0) ? ports >>> 16 : ports & 0xffff;
  }

  /** Copies the address of the initiator (dir 0) or responder (dir 1) into `into` (4 or 16 bytes). */
  address(flow: number, dir: number, into: Uint8Array): void {
    const base = flow * KEY_WORDS + ((this.initiatorIsA[flow] === 1) === (dir === 0) ? 0 : 4);
    const words = this.family(flow) === 4 ? 1 : 4;
    for (let w = 0; w < words; w++) {
      const word = this.keys[base + w];
      into[w * 4] = word >>> 24;
      into[w * 4 + 1] = (word >>> 16) & 0xff;
      into[w * 4 + 2] = (word >>> 8) & 0xff;
      into[w * 4 + 3] = word & 0xff;
    }
  }

  /**
   * Writes the packet's canonical key into `probe`; returns true when the packet's source is endpoint A.
   * Addresses go straight from the packet into the typed array and are compared there: a 32-bit
   * unsigned value returned from a helper would be boxed on the heap.
   */
  private buildKey(pkt: PacketInfo): boolean {
    const probe = this.probe;
    const buf = pkt.buf;
    const words = pkt.family === 4 ? 1 : 4;
    for (let w = 0; w < 4; w++) {
      const s = pkt.srcOff + w * 4;
      const d = pkt.dstOff + w * 4;
      probe[w] = w < words ? (buf[s] << 24) | (buf[s + 1] << 16) | (buf[s + 2] << 8) | buf[s + 3] : 0;
      probe[4 + w] = w < words ? (buf[d] << 24) | (buf[d + 1] << 16) | (buf[d + 2] << 8) | buf[d + 3] : 0;
    }
    let forward = pkt.sport <= pkt.dport;
    for (let w = 0; w < words; w++) {
      if (probe[w] !== probe[4 + w]) {
        forward = probe[w] < probe[4 + w];
        break;
      }
    }
    if (!forward) {
      for (let w = 0; w < words; w++) {
        const source = probe[w];
        probe[w] = probe[4 + w];
        probe[4 + w] = source;
      }
    }
    probe[8] = forward ? (pkt.sport << 16) | pkt.dport : (pkt.dport << 16) | pkt.sport;
    probe[9] = (pkt.family << 8) | pkt.l4;
    return forward;
  }

  private find(probe: Uint32Array, hash: number): number {
    const keys = this.keys;
    for (let flow = this.buckets[hash & this.bucketMask]; flow !== NONE; flow = this.chainNext[flow]) {
      const base = flow * KEY_WORDS;
      let same = true;
      for (let w = 0; w < KEY_WORDS; w++) {
        if (keys[base + w] !== probe[w]) {
          same = false;
          break;
        }
      }
      if (same) return flow;
    }
    return NONE;
  }

  /**
   * Releases up to two flows idle past the timeout from the old end of the LRU list. Run on each
   * new flow, it keeps up with the rate flows arrive at, in code that is always hot (a separate
   * periodic sweep stays cold, unoptimised, and allocates for every double it reads). Time comes
   * from the clock, not an argument, for the same reason as everywhere on this path.
   */
  private expireOldest(): void {
    const deadline = this.clock.nowMs - this.idleTimeoutMs;
    for (let i = 0; i < 2 && this.lruTail !== NONE && this.lastSeenMs[this.lruTail] < deadline; i++) {
      this.release(this.lruTail);
      this.expired++;
    }
  }

  private allocate(probe: Uint32Array, hash: number): number {
    if (this.freeCount === 0) {
      this.release(this.lruTail);
      this.evicted++;
    }
    const flow = this.freeSlots[--this.freeCount];
    this.keys.set(probe, flow * KEY_WORDS);
    const bucket = hash & this.bucketMask;
    this.chainNext[flow] = this.buckets[bucket];
    this.buckets[bucket] = flow;
    this.firstSeenMs[flow] = this.clock.nowMs;
    this.packets[flow * 2] = this.packets[flow * 2 + 1] = 0;
    this.payloadPackets[flow * 2] = this.payloadPackets[flow * 2 + 1] = 0;
    this.payloadBytes[flow * 2] = this.payloadBytes[flow * 2 + 1] = 0;
    this.tcpFlags[flow * 2] = this.tcpFlags[flow * 2 + 1] = 0;
    this.verdict[flow] = 0;
    this.rule[flow] = 0;
    this.strength[flow] = 0;
    this.producer[flow] = 0;
    this.detectorsDone[flow] = 0;
    if (this.stateBytes > 0) this.state.fill(0, flow * this.stateBytes, (flow + 1) * this.stateBytes);
    this.lruPrev[flow] = NONE;
    this.lruNext[flow] = this.lruHead;
    if (this.lruHead !== NONE) this.lruPrev[this.lruHead] = flow;
    this.lruHead = flow;
    if (this.lruTail === NONE) this.lruTail = flow;
    this.size++;
    return flow;
  }

  private release(flow: number): void {
    if (this.onRelease !== null) this.onRelease(flow);
    const bucket = hashKeyAt(this.keys, flow * KEY_WORDS, this.hashSeed) & this.bucketMask;
    if (this.buckets[bucket] === flow) {
      this.buckets[bucket] = this.chainNext[flow];
    } else {
      let prev = this.buckets[bucket];
      while (this.chainNext[prev] !== flow) prev = this.chainNext[prev];
      this.chainNext[prev] = this.chainNext[flow];
    }
    this.unlink(flow);
    this.freeSlots[this.freeCount++] = flow;
    this.size--;
  }

  private touch(flow: number): void {
    if (this.lruHead === flow) return;
    this.unlink(flow);
    this.lruPrev[flow] = NONE;
    this.lruNext[flow] = this.lruHead;
    this.lruPrev[this.lruHead] = flow;
    this.lruHead = flow;
  }

  private unlink(flow: number): void {
    const prev = this.lruPrev[flow];
    const next = this.lruNext[flow];
    if (prev === NONE) this.lruHead = next;
    else this.lruNext[prev] = next;
    if (next === NONE) this.lruTail = prev;
    else this.lruPrev[next] = prev;
  }
}

/**
 * Murmur3-style mix of one key's words: cheap, and spreads the low bits the bucket mask keeps.
 * Returns 30 bits so the result stays a small integer (no heap box) when the call is not inlined.
 */
function hashKeyAt(words: Uint32Array, base: number, seed: number): number {
  let h = 0x9747b28c ^ seed;
  for (let w = 0; w < KEY_WORDS; w++) {
    let k = Math.imul(words[base + w], 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, 0x1b873593);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h & 0x3fffffff;
}
