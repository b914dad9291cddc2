import { GIVE_UP, MATCH, MORE, OVER_TCP, OVER_UDP, type Detector, type InspectContext } from './detector.js';
import { IPPROTO_TCP } from '../packet/packet.js';

/**
 * An ordered list of detectors and the one loop that runs them over a payload packet: the engine
 * runs the registry's chain over every flow, and a tunnel detector (SOCKS5) runs the same
 * detectors over the stream or datagrams it unwraps, each with its own per-flow state and
 * give-up mask. Results land in fields, not objects, so a run allocates nothing.
 */
export class DetectorChain {
  /** Offset of each detector's scratch bytes from the chain's state base. */
  readonly stateOffsets: Int32Array;
  /** Scratch bytes of the whole chain, per flow. */
  readonly stateBytes: number;
  /** The largest budget: past it, no detector of the chain looks. */
  readonly budget: number;
  /** Bit i set: detector i can decide a flow from its endpoints at its first packet. */
  readonly endpointsMask: number;
  /** After `run` returned MATCH: the index of the detector that matched. */
  matched = -1;
  /** After `run`: the give-up mask (bit i: detector i will not match this flow). */
  done = 0;
  private readonly tcpMask: number;
  private readonly udpMask: number;

  constructor(readonly detectors: readonly Detector[]) {
    if (detectors.length === 0 || detectors.length > 31) throw new RangeError('1 to 31 detectors: they share a 31-bit give-up mask');
    this.stateOffsets = new Int32Array(detectors.length);
    let stateBytes = 0;
    let tcpMask = 0;
    let udpMask = 0;
    let endpointsMask = 0;
    detectors.forEach((detector, i) => {
      this.stateOffsets[i] = stateBytes;
      stateBytes += detector.stateBytes;
      if (detector.transports & OVER_TCP) tcpMask |= 1 << i;
      if (detector.transports & OVER_UDP) udpMask |= 1 << i;
      if (detector.matchesEndpoints !== undefined) endpointsMask |= 1 << i;
    });
    this.stateBytes = stateBytes;
    this.tcpMask = tcpMask;
    this.udpMask = udpMask;
    this.endpointsMask = endpointsMask;
    this.budget = Math.max(...detectors.map((d) => d.budget));
  }

  /** The detectors that want the current packet's transport. */
  candidates(ctx: InspectContext): number {
    return ctx.pkt.l4 === IPPROTO_TCP ? this.tcpMask : this.udpMask;
  }

  /**
   * Runs the detectors that have not given up (`done`) over the current payload packet, in order,
   * their state at `base` + their offset; ctx's packet and indexes describe the packet. Returns
   * MATCH (see `matched`; ctx.strength holds the evidence's strength), GIVE_UP when every
   * candidate has given up, else MORE; `done` holds the new mask either way.
   */
  run(ctx: InspectContext, base: number, done: number): number {
    const candidates = this.candidates(ctx);
    const detectors = this.detectors;
    for (let i = 0; i < detectors.length; i++) {
      const bit = 1 << i;
      if ((candidates & bit) === 0 || (done & bit) !== 0) continue;
      const detector = detectors[i];
      if (ctx.flowIndex >= detector.budget) {
        done |= bit;
        continue;
      }
      ctx.stateOff = base + this.stateOffsets[i];
      ctx.strength = detector.strength;
      const outcome = detector.inspect(ctx);
      if (outcome === MATCH) {
        this.done = done;
        this.matched = i;
        return MATCH;
      }
      if (outcome === GIVE_UP) done |= bit;
    }
    this.done = done;
    return (candidates & ~done) === 0 ? GIVE_UP : MORE;
  }

  /**
   * A flow's first packet when it has no payload (a SYN, a SOCKS5 CONNECT): the index of the first
   * detector that knows the flow is BitTorrent from its endpoints alone (ctx.strength set), or -1.
   */
  matchEndpoints(ctx: InspectContext): number {
    const candidates = this.candidates(ctx) & this.endpointsMask;
    if (candidates === 0) return -1;
    const detectors = this.detectors;
    for (let i = 0; i < detectors.length; i++) {
      if ((candidates & (1 << i)) === 0) continue;
      ctx.strength = detectors[i].strength;
      if (detectors[i].matchesEndpoints!(ctx)) return i;
    }
    return -1;
  }

  /** Whether detector `index` reads peer lists from the later packets of the flows it matched. */
  learns(index: number): boolean {
    return this.detectors[index].learn !== undefined;
  }

  /** Shows a later payload packet of a flow detector `index` matched to it, within its budget. */
  learn(ctx: InspectContext, base: number, index: number): void {
    const detector = this.detectors[index];
    if (detector.learn === undefined || ctx.flowIndex >= detector.budget) return;
    ctx.stateOff = base + this.stateOffsets[index];
    detector.learn(ctx);
  }
}
