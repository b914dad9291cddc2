/**
 * What the queue rules saw, and what of it passed without inspection, by cause: the kernel's own
 * counters (the NFQUEUE rules' packet counts, /proc/net/netfilter/nfnetlink_queue) against the
 * brokers' (verdicts, watchdog accepts). The stats line carries them; a warning names the main
 * cause when the share of uninspected packets in an interval passes UNINSPECTED_WARN_SHARE.
 *
 *   seenByRules = inspected + uninspectedWatchdog + uninspectedRestarting + uninspectedQueueFull
 *                 + kernelDropped (+ the few packets in flight at the moment of reading)
 *
 * - inspected: packets JavaScript decided in time (the brokers' verdicts);
 * - uninspectedWatchdog: accepted by a broker because JavaScript was late (VERDICT_TIMEOUT_MS);
 * - uninspectedRestarting: hits of the queue rules while a broker was dead and its queue unbound
 *   (--queue-bypass passed them); with several queues, the other queues' packets in that window too;
 * - uninspectedQueueFull: the rest, which the kernel passed itself (FAIL_OPEN): the queue held
 *   QUEUE_MAXLEN packets, or the broker's socket buffer was full. The kernel counts these nowhere
 *   but in the rule's hits, so they are what remains;
 * - kernelDropped: queue_dropped + user_dropped (the kernel dropped them; 0 while FAIL_OPEN is on).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { CHAIN } from '../firewall/rules.js';

/** Warn when more than this share of an interval's queued packets passed uninspected... */
export const UNINSPECTED_WARN_SHARE = 0.01;
/** ...and the interval saw at least this many (a handful of packets is no trend). */
const UNINSPECTED_WARN_MIN_PACKETS = 100;

export interface KernelCounts {
  /** Packets the NFQUEUE rules of BTWALL matched, both families. */
  ruleHits: number;
  /** /proc/net/netfilter/nfnetlink_queue, summed over btwall's queues (this network namespace). */
  queueDropped: number;
  userDropped: number;
}

/** The NFQUEUE rules' packet counters, from `iptables -L BTWALL -v -x -n` of both families. */
export function nfqueueRuleHits(): number {
  let hits = 0;
  for (const program of ['iptables', 'ip6tables']) {
    const listed = spawnSync(program, ['-w', '-L', CHAIN, '-v', '-x', '-n'], { encoding: 'utf8' });
    if (listed.status !== 0) continue;
    for (const line of listed.stdout.split('\n')) if (/\sNFQUEUE\s/.test(line)) hits += Number(line.trim().split(/\s+/)[0]) || 0;
  }
  return hits;
}

/** Per queue: number, portid, waiting, copy mode, copy range, queue_dropped, user_dropped, id_sequence, 1. */
export function nfnetlinkQueueDrops(text: string, queues: { first: number; last: number }): { queueDropped: number; userDropped: number } {
  let queueDropped = 0;
  let userDropped = 0;
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/).map(Number);
    if (fields.length < 8 || !(fields[0] >= queues.first && fields[0] <= queues.last)) continue;
    queueDropped += fields[5];
    userDropped += fields[6];
  }
  return { queueDropped, userDropped };
}

/** Each bound queue's id_sequence: the packets the kernel has queued to it so far. */
export function nfnetlinkQueueSequences(text: string): Map<number, number> {
  const sequences = new Map<number, number>();
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/).map(Number);
    if (fields.length >= 8) sequences.set(fields[0], fields[7]);
  }
  return sequences;
}

/** /proc/net/netfilter/nfnetlink_queue of this network namespace; empty before a queue is bound. */
export function readNfnetlinkQueue(): string {
  try {
    return readFileSync('/proc/net/netfilter/nfnetlink_queue', 'utf8');
  } catch {
    return '';
  }
}

export function readKernelCounts(queues: { first: number; last: number }): KernelCounts {
  return { ruleHits: nfqueueRuleHits(), ...nfnetlinkQueueDrops(readNfnetlinkQueue(), queues) };
}

type Counters = Record<string, number>;

const CAUSES = [
  ['uninspectedQueueFull', 'the queue was full (kernel bypass): raise QUEUE_MAXLEN, or spread the load over more queues (a QUEUE_NUM range)'],
  ['uninspectedWatchdog', 'JavaScript answered too late (verdict watchdog): the daemon is overloaded or starved of CPU; raise VERDICT_TIMEOUT_MS or add queues'],
  ['uninspectedRestarting', 'a queue broker or worker was dead (fail-open while it was restarted)'],
] as const;

export class TrafficStats {
  /** This round's counters by queue: a stats line is made once every queue has answered. */
  private readonly round = new Map<number, Counters>();
  private readonly queueCount: number;
  /** Rule hits while some broker was dead, and the hits when the current outage began. */
  private restarting = 0;
  private outageStart: number | null = null;
  private readonly down = new Set<number>();
  /** The kernel's drop counters vanish with a queue that is unbound: what they had counted. */
  private lastDrops = { queueDropped: 0, userDropped: 0 };
  private pastDrops = { queueDropped: 0, userDropped: 0 };
  private previous = { seen: 0, uninspected: 0 };

  constructor(
    private readonly queues: { first: number; last: number },
    private readonly log: Logger,
    private readonly readKernel: (queues: { first: number; last: number }) => KernelCounts = readKernelCounts,
  ) {
    this.queueCount = queues.last - queues.first + 1;
  }

  brokerDown(queue: number): void {
    if (this.down.size === 0) this.outageStart = this.readKernel(this.queues).ruleHits;
    this.down.add(queue);
  }

  brokerUp(queue: number): void {
    if (!this.down.delete(queue) || this.down.size > 0 || this.outageStart === null) return;
    this.restarting += this.readKernel(this.queues).ruleHits - this.outageStart;
    this.outageStart = null;
  }

  /** One queue's counters; returns the stats line's fields once every queue has answered this round. */
  add(queue: number, stats: Counters): Record<string, unknown> | null {
    this.round.set(queue, stats);
    if (this.round.size < this.queueCount) return null;
    const perQueue = [...this.round.values()].sort((a, b) => a.queue - b.queue);
    this.round.clear();
    return this.line(perQueue);
  }

  private line(perQueue: Counters[]): Record<string, unknown> {
    const totals: Counters = {};
    for (const stats of perQueue) for (const [key, value] of Object.entries(stats)) if (key !== 'queue') totals[key] = (totals[key] ?? 0) + value;
    const kernel = this.readKernel(this.queues);
    const inspected = totals.verdicts ?? 0;
    const watchdog = totals.watchdogAccepted ?? 0;
    const restarting = this.restarting + (this.outageStart === null ? 0 : kernel.ruleHits - this.outageStart);
    const kernelDropped = this.kernelDropped(kernel);
    const queueFull = Math.max(0, kernel.ruleHits - inspected - watchdog - restarting - kernelDropped);
    const counts = { uninspectedQueueFull: queueFull, uninspectedWatchdog: watchdog, uninspectedRestarting: restarting };
    const uninspected = queueFull + watchdog + restarting;
    this.warn(kernel.ruleHits, uninspected, counts);
    return {
      ...(perQueue.length === 1 ? { queue: perQueue[0].queue } : {}),
      ...totals,
      seenByRules: kernel.ruleHits,
      inspected,
      uninspected,
      ...counts,
      kernelDropped,
      ...(perQueue.length > 1 ? { perQueue } : {}),
    };
  }

  private kernelDropped(kernel: KernelCounts): number {
    // A respawned broker's queue starts from 0: keep what the old one had counted.
    for (const key of ['queueDropped', 'userDropped'] as const) {
      if (kernel[key] < this.lastDrops[key]) this.pastDrops[key] += this.lastDrops[key];
      this.lastDrops[key] = kernel[key];
    }
    return this.pastDrops.queueDropped + this.pastDrops.userDropped + kernel.queueDropped + kernel.userDropped;
  }

  /** A warning naming the main cause when the interval's uninspected share passes the threshold. */
  private warn(seen: number, uninspected: number, counts: Record<(typeof CAUSES)[number][0], number>): void {
    const seenNow = seen - this.previous.seen;
    const uninspectedNow = uninspected - this.previous.uninspected;
    const before = this.previousCounts;
    this.previous = { seen, uninspected };
    this.previousCounts = { ...counts };
    if (seenNow < UNINSPECTED_WARN_MIN_PACKETS || uninspectedNow <= seenNow * UNINSPECTED_WARN_SHARE) return;
    const [cause, advice] = CAUSES.reduce((best, c) => (counts[c[0]] - before[c[0]] > counts[best[0]] - before[best[0]] ? c : best));
    this.log.warn(
      {
        sharePercent: Math.round((1000 * uninspectedNow) / seenNow) / 10,
        packets: seenNow,
        uninspected: uninspectedNow,
        cause,
        [cause]: counts[cause] - before[cause],
      },
      `uninspected traffic: ${advice}`,
    );
  }

  private previousCounts: Record<(typeof CAUSES)[number][0], number> = { uninspectedQueueFull: 0, uninspectedWatchdog: 0, uninspectedRestarting: 0 };
}
