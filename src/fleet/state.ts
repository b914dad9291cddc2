/**
 * What the fleet link reports: a plain object for the stats line, and for metrics and
 * `btwall status`, which read it and nothing else of the fleet code.
 */
export interface FleetState {
  /** The Local API's URL. */
  lapiUrl: string;
  /** Whether the last request to the LAPI got an answer; null before the first. */
  lapiReachable: boolean | null;
  /** When a decisions stream was last read in full or as changes (ms since the epoch); null: never. */
  lastSyncMs: number | null;
  /** Decisions the streams carried that CROWDSEC_ORIGINS selects (ban, scope Ip), deletions not included. */
  decisionsReceived: number;
  /** Of those, the ones refused by the local never-ban lists (LOCAL_CIDRS, ALLOW_CIDRS, BAN_EXEMPT, own addresses...). */
  decisionsRejected: number;
  /** Bans lifted because their decisions were deleted or expired on the LAPI. */
  decisionsLifted: number;
  /** Bans of this gateway's policy acknowledged by the LAPI. */
  published: number;
  /** Bans waiting to be published. */
  queued: number;
  /** Bans never published: the queue (CROWDSEC_QUEUE_CAPACITY) was full. */
  publishDropped: number;
}

/**
 * The outcome of the latest request, by whichever part made it; `onBack` hears when the LAPI
 * answers again after a failure (the feed polls every second: the publisher need not wait out its
 * backoff).
 */
export class Reachability {
  reachable: boolean | null = null;
  private readonly listeners: (() => void)[] = [];

  answered(ok: boolean): void {
    const back = ok && this.reachable === false;
    this.reachable = ok;
    if (back) for (const listener of this.listeners) listener();
  }

  onBack(listener: () => void): void {
    this.listeners.push(listener);
  }
}
