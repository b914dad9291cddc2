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
  private readonly downSince = new Map<number, number>();

  /** The queue's worker or broker died; the daemon restarts it. */
  down(queue: number, nowMs: number): void {
    if (!this.downSince.has(queue)) this.downSince.set(queue, nowMs);
  }

  /** The queue is served again: its counters are judged afresh. */
  up(queue: number): void {
    this.downSince.delete(queue);
    this.previous.delete(queue);
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
      const before = this.previous.get(queue);
      this.previous.set(queue, reading);
      if (before === undefined || reading.sampledAtMs === before.sampledAtMs) continue;
      const handed = reading.packets - before.packets;
      if (handed > 0 && reading.verdicts === before.verdicts && reading.watchdogAccepted > before.watchdogAccepted) {
        problems.push(`queue ${queue}: ${handed} packets handed to it since the last check and none answered (the broker's watchdog accepted them)`);
      }
    }
    return problems.length === 0 ? null : problems.join('; ');
  }
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
