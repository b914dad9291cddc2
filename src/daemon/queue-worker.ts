/**
 * One queue's data plane, in a worker thread of its own: a QueueSource feeding a pipeline (a
 * connection always hashes to the same queue). Detections, with the policy's decision, go to the
 * main thread, which owns rules, logs and bans.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Config } from '../config/config.js';
import { Pipeline, type DetectionEvent } from '../pipeline/pipeline.js';
import { QueueSource } from '../pipeline/queue-source.js';
import { exemptLists, type HostFacts } from '../policy/settings.js';
import type { OperatorRule } from '../rules/file.js';

export interface WorkerSetup {
  config: Config;
  queue: number;
  host: HostFacts;
  /** RULES_FILE's rules, checked by the main thread; null without a file. */
  rules: OperatorRule[] | null;
}

/** Messages from a queue worker to the main thread. */
export type WorkerMessage =
  /** The memory the queue's tables take, bytes. */
  | { type: 'ready'; memoryBytes: number }
  | { type: 'failed'; reason: string }
  /** The interface is left for the main thread to name from `ifindex`: looking names up blocks. */
  | { type: 'detection'; event: DetectionEvent; ifindex: number }
  | { type: 'stats'; stats: Record<string, number> }
  /** The broker died; the queue fails open until the respawn, `delayMs` from now, binds it. */
  | { type: 'broker-down'; reason: string; attempt: number; delayMs: number }
  | { type: 'broker-up'; attempt: number; downMs: number }
  /** Respawning kept failing: the daemon stops. */
  | { type: 'broker-exit'; reason: string }
  | { type: 'stopped'; stats: Record<string, number> };

/** Messages from the main thread: the host's addresses and resolvers change while the daemon runs, and the rules at SIGHUP. */
export type WorkerCommand = { type: 'stats' } | { type: 'stop' } | { type: 'host'; host: HostFacts } | { type: 'rules'; rules: OperatorRule[] };

const { config, queue: queueNumber, host, rules } = workerData as WorkerSetup;
const port = parentPort!;
const post = (message: WorkerMessage) => port.postMessage(message);

const pipeline = new Pipeline(config, host, undefined, rules);
const source = new QueueSource(
  {
    queue: queueNumber,
    copyRange: 0xffff,
    maxLen: config.queueMaxLen,
    receiveBuffer: 32 << 20,
    verdictTimeoutMs: config.verdictTimeoutMs,
    failOpen: true,
    gso: true,
  },
  {
    down: (reason, attempt, delayMs) => post({ type: 'broker-down', reason, attempt, delayMs }),
    up: (attempt, downMs) => post({ type: 'broker-up', attempt, downMs }),
    gaveUp: (reason) => post({ type: 'broker-exit', reason }),
  },
);
pipeline.onDetection = (event) => post({ type: 'detection', event, ifindex: source.currentInterface() });

function stats(): Record<string, number> {
  const { engine, policy } = pipeline;
  return {
    queue: queueNumber,
    ...source.stats(),
    flows: engine.flows.size,
    flowsEvicted: engine.flows.evicted,
    provenPeers: engine.proven.inserts,
    listedPeers: engine.announced.inserts,
    bans: policy.bans,
    bansRateLimited: policy.bansRateLimited,
  };
}

try {
  await source.run(pipeline);
  port.on('message', (command: WorkerCommand) => {
    if (command.type === 'stats') post({ type: 'stats', stats: stats() });
    else if (command.type === 'host') pipeline.policy.setExempt(exemptLists(config, command.host));
    else if (command.type === 'rules') pipeline.operatorRules?.setRules(command.rules);
    else
      void source.close().then(() => {
        post({ type: 'stopped', stats: stats() });
        port.close();
      });
  });
  post({ type: 'ready', memoryBytes: pipeline.memoryBytes });
} catch (error) {
  post({ type: 'failed', reason: (error as Error).message });
  port.close();
}
