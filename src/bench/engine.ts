/**
 * `npm run bench [-- CORPUS_DIR [RANDOM_PACKETS]]`: the engine on one core, file reading excluded.
 *  1. packets/s over the shared corpus, and heap growth per packet over a long run (node
 *     --expose-gc, a young generation large enough that a per-packet allocation shows as growth);
 *  2. packets/s over random 1448-byte TCP payloads (undecided flows: every detector looks);
 *  3. false alarms: flows flagged among RANDOM_PACKETS (default 10 M) random UDP datagrams and as
 *     many random TCP segments;
 *  4. the corpus through `btwall scan` and through ndpiReader, whole-process CPU (ndpi-race.ts).
 */
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { Engine, VERDICT_BITTORRENT } from '../engine/engine.js';
import { IPPROTO_TCP, IPPROTO_UDP } from '../packet/packet.js';
import { readCapture } from '../pcap/reader.js';
import { formatRate, packetsPerSecond, runPasses, type PacketSet } from './frames.js';
import { ndpiRace } from './ndpi-race.js';
import { RandomTraffic, type RandomTrafficShape } from './random.js';

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

/** Flows flagged among `total` packets of random traffic of one shape, by rule. */
function falseAlarms(shape: RandomTrafficShape, total: number, seed: number): string {
  const traffic = new RandomTraffic(seed, 250_000, 1448);
  const engine = new Engine({ flowCapacity: 1 << 18 });
  const flows = engine.flows;
  const byRule = new Map<string, number>();
  let decided = 0;
  engine.onVerdict = (flow) => {
    decided++;
    if (flows.verdict[flow] !== VERDICT_BITTORRENT) return;
    const rule = engine.ruleNames[flows.rule[flow]];
    byRule.set(rule, (byRule.get(rule) ?? 0) + 1);
  };
  let packets = 0;
  let flowCount = 0;
  flows.onRelease = () => flowCount++;
  while (packets < total) {
    const batch = traffic.batch(shape);
    runPasses(engine, batch, 1);
    packets += batch.count;
  }
  const flagged = [...byRule.values()].reduce((a, b) => a + b, 0);
  const rules = [...byRule.entries()].map(([rule, n]) => `${rule} ${n}`).join(', ');
  return (
    `${flagged} flows flagged among ${flowCount} flows of ${(packets / 1e6).toFixed(1)} M packets ` +
    `(${((flagged / packets) * 1e7).toFixed(2)} per 10 M packets${rules ? `; ${rules}` : ''}; ${decided} flows decided)`
  );
}

async function main(): Promise<void> {
  const corpusDir = resolve(process.argv[2] ?? '../shared/corpus/ndpi');
  const randomPackets = Number(process.argv[3] ?? 10_000_000);
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

  // Short datagrams matter: uTP's header is 20 bytes, DNS and STUN are short too.
  const mixedLength: RandomTrafficShape['payloadLength'] = (rng) => (rng.below(2) === 0 ? 1 + rng.below(100) : 100 + rng.below(1301));
  out(`false alarms, random UDP: ${falseAlarms({ l4: IPPROTO_UDP, minPackets: 1, maxPackets: 8, payloadLength: mixedLength }, randomPackets, 0x0bad5eed)}`);
  out(`false alarms, random TCP: ${falseAlarms({ l4: IPPROTO_TCP, minPackets: 1, maxPackets: 8, payloadLength: mixedLength }, randomPackets, 0x7cb5eed)}`);
  ndpiRace(corpusDir, out);
}

await main();
