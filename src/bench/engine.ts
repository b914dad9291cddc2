/**
 * `npm run bench [-- CORPUS_DIR [RANDOM_SAMPLES]]`: the engine on one core, file reading excluded.
 *  1. packets/s over the shared corpus, and heap growth per packet over a long run (node
 *     --expose-gc, a young generation large enough that a per-packet allocation shows as growth);
 *  2. packets/s over random 1448-byte TCP payloads (undecided flows: every detector looks);
 *  3. the memory of one tracked flow, and of each detector's state in it;
 *  4. false alarms: flows flagged among RANDOM_SAMPLES (default 10^8) random TCP flows and as many
 *     random UDP datagrams, and what MSE's shape alone would name (false-alarms.ts, one thread per core);
 *  5. the corpus through `btwall scan` and through ndpiReader, whole-process CPU (ndpi-race.ts).
 */
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { DETECTORS } from '../detect/registry.js';
import { Engine } from '../engine/engine.js';
import { IPPROTO_TCP } from '../packet/packet.js';
import { readCapture } from '../pcap/reader.js';
import { formatRate, packetsPerSecond, runPasses, type PacketSet } from './frames.js';
import { ndpiRace } from './ndpi-race.js';
import { requireOrExit } from './requirements.js';
import { countFalseAlarms, formatFalseAlarms, type FalseAlarmKind } from './false-alarms.js';
import { RandomTraffic } from './random.js';

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

function collectGarbage(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('run with node --expose-gc (npm run bench does)');
  gc();
  gc();
}

/** Heap growth per packet over `passes` passes, and how many collections ran meanwhile. */
async function heapGrowth(engine: Engine, set: PacketSet, passes: number): Promise<string> {
  let collections = 0;
  const observer = new PerformanceObserver((list) => (collections += list.getEntries().length));
  collectGarbage();
  observer.observe({ entryTypes: ['gc'] });
  const before = process.memoryUsage().heapUsed;
  runPasses(engine, set, passes);
  const grown = process.memoryUsage().heapUsed - before;
  // The observer reports on a later tick.
  await new Promise((done) => setImmediate(done));
  observer.disconnect();
  const packets = set.count * passes;
  return `${(grown / packets).toFixed(3)} bytes/packet over ${(packets / 1e6).toFixed(1)} M packets (${grown} bytes; garbage collections during the run: ${collections})`;
}

async function main(): Promise<void> {
  const corpusDir = resolve(process.argv[2] ?? '../shared/corpus/ndpi');
  requireOrExit('bench', {
    commands: { ndpiReader: 'libndpi-bin' },
    files: { [corpusDir]: 'the capture corpus: ../shared/corpus/ndpi, or name a directory of captures (npm run bench -- DIR)' },
  });
  const randomSamples = Number(process.argv[3] ?? 100_000_000);
  const out = (line: string) => process.stdout.write(`${line}\n`);

  const corpus = loadCorpus(corpusDir);
  out(`corpus ${corpusDir}: ${corpus.count} packets, ${(corpus.data.length / 1e6).toFixed(1)} MB in memory`);
  const engine = new Engine({ flowCapacity: 1 << 16 });
  out(`engine over the corpus: ${formatRate(packetsPerSecond(engine, corpus, 40))}, one core, reading excluded`);
  out(`heap growth over the corpus: ${await heapGrowth(engine, corpus, 100)}`);

  const bulk = new RandomTraffic(0x5eed1448, 100_000, 1448).batch({
    l4: IPPROTO_TCP,
    minPackets: 8,
    maxPackets: 8,
    payloadLength: () => 1448,
  });
  const bulkEngine = new Engine({ flowCapacity: 1 << 16 });
  out(`engine over random 1448-byte TCP payloads (${bulk.count} packets in 8-packet flows): ${formatRate(packetsPerSecond(bulkEngine, bulk, 10))}`);
  out(`heap growth over random TCP: ${await heapGrowth(bulkEngine, bulk, 20)}`);
  // What peer-messages' piece search costs where it runs: flows met mid-way, one direction in
  // full-sized segments (an MSS, or six coalesced by GRO), no SYN.
  for (const [segment, seed] of [
    [1448, 0x5eed2239],
    [6 * 1460, 0x5eed2238],
  ]) {
    const midWay = new RandomTraffic(seed, 20_000, segment).batch({
      l4: IPPROTO_TCP,
      minPackets: 8,
      maxPackets: 8,
      payloadLength: () => segment,
      opening: 'mid-one-way',
    });
    const midWayEngine = new Engine({ flowCapacity: 1 << 16 });
    out(`engine over random TCP met mid-way, one direction in ${segment}-byte segments (the piece search's worst case; ${midWay.count} packets in 8-packet flows): ${formatRate(packetsPerSecond(midWayEngine, midWay, 10))}`);
  }

  const flows = bulkEngine.flows;
  const perDetector = DETECTORS.map((d) => `${d.name} ${d.stateBytes}`).join(', ');
  out(`memory per tracked flow: ${flows.bytesPerFlow} bytes, of which detector state ${flows.stateBytes} (${perDetector})`);

  const falseAlarmRuns: [FalseAlarmKind, string, number][] = [
    ['tcp', 'random TCP (whole, mid-stream and one-way views)', randomSamples],
    ['tcp-full-sized', 'random TCP met mid-way, one direction in full-sized segments (1024-8760 bytes)', randomSamples / 10],
    ['udp', 'random UDP', randomSamples],
    ['mse-shape', 'MSE shape alone, every host taken as torrenting, both ends on the route', randomSamples / 10],
    ['mse-shape-one-way', 'MSE shape alone, every host taken as torrenting, one end on the route', randomSamples / 10],
  ];
  for (const [kind, label, samples] of falseAlarmRuns) {
    out(`false alarms, ${label}: ${formatFalseAlarms(kind, await countFalseAlarms(kind, samples, 0x7cb5eed))}`);
  }
  ndpiRace(corpusDir, out);
}

await main();
