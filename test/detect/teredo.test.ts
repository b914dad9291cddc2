import { describe, expect, it } from 'vitest';
import { Engine, VERDICT_BITTORRENT } from '../../src/engine/engine.js';
import { LINKTYPE_ETHERNET } from '../../src/packet/linktype.js';
import {
  ascii,
  concat,
  ETHERTYPE_IPV4,
  ethernet,
  ipv6,
  packet4,
  PROTO_TCP,
  PROTO_UDP,
  tcp,
  teredoAuthentication,
  teredoOriginIndication,
  udp,
} from '../helpers/frames.js';

/**
 * Teredo (RFC 4380, IPv6 in UDP port 3544) is unwrapped by the packet decoder: the default chain
 * sees the IPv6 flow inside and names it by the protocol it carries.
 */
const HANDSHAKE = concat([19], ascii('BitTorrent protocol'), new Uint8Array(8), new Uint8Array(20).fill(7), ascii('-TR4040-012345678901'));
const DHT_PING = ascii('d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe');
const CLIENT = '2001:0:4136:e378:8000:63bf:3fff:fdd2';
const PEER = '2001:db8::7';

function overTeredo(inner: Uint8Array, wrap: (ipv6Packet: Uint8Array) => Uint8Array = (p) => p): Uint8Array {
  return ethernet(ETHERTYPE_IPV4, packet4('192.0.2.10', '198.51.100.20', PROTO_UDP, udp(40001, 3544, wrap(inner))));
}

function verdictAndRule(frame: Uint8Array): [number, string] {
  const engine = new Engine({ flowCapacity: 16 });
  const verdict = engine.process(frame, 0, frame.length, LINKTYPE_ETHERNET);
  return [verdict, engine.ruleNames[engine.flows.rule[engine.lastFlow]]];
}

describe('BitTorrent inside Teredo', () => {
  it.each([
    ['bare', (p: Uint8Array) => p],
    ['behind an origin indication', teredoOriginIndication],
    ['behind an authentication header', (p: Uint8Array) => teredoAuthentication([1, 2, 3], [4, 5], p)],
  ])('catches a BEP 3 handshake over TCP in IPv6 in Teredo, %s', (_name, wrap) => {
    const inner = ipv6(PROTO_TCP, tcp(50000, 6881, HANDSHAKE), { src: CLIENT, dst: PEER });
    expect(verdictAndRule(overTeredo(inner, wrap))).toEqual([VERDICT_BITTORRENT, 'handshake']);
  });

  it('catches a DHT query over UDP in IPv6 in Teredo', () => {
    const inner = ipv6(PROTO_UDP, udp(50000, 6881, DHT_PING), { src: CLIENT, dst: PEER });
    expect(verdictAndRule(overTeredo(inner))).toEqual([VERDICT_BITTORRENT, 'dht']);
  });
});
