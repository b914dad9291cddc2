import type { Logger } from 'pino';
import type { BanEntry, DropCounters } from './xdp.js';

/**
 * What a ban the policy made came to: a new entry, a longer one, one already running longer
 * (kept), refused (one of the gateway's own addresses), a map update that failed, or nothing
 * because no kernel program enforces bans.
 */
export type BanOutcome = 'added' | 'extended' | 'kept' | 'refused' | 'failed' | 'not_enforced';

/** The kernel's side of the bans, per family. */
export interface KernelBans {
  /** Bans in force. */
  active: { ipv4: number; ipv6: number };
  /** What the XDP program dropped since its maps were created. */
  dropped: { ipv4: DropCounters; ipv6: DropCounters };
  /** Where the program is attached, and in which mode (XDP_MODE=auto decides it per interface). */
  interfaces: { name: string; kind: string; mode: string }[];
}

/** The detection that proved a ban, as field names and values (published with it, see src/fleet/). */
export type BanEvidence = Readonly<Record<string, string>>;

/**
 * The bans in force under a sink, for bans decided elsewhere (a fleet's Local API): written
 * quietly (no log line each: a startup stream holds thousands), and never published.
 */
export interface BanTable {
  /** Bans for durationS from now (a longer ban in place is kept); false when the address may never be banned here. */
  put(address: string, durationS: number, rule: string): boolean;
  /** Lifts a ban at once; false when there was none. */
  lift(address: string): boolean;
  /** Every ban in force: its address (as formatAddress writes it) and rule. */
  entries(): { address: string; rule: string }[];
}

/** Where the daemon sends addresses to ban: the XDP maps, or only the log in a dry run. */
export interface BanSink {
  readonly enforced: boolean;
  /** The bans in force, where the sink has any (null in a dry run). */
  readonly table: BanTable | null;
  /** Whether and where bans are enforced, for the startup line. */
  describe(): string;
  /**
   * `address` is the textual address; `durationS` counts from now (a longer ban in place is kept); `rule` is what proved it;
   * `evidence`, what a fleet publishes with it.
   */
  ban(address: string, durationS: number, rule: string, evidence?: BanEvidence): BanOutcome;
  /** The bans in force (none without a kernel program). */
  list(): BanEntry[];
  /** Bans in force and the program's drops; null without a kernel program. */
  kernel(): KernelBans | null;
  /** Deletes expired bans (every CLEANUP_INTERVAL); returns how many. */
  sweep(): number;
  /** Counters for the daemon's periodic stats line. */
  stats(): Record<string, number>;
  close(): void;
}

/** Logs what it would ban: whenever the kernel fast path cannot be used. */
export class DryRunBanSink implements BanSink {
  readonly enforced = false;
  readonly table = null;

  constructor(
    private readonly log: Logger,
    /** Why bans are not enforced in the kernel. */
    private readonly reason = 'no XDP program',
  ) {}

  describe(): string {
    return `NOT enforced in the kernel (${this.reason}): BitTorrent flows are still dropped through the queue and connection marks, but proven peers are not cut off`;
  }

  ban(address: string, durationS: number, rule: string): BanOutcome {
    this.log.info({ address, durationS, rule, enforced: false }, 'ban (dry run: not enforced in the kernel)');
    return 'not_enforced';
  }

  list(): BanEntry[] {
    return [];
  }

  kernel(): null {
    return null;
  }

  sweep(): number {
    return 0;
  }

  stats(): Record<string, number> {
    return {};
  }

  close(): void {}
}
