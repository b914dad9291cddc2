/**
 * False alarms on random traffic for `npm run bench`: flows flagged among random TCP flows and
 * random UDP datagrams, counted in worker threads (one per core, each with its own seed, printed
 * so that a run can be repeated). What the engine flags here is a false alarm; a rate of one in
 * 10^8 needs some 10^8 samples to show, hence the threads.
 *
 * Kinds: `tcp` and `udp` run the whole chain as the daemon does, each TCP flow seen whole (SYN and
 * SYN-ACK), from its middle or one way at random; `tcp-full-sized` the same over one direction of
 * TCP flows met mid-way in full-sized segments (an MSS or several coalesced by GRO), which
 * peer-messages searches for a piece's header (see src/detect/peer-messages.ts); `mse-shape` and
 * `mse-shape-one-way` run the MSE detector alone over TCP with every host taken as torrenting,
 * which is what its shape evidence would name without the context it needs (see
 * src/detect/mse.ts), on a route that shows both ends of each connection and on one that shows
 * one end only.
 */
import { availableParallelism } from 'node:os';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { mseDetector } from '../detect/mse.js';
import { Engine, VERDICT_BITTORRENT } from '../engine/engine.js';
import { IPPROTO_TCP, IPPROTO_UDP } from '../packet/packet.js';
import { RandomTraffic, type RandomTrafficShape } from './random.js';

export type FalseAlarmKind = 'tcp' | 'tcp-full-sized' | 'udp' | 'mse-shape' | 'mse-shape-one-way';

const OPENING_OF: Record<FalseAlarmKind, RandomTrafficShape['opening']> = {
  tcp: 'any',
  'tcp-full-sized': 'mid-one-way',
  udp: 'none',
  'mse-shape': 'handshake',
  'mse-shape-one-way': 'one-way',
};

interface Job {
  kind: FalseAlarmKind;
  /** Flows (tcp, mse-shape*) or datagrams (udp) to draw. */
  samples: number;
  seed: number;
}

interface Count {
  seed: number;
  packets: number;
  flows: number;
  flagged: Record<string, number>;
}

// Short payloads matter: uTP's header is 20 bytes, DNS and STUN are short too.
const mixedLength: RandomTrafficShape['payloadLength'] = (rng) => (rng.below(2) === 0 ? 1 + rng.below(100) : 100 + rng.below(1301));
/** Full-sized segments as peer-messages reads them (from 1024 bytes), up to six Ethernet MSS coalesced by GRO. */
const FULL_SIZED_MIN = 1024;
const FULL_SIZED_MAX = 6 * 1460;
const fullSizedLength: RandomTrafficShape['payloadLength'] = (rng) => FULL_SIZED_MIN + rng.below(FULL_SIZED_MAX - FULL_SIZED_MIN + 1);

function shapeOf(kind: FalseAlarmKind): RandomTrafficShape {
  const payloadLength = kind === 'tcp-full-sized' ? fullSizedLength : mixedLength;
  return { l4: kind === 'udp' ? IPPROTO_UDP : IPPROTO_TCP, minPackets: 1, maxPackets: 8, payloadLength, opening: OPENING_OF[kind] };
}

/** One worker's share: random flows of the kind's shape through a fresh engine until `samples`. */
function count({ kind, samples, seed }: Job): Count {
  const traffic = kind === 'tcp-full-sized' ? new RandomTraffic(seed, 25_000, FULL_SIZED_MAX) : new RandomTraffic(seed, 250_000, 1448);
  const shapeOnly = kind === 'mse-shape' || kind === 'mse-shape-one-way';
  const engine = new Engine({ flowCapacity: 1 << 18, ...(shapeOnly ? { detectors: [mseDetector] } : {}) });
  const flows = engine.flows;
  const flagged: Record<string, number> = {};
  engine.onVerdict = (flow) => {
    if (flows.verdict[flow] !== VERDICT_BITTORRENT) return;
    const rule = engine.ruleNames[flows.rule[flow]];
    flagged[rule] = (flagged[rule] ?? 0) + 1;
  };
  let released = 0;
  flows.onRelease = () => released++;
  let packets = 0;
  const shape = shapeOf(kind);
  const pkt = engine.packet;
  while ((kind === 'udp' ? packets : released) < samples) {
    const batch = traffic.batch(shape);
    const { data, offsets, lengths, linkTypes, timestamps } = batch;
    for (let i = 0; i < batch.count; i++) {
      engine.clock.nowMs = timestamps[i];
      const flow = engine.track(data, offsets[i], lengths[i], linkTypes[i]);
      if (flow < 0) continue;
      if (shapeOnly) engine.torrenting.mark(pkt.family, pkt.buf, pkt.srcOff);
      engine.examine(flow);
    }
    packets += batch.count;
  }
  return { seed, packets, flows: released, flagged };
}

/** Runs `samples` of a kind over one worker per core; resolves to the summed counts and the seeds used. */
export async function countFalseAlarms(kind: FalseAlarmKind, samples: number, firstSeed: number): Promise<Count[]> {
  const workers = Math.max(1, availableParallelism());
  const share = Math.ceil(samples / workers);
  return Promise.all(
    Array.from({ length: workers }, (_, i) => {
      const job: Job = { kind, samples: share, seed: (firstSeed + i * 0x9e3779b1) >>> 0 || 1 };
      return new Promise<Count>((done, fail) => {
        const worker = new Worker(new URL(import.meta.url), { workerData: job });
        worker.once('message', done);
        worker.once('error', fail);
      });
    }),
  );
}

/** One line: flagged flows among the samples, by rule, and the seeds. */
export function formatFalseAlarms(kind: FalseAlarmKind, counts: readonly Count[]): string {
  const packets = counts.reduce((sum, c) => sum + c.packets, 0);
  const flowCount = counts.reduce((sum, c) => sum + c.flows, 0);
  const byRule = new Map<string, number>();
  for (const c of counts) for (const [rule, n] of Object.entries(c.flagged)) byRule.set(rule, (byRule.get(rule) ?? 0) + n);
  const flagged = [...byRule.values()].reduce((a, b) => a + b, 0);
  const per = kind === 'udp' ? packets : flowCount;
  const unit = kind === 'udp' ? 'datagrams' : 'flows';
  const rules = [...byRule.entries()].map(([rule, n]) => `${rule} ${n}`).join(', ');
  const seeds = counts.map((c) => `0x${c.seed.toString(16)}`).join(', ');
  return (
    `${flagged} flagged among ${(per / 1e6).toFixed(1)} M ${unit} (${flowCount} flows, ${(packets / 1e6).toFixed(1)} M packets): ` +
    `${((flagged / per) * 1e8).toFixed(2)} per 10^8 ${unit}${rules ? `; ${rules}` : ''}; seeds ${seeds}`
  );
}

if (!isMainThread) parentPort!.postMessage(count(workerData as Job));
