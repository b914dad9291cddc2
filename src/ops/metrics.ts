/**
 * The Prometheus exposition (METRICS_ADDR): the daemon's metrics, read from the Telemetry and the
 * ban sink at each scrape, served at GET /metrics. Per-queue metrics carry a `queue` label.
 */
import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';
import type { BanSink } from '../bans/sink.js';
import { ConfigError, redactedUrl } from '../config/config.js';
import type { FleetState } from '../fleet/state.js';
import { ACTIONS, type QueueSample, type SampledField } from './queue-counters.js';
import type { Metrics, MetricsRegistry, Report } from './registry.js';
import { BAN_OUTCOMES, type Telemetry } from './telemetry.js';

const FAMILIES = ['ipv4', 'ipv6'] as const;

/** Per-queue counters and gauges read from the workers' shared counters: [name, help, field]. */
const QUEUE_COUNTERS: [string, string, SampledField][] = [
  ['flows_evicted_total', 'Flows evicted from a full flow table before their idle timeout.', 'flowsEvicted'],
  ['queue_batches_total', 'Batches the queue broker handed to JavaScript.', 'batches'],
  ['queue_watchdog_accepted_packets_total', 'Packets the broker accepted uninspected because JavaScript did not answer within VERDICT_TIMEOUT_MS.', 'watchdogAccepted'],
  ['queue_late_answers_total', 'Batch answers that came after the watchdog had accepted the batch.', 'lateAnswers'],
  ['queue_enobufs_total', 'Times the kernel could not deliver to the queue socket (ENOBUFS; it failed open meanwhile).', 'enobufs'],
  ['queue_verdict_send_errors_total', 'Verdict sends the kernel refused; their packets were accepted.', 'sendErrors'],
  ['queue_broker_restarts_total', 'Queue brokers respawned after dying.', 'brokerRestarts'],
];
const QUEUE_GAUGES: [string, string, SampledField][] = [['flows_tracked', 'Flows in the flow table.', 'flows']];
/** Tables all queues share: every worker counts the same one, so the gauge has no queue label. */
const SHARED_GAUGES: [string, string, SampledField][] = [
  ['peers_proven', 'Entries of the proven-peer table (peers whose own bytes proved them), not expired; one table for all queues.', 'provenPeers'],
  ['peers_listed', 'Entries of the listed-peer table (peers a tracker, DHT node or PEX listed to a local host), not expired; one table for all queues.', 'listedPeers'],
];

/** The fleet link's counts, as counters. */
const FLEET_COUNTERS: [string, string, 'decisionsReceived' | 'decisionsRejected' | 'decisionsLifted' | 'published' | 'publishDropped'][] = [
  ['fleet_decisions_received_total', 'Ban decisions from the Local API that CROWDSEC_ORIGINS selects.', 'decisionsReceived'],
  ['fleet_decisions_rejected_total', 'Of those, the ones the local never-ban lists refused (LOCAL_CIDRS, ALLOW_CIDRS, BAN_EXEMPT, own addresses).', 'decisionsRejected'],
  ['fleet_decisions_lifted_total', 'Bans lifted because their decisions were deleted or expired on the Local API.', 'decisionsLifted'],
  ['fleet_bans_published_total', "Bans of this gateway's policy the Local API acknowledged.", 'published'],
  ['fleet_publish_dropped_total', 'Bans never published because the publish queue was full.', 'publishDropped'],
];

/** Serves `metrics` at http://host:port/metrics; rejects with a ConfigError naming METRICS_ADDR when it cannot listen. */
export function serveMetrics(address: { host: string; port: number }, metrics: Metrics, log: Logger): Promise<Server> {
  const server = createServer((request, response) => {
    const path = new URL(request.url ?? '/', 'http://metrics').pathname;
    if (path !== '/metrics') return void response.writeHead(404, { 'content-type': 'text/plain' }).end('btwall serves /metrics only\n');
    if (request.method !== 'GET' && request.method !== 'HEAD') return void response.writeHead(405, { allow: 'GET, HEAD' }).end();
    metrics.text().then(
      (text) => response.writeHead(200, { 'content-type': metrics.contentType }).end(request.method === 'HEAD' ? undefined : text),
      (error: Error) => {
        log.error({ err: error }, 'cannot collect the metrics');
        response.writeHead(500, { 'content-type': 'text/plain' }).end('cannot collect the metrics\n');
      },
    );
  });
  // A scraper that keeps a connection open must not hold the daemon's stop.
  server.keepAliveTimeout = 5000;
  return new Promise((resolve, reject) => {
    const shown = `${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
    server.once('error', (error) => reject(new ConfigError([`METRICS_ADDR=${JSON.stringify(shown)}: cannot listen there: ${error.message}`])));
    server.listen(address.port, address.host, () => resolve(server));
  });
}

/**
 * Registers the daemon's metrics; `bans` is read at each scrape (the sink in use), and `fleet`,
 * the CrowdSec link's state (null without CROWDSEC_LAPI_URL: then no btwall_fleet_* metric).
 */
export function registerDaemonMetrics(registry: MetricsRegistry, telemetry: Telemetry, bans: () => BanSink, fleet: (() => FleetState | null) | null): void {
  // One read of the shared counters and one look at the ban maps per scrape, for all the metrics below.
  let samples = new Map<number, QueueSample>();
  let kernel: ReturnType<BanSink['kernel']> = null;
  let link: FleetState | null = null;
  registry.onScrape(() => {
    samples = telemetry.read();
    kernel = bans().kernel();
    link = fleet?.() ?? null;
  });
  const perQueue = (use: (queue: string, sample: QueueSample) => void) => {
    for (const [queue, sample] of samples) use(String(queue), sample);
  };
  registry.gauge({ name: 'start_time_seconds', help: 'When the daemon started, seconds since the Unix epoch.' }, (report) => report(telemetry.startedMs / 1000));
  registry.counter({ name: 'packets_inspected_total', help: 'Packets the pipeline decided, by verdict and the connection mark given with it.', labelNames: ['queue', 'verdict', 'mark'] }, (report) =>
    perQueue((queue, sample) => ACTIONS.forEach(({ verdict, mark }, i) => report(sample.actions[i], { queue, verdict, mark }))),
  );
  registry.sampledHistogram({ name: 'batch_packets', help: 'Packets per batch the queue broker handed over.', labelNames: ['queue'] }, (report) =>
    perQueue((queue, sample) => report(sample.batchPackets, { queue })),
  );
  registry.sampledHistogram({ name: 'batch_engine_seconds', help: 'Time the pipeline took over one batch, seconds.', labelNames: ['queue'] }, (report) =>
    perQueue((queue, sample) => report(sample.batchSeconds, { queue })),
  );
  const sampled = (field: SampledField) => (report: Report<'queue'>) => perQueue((queue, sample) => report(sample.sampled[field], { queue }));
  for (const [name, help, field] of QUEUE_COUNTERS) registry.counter({ name, help, labelNames: ['queue'] }, sampled(field));
  for (const [name, help, field] of QUEUE_GAUGES) registry.gauge({ name, help, labelNames: ['queue'] }, sampled(field));
  // Each worker's count of a shared table is the same table's, as of its last pass: the largest is the latest.
  for (const [name, help, field] of SHARED_GAUGES) registry.gauge({ name, help }, (report) => report(Math.max(0, ...[...samples.values()].map((sample) => sample.sampled[field]))));
  registry.counter(
    { name: 'queue_uninspected_packets_total', help: 'Packets the queue rules matched that the kernel passed uninspected, by cause: queue_full (FAIL_OPEN), broker_down (--queue-bypass while a broker was respawned); as of the last stats line (STATS_INTERVAL).', labelNames: ['cause'] },
    (report) => {
      report(telemetry.uninspected.queueFull, { cause: 'queue_full' });
      report(telemetry.uninspected.restarting, { cause: 'broker_down' });
    },
  );
  registry.counter({ name: 'detections_total', help: 'Flows found to be BitTorrent, by rule and evidence strength.', labelNames: ['rule', 'strength'] }, (report) => {
    for (const { rule, strength, count } of telemetry.detections.values()) report(count, { rule, strength });
  });
  registry.counter(
    { name: 'bans_total', help: 'What each detection came to for a ban (added, extended, kept, refused, failed, not_enforced, monitor_only, rate_limited, skipped_by_policy) and bans expired.', labelNames: ['outcome'] },
    (report) => BAN_OUTCOMES.forEach((outcome) => report(telemetry.bans[outcome], { outcome })),
  );
  registry.gauge({ name: 'bans_active', help: 'Bans in force in the XDP maps, by address family (absent without an XDP program).', labelNames: ['family'] }, (report) => {
    if (kernel !== null) for (const family of FAMILIES) report(kernel.active[family], { family });
  });
  registry.counter({ name: 'xdp_dropped_packets_total', help: 'Packets the XDP ban program dropped, by address family (the map counts per family, not per interface).', labelNames: ['family'] }, (report) => {
    if (kernel !== null) for (const family of FAMILIES) report(kernel.dropped[family].packets, { family });
  });
  registry.counter({ name: 'xdp_dropped_bytes_total', help: 'Bytes of the packets the XDP ban program dropped, by address family.', labelNames: ['family'] }, (report) => {
    if (kernel !== null) for (const family of FAMILIES) report(kernel.dropped[family].bytes, { family });
  });
  registry.counter({ name: 'xdp_reset_requests_total', help: 'Dropped TCP segments of banned addresses the XDP program reported to the daemon to be answered with resets (CUT_ESTABLISHED), by address family.', labelNames: ['family'] }, (report) => {
    if (kernel !== null) for (const family of FAMILIES) report(kernel.dropped[family].resets, { family });
  });
  if (fleet === null) return;
  const fleetValue = (read: (state: FleetState) => number) => (report: Report<never>) => {
    if (link !== null) report(read(link));
  };
  // Labelled by the Local API, so that both are absent (not 0) until there is something to tell.
  const lapiValue = (read: (state: FleetState) => number | null) => (report: Report<'lapi'>) => {
    const value = link === null ? null : read(link);
    if (value !== null) report(value, { lapi: redactedUrl(link!.lapiUrl) });
  };
  registry.gauge({ name: 'fleet_lapi_up', help: "Whether the CrowdSec Local API answered btwall's last request (absent before the first).", labelNames: ['lapi'] }, lapiValue((s) => (s.lapiReachable === null ? null : Number(s.lapiReachable))));
  registry.gauge(
    { name: 'fleet_last_sync_timestamp_seconds', help: 'When a decisions stream was last read from the Local API, seconds since the Unix epoch (absent before the first).', labelNames: ['lapi'] },
    lapiValue((s) => (s.lastSyncMs === null ? null : s.lastSyncMs / 1000)),
  );
  for (const [name, help, field] of FLEET_COUNTERS) registry.counter({ name, help }, fleetValue((s) => s[field]));
  registry.gauge({ name: 'fleet_publish_queued', help: 'Bans of this gateway waiting to be published to the Local API (bounded by CROWDSEC_QUEUE_CAPACITY).' }, fleetValue((s) => s.queued));
}

