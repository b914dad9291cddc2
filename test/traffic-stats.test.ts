import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { nfnetlinkQueueDrops, TrafficStats, type KernelCounts } from '../src/daemon/traffic-stats.js';

/** A logger that keeps what it logs. */
function memoryLog() {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (text: string) => void lines.push(JSON.parse(text) as Record<string, unknown>) });
  return { log, lines };
}

const queueStats = (queue: number, verdicts: number, watchdogAccepted = 0) => ({ queue, packets: verdicts + watchdogAccepted, verdicts, watchdogAccepted });

describe('uninspected traffic, by cause', () => {
  it('reads the drop counters of its own queues from /proc/net/netfilter/nfnetlink_queue', () => {
    const text = '    0  12345     0 2 65535     7     3      900  1\n    5  12399     1 2 65535     1     0       10  1\n    9  12400     0 2 65535   100   100       10  1\n';
    expect(nfnetlinkQueueDrops(text, { first: 0, last: 5 })).toEqual({ queueDropped: 8, userDropped: 3 });
  });

  it('splits the queue rules\' hits into inspected, watchdog, restarting and queue full; they add up', () => {
    let kernel: KernelCounts = { ruleHits: 0, queueDropped: 0, userDropped: 0 };
    const { log, lines } = memoryLog();
    const stats = new TrafficStats({ first: 0, last: 1 }, log, () => kernel);
    kernel = { ruleHits: 1000, queueDropped: 0, userDropped: 0 };
    // Queue 1's broker dies at 1000 hits and is back at 1300.
    stats.brokerDown(1);
    kernel = { ruleHits: 1300, queueDropped: 0, userDropped: 0 };
    stats.brokerUp(1);
    kernel = { ruleHits: 2000, queueDropped: 2, userDropped: 0 };
    expect(stats.add(0, queueStats(0, 900, 50))).toBeNull();
    const line = stats.add(1, queueStats(1, 500, 10))!;
    expect(line).toMatchObject({ packets: 1460, verdicts: 1400, seenByRules: 2000, inspected: 1400, uninspectedWatchdog: 60, uninspectedRestarting: 300, kernelDropped: 2, uninspectedQueueFull: 238, uninspected: 598 });
    expect((line.perQueue as unknown[]).length).toBe(2);
    // 598 of 2000 uninspected, the restart window the largest share.
    expect(lines.at(-1)).toMatchObject({ cause: 'uninspectedRestarting', sharePercent: 29.9, packets: 2000, uninspected: 598 });
  });

  it('warns only past the share, per interval, and keeps the kernel drops of a queue unbound since', () => {
    let kernel: KernelCounts = { ruleHits: 10_000, queueDropped: 5, userDropped: 0 };
    const { log, lines } = memoryLog();
    const stats = new TrafficStats({ first: 3, last: 3 }, log, () => kernel);
    stats.add(3, queueStats(3, 9_990));
    expect(lines).toEqual([]); // 5 uninspected of 10000
    // The queue was re-bound (its counters start again), and 1000 more came, 20 past the watchdog.
    kernel = { ruleHits: 11_000, queueDropped: 1, userDropped: 0 };
    const line = stats.add(3, queueStats(3, 10_970, 20))!;
    expect(line).toMatchObject({ queue: 3, kernelDropped: 6, uninspectedWatchdog: 20, uninspectedQueueFull: 4 });
    expect(lines).toEqual([expect.objectContaining({ cause: 'uninspectedWatchdog', packets: 1000, uninspected: 19 })]);
  });
});
