/**
 * The time the engine works in, in milliseconds since the epoch: set by whoever feeds packets
 * (per packet from a capture, per batch in the daemon), read by the flow table. A field instead
 * of a call argument, because a double passed to a call that is not inlined is boxed on the heap.
 */
export class Clock {
  nowMs = 0;
}

/**
 * Milliseconds on CLOCK_MONOTONIC, which every thread of the process shares: for ages and
 * durations that an NTP step of the wall clock must not stretch or cut (the watchdog's checks).
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
