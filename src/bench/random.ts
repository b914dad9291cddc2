/**
 * Random traffic for the benchmarks: flows of random payloads between random endpoints, raw IPv4,
 * built batch by batch into one reused buffer. What the engine flags here is a false alarm.
 */
import { IPPROTO_TCP, TCP_ACK, TCP_SYN } from '../packet/packet.js';
import { LINKTYPE_RAW } from '../packet/linktype.js';
import { Xorshift, type PacketSet } from './frames.js';

export interface RandomTrafficShape {
  l4: number;
  /** Packets per flow, inclusive range. */
  minPackets: number;
  maxPackets: number;
  /** Payload length of one packet. */
  payloadLength: (rng: Xorshift) => number;
  /**
   * TCP only, what the route shows of the connection: `none` (default) payload packets in random
   * directions, the first from the client, as if read from its middle; `handshake` the same after
   * the client's SYN and the server's SYN-ACK; `one-way` one end's packets only (the end drawn per
   * flow), after its SYN or SYN-ACK, as on an asymmetric route, acknowledging writes of random
   * lengths from the unseen end; `mid-one-way` the same read from its middle (no SYN); `any` one of
   * the first three per flow.
   */
  opening?: Opening | 'mid-one-way' | 'any';
}

type Opening = 'none' | 'handshake' | 'one-way';
const OPENINGS: readonly Opening[] = ['none', 'handshake', 'one-way'];
const PSH_ACK = 0x18;

const POOL_BYTES = 64 << 20;

/** Builds batches of random flows; the random bytes come from a 64 MiB pool at random offsets. */
export class RandomTraffic {
  private readonly pool: Buffer;
  private readonly set: PacketSet;
  private readonly rng: Xorshift;
  private clockMs = 1_700_000_000_000;

  constructor(seed: number, batchPackets: number, maxPayload: number) {
    this.rng = new Xorshift(seed);
    this.pool = Buffer.allocUnsafe(POOL_BYTES);
    this.rng.fill(this.pool);
    this.set = {
      data: Buffer.alloc(batchPackets * (40 + maxPayload)),
      offsets: new Uint32Array(batchPackets),
      lengths: new Uint32Array(batchPackets),
      linkTypes: new Uint16Array(batchPackets).fill(LINKTYPE_RAW),
      timestamps: new Float64Array(batchPackets),
      count: 0,
    };
  }

  /** Fills the batch with whole flows of the given shape and returns it (valid until the next call). */
  batch(shape: RandomTrafficShape): PacketSet {
    const { rng, set } = this;
    const capacity = set.offsets.length;
    let at = 0;
    set.count = 0;
    const drawn = shape.l4 === IPPROTO_TCP ? (shape.opening ?? 'none') : 'none';
    while (set.count + shape.maxPackets + 2 <= capacity) {
      const packets = shape.minPackets + rng.below(shape.maxPackets - shape.minPackets + 1);
      const client = rng.next() | 0x01000000;
      const server = rng.next() | 0x01000000;
      const clientPort = 1024 + rng.below(64512);
      const serverPort = 1 + rng.below(65535);
      const seqs = [rng.next(), rng.next()];
      const opening = drawn === 'any' ? OPENINGS[rng.below(OPENINGS.length)] : drawn;
      const onlyEnd = rng.below(2); // one-way: 0 the client's packets, 1 the server's
      this.clockMs += 1;
      const write = (fromClient: boolean, flags: number, payload: number) => {
        const length = writeHeaders(
          set.data,
          at,
          shape.l4,
          fromClient ? client : server,
          fromClient ? server : client,
          fromClient ? clientPort : serverPort,
          fromClient ? serverPort : clientPort,
          seqs[fromClient ? 0 : 1],
          (flags & TCP_ACK) !== 0 ? seqs[fromClient ? 1 : 0] : 0,
          flags,
          payload,
        );
        // A SYN takes one sequence number.
        seqs[fromClient ? 0 : 1] = (seqs[fromClient ? 0 : 1] + payload + ((flags & TCP_SYN) !== 0 ? 1 : 0)) >>> 0;
        const source = rng.below(POOL_BYTES - payload);
        this.pool.copy(set.data, at + length - payload, source, source + payload);
        set.offsets[set.count] = at;
        set.lengths[set.count] = length;
        set.timestamps[set.count] = this.clockMs;
        set.count++;
        at += length;
      };
      if (opening === 'handshake') {
        write(true, TCP_SYN, 0);
        write(false, TCP_SYN | TCP_ACK, 0);
      } else if (opening === 'one-way') {
        write(onlyEnd === 0, onlyEnd === 0 ? TCP_SYN : TCP_SYN | TCP_ACK, 0);
      }
      for (let p = 0; p < packets; p++) {
        if (opening === 'one-way' || opening === 'mid-one-way') {
          // The unseen end writes now and then: what the visible end acknowledges.
          if (p > 0 && rng.below(2) === 0) seqs[onlyEnd ^ 1] = (seqs[onlyEnd ^ 1] + shape.payloadLength(rng)) >>> 0;
          write(onlyEnd === 0, PSH_ACK, shape.payloadLength(rng));
        } else {
          write(p === 0 || rng.below(2) === 0, PSH_ACK, shape.payloadLength(rng));
        }
      }
    }
    return set;
  }
}

/** Writes an IPv4 + TCP/UDP header at `at` for `payload` bytes (`seq`, `ack`, `tcpFlags` for TCP); returns the whole packet's length. */
function writeHeaders(buf: Buffer, at: number, l4: number, src: number, dst: number, sport: number, dport: number, seq: number, ack: number, tcpFlags: number, payload: number): number {
  const l4Header = l4 === IPPROTO_TCP ? 20 : 8;
  const total = 20 + l4Header + payload;
  buf.fill(0, at, at + 20 + l4Header);
  buf[at] = 0x45;
  buf.writeUInt16BE(total, at + 2);
  buf[at + 8] = 64;
  buf[at + 9] = l4;
  buf.writeUInt32BE(src >>> 0, at + 12);
  buf.writeUInt32BE(dst >>> 0, at + 16);
  const t = at + 20;
  buf.writeUInt16BE(sport, t);
  buf.writeUInt16BE(dport, t + 2);
  if (l4 === IPPROTO_TCP) {
    buf.writeUInt32BE(seq >>> 0, t + 4);
    buf.writeUInt32BE(ack >>> 0, t + 8);
    buf[t + 12] = 5 << 4;
    buf[t + 13] = tcpFlags;
    buf.writeUInt16BE(65535, t + 14);
  } else {
    buf.writeUInt16BE(8 + payload, t + 4);
  }
  return total;
}
