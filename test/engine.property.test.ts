import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { detectorChain } from '../src/detect/registry.js';
import { Engine, VERDICT_BITTORRENT, VERDICT_CLEAN, VERDICT_NO_FLOW, VERDICT_UNDECIDED } from '../src/engine/engine.js';
import { LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_NULL, LINKTYPE_RAW } from '../src/packet/linktype.js';
import { packet4, packet6, tcp, udp } from './helpers/frames.js';

const VERDICTS = [VERDICT_UNDECIDED, VERDICT_CLEAN, VERDICT_BITTORRENT, VERDICT_NO_FLOW];

describe('engine on arbitrary input', () => {
  it('never throws on arbitrary frames of any link type, and the flow table stays within its capacity', () => {
    const engine = new Engine({ flowCapacity: 64, detectors: detectorChain({ blockSocks: true }) });
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.constantFrom(LINKTYPE_RAW, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_NULL, 147), fc.nat(1 << 20), (bytes, linkType, time) => {
        engine.clock.nowMs = time;
        expect(VERDICTS).toContain(engine.process(bytes, 0, bytes.length, linkType));
        expect(engine.flows.size).toBeLessThanOrEqual(64);
      }),
      { numRuns: 5000 },
    );
  });

  it('never throws on TCP and UDP flows with arbitrary payloads in both directions through every detector', () => {
    const engine = new Engine({ flowCapacity: 256, detectors: detectorChain({ blockSocks: true }) });
    const segment = fc.record({
      fromClient: fc.boolean(),
      payload: fc.uint8Array({ minLength: 1, maxLength: 700 }),
      seqJump: fc.integer({ min: -100, max: 2000 }),
    });
    fc.assert(
      fc.property(fc.boolean(), fc.boolean(), fc.integer({ min: 1, max: 65535 }), fc.array(segment, { minLength: 1, maxLength: 12 }), (overTcp, v6, port, segments) => {
        const seq = [1000, 5000];
        for (const s of segments) {
          const dir = s.fromClient ? 0 : 1;
          seq[dir] = (seq[dir] + s.seqJump) >>> 0;
          const [sp, dp] = s.fromClient ? [40000, port] : [port, 40000];
          const l4 = overTcp ? tcp(sp, dp, s.payload, { seq: seq[dir] }) : udp(sp, dp, s.payload);
          const [a, b] = s.fromClient ? ['1', '2'] : ['2', '1'];
          const frame = v6 ? packet6(`2001:db8::${a}`, `2001:db8::${b}`, overTcp ? 6 : 17, l4) : packet4(`10.0.0.${a}`, `10.0.0.${b}`, overTcp ? 6 : 17, l4);
          expect(VERDICTS).toContain(engine.process(frame, 0, frame.length, LINKTYPE_RAW));
          seq[dir] = (seq[dir] + s.payload.length) >>> 0;
        }
      }),
      { numRuns: 3000 },
    );
  });
});
