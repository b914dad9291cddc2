/**
 * Per-slot sequence stamps for tables that several threads read and write without a lock: a
 * writer moves a slot's stamp from even to odd with one compare-and-swap, writes, and moves it to
 * the next even value; a reader trusts what it read between two loads of the same even stamp.
 */

/** Claims a slot for writing: the stamp to pass to `release`, or -1 when another thread is writing it. */
export function claimSlot(stamps: Int32Array, slot: number): number {
  const stamp = Atomics.load(stamps, slot);
  if ((stamp & 1) !== 0 || Atomics.compareExchange(stamps, slot, stamp, stamp + 1) !== stamp) return -1;
  return stamp;
}

/** Publishes what was written since `claimSlot` returned `stamp`. */
export function releaseSlot(stamps: Int32Array, slot: number, stamp: number): void {
  Atomics.store(stamps, slot, stamp + 2);
}
