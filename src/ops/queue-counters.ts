/**
 * One queue's counters, shared between its worker thread, which writes them in the packet path,
 * and the main thread, which reads them for the metrics and `btwall status`: a SharedArrayBuffer
 * of float64 slots, so counting is a store into a typed array (no message, no allocation).
 * Float64 holds integers exactly up to 2^53; an aligned 8-byte store is one instruction on the
 * 64-bit machines Node runs on, so a reader sees a slot's old value or its new one, never half.
 *
 * The worker writes three kinds of slot: packets by the pipeline's action and the two batch
 * histograms, per batch; the `SAMPLED` gauges and the broker's counters, once a second (they are
 * read from tables and the broker's memory, which the main thread cannot see).
 */
import { BATCH_MAX_PACKETS } from '../queue/nfqueue.js';
import { PACKET_ACCEPT, PACKET_ACCEPT_MARK_CLEAN, PACKET_DROP, PACKET_MARK_BITTORRENT, PACKET_MARK_THROTTLE } from '../pipeline/pipeline.js';

/** The pipeline's PACKET_* actions, by slot, as the verdict and the connection mark they give. */
export const ACTIONS = [
  { action: PACKET_ACCEPT, verdict: 'accept', mark: 'none' },
  { action: PACKET_DROP, verdict: 'drop', mark: 'none' },
  { action: PACKET_ACCEPT_MARK_CLEAN, verdict: 'accept', mark: 'clean' },
  { action: PACKET_MARK_BITTORRENT, verdict: 'drop', mark: 'bittorrent' },
  { action: PACKET_MARK_THROTTLE, verdict: 'accept', mark: 'throttle' },
] as const;

/** Upper bounds of the packets-per-batch buckets: powers of two up to the broker's batch. */
export const BATCH_PACKETS_BOUNDS: readonly number[] = Array.from({ length: Math.log2(BATCH_MAX_PACKETS) + 1 }, (_, i) => 2 ** i);
/** Upper bounds of the per-batch engine time buckets, seconds: 5 µs to VERDICT_TIMEOUT_MS's default (50 ms) and past it. */
export const BATCH_SECONDS_BOUNDS: readonly number[] = [5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25];

/** How often a worker copies the tables' sizes and the broker's counters into its counters. */
export const SAMPLE_INTERVAL_MS = 1000;

/** What the worker copies every SAMPLE_INTERVAL_MS. */
export const SAMPLED = [
  'flows',
  'flowsEvicted',
  'provenPeers',
  'listedPeers',
  // The broker's counters (QueueStats), across respawns.
  'packets',
  'batches',
  'verdicts',
  'watchdogAccepted',
  'lateAnswers',
  'abandoned',
  'enobufs',
  'sendErrors',
  'brokerRestarts',
] as const;
export type SampledField = (typeof SAMPLED)[number];

/** A histogram as read: cumulative counts per bound, the last for +Inf (the observation count). */
export interface HistogramSample {
  bounds: readonly number[];
  cumulative: number[];
  sum: number;
}

export interface QueueSample {
  /** Packets by ACTIONS slot. */
  actions: number[];
  batchPackets: HistogramSample;
  batchSeconds: HistogramSample;
  sampled: Record<SampledField, number>;
}

/** Slots: actions, then each histogram's buckets (one per bound and +Inf) and sum, then SAMPLED. */
const ACTIONS_AT = 0;
const PACKETS_AT = ACTIONS_AT + ACTIONS.length;
const SECONDS_AT = PACKETS_AT + BATCH_PACKETS_BOUNDS.length + 2;
const SAMPLED_AT = SECONDS_AT + BATCH_SECONDS_BOUNDS.length + 2;
/** When the worker last sampled (epoch ms): a worker whose event loop is wedged stops moving it. */
const SAMPLED_AT_MS = SAMPLED_AT + SAMPLED.length;
const SLOTS = SAMPLED_AT_MS + 1;

export class QueueCounters {
  private readonly slots: Float64Array;

  /** A new buffer (main thread), or the one the main thread passed (worker). */
  constructor(readonly buffer = new SharedArrayBuffer(SLOTS * 8)) {
    this.slots = new Float64Array(buffer);
  }

  /** One packet's action (a PACKET_* value, which is its slot). */
  packet(action: number): void {
    this.slots[ACTIONS_AT + action]++;
  }

  /** One batch: its packets, and the seconds the pipeline took over it. */
  batch(packets: number, seconds: number): void {
    observe(this.slots, PACKETS_AT, BATCH_PACKETS_BOUNDS, packets);
    observe(this.slots, SECONDS_AT, BATCH_SECONDS_BOUNDS, seconds);
  }

  sample(values: Record<SampledField, number>, nowMs: number): void {
    for (let i = 0; i < SAMPLED.length; i++) this.slots[SAMPLED_AT + i] = values[SAMPLED[i]];
    this.slots[SAMPLED_AT_MS] = nowMs;
  }

  /** When the worker last sampled, monotonic ms (monotonicMs); 0 before its first sample. */
  sampledAtMs(): number {
    return this.slots[SAMPLED_AT_MS];
  }

  read(): QueueSample {
    const s = this.slots;
    return {
      actions: ACTIONS.map((_, i) => s[ACTIONS_AT + i]),
      batchPackets: histogram(s, PACKETS_AT, BATCH_PACKETS_BOUNDS),
      batchSeconds: histogram(s, SECONDS_AT, BATCH_SECONDS_BOUNDS),
      sampled: Object.fromEntries(SAMPLED.map((name, i) => [name, s[SAMPLED_AT + i]])) as Record<SampledField, number>,
    };
  }
}

/** Counts `value` in its bucket (not cumulative: the reader sums) and adds it to the sum. */
function observe(slots: Float64Array, at: number, bounds: readonly number[], value: number): void {
  let bucket = 0;
  while (bucket < bounds.length && value > bounds[bucket]) bucket++;
  slots[at + bucket]++;
  slots[at + bounds.length + 1] += value;
}

function histogram(slots: Float64Array, at: number, bounds: readonly number[]): HistogramSample {
  const cumulative: number[] = [];
  let total = 0;
  for (let i = 0; i <= bounds.length; i++) cumulative.push((total += slots[at + i]));
  return { bounds, cumulative, sum: slots[at + bounds.length + 1] };
}
