/**
 * Builders for BEP 3 peer wire streams in tests (messages, bencoded dicts, the handshake) and a
 * TCP conversation that feeds them to an Engine with real sequence numbers.
 */
import type { Detector } from '../../src/detect/detector.js';
import { Engine } from '../../src/engine/engine.js';
import { LINKTYPE_RAW } from '../../src/packet/linktype.js';
import { TCP_SYN } from '../../src/packet/packet.js';
import { ascii, concat, ipv4Address, ipv6Address, packet4, packet6, tcp, u16, u32 } from './frames.js';

export type Bencodable = number | string | Uint8Array | Bencodable[] | { [key: string]: Bencodable };

/** Bencoding (BEP 3), keys sorted; strings are taken byte for byte (char codes below 256). */
export function bencode(value: Bencodable): Uint8Array {
  if (typeof value === 'number') return ascii(`i${value}e`);
  if (typeof value === 'string') return bencode(ascii(value));
  if (value instanceof Uint8Array) return concat(ascii(`${value.length}:`), value);
  if (Array.isArray(value)) return concat(ascii('l'), ...value.map(bencode), ascii('e'));
  const keys = Object.keys(value).sort();
  return concat(ascii('d'), ...keys.flatMap((key) => [bencode(key), bencode(value[key])]), ascii('e'));
}

/** One message: length prefix, id, payload. */
export function message(id: number, ...payload: (Uint8Array | number[])[]): Uint8Array {
  const body = concat(...payload);
  return concat(u32(1 + body.length), [id], body);
}

export const keepAlive = (): Uint8Array => Uint8Array.from(u32(0));
export const choke = () => message(0);
export const unchoke = () => message(1);
export const interested = () => message(2);
export const notInterested = () => message(3);
export const have = (index: number) => message(4, u32(index));
export const bitfield = (bytes: number[] | Uint8Array) => message(5, bytes);
export const request = (index: number, begin: number, length = 1 << 14) => message(6, u32(index), u32(begin), u32(length));
export const piece = (index: number, begin: number, block: Uint8Array) => message(7, u32(index), u32(begin), block);
export const cancel = (index: number, begin: number, length = 1 << 14) => message(8, u32(index), u32(begin), u32(length));
export const port = (dhtPort: number) => message(9, u16(dhtPort));
export const suggestPiece = (index: number) => message(13, u32(index));
export const haveAll = () => message(14);
export const haveNone = () => message(15);
export const rejectRequest = (index: number, begin: number, length = 1 << 14) => message(16, u32(index), u32(begin), u32(length));
export const allowedFast = (index: number) => message(17, u32(index));
export const extended = (extendedId: number, payload: Uint8Array) => message(20, [extendedId], payload);
export const extensionHandshake = (dict: Bencodable | Uint8Array) => extended(0, dict instanceof Uint8Array ? dict : bencode(dict));
const hashFields = (base: number, index: number, length: number, proofLayers: number) =>
  concat(new Uint8Array(32).fill(0x5a), u32(base), u32(index), u32(length), u32(proofLayers));
export const hashRequest = (base: number, index: number, length: number, proofLayers: number) => message(21, hashFields(base, index, length, proofLayers));
export const hashes = (base: number, index: number, length: number, proofLayers: number) =>
  message(22, hashFields(base, index, length, proofLayers), new Uint8Array(32 * (length + proofLayers)).fill(0x33));
export const hashReject = (base: number, index: number, length: number, proofLayers: number) => message(23, hashFields(base, index, length, proofLayers));

/** The 68-byte BEP 3 handshake with the BEP 10 extension bit set. */
export function handshake(peerId = '-qB4650-012345678901'): Uint8Array {
  return concat([19], ascii('BitTorrent protocol'), [0, 0, 0, 0, 0, 0x10, 0, 0x05], new Uint8Array(20).fill(7), ascii(peerId));
}

/** BEP 11 compact peers: "a.b.c.d:port" or "[v6]:port" entries, 6 or 18 bytes each. */
export function compactPeers(...endpoints: string[]): Uint8Array {
  return concat(
    ...endpoints.map((endpoint) => {
      const colon = endpoint.lastIndexOf(':');
      const host = endpoint.slice(0, colon);
      const port = Number(endpoint.slice(colon + 1));
      return concat(host.startsWith('[') ? ipv6Address(host.slice(1, -1)) : ipv4Address(host), u16(port));
    }),
  );
}

/** A ut_pex message as sent to a peer that assigned ut_pex the id `pexId`. */
export function pex(pexId: number, added: string[], added6: string[] = [], dropped: string[] = []): Uint8Array {
  return extended(pexId, bencode({
    added: compactPeers(...added),
    'added.f': new Uint8Array(added.length),
    added6: compactPeers(...added6),
    'added6.f': new Uint8Array(added6.length),
    dropped: compactPeers(...dropped),
  }));
}

/** Near the 32-bit wrap, so the walkers' sequence arithmetic must be modular. */
export const CLIENT_ISN = 0xffffff00;
export const SERVER_ISN = 0x7ffffff0;

export interface ConversationOptions {
  client?: string;
  server?: string;
  clientPort?: number;
  serverPort?: number;
  /** Reuse an engine (and its peer cache) across conversations. */
  engine?: Engine;
  detectors?: readonly Detector[];
}

/** One TCP connection fed to an engine: each direction's bytes get consecutive sequence numbers. */
export class Conversation {
  readonly engine: Engine;
  /** Stream offset of the next byte in each direction. */
  readonly sent = [0, 0];
  private readonly options: Required<Omit<ConversationOptions, 'engine' | 'detectors'>>;

  constructor(options: ConversationOptions = {}) {
    this.engine = options.engine ?? new Engine({ flowCapacity: 16, ...(options.detectors ? { detectors: options.detectors } : {}) });
    this.options = {
      client: options.client ?? '10.0.0.1',
      server: options.server ?? '10.0.0.2',
      clientPort: options.clientPort ?? 40000,
      serverPort: options.serverPort ?? 6881,
    };
  }

  /** The client's SYN: the connection is seen from its start, not met mid-way. Returns the verdict. */
  syn(): number {
    const o = this.options;
    const segment = tcp(o.clientPort, o.serverPort, new Uint8Array(0), { seq: (CLIENT_ISN - 1) >>> 0, flags: TCP_SYN });
    const frame = o.client.includes(':') ? packet6(o.client, o.server, 6, segment) : packet4(o.client, o.server, 6, segment);
    return this.engine.process(frame, 0, frame.length, LINKTYPE_RAW);
  }

  /** Sends bytes in direction `dir` (0 client to server) as one segment at stream offset `at` (default: next). Returns the verdict. */
  send(dir: number, bytes: Uint8Array, at = this.sent[dir]): number {
    const o = this.options;
    const seq = ((dir === 0 ? CLIENT_ISN : SERVER_ISN) + at) >>> 0;
    const segment = dir === 0 ? tcp(o.clientPort, o.serverPort, bytes, { seq }) : tcp(o.serverPort, o.clientPort, bytes, { seq });
    const v6 = o.client.includes(':');
    const [src, dst] = dir === 0 ? [o.client, o.server] : [o.server, o.client];
    const frame = v6 ? packet6(src, dst, 6, segment) : packet4(src, dst, 6, segment);
    this.sent[dir] = Math.max(this.sent[dir], at + bytes.length);
    return this.engine.process(frame, 0, frame.length, LINKTYPE_RAW);
  }

  /** Sends a stream cut at the given offsets, one segment per piece. */
  sendCut(dir: number, stream: Uint8Array, cuts: number[]): number {
    const bounds = [0, ...cuts.filter((c) => c > 0 && c < stream.length).sort((a, b) => a - b), stream.length];
    const start = this.sent[dir];
    let verdict = 0;
    for (let i = 0; i + 1 < bounds.length; i++) {
      if (bounds[i] === bounds[i + 1]) continue;
      verdict = this.send(dir, stream.subarray(bounds[i], bounds[i + 1]), start + bounds[i]);
    }
    return verdict;
  }

  /** The rule that decided the flow, '' while undecided or clean. */
  rule(): string {
    return this.engine.ruleNames[this.engine.flows.rule[this.engine.lastFlow]];
  }
}
