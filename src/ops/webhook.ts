/**
 * WEBHOOK_URL: every detection POSTed as JSON, so an operator's system can act on the user behind
 * a local address (a VPN account, a customer) rather than on the address. Detections wait in a
 * bounded queue and go in batches, one request at a time; a failed request is retried with
 * exponential backoff while new detections queue behind it; a full queue drops its oldest
 * detection (counted). `push` only appends to an array: the packet path (the workers) never
 * waits for the receiver, and neither does the main thread.
 *
 * Credentials in the URL (https://user:password@host/...) go as HTTP Basic authorization.
 * Body: {"source":"btwall","host":HOSTNAME,"detections":[DETECTION...]}, each detection its
 * detection-log record without the payload (time, local, remote, rule, strength, action, ban, reason...).
 */
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { redactedUrl } from '../config/config.js';
import type { MetricsRegistry } from './registry.js';
import type { DetectionSummary } from './telemetry.js';

export interface WebhookOptions {
  /** Detections held at most (queued and in flight); past it the oldest queued one is dropped. */
  capacity: number;
  /** Detections per request at most. */
  batchSize: number;
  /** How long the first detection waits for others to join its batch. */
  flushDelayMs: number;
  /** A request not answered within this has failed. */
  timeoutMs: number;
  /** The first retry's wait; each failure in a row doubles it, up to retryMaxMs. */
  retryMinMs: number;
  retryMaxMs: number;
}

export const WEBHOOK_DEFAULTS: WebhookOptions = { capacity: 10_000, batchSize: 100, flushDelayMs: 1000, timeoutMs: 10_000, retryMinMs: 1000, retryMaxMs: 60_000 };

export interface WebhookCounts {
  /** Detections the receiver took (2xx). */
  sent: number;
  /** Dropped from a full queue. */
  dropped: number;
  /** Refused by the receiver (4xx other than 408 and 429: sending them again would not help). */
  rejected: number;
  /** Requests that failed (network, timeout, 5xx, 408, 429) and were retried. */
  failedRequests: number;
  /** Waiting or in flight now. */
  queued: number;
}

/** HTTP statuses that say "later", not "never". */
const RETRIED_STATUSES = new Set([408, 429]);

export class DetectionWebhook {
  private readonly counts = { sent: 0, dropped: 0, rejected: 0, failedRequests: 0 };
  private readonly pending: DetectionSummary[] = [];
  private inFlight: DetectionSummary[] | null = null;
  private timer: NodeJS.Timeout | null = null;
  private retryMs = 0;
  /** The failure that began the current outage, logged once; the recovery is logged with the count. */
  private failingSince: number | null = null;
  private readonly closing = new AbortController();
  private readonly shownUrl: string;
  /** The URL without its credentials (fetch refuses them), which go in an Authorization header instead. */
  private readonly target: URL;
  private readonly headers: Record<string, string> = { 'content-type': 'application/json' };

  constructor(
    url: string,
    private readonly log: Logger,
    private readonly options: WebhookOptions = WEBHOOK_DEFAULTS,
    private readonly host = hostname(),
  ) {
    this.shownUrl = redactedUrl(url);
    this.target = new URL(url);
    if (this.target.username !== '' || this.target.password !== '') {
      const credentials = `${decodeURIComponent(this.target.username)}:${decodeURIComponent(this.target.password)}`;
      this.headers.authorization = `Basic ${Buffer.from(credentials).toString('base64')}`;
      this.target.username = '';
      this.target.password = '';
    }
  }

  /** Queues one detection and returns at once. */
  push(detection: DetectionSummary): void {
    if (this.closing.signal.aborted) return;
    if (this.pending.length + (this.inFlight?.length ?? 0) >= this.options.capacity && this.pending.length > 0) {
      this.pending.shift();
      this.counts.dropped++;
    }
    this.pending.push(detection);
    this.schedule();
  }

  stats(): WebhookCounts {
    return { ...this.counts, queued: this.pending.length + (this.inFlight?.length ?? 0) };
  }

  /** The webhook's metrics, read from its counts at each scrape. */
  register(registry: MetricsRegistry): void {
    registry.counter({ name: 'webhook_detections_total', help: 'Detections for the webhook, by outcome: sent, dropped (queue full), rejected (4xx).', labelNames: ['outcome'] }, (report) => {
      for (const outcome of ['sent', 'dropped', 'rejected'] as const) report(this.counts[outcome], { outcome });
    });
    registry.counter({ name: 'webhook_failed_requests_total', help: 'Webhook requests that failed and were retried (network error, timeout, 5xx, 408, 429).' }, (report) => report(this.counts.failedRequests));
    registry.gauge({ name: 'webhook_queued_detections', help: 'Detections waiting for the webhook or in flight.' }, (report) => report(this.stats().queued));
  }

  /** Stops sending (an unanswered request is abandoned); returns how many detections were never delivered. */
  close(): number {
    this.closing.abort();
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const undelivered = this.stats().queued;
    if (undelivered > 0) this.log.warn({ url: this.shownUrl, undelivered }, 'webhook closed with detections never delivered');
    return undelivered;
  }

  /** The next batch goes after flushDelayMs, or at once when a whole batch waits. */
  private schedule(): void {
    if (this.inFlight !== null || this.timer !== null || this.pending.length === 0 || this.closing.signal.aborted) return;
    const delay = this.pending.length >= this.options.batchSize ? 0 : this.options.flushDelayMs;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.inFlight = this.pending.splice(0, this.options.batchSize);
      void this.send();
    }, delay);
  }

  private async send(): Promise<void> {
    const batch = this.inFlight!;
    let failure: string;
    try {
      const response = await fetch(this.target, {
        method: 'POST',
        headers: this.headers,
        body: JSON.stringify({ source: 'btwall', host: this.host, detections: batch }),
        signal: AbortSignal.any([this.closing.signal, AbortSignal.timeout(this.options.timeoutMs)]),
      });
      await response.arrayBuffer();
      if (response.ok || (response.status >= 400 && response.status < 500 && !RETRIED_STATUSES.has(response.status))) {
        this.delivered(batch, response.status);
        return;
      }
      failure = `HTTP ${response.status}`;
    } catch (error) {
      if (this.closing.signal.aborted) return;
      failure = errorText(error);
    }
    this.retry(failure);
  }

  private delivered(batch: DetectionSummary[], status: number): void {
    this.inFlight = null;
    if (status >= 400) {
      this.counts.rejected += batch.length;
      this.log.error({ url: this.shownUrl, status, detections: batch.length }, 'webhook receiver refused the detections; they are not sent again');
    } else {
      this.counts.sent += batch.length;
    }
    if (this.failingSince !== null) {
      this.log.info({ url: this.shownUrl, downMs: Date.now() - this.failingSince, failedRequests: this.counts.failedRequests }, 'webhook reachable again');
      this.failingSince = null;
    }
    this.retryMs = 0;
    this.schedule();
  }

  private retry(failure: string): void {
    this.counts.failedRequests++;
    this.retryMs = this.retryMs === 0 ? this.options.retryMinMs : Math.min(this.retryMs * 2, this.options.retryMaxMs);
    if (this.failingSince === null) {
      this.failingSince = Date.now();
      this.log.warn({ url: this.shownUrl, error: failure, retryInMs: this.retryMs }, 'webhook request failed; retrying with backoff, detections queue meanwhile');
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.send();
    }, this.retryMs);
  }
}

/** fetch's own message ("fetch failed") hides the cause: ECONNREFUSED, a timeout, a TLS error. */
function errorText(error: unknown): string {
  const { message, cause } = error as { message?: string; cause?: { message?: string; code?: string } };
  return cause?.code ?? cause?.message ?? message ?? String(error);
}
