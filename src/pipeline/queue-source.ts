/**
 * NFQUEUE as a packet source: each batch the broker hands over goes through the pipeline, and each
 * action becomes the packet's verdict. The packet that decides its flow is repeated through the
 * hook with the decision in its mark, which the chain saves into the connection (see
 * firewall/rules.ts); a later packet of a decided flow that still reaches the queue (a UDP flow
 * whose dropped first packet left no connection to mark, a tunnelled flow) gets a plain verdict,
 * which batches. Every packet is accepted unless set otherwise.
 */
import { MARK_BITTORRENT, MARK_CLEAN, MARK_MASK } from '../firewall/rules.js';
import { LINKTYPE_RAW } from '../packet/linktype.js';
import { NfQueue, VERDICT_DROP, VERDICT_REPEAT, type PacketBatch, type QueueOptions, type QueueStats } from '../queue/nfqueue.js';
import { PACKET_ACCEPT_MARK_CLEAN, PACKET_DROP, PACKET_DROP_MARK_BITTORRENT, type Pipeline } from './pipeline.js';
import type { PacketSource } from './source.js';

export type QueueSourceOptions = Omit<QueueOptions, 'connmarkMask'>;

export class QueueSource implements PacketSource {
  /** The batch and packet in the pipeline now: a detection reports its interface from them. */
  private currentBatch: PacketBatch | null = null;
  private currentIndex = 0;
  private queue: NfQueue | null = null;

  constructor(
    private readonly options: QueueSourceOptions,
    /** The broker died: traffic bypasses the queue until something restarts it. */
    private readonly onBrokerExit: (reason: string) => void,
  ) {}

  async run(pipeline: Pipeline): Promise<void> {
    const decide = (batch: PacketBatch) => {
      pipeline.engine.clock.nowMs = Date.now();
      this.currentBatch = batch;
      for (let i = 0; i < batch.count; i++) {
        this.currentIndex = i;
        const action = pipeline.handle(batch.data, batch.offset(i), batch.length(i), LINKTYPE_RAW, batch.inputInterface(i));
        if (action === PACKET_DROP) batch.setVerdict(i, VERDICT_DROP, 0);
        else if (action === PACKET_DROP_MARK_BITTORRENT) batch.setVerdict(i, VERDICT_REPEAT, 0, MARK_BITTORRENT);
        else if (action === PACKET_ACCEPT_MARK_CLEAN) batch.setVerdict(i, VERDICT_REPEAT, 0, MARK_CLEAN);
      }
      this.currentBatch = null;
    };
    this.queue = await NfQueue.open({ ...this.options, connmarkMask: MARK_MASK }, decide, this.onBrokerExit);
  }

  /** The interface the packet in the pipeline now came in on (or left by), for the detection log. */
  currentInterface(): number {
    return this.currentBatch === null ? 0 : this.currentBatch.ifindex(this.currentIndex);
  }

  stats(): QueueStats | null {
    return this.queue?.stats() ?? null;
  }

  async close(): Promise<void> {
    await this.queue?.close();
  }
}
