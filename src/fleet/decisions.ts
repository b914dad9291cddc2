/**
 * Enforcing a CrowdSec Local API's decisions as a bouncer: the decisions stream, in full at start
 * and after any error (startup=true), then its changes every CROWDSEC_POLL_INTERVAL, into the ban
 * table with each decision's remaining duration. Decisions are written straight into the table,
 * never through the publishing sink, so nothing that comes from the LAPI goes back to it.
 *
 * A full stream is the whole truth: after it the LAPI's bans are in the table, and entries that
 * came from the LAPI earlier but are no longer in it are lifted. Bans of this gateway's own policy
 * that the LAPI has not heard of yet (made while it was down, still queued) are kept.
 */
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { addressBytes } from '../config/cidr.js';
import { BTWALL_ORIGIN } from '../config/config.js';
import { formatAddress } from '../flow/address.js';
import type { ExemptList } from '../policy/policy.js';
import type { BanTable } from '../bans/sink.js';
import { parseGoDuration, type DecisionStream, type LapiClient, type LapiDecision } from './lapi.js';
import { SCENARIO_PREFIX } from './publisher.js';
import type { Reachability } from './state.js';

/** The rule a ban from the LAPI carries in the table: how a resync tells them from local ones. */
export const LAPI_RULE_PREFIX = 'lapi:';

/** Refusals logged one by one in a full read; the read's summary line counts them all. */
const REFUSALS_NAMED = 10;

export interface DecisionFeedOptions {
  apiKey: string;
  pollIntervalMs: number;
  origins: 'all' | string[];
  /** Most addresses followed at once (the table's own capacity): decisions past it are not enforced, and counted. */
  capacity: number;
}

/** Whether CROWDSEC_ORIGINS takes this decision (`btwall`: a btwall gateway's scenario, whatever its origin field). */
export function originSelected(origins: 'all' | string[], d: Pick<LapiDecision, 'origin' | 'scenario'>): boolean {
  if (origins === 'all') return true;
  return origins.includes(d.origin) || (origins.includes(BTWALL_ORIGIN) && d.scenario.startsWith(SCENARIO_PREFIX));
}

/** The table rule for a decision: lapi:<btwall rule> for btwall's scenarios, else lapi:<origin>. */
export function lapiRule(d: Pick<LapiDecision, 'origin' | 'scenario'>): string {
  const what = d.scenario.startsWith(SCENARIO_PREFIX) ? d.scenario.slice(SCENARIO_PREFIX.length) : d.origin;
  return `${LAPI_RULE_PREFIX}${what}`;
}

/** A decision's value as the table writes addresses (the LAPI keeps what it was given: 2001:DB8::0:1); null when it is not one. */
export function canonicalAddress(value: string): { family: 4 | 6; bytes: Uint8Array; text: string } | null {
  const family = isIP(value);
  if (family === 0) return null;
  const bytes = addressBytes(family as 4 | 6, value);
  return { family: family as 4 | 6, bytes, text: formatAddress(family as 4 | 6, bytes) };
}

/** Which never-ban list holds the address, or null when it may be banned here. */
export function neverBanReason(lists: readonly ExemptList[], family: 4 | 6, bytes: Uint8Array): string | null {
  for (const list of lists) if (list.cidrs.contains(family, bytes, 0)) return list.label;
  return null;
}

export class DecisionFeed {
  received = 0;
  rejected = 0;
  lifted = 0;
  /** Decisions not followed because `capacity` addresses already were. */
  overflow = 0;
  lastSyncMs: number | null = null;
  /** The ids of the decisions in force per address: an address is lifted when its last one goes. */
  private readonly active = new Map<string, Set<number>>();
  private startup = true;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private failing = false;

  constructor(
    private readonly client: LapiClient,
    private readonly options: DecisionFeedOptions,
    private readonly table: BanTable,
    /** The never-ban lists now (the gateway's addresses change). */
    private readonly neverBan: () => readonly ExemptList[],
    /** Addresses of local bans not yet published: a resync keeps them. */
    private readonly pending: (address: string) => boolean,
    private readonly reachability: Reachability,
    private readonly log: Logger,
  ) {}

  /** Addresses with a decision in force. */
  get followed(): number {
    return this.active.size;
  }

  start(): void {
    void this.poll();
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
  }

  /** One stream call, then the next after the poll interval (after the call, so calls never pile up). */
  private async poll(): Promise<void> {
    if (this.closed) return;
    const full = this.startup;
    try {
      const stream = await this.client.stream(this.options.apiKey, full);
      if (this.closed) return;
      this.apply(stream, full);
      this.startup = false;
      this.lastSyncMs = Date.now();
      this.reachability.answered(true);
      if (this.failing) this.log.info({ followed: this.active.size }, 'CrowdSec decisions stream read again; the table matches the Local API');
      this.failing = false;
    } catch (error) {
      this.startup = true;
      this.reachability.answered(false);
      if (!this.failing) this.log.warn({ err: error instanceof Error ? error.message : String(error) }, 'cannot read the CrowdSec decisions stream; bans in place stay, a full resync follows when it answers');
      this.failing = true;
    }
    if (this.closed) return;
    this.timer = setTimeout(() => void this.poll(), this.options.pollIntervalMs);
    this.timer.unref();
  }

  /** A stream's decisions into the table; `full`: it lists every decision in force. */
  apply(stream: DecisionStream, full: boolean): void {
    const before = full ? this.knownAddresses() : null;
    if (full) this.active.clear();
    const lists = this.neverBan();
    let rejectedNow = 0;
    for (const d of stream.new ?? []) {
      if (!this.enforceable(d)) continue;
      this.received++;
      const address = canonicalAddress(d.value);
      const reason = address === null ? 'not an IP address' : neverBanReason(lists, address.family, address.bytes);
      if (address === null || reason !== null) {
        this.rejected++;
        rejectedNow++;
        // A full read of a large list could refuse thousands: the first few are named, the rest counted.
        if (!full || rejectedNow <= REFUSALS_NAMED) this.log.warn({ address: d.value, origin: d.origin, scenario: d.scenario, reason }, 'CrowdSec decision refused: the address is never banned here');
        continue;
      }
      const remainingMs = parseGoDuration(d.duration);
      if (!(remainingMs > 0)) continue;
      let ids = this.active.get(address.text);
      if (ids === undefined && this.active.size >= this.options.capacity) {
        this.overflow++;
        continue;
      }
      if (!this.table.put(address.text, Math.ceil(remainingMs / 1000), lapiRule(d))) {
        // The table's own refusal (loopback, link-local, this host's addresses): counted the same.
        this.rejected++;
        rejectedNow++;
        continue;
      }
      if (ids === undefined) this.active.set(address.text, (ids = new Set()));
      ids.add(d.id);
    }
    if (full) {
      for (const address of before!) if (!this.active.has(address) && !this.pending(address)) this.lift(address);
      this.log.info({ decisions: stream.new?.length ?? 0, followed: this.active.size, rejected: rejectedNow }, 'CrowdSec decisions stream read in full');
      return;
    }
    for (const d of stream.deleted ?? []) {
      const address = canonicalAddress(d.value)?.text;
      const ids = address === undefined ? undefined : this.active.get(address);
      if (ids === undefined || !ids.delete(d.id)) continue;
      if (ids.size === 0) {
        this.active.delete(address!);
        this.lift(address!);
      }
    }
  }

  /** Bans only, on single addresses, from the origins the operator chose. */
  private enforceable(d: LapiDecision): boolean {
    return d.type === 'ban' && d.scope.toLowerCase() === 'ip' && originSelected(this.options.origins, d);
  }

  /** What came from the LAPI so far: addresses followed, and table entries with a LAPI rule (from before a restart). */
  private knownAddresses(): Set<string> {
    const known = new Set(this.active.keys());
    for (const entry of this.table.entries()) if (entry.rule.startsWith(LAPI_RULE_PREFIX)) known.add(entry.address);
    return known;
  }

  private lift(address: string): void {
    if (this.table.lift(address)) this.lifted++;
  }
}
