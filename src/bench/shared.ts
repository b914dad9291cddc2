/**
 * `npm run bench:shared`: the measurement behind the queue workers' shared tables (src/pipeline/
 * shared-tables.ts). Two ways for every worker to know the peers one worker proved:
 *
 * - SharedArrayBuffer: one table every worker reads without a lock (a seqlock per slot).
 * - One owner and a message channel: each worker keeps a private replica; an insert goes to the
 *   owner (the main thread), which posts it to every other worker.
 *
 * Measured here, in one run: a lookup in a private table against one in the shared table while
 * another thread keeps writing it (the per-packet cost), an insert in each, and how long a message
 * takes from one worker through the owner to another and back (the time a flow on another queue
 * goes by undropped), idle and with the receiving worker busy with batches as a queue worker is.
 */
import type { Worker } from 'node:worker_threads';
import { Clock } from '../flow/clock.js';
import { PeerCache } from '../flow/peers.js';
import { endpoint, LOOKUP_PASSES, startPeerWorker, type LookupTimes, type WriterCounts } from './peer-worker.js';

const CAPACITY = 1 << 16;
const ENDPOINTS = 40_000;
/** Round trips measured idle, and with the worker busy (each costs up to a batch of its time). */
const MESSAGES_IDLE = 1_000;
const MESSAGES_BUSY = 1_000;
const BATCH_US = 500;

const answer = <T>(worker: Worker) => new Promise<T>((resolve, reject) => worker.once('message', resolve).once('error', reject));

/**
 * Microseconds from posting an insert to a replica worker until its answer is back: median and
 * 99th percentile. Sent a millisecond or two apart, as proofs come, not in lock-step with the
 * worker's loop (which a busy worker would then answer between two batches every time).
 */
async function messageLatencyUs(busyUs: number, messages: number): Promise<{ median: number; p99: number }> {
  const worker = startPeerWorker({ kind: 'replica', capacity: CAPACITY, busyUs });
  await new Promise((resolve) => worker.once('message', resolve));
  const times: number[] = [];
  const address = Uint8Array.of(10, 1, 2, 3);
  for (let seq = 0; seq < messages; seq++) {
    const start = process.hrtime.bigint();
    await new Promise<void>((resolve) => {
      worker.once('message', () => resolve());
      worker.postMessage({ seq, address });
    });
    times.push(Number(process.hrtime.bigint() - start) / 1000);
    await new Promise((r) => setTimeout(r, 1));
  }
  worker.postMessage({ stop: true });
  await new Promise((resolve) => worker.once('exit', resolve));
  times.sort((a, b) => a - b);
  return { median: times[Math.floor(times.length / 2)], p99: times[Math.floor(times.length * 0.99)] };
}

async function main(): Promise<void> {
  const lookups = (memory?: ArrayBufferLike) => answer<LookupTimes>(startPeerWorker({ kind: 'lookups', capacity: CAPACITY, memory, count: ENDPOINTS }));
  const privateTimes = await lookups();
  const memory = PeerCache.allocate(CAPACITY, false, true);
  const clock = new Clock();
  clock.nowMs = 1000;
  const sharedCache = new PeerCache(CAPACITY, 3_600_000, clock, undefined, false, memory);
  const buf = new Uint8Array(4);
  const start = process.hrtime.bigint();
  for (let i = 0; i < ENDPOINTS; i++) sharedCache.add(4, endpoint(buf, i), 0, 6881);
  const sharedInsert = Number(process.hrtime.bigint() - start) / ENDPOINTS;
  const sharedIdle = await lookups(memory);
  // The same lookups while another thread rewrites every one of those endpoints, over and over.
  const writer: Worker = startPeerWorker({ kind: 'writer', capacity: CAPACITY, memory, count: ENDPOINTS, repeat: true });
  await new Promise((resolve) => writer.once('online', resolve));
  const sharedBusy = await lookups(memory);
  writer.postMessage('stop');
  const written = await answer<WriterCounts>(writer);
  const privateLookup = privateTimes.lookupNs;
  const sharedIdleLookup = sharedIdle.lookupNs;
  const sharedBusyLookup = sharedBusy.lookupNs;
  const privateInsert = privateTimes.insertNs!;

  const idle = await messageLatencyUs(0, MESSAGES_IDLE);
  const busy = await messageLatencyUs(BATCH_US, MESSAGES_BUSY);
  const f = (n: number) => n.toFixed(1);
  const rows = [
    [`measurement (lookups: the fastest of ${LOOKUP_PASSES} passes, each kind of table in a thread of its own)`, 'figure'],
    ['lookup, private table (each worker\'s replica)', `${f(privateLookup)} ns`],
    ['lookup, shared table, nobody writing', `${f(sharedIdleLookup)} ns`],
    [`lookup, shared table, another thread writing (${written.inserts.toLocaleString('en-US')} inserts, ${written.contended} lost races)`, `${f(sharedBusyLookup)} ns`],
    ['insert, private table', `${f(privateInsert)} ns`],
    ['insert, shared table', `${f(sharedInsert)} ns`],
    ['insert message to a worker and back, worker idle: median / p99', `${f(idle.median)} / ${f(idle.p99)} us`],
    [`the same, worker busy with ${BATCH_US} us batches: median / p99`, `${f(busy.median)} / ${f(busy.p99)} us`],
  ];
  const widths = [Math.max(...rows.map((r) => r[0].length)), Math.max(...rows.map((r) => r[1].length))];
  process.stdout.write(`${rows.map((r) => `${r[0].padEnd(widths[0])}  ${r[1].padStart(widths[1])}`).join('\n')}\n\n`);
  const extra = sharedIdleLookup - privateLookup;
  process.stdout.write(
    `Shared table: ${f(extra)} ns more per lookup than a private replica (${f(sharedBusyLookup - privateLookup)} ns with another thread rewriting those very slots without pause),\n` +
      `paid by the peer-cache detector's few lookups at a flow's first packet and first payload packet, not per packet; what one queue proves is in every queue's next lookup.\n` +
      `Owner with a message channel: lookups in a private replica, but a proof reaches another queue ${f(busy.median)} us later (median; p99 ${f(busy.p99)} us) while that queue works\n` +
      `through batches, and new flows to the proven peer on the other queues pass meanwhile. Chosen: the shared table (src/pipeline/shared-tables.ts).\n`,
  );
}

await main();
