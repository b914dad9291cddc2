/**
 * `btwall status`: what the daemon answers on its control socket (`statusReport`), and how the
 * command prints it (`formatStatus`; `--json` prints the report itself, whose fields stay as
 * documented in the README: new ones may be added, none renamed).
 */
import type { BanEntry } from '../bans/xdp.js';
import type { BanSink, KernelBans } from '../bans/sink.js';
import { columns, duration } from '../cli/output.js';
import { redactedConfig, redactedUrl, type Config } from '../config/config.js';
import type { FleetState } from '../fleet/state.js';
import type { SampledField } from './queue-counters.js';
import { BAN_OUTCOMES, Telemetry, type BanDecisionOutcome, type DetectionSummary, type UninspectedCounts } from './telemetry.js';
import type { WebhookCounts } from './webhook.js';

/** Most bans a report lists (the longest-running first); the counts cover them all. */
export const STATUS_BANS = 50;

export interface StatusReport {
  version: string;
  pid: number;
  startedAt: string;
  uptimeS: number;
  /** The effective configuration (as reloaded by SIGHUP), secrets redacted. */
  config: Config;
  /** Variables changed by a reload whose new values wait for a restart (`config` has their running values). */
  restartPending: string[];
  counters: {
    packets: { inspected: number; accepted: number; dropped: number; markedClean: number; markedBittorrent: number; markedThrottle: number };
    /** The queues' counters added up: the flow and peer tables, the brokers'. */
    queues: Record<SampledField, number>;
    uninspected: UninspectedCounts;
    detections: { total: number; byRule: { rule: string; strength: string; count: number }[] };
    bans: Record<BanDecisionOutcome, number>;
    webhook: WebhookCounts | null;
  };
  /** The CrowdSec Local API link; null without CROWDSEC_LAPI_URL. */
  fleet: FleetState | null;
  bans: {
    enforced: boolean;
    /** Where and how bans are enforced (the startup line's words). */
    description: string;
    /** The interfaces the XDP program is on, each in its mode (XDP_MODE=auto picks one per interface); empty without it. */
    interfaces: KernelBans['interfaces'];
    /** Null without an XDP program. */
    active: KernelBans['active'] | null;
    dropped: KernelBans['dropped'] | null;
    /** At most STATUS_BANS, the longest-running first. */
    list: BanEntry[];
  };
  /** The latest detections, newest first. */
  detections: DetectionSummary[];
}

export function statusReport(
  version: string,
  config: Config,
  telemetry: Telemetry,
  bans: BanSink,
  webhook: WebhookCounts | null,
  fleet: FleetState | null,
  restartPending: readonly string[],
): StatusReport {
  const totals = Telemetry.totals(telemetry.read());
  const { actions, ...queues } = totals;
  const [accepted, dropped, markedClean, markedBittorrent, markedThrottle] = actions;
  const kernel = bans.kernel();
  const byRule = [...telemetry.detections.values()].map((d) => ({ ...d })).sort((a, b) => b.count - a.count || a.rule.localeCompare(b.rule));
  return {
    version,
    pid: process.pid,
    startedAt: new Date(telemetry.startedMs).toISOString(),
    uptimeS: Math.round((Date.now() - telemetry.startedMs) / 100) / 10,
    config: redactedConfig(config),
    restartPending: [...restartPending],
    counters: {
      packets: { inspected: accepted + dropped + markedClean + markedBittorrent + markedThrottle, accepted: accepted + markedClean + markedThrottle, dropped: dropped + markedBittorrent, markedClean, markedBittorrent, markedThrottle },
      queues,
      uninspected: { ...telemetry.uninspected },
      detections: { total: byRule.reduce((sum, d) => sum + d.count, 0), byRule },
      bans: { ...telemetry.bans },
      webhook,
    },
    bans: {
      enforced: bans.enforced,
      description: bans.describe(),
      interfaces: kernel?.interfaces ?? [],
      active: kernel?.active ?? null,
      dropped: kernel?.dropped ?? null,
      list: bans
        .list()
        .sort((a, b) => b.remainingS - a.remainingS)
        .slice(0, STATUS_BANS)
        .map((ban) => ({ ...ban, remainingS: Math.ceil(ban.remainingS) })),
    },
    // The URL may carry credentials, as the configuration's does.
    fleet: fleet === null ? null : { ...fleet, lapiUrl: redactedUrl(fleet.lapiUrl) },
    detections: telemetry.recentDetections(),
  };
}

/** `key  value` lines, the values aligned, indented under a heading. */
function section(heading: string, rows: [string, string | number][]): string {
  const width = Math.max(...rows.map(([key]) => key.length));
  return [heading, ...rows.map(([key, value]) => `  ${key.padEnd(width)}  ${value}`)].join('\n');
}

const endpoint = (e: { address: string; port: number }) => (e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`);
const indent = (text: string) => text.replace(/^/gm, '  ');

/** What `btwall status` prints without --json. */
export function formatStatus(r: StatusReport): string {
  const c = r.counters;
  const q = c.queues;
  const parts = [
    `btwall ${r.version}, pid ${r.pid}, up ${duration(r.uptimeS)} (since ${r.startedAt})`,
    section('packets', [
      ['inspected', c.packets.inspected],
      ['accepted', `${c.packets.accepted} (${c.packets.markedClean} with their connection marked clean)`],
      ['dropped', `${c.packets.dropped} (${c.packets.markedBittorrent} with their connection marked BitTorrent)`],
      ['uninspected', `queue full ${c.uninspected.queueFull}, watchdog ${q.watchdogAccepted}, broker down ${c.uninspected.restarting} (as of the last stats line)`],
      ['queue errors', `ENOBUFS ${q.enobufs}, verdicts refused ${q.sendErrors}, broker restarts ${q.brokerRestarts}`],
      ['flows', `${q.flows} tracked, ${q.flowsEvicted} evicted`],
      ['peers', `${q.provenPeers} proven, ${q.listedPeers} listed`],
    ]),
    section('detections', [
      ['total', c.detections.total],
      ...c.detections.byRule.map(({ rule, strength, count }): [string, number] => [`${rule} (${strength})`, count]),
    ]),
    section('bans', [
      ['enforcement', r.bans.description],
      ['XDP', r.bans.interfaces.length === 0 ? 'on no interface' : r.bans.interfaces.map((i) => `${i.name} ${i.mode}`).join(', ')],
      ['active', r.bans.active === null ? 'none in the kernel (no XDP program)' : `IPv4 ${r.bans.active.ipv4}, IPv6 ${r.bans.active.ipv6}`],
      ...(r.bans.dropped === null ? [] : [['dropped by XDP', `IPv4 ${r.bans.dropped.ipv4.packets} packets, IPv6 ${r.bans.dropped.ipv6.packets} packets; TCP segments reported for resets IPv4 ${r.bans.dropped.ipv4.resets}, IPv6 ${r.bans.dropped.ipv6.resets}`] as [string, string]]),
      ['outcomes', BAN_OUTCOMES.filter((o) => c.bans[o] > 0).map((o) => `${o} ${c.bans[o]}`).join(', ') || 'none yet'],
    ]),
  ];
  if (r.bans.list.length > 0) {
    parts.push(indent(columns(['ADDRESS', 'REMAINING', 'RULE'], r.bans.list.map((b) => [b.address, duration(b.remainingS), b.rule]))));
  }
  if (c.webhook !== null) {
    const w = c.webhook;
    parts.push(section('webhook', [['detections', `sent ${w.sent}, queued ${w.queued}, dropped ${w.dropped}, rejected ${w.rejected}; failed requests ${w.failedRequests}`]]));
  }
  if (r.fleet !== null) {
    const f = r.fleet;
    parts.push(
      section('fleet (CrowdSec Local API)', [
        ['lapi', `${f.lapiUrl}: ${f.lapiReachable === null ? 'not asked yet' : f.lapiReachable ? 'reachable' : 'unreachable'}`],
        ['last sync', f.lastSyncMs === null ? 'never' : new Date(f.lastSyncMs).toISOString()],
        ['decisions', `received ${f.decisionsReceived}, rejected by local policy ${f.decisionsRejected}, lifted ${f.decisionsLifted}`],
        ['published', `${f.published}, queued ${f.queued}, dropped ${f.publishDropped}`],
      ]),
    );
  }
  parts.push(
    r.detections.length === 0
      ? 'last detections: none yet'
      : `last detections (newest first)\n${indent(
          columns(
            ['TIME', 'LOCAL', 'REMOTE', 'RULE', 'STRENGTH', 'ACTION', 'BAN'],
            r.detections.map((d) => [d.time, endpoint(d.local), endpoint(d.remote), d.rule, d.strength, d.action, d.ban === null ? '-' : `${d.ban.address} ${duration(d.ban.duration_s)}`]),
          ),
        )}`,
  );
  parts.push(section('configuration', Object.entries(r.config).map(([key, value]): [string, string] => [key, JSON.stringify(value)])));
  if (r.restartPending.length > 0) parts.push(`changed, waiting for a restart: ${r.restartPending.join(', ')}`);
  return `${parts.join('\n\n')}\n`;
}
