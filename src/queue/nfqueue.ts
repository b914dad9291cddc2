import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** The addon's exports (native/addon.cc). */
interface Layout {
  slots: number;
  batch: number;
  slotsOffset: number;
  slotBytes: number;
  slotCount: number;
  slotPackets: number;
  slotVerdicts: number;
  slotMarks: number;
  slotConnmarks: number;
  packetBytes: number;
  packetOffset: number;
  packetLength: number;
  packetOrigLength: number;
  packetIndev: number;
  packetOutdev: number;
  countersOffset: number;
  counterPackets: number;
  counterBatches: number;
  counterVerdicts: number;
  counterWatchdogAccepted: number;
  counterEnobufs: number;
  counterSendErrors: number;
  counterAbandoned: number;
  countersBytes: number;
  drop: number;
  accept: number;
  repeat: number;
}

interface QueueChannel {
  brokerFds(): [number, number];
  releaseBrokerFds(): void;
  memory(): ArrayBuffer;
  start(onReadable: () => void): void;
  /** A slot index, -1 when nothing waits, -2 when the broker is gone, -3 when the broker is bound. */
  next(): number;
  answer(slot: number): boolean;
  close(): void;
}

const nativeDir = fileURLToPath(new URL('../../native/build/', import.meta.url));
const addon = createRequire(import.meta.url)(`${nativeDir}btwall.node`) as {
  QueueChannel: new (copyRange: number) => QueueChannel;
  layout: Layout;
};
const layout = addon.layout;
const BROKER = `${nativeDir}btwall-queue`;

/** Most packets the broker hands over in one batch. */
export const BATCH_MAX_PACKETS = layout.batch;
export const VERDICT_DROP = layout.drop;
export const VERDICT_ACCEPT = layout.accept;
/** Accept into the hook again: the packet passes the chain once more with the verdict's mark. */
export const VERDICT_REPEAT = layout.repeat;

export interface QueueOptions {
  queue: number;
  /** Bytes of each packet copied to us (the rest still goes on the wire). */
  copyRange: number;
  /** Packets the kernel holds for us before it fails open. */
  maxLen: number;
  /** Netlink socket receive buffer, bytes. */
  receiveBuffer: number;
  /** A batch not answered within this is accepted by the broker. */
  verdictTimeoutMs: number;
  /** Under load, a small batch waits this long for more packets before it is handed over (0: never). */
  coalesceUs: number;
  /** Let the kernel accept instead of drop when the queue is full. */
  failOpen: boolean;
  /** Take GSO packets whole instead of having the kernel segment them first. */
  gso: boolean;
  /** The mark bits verdicts may set, in the packet mark and the connection mark alike. */
  connmarkMask: number;
}

export class QueueOptionsError extends Error {}

function check(ok: boolean, message: string): void {
  if (!ok) throw new QueueOptionsError(message);
}

function validate(o: QueueOptions): void {
  const whole = (n: number, min: number, max: number) => Number.isInteger(n) && n >= min && n <= max;
  check(whole(o.queue, 0, 65535), `queue must be a whole number from 0 to 65535, got ${o.queue}`);
  check(whole(o.copyRange, 64, 65535), `copyRange must be from 64 to 65535 bytes, got ${o.copyRange}`);
  check(whole(o.maxLen, 1, 1 << 20), `maxLen must be from 1 to ${1 << 20} packets, got ${o.maxLen}`);
  check(whole(o.receiveBuffer, 65536, 1 << 30), `receiveBuffer must be from 64 KiB to 1 GiB, got ${o.receiveBuffer}`);
  check(whole(o.verdictTimeoutMs, 1, 600_000), `verdictTimeoutMs must be from 1 to 600000, got ${o.verdictTimeoutMs}`);
  check(whole(o.coalesceUs, 0, 2000), `coalesceUs must be from 0 to 2000 µs, got ${o.coalesceUs}`);
  check(whole(o.connmarkMask, 1, 0xffffffff), `connmarkMask must be a non-zero 32-bit mask, got ${o.connmarkMask}`);
}

/**
 * One batch of queued packets, as the broker left them in shared memory. One instance per slot,
 * reused: read packets and write verdicts during the handler call only. Packets are network-layer
 * (IPv4 or IPv6, no link header); their bytes are data[offset(i), offset(i) + length(i)).
 */
export class PacketBatch {
  count = 0;
  private readonly words: Uint32Array;
  private readonly wordsPerPacket = layout.packetBytes / 4;
  private readonly verdicts: Uint8Array;
  private readonly marks: Uint32Array;
  private readonly connmarks: Uint32Array;

  constructor(
    readonly data: Buffer,
    private readonly slotOffset: number,
  ) {
    const buffer = data.buffer;
    this.words = new Uint32Array(buffer, slotOffset + layout.slotPackets, layout.batch * this.wordsPerPacket);
    this.verdicts = new Uint8Array(buffer, slotOffset + layout.slotVerdicts, layout.batch);
    this.marks = new Uint32Array(buffer, slotOffset + layout.slotMarks, layout.batch);
    this.connmarks = new Uint32Array(buffer, slotOffset + layout.slotConnmarks, layout.batch);
  }

  /** Reads the packet count the broker wrote (call before the handler). */
  load(): void {
    this.count = this.data.readUInt32LE(this.slotOffset + layout.slotCount);
  }

  offset(i: number): number {
    return this.words[i * this.wordsPerPacket + layout.packetOffset / 4];
  }

  length(i: number): number {
    return this.words[i * this.wordsPerPacket + layout.packetLength / 4];
  }

  /** Interface index the packet came in on, or went out of for locally generated packets. */
  ifindex(i: number): number {
    const indev = this.inputInterface(i);
    return indev !== 0 ? indev : this.words[i * this.wordsPerPacket + layout.packetOutdev / 4];
  }

  /** Interface index the packet came in on; 0 for a packet this host sent. */
  inputInterface(i: number): number {
    return this.words[i * this.wordsPerPacket + layout.packetIndev / 4];
  }

  /**
   * Every packet is accepted unless this says otherwise. A mark changes only the mask's bits of the
   * packet mark; a connmark, the connection mark's (applied only by kernels with ctnetlink glue).
   */
  setVerdict(i: number, verdict: number, connmark: number, mark = 0): void {
    this.verdicts[i] = verdict;
    this.connmarks[i] = connmark;
    this.marks[i] = mark;
  }
}

export interface QueueStats {
  /** Packets handed to JavaScript, in batches. */
  packets: number;
  batches: number;
  /** Packets JavaScript decided in time. */
  verdicts: number;
  /** Packets the broker accepted because JavaScript was late or not listening. */
  watchdogAccepted: number;
  /** Answers that came after the watchdog had accepted the batch. */
  lateAnswers: number;
  /**
   * Batches the watchdog accepted while the handler held them: the broker refills such a slot only
   * after the late answer, so a handler never reads another batch's packets.
   */
  abandoned: number;
  /** Times the kernel could not deliver to us (it failed open or dropped meanwhile). */
  enobufs: number;
  /** Verdict sends the kernel refused; their packets were accepted instead. */
  sendErrors: number;
}

/**
 * One NFQUEUE, served through btwall-queue (native/btwall-queue.c), which owns the kernel socket,
 * so a stopped JavaScript process cannot black-hole traffic. `handler` is called once per batch,
 * on the event loop, and must set every verdict before it returns.
 */
export class NfQueue {
  private lateAnswers = 0;
  private closed = false;
  private readonly counters: BigUint64Array;

  private constructor(
    private readonly broker: ChildProcess,
    memory: ArrayBuffer,
  ) {
    this.counters = new BigUint64Array(memory, layout.countersOffset, layout.countersBytes / 8);
  }

  /** Binds the queue; resolves once the kernel accepted the binding, rejects with the broker's words. */
  static open(options: QueueOptions, handler: (batch: PacketBatch) => void, onBrokerExit: (reason: string) => void): Promise<NfQueue> {
    validate(options);
    const channel = new addon.QueueChannel(options.copyRange);
    const memory = channel.memory();
    const data = Buffer.from(memory);
    const batches = Array.from({ length: layout.slots }, (_, slot) => new PacketBatch(data, layout.slotsOffset + slot * layout.slotBytes));
    const [brokerSocket, brokerMemory] = channel.brokerFds();
    const flags = `${options.failOpen ? 'o' : ''}${options.gso ? 'g' : ''}` || '-';
    const args = [options.queue, options.copyRange, options.maxLen, options.receiveBuffer, options.verdictTimeoutMs, flags, options.connmarkMask, options.coalesceUs];
    const broker = spawn(BROKER, args.map(String), { stdio: ['ignore', 'ignore', 'pipe', brokerSocket, brokerMemory] });
    channel.releaseBrokerFds();
    let stderr = '';
    broker.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));

    return new Promise((resolve, reject) => {
      let queue: NfQueue | null = null;
      const exited = (code: number | null, signal: NodeJS.Signals | null) => {
        channel.close();
        const reason = stderr.trim() || `btwall-queue exited (${signal ?? code})`;
        if (queue === null) reject(new Error(reason));
        else if (!queue.closed) onBrokerExit(reason);
      };
      broker.on('exit', exited);
      broker.on('error', (error) => reject(error));
      channel.start(() => {
        for (;;) {
          const slot = channel.next();
          if (slot === -1 || slot === -2) return; // -2: the exit handler reports it
          if (slot === -3) {
            queue = new NfQueue(broker, memory);
            resolve(queue);
            continue;
          }
          const batch = batches[slot];
          batch.load();
          handler(batch);
          if (!channel.answer(slot) && queue !== null) queue.lateAnswers++;
        }
      });
    });
  }

  stats(): QueueStats {
    const c = this.counters;
    const at = (offset: number) => Number(c[offset / 8]);
    return {
      packets: at(layout.counterPackets),
      batches: at(layout.counterBatches),
      verdicts: at(layout.counterVerdicts),
      watchdogAccepted: at(layout.counterWatchdogAccepted),
      lateAnswers: this.lateAnswers,
      abandoned: at(layout.counterAbandoned),
      enobufs: at(layout.counterEnobufs),
      sendErrors: at(layout.counterSendErrors),
    };
  }

  /** Unbinds: the broker accepts what still waits and exits. */
  close(): Promise<void> {
    this.closed = true;
    return new Promise((resolve) => {
      if (this.broker.exitCode !== null || this.broker.signalCode !== null) return resolve();
      this.broker.once('exit', () => resolve());
      this.broker.kill('SIGTERM');
    });
  }
}
