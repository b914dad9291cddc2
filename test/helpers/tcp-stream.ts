/** Lets FlowRunner (which builds UDP datagrams) drive a TCP detector: a stream in order, with sequence numbers. */
import type { Detector, InspectContext } from '../../src/detect/detector.js';
import { IPPROTO_TCP } from '../../src/packet/packet.js';

/** Initial sequence numbers per direction, the responder's close to wrap-around so the arithmetic must be modular. */
const ISN = [1000, 0xfffffff0];

/**
 * `detector` behind a wrapper that marks each payload as TCP and gives it the next sequence number
 * of its direction, as an in-order stream with no loss would (a new flow starts at flowIndex 0).
 */
export function overTcp(detector: Detector): Detector {
  const next = [0, 0];
  const asSegment = (ctx: InspectContext): void => {
    if (ctx.flowIndex === 0) [next[0], next[1]] = ISN;
    ctx.pkt.l4 = IPPROTO_TCP;
    ctx.pkt.tcpSeq = next[ctx.dir];
    next[ctx.dir] = (next[ctx.dir] + ctx.pkt.payloadLen) >>> 0;
  };
  const learn = detector.learn;
  return {
    ...detector,
    inspect(ctx: InspectContext): number {
      asSegment(ctx);
      return detector.inspect(ctx);
    },
    ...(learn === undefined
      ? {}
      : {
          learn(ctx: InspectContext): void {
            asSegment(ctx);
            learn.call(detector, ctx);
          },
        }),
  };
}
