/**
 * A thread at a peer table, for `npm run bench:shared` and the shared-table tests
 * (test/shared-tables.test.ts). `writer`: adds endpoint(0) ... endpoint(count - 1) at port 6881 to
 * the table in `memory`, once, or over and over until it is sent a message (`repeat`), then posts
 * its counts. `replica`: keeps a private table, adds each endpoint it is sent and answers with the
 * message's `seq`; with `busyUs`, it spends that long on a synchronous batch between messages, as
 * a queue worker does with packets. `lookups`: times lookups in the table in `memory` (a private
 * one when absent, filled first) and posts LookupTimes. A thread of its own for each kind of table
 * keeps the JIT's code for one from being the code for both (a queue worker only ever sees one).
 */
import { parentPort, Worker, workerData } from 'node:worker_threads';
import { Clock } from '../flow/clock.js';
import { PeerCache } from '../flow/peers.js';

export interface PeerWorkerSetup {
  kind: 'writer' | 'replica' | 'lookups';
  capacity: number;
  /** writer: the table's memory (PeerCache.allocate, shared). */
  memory?: ArrayBufferLike;
  count?: number;
  repeat?: boolean;
  busyUs?: number;
}

/** What `lookups` posts: ns per insert (a private table only), and per lookup, the fastest of `passes` passes of `lookups`. */
export interface LookupTimes {
  insertNs: number | null;
  lookupNs: number;
}

export const LOOKUP_PASSES = 40;
const WARMING_PASSES = 4;
const LOOKUPS_PER_PASS = 250_000;

/** What a writer posts when it is done. */
export interface WriterCounts {
  inserts: number;
  contended: number;
}

/** The endpoint 10.a.b.c for i, written into buf[0..3]. */
export function endpoint(buf: Uint8Array, i: number): Uint8Array {
  buf[0] = 10;
  buf[1] = (i >> 16) & 0xff;
  buf[2] = (i >> 8) & 0xff;
  buf[3] = i & 0xff;
  return buf;
}

export function startPeerWorker(setup: PeerWorkerSetup): Worker {
  return new Worker(new URL(import.meta.url), { workerData: setup });
}

function runWriter(cache: PeerCache, setup: PeerWorkerSetup, port: NonNullable<typeof parentPort>): void {
  const buf = new Uint8Array(4);
  const count = setup.count ?? 0;
  let stop = !setup.repeat;
  port.on('message', () => (stop = true));
  const pass = () => {
    for (let i = 0; i < count; i++) cache.add(4, endpoint(buf, i), 0, 6881);
    if (stop) {
      const counts: WriterCounts = { inserts: cache.inserts, contended: cache.contended };
      port.postMessage(counts);
      port.close();
    } else setImmediate(pass);
  };
  pass();
}

function runReplica(cache: PeerCache, setup: PeerWorkerSetup, port: NonNullable<typeof parentPort>): void {
  const buf = new Uint8Array(4);
  const busyNs = BigInt((setup.busyUs ?? 0) * 1000);
  const batch = () => {
    const end = process.hrtime.bigint() + busyNs;
    while (process.hrtime.bigint() < end);
    setImmediate(batch);
  };
  port.on('message', (m: { stop?: boolean; seq: number; address: Uint8Array }) => {
    if (m.stop) process.exit(0);
    buf.set(m.address);
    cache.add(4, buf, 0, 6881);
    port.postMessage(m.seq);
  });
  port.postMessage('ready');
  if (busyNs > 0n) batch();
}

/** Nanoseconds per lookup in one pass over endpoints 0 .. 2 count - 1: half present, half absent. */
function lookupPassNs(cache: PeerCache, count: number): number {
  const buf = new Uint8Array(4);
  let found = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < LOOKUPS_PER_PASS; i++) if (cache.has(4, endpoint(buf, (i * 7919) % (count * 2)), 0, 6881)) found++;
  const ns = Number(process.hrtime.bigint() - start) / LOOKUPS_PER_PASS;
  if (found === 0) throw new Error('no lookup hit: the table is empty');
  return ns;
}

function runLookups(cache: PeerCache, setup: PeerWorkerSetup, port: NonNullable<typeof parentPort>): void {
  const count = setup.count ?? 0;
  let insertNs: number | null = null;
  if (setup.memory === undefined) {
    const buf = new Uint8Array(4);
    const start = process.hrtime.bigint();
    for (let i = 0; i < count; i++) cache.add(4, endpoint(buf, i), 0, 6881);
    insertNs = Number(process.hrtime.bigint() - start) / count;
  }
  for (let i = 0; i < WARMING_PASSES; i++) lookupPassNs(cache, count);
  // The fastest pass: other work on a shared machine only ever slows one down.
  const lookupNs = Math.min(...Array.from({ length: LOOKUP_PASSES }, () => lookupPassNs(cache, count)));
  const times: LookupTimes = { insertNs, lookupNs };
  port.postMessage(times);
  port.close();
}

if (parentPort !== null && (workerData as PeerWorkerSetup | null)?.kind !== undefined) {
  const setup = workerData as PeerWorkerSetup;
  const clock = new Clock();
  clock.nowMs = 1000;
  const cache = new PeerCache(setup.capacity, 3_600_000, clock, undefined, false, setup.memory);
  if (setup.kind === 'writer') runWriter(cache, setup, parentPort);
  else if (setup.kind === 'lookups') runLookups(cache, setup, parentPort);
  else runReplica(cache, setup, parentPort);
}
