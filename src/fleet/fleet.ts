/**
 * Sharing bans across gateways through a CrowdSec Local API (CROWDSEC_*): the policy's bans are
 * published as a machine, the LAPI's decisions enforced as a bouncer, either or both. The engine
 * sits behind FleetLink, so another one (a Redis or NATS stream) would be a second implementation
 * of it; the daemon only composes the sink and reads the state.
 */
import type { Logger } from 'pino';
import type { CrowdsecConfig } from '../config/config.js';
import type { ExemptList } from '../policy/policy.js';
import type { BanEvidence, BanOutcome, BanSink, BanTable, KernelBans } from '../bans/sink.js';
import type { BanEntry } from '../bans/xdp.js';
import { DecisionFeed } from './decisions.js';
import { LapiClient } from './lapi.js';
import { BanPublisher } from './publisher.js';
import { Reachability, type FleetState } from './state.js';

/** A fleet engine: takes this gateway's bans, feeds the others' into the table, reports its state. */
export interface FleetLink {
  /** Hands over one ban the policy made (and the local sink placed); returns at once. */
  publish(address: string, durationS: number, rule: string, evidence: BanEvidence): void;
  /** For the startup line. */
  describe(): string;
  /** The never-ban lists changed (the gateway's addresses, at every sweep). */
  setNeverBan(lists: readonly ExemptList[]): void;
  state(): FleetState;
  close(): void;
}

export class CrowdsecFleet implements FleetLink {
  private readonly reachability = new Reachability();
  private readonly publisher: BanPublisher | null;
  private readonly feed: DecisionFeed | null;
  private neverBan: readonly ExemptList[];

  /**
   * `table` null (no kernel bans): decisions are not read, said once. `capacity`: most addresses
   * followed from the LAPI (both ban maps' entries).
   */
  constructor(
    private readonly config: CrowdsecConfig,
    table: BanTable | null,
    neverBan: readonly ExemptList[],
    capacity: number,
    log: Logger,
  ) {
    this.neverBan = neverBan;
    const client = new LapiClient(config.lapiUrl);
    this.publisher = config.machine === null ? null : new BanPublisher(client, config.machine, config.queueCapacity, this.reachability, log);
    if (config.apiKey !== null && table === null) log.warn({ lapiUrl: config.lapiUrl }, 'CrowdSec decisions are not enforced: there is no XDP ban table (XDP_MODE=off)');
    this.feed =
      config.apiKey === null || table === null
        ? null
        : new DecisionFeed(
            client,
            { apiKey: config.apiKey, pollIntervalMs: config.pollIntervalMs, origins: config.origins, capacity },
            table,
            () => this.neverBan,
            (address) => this.publisher?.isPending(address) ?? false,
            this.reachability,
            log,
          );
    this.feed?.start();
  }

  publish(address: string, durationS: number, rule: string, evidence: BanEvidence): void {
    this.publisher?.publish({ address, durationS, rule, evidence, timeMs: Date.now() });
  }

  describe(): string {
    const parts = [];
    if (this.publisher !== null) parts.push(`publishing bans as machine ${this.config.machine!.id}`);
    if (this.feed !== null) parts.push(`enforcing decisions of ${this.config.origins === 'all' ? 'every origin' : `origins ${this.config.origins.join(', ')}`}`);
    return `shared through the CrowdSec Local API at ${this.config.lapiUrl}${parts.length > 0 ? ` (${parts.join('; ')})` : ''}`;
  }

  setNeverBan(lists: readonly ExemptList[]): void {
    this.neverBan = lists;
  }

  state(): FleetState {
    return {
      lapiUrl: this.config.lapiUrl,
      lapiReachable: this.reachability.reachable,
      lastSyncMs: this.feed?.lastSyncMs ?? null,
      decisionsReceived: this.feed?.received ?? 0,
      decisionsRejected: this.feed?.rejected ?? 0,
      decisionsLifted: this.feed?.lifted ?? 0,
      published: this.publisher?.published ?? 0,
      queued: this.publisher?.queued ?? 0,
      publishDropped: this.publisher?.dropped ?? 0,
    };
  }

  close(): void {
    this.feed?.close();
    this.publisher?.close();
  }
}

/**
 * The daemon's sink with a fleet: every ban goes into the local sink first (the XDP maps: local
 * enforcement never waits for the network), then, if placed, to the fleet. Decisions from the
 * fleet go into the table directly, never through here: nothing received is published back.
 */
export class FleetBanSink implements BanSink {
  constructor(
    private readonly local: BanSink,
    readonly fleet: FleetLink,
  ) {}

  get enforced(): boolean {
    return this.local.enforced;
  }

  get table(): BanTable | null {
    return this.local.table;
  }

  describe(): string {
    return `${this.local.describe()}; ${this.fleet.describe()}`;
  }

  ban(address: string, durationS: number, rule: string, evidence: BanEvidence = {}): BanOutcome {
    const outcome = this.local.ban(address, durationS, rule, evidence);
    // Published whenever the local sink did not refuse it (a dry run publishes what it would ban).
    if (outcome !== 'refused' && outcome !== 'failed') this.fleet.publish(address, durationS, rule, evidence);
    return outcome;
  }

  list(): BanEntry[] {
    return this.local.list();
  }

  kernel(): KernelBans | null {
    return this.local.kernel();
  }

  sweep(): number {
    return this.local.sweep();
  }

  stats(): Record<string, number> {
    const { lapiUrl: _url, lapiReachable, lastSyncMs, ...counts } = this.fleet.state();
    const prefixed = Object.fromEntries(Object.entries(counts).map(([name, value]) => [`fleet${name[0].toUpperCase()}${name.slice(1)}`, value]));
    return { ...this.local.stats(), ...prefixed, fleetLapiReachable: lapiReachable === true ? 1 : 0, fleetLastSyncAgeS: lastSyncMs === null ? -1 : Math.round((Date.now() - lastSyncMs) / 1000) };
  }

  close(): void {
    this.fleet.close();
    this.local.close();
  }
}
