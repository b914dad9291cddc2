import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { Clock } from '../src/flow/clock.js';
import { PeerCache } from '../src/flow/peers.js';
import { endpoint, type PeerWorkerSetup, type WriterCounts } from '../src/bench/peer-worker.js';
import { Pipeline } from '../src/pipeline/pipeline.js';
import { allocateTables, tablesBytes } from '../src/pipeline/shared-tables.js';

const ENDPOINTS = 20_000;
/** 32,768 sets of 4 ways for 20,000 endpoints: a set overflows (and evicts) for about a dozen of them. */
const CAPACITY = 1 << 17;
/** The other thread runs the compiled module (a worker runs JavaScript, not the test's TypeScript). */
const PEER_WORKER = resolve(import.meta.dirname, '../dist/bench/peer-worker.js');

/** Another thread that adds endpoints 0..ENDPOINTS-1 to the cache in `memory` once, and its counts. */
function writer(memory: ArrayBufferLike): Promise<WriterCounts> {
  const setup: PeerWorkerSetup = { kind: 'writer', capacity: CAPACITY, memory, count: ENDPOINTS };
  const worker = new Worker(PEER_WORKER, { workerData: setup });
  return new Promise((done, fail) => {
    worker.once('message', done);
    worker.once('error', fail);
  });
}

/** A cache in fresh shared memory, seen from this thread, and the endpoints in it. */
function sharedCache(): { memory: ArrayBufferLike; cache: PeerCache; found: () => number } {
  const memory = PeerCache.allocate(CAPACITY, false, true);
  const clock = new Clock();
  clock.nowMs = 1000;
  const cache = new PeerCache(CAPACITY, 60_000, clock, undefined, false, memory);
  const buf = new Uint8Array(4);
  const found = () => {
    let n = 0;
    for (let i = 0; i < ENDPOINTS; i++) if (cache.has(4, endpoint(buf, i), 0, 6881)) n++;
    return n;
  };
  return { memory, cache, found };
}

describe.runIf(existsSync(PEER_WORKER))('tables shared between threads', () => {
  it('shows what another thread proves at once, and never an endpoint nobody added while it writes', async () => {
    const { memory, cache, found } = sharedCache();
    const buf = new Uint8Array(4);
    const written = writer(memory);
    let finished = false;
    void written.then(() => (finished = true));
    // While the other thread writes: port 6882 was never added, so no lookup may find it.
    let falseHits = 0;
    let lookups = 0;
    while (!finished) {
      for (let i = 0; i < 1000; i++, lookups++) if (cache.has(4, endpoint(buf, (lookups * 7919) % ENDPOINTS), 0, 6882)) falseHits++;
      await new Promise((r) => setImmediate(r));
    }
    const counts = await written;
    expect(falseHits).toBe(0);
    expect(lookups).toBeGreaterThan(0);
    expect(counts).toEqual({ inserts: ENDPOINTS, contended: 0 });
    // A full set evicts: a handful may be gone.
    expect(found()).toBeGreaterThan(ENDPOINTS * 0.99);
    expect(cache.inserts).toBe(0);
  });

  it('loses no endpoint when two threads add the same ones at once; a lost race is counted', async () => {
    const { memory, cache, found } = sharedCache();
    const buf = new Uint8Array(4);
    const other = writer(memory);
    for (let i = 0; i < ENDPOINTS; i++) cache.add(4, endpoint(buf, i), 0, 6881);
    const counts = await other;
    expect(cache.inserts + cache.contended).toBe(ENDPOINTS);
    expect(counts.inserts + counts.contended).toBe(ENDPOINTS);
    expect(found()).toBeGreaterThan(ENDPOINTS * 0.99);
  });

  it('shares one hash seed through the memory, and refuses memory of another size', () => {
    const memory = PeerCache.allocate(1024, true, true);
    const clock = new Clock();
    const a = new PeerCache(1024, 60_000, clock, undefined, true, memory);
    const b = new PeerCache(1024, 60_000, clock, undefined, true, memory);
    const peer = Uint8Array.of(198, 51, 100, 7);
    const host = Uint8Array.of(10, 0, 0, 5);
    expect(a.add(4, peer, 0, 51413, 4, host, 0)).toBe(true);
    expect(b.has(4, peer, 0, 51413, 4, host, 0)).toBe(true);
    expect(b.has(4, peer, 0, 51413, 4, Uint8Array.of(10, 0, 0, 6), 0)).toBe(false);
    expect(() => new PeerCache(2048, 60_000, clock, undefined, true, memory)).toThrow(RangeError);
    expect(() => new PeerCache(1024, 60_000, clock, undefined, false, memory)).toThrow(RangeError);
  });

  it('are counted once for the daemon, not once per queue', () => {
    const config = loadConfig({ FLOW_CAPACITY: '4096', QUEUE_NUM: '0-1' });
    const tables = allocateTables(config, true);
    expect(tables.proven).toBeInstanceOf(SharedArrayBuffer);
    const bytes = tables.proven.byteLength + tables.listed.byteLength + tables.torrenting.hosts.byteLength + tables.torrenting.sightings.byteLength + tables.banRate.byteLength;
    expect(tablesBytes(config)).toBe(bytes);
    const queues = [0, 1].map(() => new Pipeline(config, { ownAddresses: [], resolvers: [] }, new Clock(), tables));
    expect(queues[0].memoryBytes).toBe(Pipeline.plannedMemory(config).perQueueBytes);
    expect(Pipeline.plannedMemory(config).sharedBytes).toBe(bytes);
    const peer = Uint8Array.of(198, 51, 100, 8);
    queues[0].engine.proven.add(4, peer, 0, 6881);
    expect(queues[1].engine.proven.has(4, peer, 0, 6881)).toBe(true);
    queues[0].engine.torrenting.mark(4, peer, 0);
    expect(queues[1].engine.torrenting.has(4, peer, 0)).toBe(true);
  });
});
