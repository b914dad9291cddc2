import type { FleetState } from '../src/fleet/state.js';
import { spawnSync } from 'node:child_process';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { DryRunBanSink, type BanSink, type KernelBans } from '../src/bans/sink.js';
import { ConfigError } from '../src/config/config.js';
import { registerDaemonMetrics, serveMetrics } from '../src/ops/metrics.js';
import { ACTIONS, BATCH_PACKETS_BOUNDS, QueueCounters, SAMPLED } from '../src/ops/queue-counters.js';
import { Metrics, MetricsError } from '../src/ops/registry.js';
import { detectionSummary, Telemetry } from '../src/ops/telemetry.js';
import { PACKET_ACCEPT, PACKET_ACCEPT_MARK_CLEAN, PACKET_DROP, PACKET_MARK_BITTORRENT, PACKET_MARK_THROTTLE, type DetectionEvent } from '../src/pipeline/pipeline.js';
import { detectionEvent } from './helpers/detections.js';

const silent = pino({ level: 'silent' });

/** A sink whose kernel side says what the test wants. */
function sinkWith(kernel: KernelBans): BanSink {
  const sink = new DryRunBanSink(silent);
  return Object.assign(sink, { enforced: true, kernel: () => kernel });
}

function promtool(text: string): { status: number | null; problems: string } {
  const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if (lint.error) throw lint.error;
  return { status: lint.status, problems: lint.stdout + lint.stderr };
}

describe('queue counters (shared with the worker)', () => {
  it('keeps one slot per pipeline action, in PACKET_* order', () => {
    expect(ACTIONS.map((a) => a.action)).toEqual([PACKET_ACCEPT, PACKET_DROP, PACKET_ACCEPT_MARK_CLEAN, PACKET_MARK_BITTORRENT, PACKET_MARK_THROTTLE]);
    expect(BATCH_PACKETS_BOUNDS).toEqual([1, 2, 4, 8, 16, 32, 64]);
  });

  it('counts into the shared buffer that another view of it reads: actions, cumulative histograms, samples', () => {
    const worker = new QueueCounters();
    const main = new QueueCounters(worker.buffer);
    worker.packet(PACKET_MARK_BITTORRENT);
    worker.packet(PACKET_ACCEPT);
    worker.packet(PACKET_ACCEPT);
    worker.batch(3, 0.00003);
    worker.batch(64, 0.2);
    worker.batch(1, 7);
    worker.sample(Object.fromEntries(SAMPLED.map((name, i) => [name, i + 1])) as Record<(typeof SAMPLED)[number], number>, 1_000);
    const read = main.read();
    expect(main.sampledAtMs()).toBe(1_000);
    expect(read.actions).toEqual([2, 0, 0, 1, 0]);
    expect(read.batchPackets.cumulative).toEqual([1, 1, 2, 2, 2, 2, 3, 3]);
    expect(read.batchPackets.sum).toBe(68);
    // 30 µs falls in the 50 µs bucket; 0.2 s in 0.25 s; 7 s only in +Inf.
    const seconds = read.batchSeconds;
    expect(seconds.cumulative[seconds.bounds.indexOf(2.5e-5)]).toBe(0);
    expect(seconds.cumulative[seconds.bounds.indexOf(5e-5)]).toBe(1);
    expect(seconds.cumulative[seconds.bounds.indexOf(0.25)]).toBe(2);
    expect(seconds.cumulative.at(-1)).toBe(3);
    expect(read.sampled.flows).toBe(1);
    expect(read.sampled.brokerRestarts).toBe(SAMPLED.length);
  });
});

describe('metrics registry', () => {
  it('namespaces names, refuses a counter without _total, a bad name and a second registration', () => {
    const metrics = new Metrics();
    metrics.gauge({ name: 'fleet_members', help: 'h' }, (report) => report(3));
    expect(() => metrics.counter({ name: 'fleet_pulls', help: 'h' })).toThrow(MetricsError);
    expect(() => metrics.gauge({ name: 'Fleet-Members', help: 'h' })).toThrow(MetricsError);
    expect(() => metrics.gauge({ name: 'fleet_members', help: 'h' })).toThrow(/registered already/);
  });

  it("renders a subsystem's samplers and its own counters, and a shared-memory histogram like prom-client's", async () => {
    const metrics = new Metrics();
    const state = { pulls: 5 };
    metrics.counter({ name: 'fleet_pulls_total', help: 'Pulls.', labelNames: ['origin'] }, (report) => report(state.pulls, { origin: 'lapi' }));
    const errors = metrics.counter({ name: 'fleet_errors_total', help: 'Errors.' });
    errors.inc(2);
    metrics.sampledHistogram({ name: 'fleet_batch', help: 'Sizes.', labelNames: ['queue'] }, (report) => report({ bounds: [1, 10], cumulative: [1, 3, 4], sum: 25 }, { queue: '0' }));
    const reads: number[] = [];
    metrics.onScrape(() => reads.push(state.pulls));
    state.pulls = 6;
    const text = await metrics.text();
    expect(reads).toEqual([6]);
    expect(text).toContain('btwall_fleet_pulls_total{origin="lapi"} 6\n');
    expect(text).toContain('btwall_fleet_errors_total 2\n');
    expect(text).toContain(
      [
        '# HELP btwall_fleet_batch Sizes.',
        '# TYPE btwall_fleet_batch histogram',
        'btwall_fleet_batch_bucket{queue="0",le="1"} 1',
        'btwall_fleet_batch_bucket{queue="0",le="10"} 3',
        'btwall_fleet_batch_bucket{queue="0",le="+Inf"} 4',
        'btwall_fleet_batch_sum{queue="0"} 25',
        'btwall_fleet_batch_count{queue="0"} 4',
      ].join('\n'),
    );
    expect(text).toContain('process_resident_memory_bytes');
    expect(promtool(text)).toEqual({ status: 0, problems: '' });
  });

  it("exposes the daemon's metrics from the telemetry and the ban sink, and promtool accepts them", async () => {
    const telemetry = new Telemetry({ first: 2, last: 3 });
    const worker = new QueueCounters(telemetry.queues.get(3)!.buffer);
    worker.packet(PACKET_DROP);
    worker.batch(1, 0.0001);
    const detect = (event: DetectionEvent, outcome: 'added' | null) => telemetry.detection(detectionSummary(event, 'eth0'), event, outcome);
    detect(detectionEvent('utp', 'response', { ban: { family: 4, address: '198.51.100.9', durationS: 60 } }), 'added');
    detect(detectionEvent('dht', 'exact'), null);
    detect(detectionEvent('dht', 'exact', { rateLimited: true }), null);
    detect(detectionEvent('handshake', 'exact', { enforce: false, ban: { family: 4, address: '198.51.100.9', durationS: 60 } }), null);
    telemetry.expired(4);
    telemetry.statsLine({ uninspectedQueueFull: 7, uninspectedRestarting: 1, kernelDropped: 0 });
    const kernel = { active: { ipv4: 3, ipv6: 1 }, dropped: { ipv4: { packets: 10, bytes: 600, resets: 4 }, ipv6: { packets: 2, bytes: 160, resets: 0 } }, interfaces: [{ name: 'eth0', kind: 'ethernet', mode: 'native' }] };
    const metrics = new Metrics();
    registerDaemonMetrics(metrics, telemetry, () => sinkWith(kernel), null);
    const text = await metrics.text();
    for (const line of [
      'btwall_packets_inspected_total{queue="3",verdict="drop",mark="none"} 1',
      'btwall_packets_inspected_total{queue="2",verdict="drop",mark="none"} 0',
      'btwall_batch_engine_seconds_bucket{queue="3",le="0.0001"} 1',
      'btwall_detections_total{rule="dht",strength="exact"} 2',
      'btwall_detections_total{rule="utp",strength="response"} 1',
      'btwall_bans_total{outcome="added"} 1',
      'btwall_bans_total{outcome="rate_limited"} 1',
      'btwall_bans_total{outcome="skipped_by_policy"} 1',
      'btwall_bans_total{outcome="monitor_only"} 1',
      'btwall_bans_total{outcome="expired"} 4',
      'btwall_bans_active{family="ipv4"} 3',
      'btwall_xdp_dropped_packets_total{family="ipv6"} 2',
      'btwall_xdp_dropped_bytes_total{family="ipv4"} 600',
      'btwall_xdp_reset_requests_total{family="ipv4"} 4',
      'btwall_queue_uninspected_packets_total{cause="queue_full"} 7',
      'btwall_flows_tracked{queue="2"} 0',
    ]) {
      expect(text).toContain(`${line}\n`);
    }
    expect(promtool(text)).toEqual({ status: 0, problems: '' });
    expect(text).not.toContain('btwall_fleet_');
  });

  it('leaves out the kernel ban metrics when no XDP program runs', async () => {
    const metrics = new Metrics();
    registerDaemonMetrics(metrics, new Telemetry({ first: 0, last: 0 }), () => new DryRunBanSink(silent), null);
    const text = await metrics.text();
    expect(text).not.toMatch(/^btwall_bans_active\{/m);
    expect(text).not.toMatch(/^btwall_xdp_dropped_packets_total\{/m);
  });

  it("tells the CrowdSec link's state, as of each scrape", async () => {
    let state: FleetState = { lapiUrl: 'http://127.0.0.1:8080', lapiReachable: null, lastSyncMs: null, decisionsReceived: 0, decisionsRejected: 0, decisionsLifted: 0, published: 0, queued: 0, publishDropped: 0 };
    const metrics = new Metrics();
    registerDaemonMetrics(metrics, new Telemetry({ first: 0, last: 0 }), () => new DryRunBanSink(silent), () => state);
    const before = await metrics.text();
    // Before the first request: neither up nor down, never synced.
    expect(before).not.toMatch(/^btwall_fleet_lapi_up\{/m);
    expect(before).not.toMatch(/^btwall_fleet_last_sync_timestamp_seconds\{/m);
    expect(before).toContain('btwall_fleet_decisions_received_total 0\n');
    state = { ...state, lapiReachable: false, lastSyncMs: 1_796_300_000_500, decisionsReceived: 12, decisionsRejected: 2, decisionsLifted: 3, published: 5, queued: 4, publishDropped: 1 };
    const text = await metrics.text();
    for (const line of [
      'btwall_fleet_lapi_up{lapi="http://127.0.0.1:8080/"} 0',
      'btwall_fleet_last_sync_timestamp_seconds{lapi="http://127.0.0.1:8080/"} 1796300000.5',
      'btwall_fleet_decisions_received_total 12',
      'btwall_fleet_decisions_rejected_total 2',
      'btwall_fleet_decisions_lifted_total 3',
      'btwall_fleet_bans_published_total 5',
      'btwall_fleet_publish_queued 4',
      'btwall_fleet_publish_dropped_total 1',
    ]) {
      expect(text).toContain(`${line}\n`);
    }
    expect(promtool(text)).toEqual({ status: 0, problems: '' });
  });
});

describe('metrics endpoint', () => {
  let server: Server | null = null;
  afterEach(() => void server?.close());

  it('serves /metrics, 404 elsewhere, 405 for other methods; an address in use is refused', async () => {
    const metrics = new Metrics();
    metrics.gauge({ name: 'up_test', help: 'h' }, (report) => report(1));
    server = await serveMetrics({ host: '127.0.0.1', port: 0 }, metrics, silent);
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const ok = await fetch(`${base}/metrics`);
    expect(ok.status).toBe(200);
    expect(ok.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(await ok.text()).toContain('btwall_up_test 1\n');
    expect((await fetch(`${base}/`)).status).toBe(404);
    expect((await fetch(`${base}/metrics`, { method: 'POST' })).status).toBe(405);
    const port = (server.address() as AddressInfo).port;
    const taken = serveMetrics({ host: '127.0.0.1', port }, metrics, silent);
    await expect(taken).rejects.toThrow(ConfigError);
    await expect(taken).rejects.toThrow(`METRICS_ADDR="127.0.0.1:${port}": cannot listen there: listen EADDRINUSE`);
  });

  it('answers 500 when a sampler fails, and keeps serving', async () => {
    const metrics = new Metrics();
    let fail = true;
    metrics.gauge({ name: 'flaky', help: 'h' }, (report) => {
      if (fail) throw new Error('map gone');
      report(1);
    });
    server = await serveMetrics({ host: '127.0.0.1', port: 0 }, metrics, silent);
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`;
    expect((await fetch(url)).status).toBe(500);
    fail = false;
    expect((await fetch(url)).status).toBe(200);
  });
});
