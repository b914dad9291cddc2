/**
 * BAN_RATE's counts: per local host, the start of its current minute and the bans in it, in a
 * bounded set-associative table that can live in a SharedArrayBuffer, so that every queue worker
 * of a daemon counts against the same limit. Slots are written under their sequence stamps
 * (../flow/seqlock.ts); this runs once per ban, never per packet.
 */
import { mixAddress } from '../flow/peers.js';
import { claimSlot, releaseSlot } from '../flow/seqlock.js';

export const RATE_WINDOW_MS = 60_000;
const WAYS = 4;
/** The host's address (4 words, IPv4 in the first) and its family. */
const KEY_WORDS = 5;
/** Bytes before the slots: the hash seed, padded to 8. */
const HEADER_BYTES = 8;
/** Tries at a slot another thread is writing before the ban is given up (the flow is still dropped). */
const CLAIM_TRIES = 64;

export class BanRateTable {
  readonly capacity: number;
  readonly bytes: number;
  readonly memory: ArrayBufferLike;
  private readonly setMask: number;
  private readonly seed: number;
  private readonly stamps: Int32Array;
  private readonly windowStartMs: Float64Array;
  private readonly counts: Int32Array;
  private readonly keys: Uint32Array;
  private readonly probe = new Uint32Array(KEY_WORDS);

  /** `memory` from BanRateTable.allocate (shared between threads when it is a SharedArrayBuffer); a private one when absent. */
  constructor(hosts: number, memory: ArrayBufferLike = BanRateTable.allocate(hosts, false)) {
    const sets = BanRateTable.setsFor(hosts);
    this.capacity = sets * WAYS;
    this.setMask = sets - 1;
    this.bytes = BanRateTable.bytesFor(hosts);
    if (memory.byteLength !== this.bytes) throw new RangeError(`a ban-rate table of ${hosts} hosts takes ${this.bytes} bytes, not ${memory.byteLength}`);
    this.memory = memory;
    this.seed = new Uint32Array(memory, 0, 1)[0];
    this.windowStartMs = new Float64Array(memory, HEADER_BYTES, this.capacity);
    this.stamps = new Int32Array(memory, HEADER_BYTES + this.capacity * 8, this.capacity);
    this.counts = new Int32Array(memory, HEADER_BYTES + this.capacity * 12, this.capacity);
    this.keys = new Uint32Array(memory, HEADER_BYTES + this.capacity * 16, this.capacity * KEY_WORDS);
  }

  private static setsFor(hosts: number): number {
    let sets = 1;
    while (sets * WAYS < hosts) sets <<= 1;
    return sets;
  }

  static bytesFor(hosts: number): number {
    return HEADER_BYTES + BanRateTable.setsFor(hosts) * WAYS * (8 + 4 + 4 + KEY_WORDS * 4);
  }

  /** Zeroed memory for a table, with its hash seed; `shared`: a SharedArrayBuffer, for tables in several threads. */
  static allocate(hosts: number, shared: boolean): ArrayBufferLike {
    const bytes = BanRateTable.bytesFor(hosts);
    const memory = shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
    new Uint32Array(memory, 0, 1)[0] = (Math.random() * 0x100000000) >>> 0;
    return memory;
  }

  /**
   * Counts one ban against the host at address[0...] (4 or 16 bytes) at `nowMs`; false when it had
   * `limit` bans in its current minute already. A full set forgets a host whose minute ended, else
   * the one whose minute started first.
   */
  take(family: 4 | 6, address: Uint8Array, nowMs: number, limit: number): boolean {
    const set = this.setOf(family, address);
    for (let attempt = 0; attempt < CLAIM_TRIES; attempt++) {
      const slot = this.slotFor(set, nowMs);
      const stamp = claimSlot(this.stamps, slot);
      if (stamp < 0) continue;
      if (!this.keyIs(slot)) {
        this.keys.set(this.probe, slot * KEY_WORDS);
        this.windowStartMs[slot] = nowMs;
        this.counts[slot] = 0;
      } else if (nowMs - this.windowStartMs[slot] >= RATE_WINDOW_MS) {
        this.windowStartMs[slot] = nowMs;
        this.counts[slot] = 0;
      }
      const allowed = this.counts[slot] < limit;
      if (allowed) this.counts[slot]++;
      releaseSlot(this.stamps, slot, stamp);
      return allowed;
    }
    return false;
  }

  /** The host's slot, else a free one (never used, or its minute ended), else the one whose minute started first. */
  private slotFor(set: number, nowMs: number): number {
    let oldest = set;
    for (let way = 0; way < WAYS; way++) {
      if (this.keyIs(set + way)) return set + way;
    }
    for (let way = 0; way < WAYS; way++) {
      const slot = set + way;
      if (this.counts[slot] === 0 || nowMs - this.windowStartMs[slot] >= RATE_WINDOW_MS) return slot;
      if (this.windowStartMs[slot] < this.windowStartMs[oldest]) oldest = slot;
    }
    return oldest;
  }

  private keyIs(slot: number): boolean {
    const base = slot * KEY_WORDS;
    for (let w = 0; w < KEY_WORDS; w++) if (this.keys[base + w] !== this.probe[w]) return false;
    return true;
  }

  /** Writes the key into `probe` and returns the first slot of its set. */
  private setOf(family: 4 | 6, address: Uint8Array): number {
    let h = mixAddress(this.probe, 0, this.seed ^ family, family, address, 0);
    this.probe[4] = family;
    h = Math.imul(h ^ family, 0x9e3779b1);
    return ((h ^ (h >>> 15)) & this.setMask) * WAYS;
  }
}
