/**
 * What the main thread knows of the daemon's work, for the metrics and `btwall status`: each
 * queue's shared counters (written by its worker), the detections and what their bans came to
 * (counted here, from the workers' detection messages), the latest detections, and the
 * uninspected counts of the last stats line. Counting is a few additions per detection; reading
 * (a scrape, a status request) does the work.
 */
import { auditRecord, type AuditRecord } from '../audit/record.js';
import type { BanOutcome } from '../bans/sink.js';
import type { DetectionEvent } from '../pipeline/pipeline.js';
import { ACTIONS, SAMPLED, QueueCounters, type QueueSample, type SampledField } from './queue-counters.js';

/** A detection as the status and the webhook tell it: its detection-log record without the payload. */
export type DetectionSummary = Omit<AuditRecord, 'payload' | 'payload_bytes'>;

export function detectionSummary(event: DetectionEvent, interfaceName: string | null): DetectionSummary {
  const { payload: _payload, payload_bytes: _bytes, ...summary } = auditRecord(event, interfaceName, 0);
  return summary;
}

/**
 * What became of the ban question of each detection: the sink's word when the policy banned
 * (BanOutcome), `monitor_only` when it would have, `rate_limited` when BAN_RATE withheld a proven
 * ban, `skipped_by_policy` when the evidence proves no peer; and `expired`, bans the sweep removed.
 */
export const BAN_OUTCOMES = ['added', 'extended', 'kept', 'refused', 'failed', 'not_enforced', 'monitor_only', 'rate_limited', 'skipped_by_policy', 'expired'] as const;
export type BanDecisionOutcome = (typeof BAN_OUTCOMES)[number];

/** How many detections `btwall status` shows. */
export const RECENT_DETECTIONS = 20;

/** The stats line's counts of packets the queue rules saw that passed uninspected (TrafficStats). */
export interface UninspectedCounts {
  /** The kernel passed them (queue full; FAIL_OPEN). */
  queueFull: number;
  /** Hits while a broker was dead (--queue-bypass). */
  restarting: number;
  /** The kernel dropped them (0 while FAIL_OPEN is on). */
  kernelDropped: number;
}

export class Telemetry {
  readonly startedMs = Date.now();
  readonly queues = new Map<number, QueueCounters>();
  /** Detections by rule and strength. */
  readonly detections = new Map<string, { rule: string; strength: string; count: number }>();
  readonly bans = Object.fromEntries(BAN_OUTCOMES.map((outcome) => [outcome, 0])) as Record<BanDecisionOutcome, number>;
  uninspected: UninspectedCounts = { queueFull: 0, restarting: 0, kernelDropped: 0 };
  /** The latest detections, oldest first, at most RECENT_DETECTIONS. */
  private readonly recent: DetectionSummary[] = [];

  constructor(queues: { first: number; last: number }) {
    for (let queue = queues.first; queue <= queues.last; queue++) this.queues.set(queue, new QueueCounters());
  }

  /** One detection; `outcome` is the ban sink's when the policy's ban was carried out, else null. */
  detection(summary: DetectionSummary, event: DetectionEvent, outcome: BanOutcome | null): void {
    const key = `${event.rule}\0${event.strength}`;
    const counted = this.detections.get(key);
    if (counted === undefined) this.detections.set(key, { rule: event.rule, strength: event.strength, count: 1 });
    else counted.count++;
    const { decision } = event;
    this.bans[outcome ?? (decision.ban !== null ? 'monitor_only' : decision.rateLimited ? 'rate_limited' : 'skipped_by_policy')]++;
    this.recent.push(summary);
    if (this.recent.length > RECENT_DETECTIONS) this.recent.shift();
  }

  expired(bans: number): void {
    this.bans.expired += bans;
  }

  /** The fields of a stats line (TrafficStats) this keeps. */
  statsLine(line: Record<string, unknown>): void {
    this.uninspected = { queueFull: Number(line.uninspectedQueueFull), restarting: Number(line.uninspectedRestarting), kernelDropped: Number(line.kernelDropped) };
  }

  /** Newest first. */
  recentDetections(): DetectionSummary[] {
    return [...this.recent].reverse();
  }

  /** Every queue's counters as read now, by queue number. */
  read(): Map<number, QueueSample> {
    return new Map([...this.queues].map(([queue, counters]) => [queue, counters.read()]));
  }

  /** The queues' sampled counters added up. */
  static totals(samples: Map<number, QueueSample>): Record<SampledField, number> & { actions: number[] } {
    const totals = { ...(Object.fromEntries(SAMPLED.map((name) => [name, 0])) as Record<SampledField, number>), actions: ACTIONS.map(() => 0) };
    for (const sample of samples.values()) {
      for (const name of SAMPLED) totals[name] += sample.sampled[name];
      sample.actions.forEach((count, i) => (totals.actions[i] += count));
    }
    return totals;
  }
}
