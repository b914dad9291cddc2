/**
 * One queue's data plane, in a worker thread of its own: a QueueSource feeding a pipeline (a
 * connection always hashes to the same queue). Detections, with the policy's decision, go to the
 * main thread, which owns rules, logs and bans.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { DroppedSegment } from '../bans/xdp.js';
import type { Config } from '../config/config.js';
import { QueueCounters, SAMPLE_INTERVAL_MS } from '../ops/queue-counters.js';
import { Pipeline, type DetectionEvent } from '../pipeline/pipeline.js';
import { QueueSource } from '../pipeline/queue-source.js';
import type { SharedTables } from '../pipeline/shared-tables.js';
import { Clock, monotonicMs } from '../flow/clock.js';
import type { HostFacts } from '../policy/settings.js';
import type { OperatorRule } from '../rules/file.js';

export interface WorkerSetup {
  /** The configuration in force when the worker starts: a worker restarted after a reload gets the reloaded one. */
  config: Config;
  queue: number;
  host: HostFacts;
  /** The queue's QueueCounters, which the main thread reads. */
  counters: SharedArrayBuffer;
  /** The tables every worker of the daemon shares (SharedArrayBuffers). */
  tables: SharedTables;
  /** RULES_FILE's rules, checked by the main thread; null without a file. */
  rules: OperatorRule[] | null;
}

/** Messages from a queue worker to the main thread. */
export type WorkerMessage =
  /** The memory the queue's own tables take (not the shared ones), bytes. */
  | { type: 'ready'; memoryBytes: number }
  | { type: 'failed'; reason: string }
  /** The interface is left for the main thread to name from `ifindex`: looking names up blocks. */
  | { type: 'detection'; event: DetectionEvent; ifindex: number }
  /** A later packet of a connection cut at its detection, dropped: the cutter answers it with resets. */
  | { type: 'cut-segment'; segment: DroppedSegment }
  | { type: 'stats'; stats: Record<string, number> }
  /** The broker died; the queue fails open until the respawn, `delayMs` from now, binds it. */
  | { type: 'broker-down'; reason: string; attempt: number; delayMs: number }
  | { type: 'broker-up'; attempt: number; downMs: number }
  /** Respawning kept failing: the daemon stops. */
  | { type: 'broker-exit'; reason: string }
  | { type: 'stopped'; stats: Record<string, number> };

/**
 * Messages from the main thread: the host's addresses and resolvers change while the daemon runs,
 * and the configuration (its live settings: src/daemon/reload.ts) and the rules at SIGHUP.
 */
export type WorkerCommand =
  | { type: 'stats' }
  | { type: 'stop' }
  | { type: 'host'; host: HostFacts }
  | { type: 'config'; config: Config }
  | { type: 'rules'; rules: OperatorRule[] };

/** Peer-table slots counted per sample: a default-sized table (65,536) in one pass, in well under a millisecond. */
const PEER_SLOTS_PER_SAMPLE = 65_536;

const { queue: queueNumber, counters: countersBuffer, tables, rules } = workerData as WorkerSetup;
/** What the policy is set from; both change while the worker runs. */
let { config, host } = workerData as WorkerSetup;
const counters = new QueueCounters(countersBuffer);
const port = parentPort!;
const post = (message: WorkerMessage) => port.postMessage(message);

const pipeline = new Pipeline(config, host, new Clock(), tables, rules);
const source = new QueueSource(
  {
    queue: queueNumber,
    copyRange: 0xffff,
    maxLen: config.queueMaxLen,
    receiveBuffer: 32 << 20,
    verdictTimeoutMs: config.verdictTimeoutMs,
    coalesceUs: config.queueCoalesceUs,
    failOpen: true,
    gso: true,
  },
  {
    down: (reason, attempt, delayMs) => post({ type: 'broker-down', reason, attempt, delayMs }),
    up: (attempt, downMs) => post({ type: 'broker-up', attempt, downMs }),
    gaveUp: (reason) => post({ type: 'broker-exit', reason }),
  },
  counters,
);
pipeline.onDetection = (event) => post({ type: 'detection', event, ifindex: source.currentInterface() });
pipeline.onCutSegment = (segment) => post({ type: 'cut-segment', segment });

function stats(): Record<string, number> {
  const { engine, policy } = pipeline;
  return {
    queue: queueNumber,
    ...source.stats(),
    flows: engine.flows.size,
    flowsEvicted: engine.flows.evicted,
    provenPeers: engine.proven.inserts,
    listedPeers: engine.announced.inserts,
    peerInsertsContended: engine.proven.contended + engine.announced.contended,
    bans: policy.bans,
    bansRateLimited: policy.bansRateLimited,
  };
}

function sampleCounters(): void {
  const { flows, proven, announced } = pipeline.engine;
  const now = Date.now();
  counters.sample({ ...source.stats(), flows: flows.size, flowsEvicted: flows.evicted, provenPeers: proven.countLive(now, PEER_SLOTS_PER_SAMPLE), listedPeers: announced.countLive(now, PEER_SLOTS_PER_SAMPLE) }, monotonicMs());
}

try {
  await source.run(pipeline);
  sampleCounters();
  const sampler = setInterval(sampleCounters, SAMPLE_INTERVAL_MS);
  port.on('message', (command: WorkerCommand) => {
    switch (command.type) {
      case 'stats':
        post({ type: 'stats', stats: stats() });
        return;
      case 'host':
        host = command.host;
        pipeline.reconfigure(config, host);
        return;
      case 'config':
        config = command.config;
        pipeline.reconfigure(config, host);
        return;
      case 'rules':
        pipeline.operatorRules?.setRules(command.rules);
        return;
      case 'stop':
        void source.close().then(() => {
          clearInterval(sampler);
          post({ type: 'stopped', stats: stats() });
          port.close();
        });
    }
  });
  post({ type: 'ready', memoryBytes: pipeline.memoryBytes });
} catch (error) {
  post({ type: 'failed', reason: (error as Error).message });
  port.close();
}
