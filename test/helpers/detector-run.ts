/**
 * Runs one detector over the datagrams of one flow the way the engine does (budget, give-up,
 * learn() on the rest of a matched flow), without building or decoding frames: fast enough for
 * hundreds of thousands of random flows, and able to watch every byte the detector reads.
 */
import { GIVE_UP, InspectContext, MATCH, MORE, STRENGTH_NONE, type Detector } from '../../src/detect/detector.js';
import { Clock } from '../../src/flow/clock.js';
import { PeerCache, PeerLists, TorrentingHosts } from '../../src/flow/peers.js';
import { IPPROTO_UDP, PacketInfo } from '../../src/packet/packet.js';
import { concat, ipv4Address, ipv6Address } from './frames.js';

export interface Datagram {
  /** 0 from the flow's initiator, 1 from the responder. */
  dir: number;
  payload: Uint8Array;
}

export interface FlowEndpoints {
  family: 4 | 6;
  initiator: string;
  initiatorPort: number;
  responder: string;
  responderPort: number;
}

export const DEFAULT_ENDPOINTS: FlowEndpoints = { family: 4, initiator: '10.0.0.1', initiatorPort: 40000, responder: '10.0.0.2', responderPort: 50000 };

export interface FlowOutcome {
  /** MATCH, GIVE_UP, or MORE when the datagrams ran out first. */
  outcome: number;
  /** Index of the datagram that decided (the first after the budget for a give-up by budget), or -1. */
  decidedAt: number;
  /** The strength (STRENGTH_*) the detector gave its match, STRENGTH_NONE without one. */
  strength: number;
  /** Indexes read outside the payload and the two addresses (with `guard`). */
  strayReads: number[];
  /** Indexes of per-flow state bytes outside the detector's own that it wrote. */
  strayStateWrites: number[];
}

/** Bytes around the packet that a detector must never read: a wrong read sees them, not undefined. */
const MARGIN = 16;

/**
 * A view of `bytes` that records every index read outside the allowed ranges: a detector must stay
 * inside the payload (and the addresses it may hand to the peer cache).
 */
function guardedBuffer(bytes: Uint8Array, allowed: (index: number) => boolean, strayReads: number[]): Uint8Array {
  return new Proxy(bytes, {
    get(target, property) {
      if (typeof property === 'string' && /^\d+$/.test(property)) {
        const index = Number(property);
        if (!allowed(index)) strayReads.push(index);
        return target[index];
      }
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

export class FlowRunner {
  readonly clock = new Clock();
  /** What the detector lists, each endpoint to the host that received its list (see helpers/listed.ts). */
  readonly announced: PeerCache;
  /** Endpoints proven peers (the detector only reads them). */
  readonly proven: PeerCache;
  /** Hosts taken as torrenting (peer-cache marks the end that reaches a known peer). */
  readonly torrenting: TorrentingHosts;
  private readonly ctx = new InspectContext();
  private readonly pkt = new PacketInfo();
  private readonly initiatorAddress: number[];
  private readonly responderAddress: number[];

  constructor(
    private readonly detector: Detector,
    private readonly endpoints: FlowEndpoints = DEFAULT_ENDPOINTS,
  ) {
    this.announced = new PeerCache(1024, 3_600_000, this.clock, undefined, true);
    this.proven = new PeerCache(1024, 3_600_000, this.clock);
    this.clock.nowMs = 1_700_000_000_000;
    this.ctx.pkt = this.pkt;
    this.ctx.peers = new PeerLists(this.announced, this.pkt);
    this.ctx.proven = this.proven;
    this.torrenting = new TorrentingHosts(1024, 3_600_000, this.clock);
    this.ctx.torrenting = this.torrenting;
    this.ctx.state = new Uint8Array(Math.max(1, detector.stateBytes) + MARGIN);
    const address = endpoints.family === 4 ? ipv4Address : ipv6Address;
    this.initiatorAddress = address(endpoints.initiator);
    this.responderAddress = address(endpoints.responder);
  }

  run(datagrams: readonly Datagram[], guard = false): FlowOutcome {
    const { ctx, pkt, detector, endpoints } = this;
    ctx.state.fill(0);
    ctx.stateOff = MARGIN / 2;
    const perDirection = [0, 0];
    const strayReads: number[] = [];
    let outcome = MORE;
    let decidedAt = -1;
    let strength = STRENGTH_NONE;
    let flowIndex = 0;
    for (let i = 0; i < datagrams.length; i++) {
      const { dir, payload } = datagrams[i];
      // The engine shows detectors payload packets only.
      if (payload.length === 0) continue;
      if (flowIndex >= detector.budget) {
        if (outcome !== MATCH) [outcome, decidedAt] = [GIVE_UP, i];
        break;
      }
      const [src, dst] = dir === 0 ? [this.initiatorAddress, this.responderAddress] : [this.responderAddress, this.initiatorAddress];
      const bytes = concat(new Array<number>(MARGIN).fill(0x5a), src, dst, payload, new Array<number>(MARGIN).fill(0x5a));
      pkt.family = endpoints.family;
      pkt.l4 = IPPROTO_UDP;
      pkt.srcOff = MARGIN;
      pkt.dstOff = MARGIN + src.length;
      pkt.payloadOff = MARGIN + src.length + dst.length;
      pkt.payloadLen = payload.length;
      pkt.sport = dir === 0 ? endpoints.initiatorPort : endpoints.responderPort;
      pkt.dport = dir === 0 ? endpoints.responderPort : endpoints.initiatorPort;
      const end = pkt.payloadOff + payload.length;
      pkt.buf = guard ? guardedBuffer(bytes, (index) => index >= MARGIN && index < end, strayReads) : bytes;
      ctx.dir = dir;
      ctx.dirIndex = perDirection[dir]++;
      ctx.flowIndex = flowIndex++;
      if (outcome === MATCH) {
        detector.learn?.(ctx);
        continue;
      }
      // As the engine does: the detector's own strength, unless it sets another before matching.
      ctx.strength = detector.strength;
      const result = detector.inspect(ctx);
      if (result !== MORE) [outcome, decidedAt] = [result, i];
      if (result === MATCH) strength = ctx.strength;
      if (result === GIVE_UP) break;
    }
    return { outcome, decidedAt, strength, strayReads, strayStateWrites: this.strayStateWrites() };
  }

  /** State bytes outside the detector's own that are no longer zero. */
  private strayStateWrites(): number[] {
    const { state, stateOff } = this.ctx;
    const stray: number[] = [];
    for (let i = 0; i < state.length; i++) if ((i < stateOff || i >= stateOff + this.detector.stateBytes) && state[i] !== 0) stray.push(i);
    return stray;
  }
}
