import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { Clock } from '../src/flow/clock.js';
import { PeerCache } from '../src/flow/peers.js';
import { Pipeline } from '../src/pipeline/pipeline.js';
import { allocateTables, tablesBytes } from '../src/pipeline/shared-tables.js';

/** The compiled cache, for a real second thread (a worker runs JavaScript, not the test's TypeScript). */
const PEERS_JS = pathToFileURL(resolve(import.meta.dirname, '../dist/flow/peers.js')).href;
const CLOCK_JS = pathToFileURL(resolve(import.meta.dirname, '../dist/flow/clock.js')).href;
const ENDPOINTS = 20_000;
const CAPACITY = 1 << 16;

/** The endpoint 10.a.b.c:6881 for i, written into buf. */
function endpoint(buf: Uint8Array, i: number): Uint8Array {
  buf.set([10, (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff]);
  return buf;
}

/** A worker thread that adds endpoints 0..ENDPOINTS-1 to the cache in `memory` and posts its counts. */
function writer(memory: ArrayBufferLike): Promise<{ inserts: number; contended: number }> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    (async () => {
      const { PeerCache } = await import(${JSON.stringify(PEERS_JS)});
      const { Clock } = await import(${JSON.stringify(CLOCK_JS)});
      const clock = new Clock();
      clock.nowMs = 1000;
      const cache = new PeerCache(${CAPACITY}, 60000, clock, undefined, false, workerData);
      const buf = new Uint8Array(4);
      for (let i = 0; i < ${ENDPOINTS}; i++) {
        buf[0] = 10; buf[1] = (i >> 16) & 255; buf[2] = (i >> 8) & 255; buf[3] = i & 255;
        cache.add(4, buf, 0, 6881);
      }
      parentPort.postMessage({ inserts: cache.inserts, contended: cache.contended });
    })();`;
  const worker = new Worker(code, { eval: true, workerData: memory });
  return new Promise((done, fail) => {
    worker.once('message', done);
    worker.once('error', fail);
  });
}

describe.runIf(existsSync(resolve(import.meta.dirname, '../dist/flow/peers.js')))('tables shared between threads', () => {
  it('shows what another thread proves at once, and never an endpoint nobody added while it writes', async () => {
    const memory = PeerCache.allocate(CAPACITY, false, true);
    const clock = new Clock();
    clock.nowMs = 1000;
    const cache = new PeerCache(CAPACITY, 60_000, clock, undefined, false, memory);
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
    let found = 0;
    for (let i = 0; i < ENDPOINTS; i++) if (cache.has(4, endpoint(buf, i), 0, 6881)) found++;
    // 20,000 endpoints in 16,384 sets of 4 ways: a full set evicts, so a handful may be gone.
    expect(found).toBeGreaterThan(ENDPOINTS * 0.99);
    expect(cache.inserts).toBe(0);
  });

  it('loses no endpoint when two threads add the same ones at once; a lost race is counted', async () => {
    const memory = PeerCache.allocate(CAPACITY, false, true);
    const clock = new Clock();
    clock.nowMs = 1000;
    const cache = new PeerCache(CAPACITY, 60_000, clock, undefined, false, memory);
    const buf = new Uint8Array(4);
    const other = writer(memory);
    for (let i = 0; i < ENDPOINTS; i++) cache.add(4, endpoint(buf, i), 0, 6881);
    const counts = await other;
    expect(cache.inserts + cache.contended).toBe(ENDPOINTS);
    expect(counts.inserts + counts.contended).toBe(ENDPOINTS);
    let found = 0;
    for (let i = 0; i < ENDPOINTS; i++) if (cache.has(4, endpoint(buf, i), 0, 6881)) found++;
    expect(found).toBeGreaterThan(ENDPOINTS * 0.99);
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
    const bytes = tables.proven.byteLength + tables.listed.byteLength + tables.banRate.byteLength;
    expect(tablesBytes(config)).toBe(bytes);
    const queues = [0, 1].map(() => new Pipeline(config, { ownAddresses: [], resolvers: [] }, new Clock(), tables));
    expect(queues[0].memoryBytes).toBe(Pipeline.plannedMemory(config).perQueueBytes);
    expect(Pipeline.plannedMemory(config).sharedBytes).toBe(bytes);
    const peer = Uint8Array.of(198, 51, 100, 8);
    queues[0].engine.proven.add(4, peer, 0, 6881);
    expect(queues[1].engine.proven.has(4, peer, 0, 6881)).toBe(true);
  });
});
