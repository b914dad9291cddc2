import { describe, expect, it } from 'vitest';
import { MATCH, MORE, OVER_TCP, OVER_UDP, STRENGTH_EXACT, STRENGTH_HEURISTIC, STRENGTH_NONE, STRENGTH_RESPONSE, type Detector, type InspectContext } from '../src/detect/detector.js';
import { Engine, VERDICT_BITTORRENT, VERDICT_CLEAN, VERDICT_NO_FLOW, VERDICT_UNDECIDED } from '../src/engine/engine.js';
import { LINKTYPE_ETHERNET, LINKTYPE_RAW } from '../src/packet/linktype.js';
import { ascii, concat, ethernet, packet4, packet6, tcp, udp } from './helpers/frames.js';

const HANDSHAKE = concat([19], ascii('BitTorrent protocol'), new Uint8Array(8), new Uint8Array(20).fill(0xab), ascii('-TR3000-abcdefghijkl'));
const SYN = 0x02;
const ACK = 0x10;

function run(engine: Engine, frame: Uint8Array, linkType = LINKTYPE_RAW, now = 1000): number {
  engine.clock.nowMs = now;
  return engine.process(frame, 0, frame.length, linkType);
}

describe('Engine', () => {
  it('decides a BEP 3 connection at its first payload packet and then only looks it up', () => {
    const engine = new Engine({ flowCapacity: 64 });
    const decided: number[] = [];
    engine.onVerdict = (flow) => decided.push(flow);
    const client = (payload: Uint8Array, flags = 0x18) => packet4('10.1.0.2', '10.2.0.9', 6, tcp(50000, 6881, payload, { flags, seq: 1 }));
    const server = (payload: Uint8Array, flags = 0x18) => packet4('10.2.0.9', '10.1.0.2', 6, tcp(6881, 50000, payload, { flags, seq: 1 }));
    expect(run(engine, client(new Uint8Array(0), SYN))).toBe(VERDICT_UNDECIDED);
    expect(run(engine, server(new Uint8Array(0), SYN | ACK))).toBe(VERDICT_UNDECIDED);
    expect(run(engine, client(HANDSHAKE))).toBe(VERDICT_BITTORRENT);
    expect(decided).toEqual([engine.lastFlow]);
    const flow = engine.lastFlow;
    expect(engine.ruleNames[engine.flows.rule[flow]]).toBe('handshake');
    // The evidence: exact, from the initiator, whose bytes a ban could name.
    expect(engine.flows.strength[flow]).toBe(STRENGTH_EXACT);
    expect(engine.strengthName(flow)).toBe('exact');
    expect(engine.flows.producer[flow]).toBe(0);
    expect(engine.producerIsPeer(engine.flows.rule[flow])).toBe(true);
    expect(run(engine, server(ascii('anything')))).toBe(VERDICT_BITTORRENT);
    expect(engine.lastFlow).toBe(flow);
    expect(decided).toHaveLength(1);
  });

  it('decides over IPv6 and behind Ethernet the same way', () => {
    const engine = new Engine({ flowCapacity: 64 });
    const frame = ethernet(0x86dd, packet6('2001:db8::1', '2001:db8::2', 6, tcp(40000, 51413, HANDSHAKE)));
    expect(run(engine, frame, LINKTYPE_ETHERNET)).toBe(VERDICT_BITTORRENT);
    expect(engine.flows.family(engine.lastFlow)).toBe(6);
  });

  it('calls a flow clean once every detector has given up on it', () => {
    const engine = new Engine({ flowCapacity: 64 });
    const request = packet4('10.1.0.2', '10.2.0.9', 6, tcp(50000, 80, ascii('GET / HTTP/1.1\r\n\r\n')));
    const response = packet4('10.2.0.9', '10.1.0.2', 6, tcp(80, 50000, ascii('HTTP/1.1 200 OK\r\n\r\n')));
    expect(run(engine, request)).toBe(VERDICT_UNDECIDED);
    expect(run(engine, response)).toBe(VERDICT_CLEAN);
    expect(engine.flows.rule[engine.lastFlow]).toBe(0);
    expect(engine.flows.strength[engine.lastFlow]).toBe(STRENGTH_NONE);
    expect(engine.strengthName(engine.lastFlow)).toBe('');
    expect(engine.producerIsPeer(0)).toBe(false);
  });

  it('gives up a detector at its budget, counting payload packets only', () => {
    let calls = 0;
    const patient: Detector = {
      name: 'patient',
      transports: OVER_UDP,
      budget: 3,
      stateBytes: 1,
      strength: STRENGTH_EXACT,
      producerIsPeer: true,
      inspect(ctx: InspectContext) {
        calls++;
        ctx.state[ctx.stateOff]++;
        return MORE;
      },
    };
    const engine = new Engine({ flowCapacity: 8, detectors: [patient] });
    const datagram = (payload: Uint8Array) => packet4('10.1.0.2', '10.2.0.9', 17, udp(5000, 6000, payload));
    expect(run(engine, datagram(new Uint8Array(0)))).toBe(VERDICT_UNDECIDED);
    expect(run(engine, datagram(ascii('a')))).toBe(VERDICT_UNDECIDED);
    expect(run(engine, datagram(ascii('b')))).toBe(VERDICT_UNDECIDED);
    expect(run(engine, datagram(ascii('c')))).toBe(VERDICT_UNDECIDED);
    expect(engine.flows.state[engine.lastFlow]).toBe(3);
    expect(run(engine, datagram(ascii('d')))).toBe(VERDICT_CLEAN);
    expect(calls).toBe(3);
  });

  it('shows later packets of a matched flow to the matching detector while it has budget left', () => {
    const learned: number[] = [];
    const learner: Detector = {
      name: 'learner',
      transports: OVER_UDP,
      budget: 3,
      stateBytes: 0,
      strength: STRENGTH_EXACT,
      producerIsPeer: true,
      inspect: () => MATCH,
      learn: (ctx: InspectContext) => void learned.push(ctx.flowIndex),
    };
    const engine = new Engine({ flowCapacity: 8, detectors: [learner] });
    const datagram = (payload: Uint8Array) => packet4('10.1.0.2', '10.2.0.9', 17, udp(5000, 6000, payload));
    expect(run(engine, datagram(ascii('a')))).toBe(VERDICT_BITTORRENT);
    for (const text of ['b', '', 'c', 'd', 'e']) expect(run(engine, datagram(ascii(text)))).toBe(VERDICT_BITTORRENT);
    expect(learned).toEqual([1, 2]);
  });

  it('calls a flow clean at once when no detector inspects its transport', () => {
    const tcpOnly: Detector = { name: 'tcp-only', transports: OVER_TCP, budget: 10, stateBytes: 0, strength: STRENGTH_EXACT, producerIsPeer: true, inspect: () => MORE };
    const engine = new Engine({ flowCapacity: 8, detectors: [tcpOnly] });
    expect(run(engine, packet4('10.1.0.2', '10.2.0.9', 17, udp(5000, 6000, ascii('x'))))).toBe(VERDICT_CLEAN);
  });

  it('returns VERDICT_NO_FLOW for packets that carry no TCP/UDP flow', () => {
    const engine = new Engine({ flowCapacity: 8 });
    expect(run(engine, ethernet(0x0806, new Uint8Array(28)), LINKTYPE_ETHERNET)).toBe(VERDICT_NO_FLOW);
    expect(run(engine, packet4('10.1.0.2', '10.2.0.9', 1, new Uint8Array(8)))).toBe(VERDICT_NO_FLOW);
    expect(run(engine, new Uint8Array([0x45, 0, 0]))).toBe(VERDICT_NO_FLOW);
    expect(engine.lastFlow).toBe(-1);
    expect(engine.flows.size).toBe(0);
  });

  it('forgets idle flows as time passes', () => {
    const engine = new Engine({ flowCapacity: 8, idleTimeoutMs: 1000 });
    run(engine, packet4('10.1.0.2', '10.2.0.9', 17, udp(5000, 6000, new Uint8Array(0))), LINKTYPE_RAW, 0);
    run(engine, packet4('10.1.0.2', '10.2.0.9', 17, udp(5001, 6000, new Uint8Array(0))), LINKTYPE_RAW, 5000);
    expect(engine.flows.size).toBe(1);
    expect(engine.flows.expired).toBe(1);
  });

  it('records the strength a detector gives its match and the direction whose packet matched', () => {
    const strengths: number[] = [];
    // Matches the responder's first packet, and calls it a response when it starts with 'R'.
    const answer: Detector = {
      name: 'answer',
      transports: OVER_UDP,
      budget: 4,
      stateBytes: 0,
      strength: STRENGTH_HEURISTIC,
      producerIsPeer: false,
      inspect(ctx: InspectContext) {
        strengths.push(ctx.strength);
        if (ctx.dir === 0) {
          // Left changed: the engine sets it again before every call.
          ctx.strength = STRENGTH_RESPONSE;
          return MORE;
        }
        if (ctx.pkt.buf[ctx.pkt.payloadOff] === 0x52) ctx.strength = STRENGTH_RESPONSE;
        return MATCH;
      },
    };
    const engine = new Engine({ flowCapacity: 8, detectors: [answer] });
    const request = (sport: number) => packet4('10.1.0.2', '10.2.0.9', 17, udp(sport, 6000, ascii('Q')));
    const reply = (dport: number, text: string) => packet4('10.2.0.9', '10.1.0.2', 17, udp(6000, dport, ascii(text)));
    expect(run(engine, request(5000))).toBe(VERDICT_UNDECIDED);
    expect(run(engine, reply(5000, 'R'))).toBe(VERDICT_BITTORRENT);
    const answered = engine.lastFlow;
    expect(engine.flows.strength[answered]).toBe(STRENGTH_RESPONSE);
    expect(engine.strengthName(answered)).toBe('response');
    expect(engine.flows.producer[answered]).toBe(1);
    expect(run(engine, request(5001))).toBe(VERDICT_UNDECIDED);
    expect(run(engine, reply(5001, 'x'))).toBe(VERDICT_BITTORRENT);
    expect(engine.lastFlow).not.toBe(answered);
    expect(engine.strengthName(engine.lastFlow)).toBe('heuristic');
    expect(engine.flows.producer[engine.lastFlow]).toBe(1);
    expect(strengths).toEqual([STRENGTH_HEURISTIC, STRENGTH_HEURISTIC, STRENGTH_HEURISTIC, STRENGTH_HEURISTIC]);
    expect(engine.producerIsPeer(engine.flows.rule[answered])).toBe(false);
  });

  it('clears the evidence of a flow slot that is reused', () => {
    const matcher: Detector = { name: 'm', transports: OVER_UDP, budget: 1, stateBytes: 0, strength: STRENGTH_RESPONSE, producerIsPeer: true, inspect: (ctx) => (ctx.dir === 1 ? MATCH : MORE) };
    const engine = new Engine({ flowCapacity: 8, idleTimeoutMs: 1000, detectors: [matcher] });
    run(engine, packet4('10.2.0.9', '10.1.0.2', 17, udp(6000, 5000, new Uint8Array(0))), LINKTYPE_RAW, 0);
    expect(run(engine, packet4('10.1.0.2', '10.2.0.9', 17, udp(5000, 6000, ascii('x'))), LINKTYPE_RAW, 0)).toBe(VERDICT_BITTORRENT);
    const first = engine.lastFlow;
    expect(engine.flows.producer[first]).toBe(1);
    expect(engine.flows.strength[first]).toBe(STRENGTH_RESPONSE);
    // Long idle: the same endpoints start a new flow, undecided and without evidence.
    expect(run(engine, packet4('10.2.0.9', '10.1.0.2', 17, udp(6000, 5000, new Uint8Array(0))), LINKTYPE_RAW, 10_000)).toBe(VERDICT_UNDECIDED);
    expect(engine.lastFlow).toBe(first);
    expect(engine.flows.strength[engine.lastFlow]).toBe(STRENGTH_NONE);
    expect(engine.flows.producer[engine.lastFlow]).toBe(0);
    expect(engine.flows.rule[engine.lastFlow]).toBe(0);
  });

  it('splits process() into track() and examine()', () => {
    const engine = new Engine({ flowCapacity: 8 });
    const frame = packet4('10.1.0.2', '10.2.0.9', 6, tcp(40000, 51413, HANDSHAKE));
    engine.clock.nowMs = 1000;
    const flow = engine.track(frame, 0, frame.length, LINKTYPE_RAW);
    expect(flow).toBeGreaterThanOrEqual(0);
    expect(engine.lastFlow).toBe(flow);
    // Counted, not yet inspected.
    expect(engine.flows.payloadPackets[flow * 2]).toBe(1);
    expect(engine.flows.verdict[flow]).toBe(VERDICT_UNDECIDED);
    expect(engine.examine(flow)).toBe(VERDICT_BITTORRENT);
    expect(engine.ruleNames[engine.flows.rule[flow]]).toBe('handshake');
    const arp = ethernet(0x0806, new Uint8Array(28));
    expect(engine.track(arp, 0, arp.length, LINKTYPE_ETHERNET)).toBe(-1);
    expect(engine.lastFlow).toBe(-1);
  });

  it('forgets every flow on reset()', () => {
    const engine = new Engine({ flowCapacity: 8 });
    expect(run(engine, packet4('10.1.0.2', '10.2.0.9', 6, tcp(40000, 51413, HANDSHAKE)))).toBe(VERDICT_BITTORRENT);
    expect(engine.flows.size).toBe(1);
    engine.reset();
    expect(engine.flows.size).toBe(0);
    // The same flow, seen again without its handshake, is undecided: nothing of it was kept.
    expect(run(engine, packet4('10.1.0.2', '10.2.0.9', 6, tcp(40000, 51413, ascii('more bytes'))))).toBe(VERDICT_UNDECIDED);
  });
});
