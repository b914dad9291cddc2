/**
 * Whether the packet path is healthy, for systemd's watchdog: WATCHDOG=1 goes out only while it
 * is, so a daemon whose queues are wedged (failing open behind --queue-bypass, or accepting
 * uninspected through the broker's verdict watchdog) is restarted by systemd instead of running on.
 */
import { SAMPLE_INTERVAL_MS } from '../ops/queue-counters.js';

/** One queue's counters as its worker last sampled them (the broker's, across respawns). */
export interface QueueReading {
  queue: number;
  /** When the worker sampled, epoch ms; 0 before its first sample. */
  sampledAtMs: number;
  /** Packets the broker handed to JavaScript. */
  packets: number;
  /** Verdicts JavaScript gave. */
  verdicts: number;
  /** Packets the broker accepted because JavaScript did not answer in time. */
  watchdogAccepted: number;
  /** Packets the kernel has queued to the queue (its id_sequence), or null when it is not bound. */
  kernelQueued: number | null;
}

/** A worker that has not sampled for this long has a wedged event loop (it samples every second). */
export const WEDGED_AFTER_MS = 5 * SAMPLE_INTERVAL_MS;
/**
 * A queue whose worker or broker is being restarted (with backoff) is the daemon's own business
 * for this long; past it, the restarts are not working and systemd should restart the daemon.
 */
export const DOWN_LIMIT_MS = 30_000;

export class PacketPathHealth {
  private readonly previous = new Map<number, QueueReading>();
  /** Each queue's problem between its last two samples, or null. */
  private readonly verdicts = new Map<number, string | null>();
  private readonly downSince = new Map<number, number>();

  /** The queue's worker or broker died; the daemon restarts it. */
  down(queue: number, nowMs: number): void {
    if (!this.downSince.has(queue)) this.downSince.set(queue, nowMs);
  }

  /** The queue is served again: its counters are judged afresh. */
  up(queue: number): void {
    this.downSince.delete(queue);
    this.previous.delete(queue);
    this.verdicts.delete(queue);
  }

  /** What is wrong with the packet path, or null when every queue is answered. */
  check(nowMs: number, readings: readonly QueueReading[]): string | null {
    const problems: string[] = [];
    for (const reading of readings) {
      const { queue } = reading;
      const since = this.downSince.get(queue);
      if (since !== undefined) {
        if (nowMs - since > DOWN_LIMIT_MS) problems.push(`queue ${queue}: down for ${seconds(nowMs - since)}, its restarts are failing`);
        continue;
      }
      if (reading.sampledAtMs !== 0 && nowMs - reading.sampledAtMs > WEDGED_AFTER_MS) {
        problems.push(`queue ${queue}: its worker has not run for ${seconds(nowMs - reading.sampledAtMs)}`);
        continue;
      }
      // Judged between two samples of the worker's (it samples every second, the checks come more
      // often): until the next sample, a queue keeps the verdict of its last.
      const before = this.previous.get(queue);
      if (before === undefined || reading.sampledAtMs !== before.sampledAtMs) {
        this.previous.set(queue, reading);
        this.verdicts.set(queue, before === undefined ? null : between(before, reading));
      }
      const problem = this.verdicts.get(queue);
      if (problem) problems.push(problem);
    }
    return problems.length === 0 ? null : problems.join('; ');
  }
}

/** What went wrong on a queue from one sample of its counters to the next, or null. */
function between(before: QueueReading, after: QueueReading): string | null {
  const { queue } = after;
  const handed = after.packets - before.packets;
  if (handed > 0 && after.verdicts === before.verdicts && after.watchdogAccepted > before.watchdogAccepted) {
    return `queue ${queue}: ${handed} packets handed to it since the last check and none answered (the broker's watchdog accepted them)`;
  }
  // A broker that is bound but stuck takes nothing: the kernel fills the queue, then lets traffic pass uninspected.
  const queued = after.kernelQueued !== null && before.kernelQueued !== null ? after.kernelQueued - before.kernelQueued : 0;
  if (queued > 0 && handed === 0) return `queue ${queue}: the kernel queued ${queued} packets since the last check and its broker took none`;
  return null;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
