/**
 * Publishing the policy's bans to a CrowdSec Local API as a registered machine: each ban becomes
 * an alert carrying one decision (scope Ip, type ban, the ban's duration, scenario
 * btwall/bittorrent-<rule>) and the evidence in its meta. Bans wait in a bounded queue while the
 * LAPI is down and are sent again with a growing delay; the caller (the daemon's ban path) only
 * ever enqueues, so local enforcement never waits for the network.
 */
import type { Logger } from 'pino';
import { LapiError, type LapiAlert, type LapiClient } from './lapi.js';
import type { Reachability } from './state.js';

/** Alerts per POST: one request carries a burst of bans. */
const BATCH = 100;
/** Retry delays while the LAPI is down: 1 s, doubling, at most 30 s. */
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
/** A token this close to its expiry is renewed before use (the LAPI's JWTs last an hour). */
const TOKEN_RENEW_MARGIN_MS = 60_000;

/** The scenario every btwall ban is published under; CROWDSEC_ORIGINS=btwall selects these. */
export const SCENARIO_PREFIX = 'btwall/bittorrent-';
/**
 * The origin of published decisions: `crowdsec`, what every machine's own alerts carry, so that
 * `cscli decisions list` (which shows only crowdsec and cscli origins unless -a) lists them.
 */
export const PUBLISHED_ORIGIN = 'crowdsec';

/** A ban the policy made, with what proved it. */
export interface PublishedBan {
  address: string;
  durationS: number;
  rule: string;
  /** The detection's evidence (endpoints, ports, strength, the policy's reason): the alert's meta. */
  evidence: Readonly<Record<string, string>>;
  timeMs: number;
}

/** The delay before retry number `attempt` (1, 2, ...). */
export function backoffMs(attempt: number): number {
  return Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.max(0, attempt - 1));
}

/** The alert one ban is published as. */
export function banAlert(ban: PublishedBan): LapiAlert {
  const at = new Date(ban.timeMs).toISOString();
  const scenario = `${SCENARIO_PREFIX}${ban.rule}`;
  const meta = Object.entries({ rule: ban.rule, ...ban.evidence }).map(([key, value]) => ({ key, value }));
  return {
    scenario,
    scenario_hash: '',
    scenario_version: '',
    message: `btwall: ${ban.address} proven BitTorrent peer (${ban.rule}), banned for ${ban.durationS} s`,
    events_count: 1,
    start_at: at,
    stop_at: at,
    capacity: 0,
    leakspeed: '0',
    simulated: false,
    events: [{ timestamp: at, meta }],
    meta,
    source: { scope: 'Ip', value: ban.address, ip: ban.address },
    decisions: [{ origin: PUBLISHED_ORIGIN, type: 'ban', scope: 'Ip', value: ban.address, duration: `${ban.durationS}s`, scenario }],
  };
}

export class BanPublisher {
  /** Bans sent and acknowledged. */
  published = 0;
  /** Bans lost because the queue was full (the oldest go first). */
  dropped = 0;
  /** Requests that failed (the LAPI down, refusing, or answering with an error). */
  failures = 0;
  private queue: PublishedBan[] = [];
  /** Taken from the queue and being sent. */
  private sending: PublishedBan[] = [];
  private token: { token: string; expiresMs: number } | null = null;
  private attempt = 0;
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private closed = false;

  constructor(
    private readonly client: LapiClient,
    private readonly machine: { id: string; password: string },
    private readonly capacity: number,
    private readonly reachability: Reachability,
    private readonly log: Logger,
  ) {
    reachability.onBack(() => this.retryNow());
  }

  /** Bans waiting, those being sent included. */
  get queued(): number {
    return this.queue.length + this.sending.length;
  }

  /** Queues one ban and starts sending unless a retry is already scheduled; returns at once. */
  publish(ban: PublishedBan): void {
    if (this.closed) return;
    if (this.queued >= this.capacity) {
      this.dropped++;
      // Full of bans being sent (a capacity below one batch): the new one is the one lost.
      if (this.queue.length === 0) return;
      this.queue.shift();
    }
    this.queue.push(ban);
    if (this.timer === null) void this.run();
  }

  /** Whether this address is waiting to be published (a resync must not lift its ban). */
  isPending(address: string): boolean {
    return this.queue.some((b) => b.address === address) || this.sending.some((b) => b.address === address);
  }

  /** Stops sending; what is still queued is reported and lost (the bans themselves stay in the maps). */
  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.queued > 0) this.log.warn({ unpublished: this.queued }, 'stopping with bans not yet published to the CrowdSec Local API');
  }

  /** The LAPI answers again: the queue goes now, not when the backoff ends. */
  private retryNow(): void {
    if (this.timer === null || this.closed) return;
    clearTimeout(this.timer);
    this.timer = null;
    void this.run();
  }

  private async run(): Promise<void> {
    if (this.running || this.closed) return;
    this.running = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        this.sending = this.queue.splice(0, BATCH);
        try {
          await this.send(this.sending);
        } catch (error) {
          this.failed(error);
          return;
        }
        this.published += this.sending.length;
        this.sending = [];
        if (this.attempt > 0) this.log.info({ attempts: this.attempt, queued: this.queue.length }, 'CrowdSec Local API reached again; publishing the queued bans');
        this.attempt = 0;
      }
    } finally {
      this.running = false;
    }
  }

  /** One POST, logging in first when there is no token or it is about to expire, and once more if the LAPI refuses the token. */
  private async send(bans: readonly PublishedBan[]): Promise<void> {
    const alerts = bans.map(banAlert);
    for (let retry = 0; ; retry++) {
      const token = await this.validToken();
      try {
        await this.client.pushAlerts(token, alerts);
        this.reachability.answered(true);
        return;
      } catch (error) {
        if (!(error instanceof LapiError && error.status === 401 && retry === 0)) throw error;
        this.token = null;
      }
    }
  }

  private async validToken(): Promise<string> {
    if (this.token === null || this.token.expiresMs - Date.now() < TOKEN_RENEW_MARGIN_MS) {
      this.token = await this.client.login(this.machine.id, this.machine.password);
      this.reachability.answered(true);
    }
    return this.token.token;
  }

  /** The batch goes back to the front (as much as the queue holds); the next try comes after the backoff. */
  private failed(error: unknown): void {
    this.failures++;
    this.attempt++;
    const room = Math.max(0, this.capacity - this.queue.length);
    this.dropped += Math.max(0, this.sending.length - room);
    this.queue = [...this.sending.slice(this.sending.length - Math.min(room, this.sending.length)), ...this.queue];
    this.sending = [];
    const answered = error instanceof LapiError && error.status !== 0;
    this.reachability.answered(answered);
    const delayMs = backoffMs(this.attempt);
    const fields = { err: error instanceof Error ? error.message : String(error), queued: this.queue.length, retryInMs: delayMs, attempt: this.attempt };
    if (this.attempt === 1) this.log.warn(fields, 'cannot publish bans to the CrowdSec Local API; queueing them');
    else this.log.debug(fields, 'CrowdSec Local API still unreachable');
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.run();
    }, delayMs);
    this.timer.unref();
  }
}
