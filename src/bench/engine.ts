/**
 * `npm run bench`: the engine's packets/s over the shared corpus with file reading excluded,
 * and heap growth per packet over a long run (node --expose-gc, large young generation so a
 * per-packet allocation shows up as growth instead of being collected along the way).
 */
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { Engine } from '../engine/engine.js';
import { readCapture } from '../pcap/reader.js';

interface PacketSet {
  data: Buffer;
  offsets: Uint32Array;
  lengths: Uint32Array;
  linkTypes: Uint16Array;
  timestamps: Float64Array;
  count: number;
}

/** Copies every packet of every capture into one buffer so the timed loop reads no file. */
function loadCorpus(dir: string): PacketSet {
  const chunks: Buffer[] = [];
  const offsets: number[] = [];
  const lengths: number[] = [];
  const linkTypes: number[] = [];
  const timestamps: number[] = [];
  let total = 0;
  for (const name of readdirSync(dir).sort()) {
    if (name.endsWith('.json')) continue;
    readCapture(join(dir, name), (buf, off, capLen, _origLen, linkType, tsMs) => {
      chunks.push(Buffer.from(buf.subarray(off, off + capLen)));
      offsets.push(total);
      lengths.push(capLen);
      linkTypes.push(linkType);
      timestamps.push(tsMs);
      total += capLen;
    });
  }
  return {
    data: Buffer.concat(chunks),
    offsets: Uint32Array.from(offsets),
    lengths: Uint32Array.from(lengths),
    linkTypes: Uint16Array.from(linkTypes),
    timestamps: Float64Array.from(timestamps),
    count: offsets.length,
  };
}

function runPasses(engine: Engine, set: PacketSet, passes: number): void {
  const { data, offsets, lengths, linkTypes, timestamps, count } = set;
  for (let pass = 0; pass < passes; pass++) {
    for (let i = 0; i < count; i++) {
      engine.clock.nowMs = timestamps[i];
      engine.process(data, offsets[i], lengths[i], linkTypes[i]);
    }
    engine.flows.clear();
  }
}

function collect(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('run with node --expose-gc (npm run bench does)');
  gc();
  gc();
}

function main(): void {
  const corpus = resolve(process.argv[2] ?? '../shared/corpus/ndpi');
  const set = loadCorpus(corpus);
  const engine = new Engine({ flowCapacity: 1 << 16 });
  process.stdout.write(`corpus: ${corpus}: ${set.count} packets, ${(set.data.length / 1e6).toFixed(1)} MB in memory\n`);

  runPasses(engine, set, 5); // warm-up: let the JIT settle on the hot path
  const passes = 40;
  const rounds: number[] = [];
  for (let round = 0; round < 5; round++) {
    const start = process.hrtime.bigint();
    runPasses(engine, set, passes);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    rounds.push((set.count * passes) / seconds);
  }
  rounds.sort((a, b) => a - b);
  process.stdout.write(
    `engine over corpus: ${(rounds[2] / 1e6).toFixed(2)} M packets/s median of 5 rounds ` +
      `(min ${(rounds[0] / 1e6).toFixed(2)}, max ${(rounds[4] / 1e6).toFixed(2)}), one core, reading excluded\n`,
  );

  let collections = 0;
  const observer = new PerformanceObserver((list) => (collections += list.getEntries().length));
  collect();
  observer.observe({ entryTypes: ['gc'] });
  const heapBefore = process.memoryUsage().heapUsed;
  const longPasses = 100;
  runPasses(engine, set, longPasses);
  const heapAfter = process.memoryUsage().heapUsed;
  const packets = set.count * longPasses;
  // The observer's callback runs on a later tick: wait for it before reporting.
  setImmediate(() => {
    observer.disconnect();
    process.stdout.write(
      `heap growth: ${((heapAfter - heapBefore) / packets).toFixed(3)} bytes/packet over ${(packets / 1e6).toFixed(1)} M packets ` +
        `(${heapAfter - heapBefore} bytes; garbage collections during the run: ${collections})\n`,
    );
  });
}

main();
