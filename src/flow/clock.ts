/**
 * The time the engine works in, in milliseconds since the epoch: set by whoever feeds packets
 * (per packet from a capture, per batch in the daemon), read by the flow table. A field instead
 * of a call argument, because a double passed to a call that is not inlined is boxed on the heap.
 */
export class Clock {
  nowMs = 0;
}
