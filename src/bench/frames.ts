/** Benchmark inputs: packets laid out back to back in one buffer, so the timed loops read no file and build nothing. */
import { Engine } from '../engine/engine.js';

export interface PacketSet {
  data: Buffer;
  offsets: Uint32Array;
  lengths: Uint32Array;
  linkTypes: Uint16Array;
  timestamps: Float64Array;
  count: number;
}

/** Feeds every packet of the set to the engine, `passes` times, forgetting all flows after each pass. */
export function runPasses(engine: Engine, set: PacketSet, passes: number): void {
  const { data, offsets, lengths, linkTypes, timestamps, count } = set;
  for (let pass = 0; pass < passes; pass++) {
    for (let i = 0; i < count; i++) {
      engine.clock.nowMs = timestamps[i];
      engine.process(data, offsets[i], lengths[i], linkTypes[i]);
    }
    engine.reset();
  }
}

/** Median, min and max packets/s over `rounds` timed rounds of `passes` passes each. */
export function packetsPerSecond(engine: Engine, set: PacketSet, passes: number, rounds = 5): { median: number; min: number; max: number } {
  runPasses(engine, set, Math.max(1, Math.floor(passes / 4))); // warm-up: let the JIT settle on the hot path
  const rates: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const start = process.hrtime.bigint();
    runPasses(engine, set, passes);
    rates.push((set.count * passes) / (Number(process.hrtime.bigint() - start) / 1e9));
  }
  rates.sort((a, b) => a - b);
  return { median: rates[Math.floor(rounds / 2)], min: rates[0], max: rates[rounds - 1] };
}

export function formatRate(rate: { median: number; min: number; max: number }): string {
  const m = (n: number) => (n / 1e6).toFixed(2);
  return `${m(rate.median)} M packets/s median (min ${m(rate.min)}, max ${m(rate.max)})`;
}

/** xorshift32: a fixed seed gives the same "random" traffic on every run, so runs compare. */
export class Xorshift {
  constructor(private state: number) {}

  next(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x;
    return x >>> 0;
  }

  below(n: number): number {
    return this.next() % n;
  }

  fill(buf: Uint8Array): void {
    for (let i = 0; i < buf.length; i++) buf[i] = this.next() & 0xff;
  }
}
