/**
 * NFQUEUE as a packet source: each batch the broker hands over goes through the pipeline, and each
 * action becomes the packet's verdict. The packet that decides its flow is repeated through the
 * hook with the decision in its mark, which the chain saves into the connection (see
 * firewall/rules.ts); a later packet of a decided flow that still reaches the queue (a UDP flow
 * whose dropped first packet left no connection to mark, a tunnelled flow) gets a plain verdict,
 * which batches. Every packet is accepted unless set otherwise.
 */
import { MARK_BITTORRENT, MARK_CLEAN, MARK_MASK, MARK_THROTTLE } from '../firewall/rules.js';
import type { QueueCounters } from '../ops/queue-counters.js';
import { LINKTYPE_RAW } from '../packet/linktype.js';
import { NfQueue, VERDICT_DROP, VERDICT_REPEAT, type PacketBatch, type QueueOptions, type QueueStats } from '../queue/nfqueue.js';
import { PACKET_ACCEPT_MARK_CLEAN, PACKET_DROP, PACKET_MARK_BITTORRENT, PACKET_MARK_THROTTLE, type Pipeline } from './pipeline.js';
import type { PacketSource } from './source.js';

export type QueueSourceOptions = Omit<QueueOptions, 'connmarkMask'>;

/** Waits before each respawn of a dead broker, in order; the last repeats. */
export const RESPAWN_DELAYS_MS = [100, 200, 400, 800, 1600, 3200];
/** Respawns in a row that fail (the broker cannot bind, or dies again within STABLE_MS) before giving up. */
export const RESPAWN_ATTEMPTS = 6;
/** A broker that ran this long had recovered: its death starts the count again. */
const STABLE_MS = 10_000;

/** What the source tells of its broker (the worker passes it on to the main thread). */
export interface BrokerEvents {
  /** The broker died: the queue is unbound and fails open (--queue-bypass) until the respawn binds it. */
  down(reason: string, attempt: number, delayMs: number): void;
  /** A respawned broker bound the queue again. */
  up(attempt: number, downMs: number): void;
  /** Respawning kept failing: the queue stays unbound. */
  gaveUp(reason: string): void;
}

const NO_STATS: QueueStats = { packets: 0, batches: 0, verdicts: 0, watchdogAccepted: 0, lateAnswers: 0, abandoned: 0, enobufs: 0, sendErrors: 0 };

export class QueueSource implements PacketSource {
  /** The batch and packet in the pipeline now: a detection reports its interface from them. */
  private currentBatch: PacketBatch | null = null;
  private currentIndex = 0;
  private queue: NfQueue | null = null;
  private decide: ((batch: PacketBatch) => void) | null = null;
  /** What the brokers that died had counted: the stats run on across respawns. */
  private past: QueueStats = { ...NO_STATS };
  private brokerRestarts = 0;
  private brokerStartedMs = 0;
  private closing = false;
  private respawnTimer: NodeJS.Timeout | null = null;
  /** Respawns in a row that did not last (see STABLE_MS). */
  private failures = 0;

  constructor(
    private readonly options: QueueSourceOptions,
    private readonly events: BrokerEvents,
    /** Where each packet's action and each batch's size and time are counted. */
    private readonly counters: QueueCounters,
  ) {}

  async run(pipeline: Pipeline): Promise<void> {
    const counters = this.counters;
    this.decide = (batch: PacketBatch) => {
      const startedMs = performance.now();
      pipeline.engine.clock.nowMs = Date.now();
      this.currentBatch = batch;
      for (let i = 0; i < batch.count; i++) {
        this.currentIndex = i;
        const action = pipeline.handle(batch.data, batch.offset(i), batch.length(i), LINKTYPE_RAW, batch.inputInterface(i));
        counters.packet(action);
        if (action === PACKET_DROP) batch.setVerdict(i, VERDICT_DROP, 0);
        else if (action === PACKET_MARK_BITTORRENT) batch.setVerdict(i, VERDICT_REPEAT, 0, MARK_BITTORRENT);
        else if (action === PACKET_MARK_THROTTLE) batch.setVerdict(i, VERDICT_REPEAT, 0, MARK_THROTTLE);
        else if (action === PACKET_ACCEPT_MARK_CLEAN) batch.setVerdict(i, VERDICT_REPEAT, 0, MARK_CLEAN);
      }
      this.currentBatch = null;
      counters.batch(batch.count, (performance.now() - startedMs) / 1000);
    };
    this.queue = await this.open();
  }

  private async open(): Promise<NfQueue> {
    const queue: NfQueue = await NfQueue.open({ ...this.options, connmarkMask: MARK_MASK }, this.decide!, (reason) => this.brokerDied(queue, reason));
    this.brokerStartedMs = Date.now();
    return queue;
  }

  /**
   * The broker died under us (kill -9, a crash): its queue is unbound, so the kernel lets the
   * queue's packets pass (--queue-bypass) while a new broker is started, with backoff.
   */
  private brokerDied(dead: NfQueue, reason: string): void {
    if (this.closing) return;
    this.addPast(dead.stats());
    this.queue = null;
    // A broker that had run a while had recovered: its death is a first failure again.
    if (Date.now() - this.brokerStartedMs >= STABLE_MS) this.failures = 0;
    this.respawn(reason, Date.now());
  }

  private respawn(reason: string, downSinceMs: number): void {
    this.failures++;
    if (this.failures > RESPAWN_ATTEMPTS) {
      this.events.gaveUp(`btwall-queue for queue ${this.options.queue} kept failing: ${RESPAWN_ATTEMPTS} respawns in a row died within ${STABLE_MS / 1000} s or could not bind the queue; last: ${reason}`);
      return;
    }
    const attempt = this.failures;
    const delayMs = RESPAWN_DELAYS_MS[Math.min(attempt, RESPAWN_DELAYS_MS.length) - 1];
    this.events.down(reason, attempt, delayMs);
    this.respawnTimer = setTimeout(() => {
      this.respawnTimer = null;
      if (this.closing) return;
      this.open().then(
        (queue) => {
          if (this.closing) return void queue.close();
          this.queue = queue;
          this.brokerRestarts++;
          this.events.up(attempt, Date.now() - downSinceMs);
        },
        (error: Error) => this.respawn(error.message, downSinceMs),
      );
    }, delayMs);
  }

  private addPast(stats: QueueStats): void {
    for (const key of Object.keys(this.past) as (keyof QueueStats)[]) this.past[key] += stats[key];
  }

  /** The interface the packet in the pipeline now came in on (or left by), for the detection log. */
  currentInterface(): number {
    return this.currentBatch === null ? 0 : this.currentBatch.ifindex(this.currentIndex);
  }

  /** Counters since the start, across respawned brokers; `brokerRestarts` counts the respawns that bound the queue. */
  stats(): QueueStats & { brokerRestarts: number } {
    const now = this.queue?.stats() ?? NO_STATS;
    const total = { ...this.past, brokerRestarts: this.brokerRestarts };
    for (const key of Object.keys(this.past) as (keyof QueueStats)[]) total[key] += now[key];
    return total;
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.respawnTimer !== null) clearTimeout(this.respawnTimer);
    await this.queue?.close();
  }
}
