/**
 * The operator's questions over detection records: per local host, how many detections by rule
 * and when; per banned peer, when and why; and which local host talked BitTorrent to an address
 * around a time (the copyright-notice question). Fed one entry at a time, in any order.
 */
import { isIP } from 'node:net';
import { addressBytes, CidrSet } from '../config/cidr.js';
import type { Cidr } from '../config/config.js';
import { rfc3339, type AuditRecord, type LogEntry } from './record.js';

export interface AuditQuery {
  sinceMs?: number;
  untilMs?: number;
  /** Addresses or CIDRs the record's local (remote) end must be in. */
  local?: readonly Cidr[];
  remote?: readonly Cidr[];
  /** --at: the time a notice names; the records within `windowMs` of it count, and the hosts are ranked by closeness. */
  at?: { timeMs: number; windowMs: number };
}

export interface HostSummary {
  local: string;
  detections: number;
  rules: Record<string, number>;
  first: string;
  last: string;
  /** With --at: this host's detection closest to that time. */
  nearest?: string;
}

export interface BanSummary {
  /** The banned address (the remote end; with BAN_LOCAL it may be a local one). */
  remote: string;
  time: string;
  rule: string;
  reason: string;
  local: string;
  duration_s: number;
  /** `drop`: the ban was made; `monitor`: MONITOR_ONLY, it would have been. */
  action: string;
}

export interface AuditReport {
  hosts: HostSummary[];
  bans: BanSummary[];
  /** Detection records that matched. */
  records: number;
  /** Records the daemon could not write (full or failing disk) in the period, by its notes. */
  lost_records: number;
  at?: { time: string; window_s: number };
}

interface HostTally {
  detections: number;
  rules: Map<string, number>;
  firstMs: number;
  lastMs: number;
  nearestMs: number;
}

function contains(cidrs: CidrSet, address: string): boolean {
  const family = isIP(address);
  return family !== 0 && cidrs.contains(family, addressBytes(family as 4 | 6, address), 0);
}

export class Audit {
  private readonly sinceMs: number;
  private readonly untilMs: number;
  private readonly local: CidrSet | null;
  private readonly remote: CidrSet | null;
  private readonly hosts = new Map<string, HostTally>();
  private readonly bans: (BanSummary & { timeMs: number })[] = [];
  private records = 0;
  private lost = 0;

  constructor(private readonly query: AuditQuery) {
    const { at } = query;
    this.sinceMs = Math.max(query.sinceMs ?? -Infinity, at ? at.timeMs - at.windowMs : -Infinity);
    this.untilMs = Math.min(query.untilMs ?? Infinity, at ? at.timeMs + at.windowMs : Infinity);
    this.local = query.local ? new CidrSet(query.local) : null;
    this.remote = query.remote ? new CidrSet(query.remote) : null;
  }

  add(entry: LogEntry): void {
    if (entry.timeMs < this.sinceMs || entry.timeMs > this.untilMs) return;
    if (entry.kind === 'lost') {
      this.lost += entry.note.lost_records;
      return;
    }
    const r = entry.record;
    if (this.local && !contains(this.local, r.local.address)) return;
    if (this.remote && !contains(this.remote, r.remote.address)) return;
    this.records++;
    this.countHost(r, entry.timeMs);
    if (r.ban !== null) {
      this.bans.push({ remote: r.ban.address, time: r.time, rule: r.rule, reason: r.reason, local: r.local.address, duration_s: r.ban.duration_s, action: r.action, timeMs: entry.timeMs });
    }
  }

  private countHost(r: AuditRecord, timeMs: number): void {
    let host = this.hosts.get(r.local.address);
    if (host === undefined) {
      host = { detections: 0, rules: new Map(), firstMs: timeMs, lastMs: timeMs, nearestMs: timeMs };
      this.hosts.set(r.local.address, host);
    }
    host.detections++;
    host.rules.set(r.rule, (host.rules.get(r.rule) ?? 0) + 1);
    host.firstMs = Math.min(host.firstMs, timeMs);
    host.lastMs = Math.max(host.lastMs, timeMs);
    const at = this.query.at?.timeMs;
    if (at !== undefined && Math.abs(timeMs - at) < Math.abs(host.nearestMs - at)) host.nearestMs = timeMs;
  }

  report(): AuditReport {
    const at = this.query.at;
    const distance = (host: HostTally) => (at ? Math.abs(host.nearestMs - at.timeMs) : 0);
    const hosts = [...this.hosts.entries()]
      // With --at the closest host comes first; otherwise the busiest.
      .sort(([a, x], [b, y]) => distance(x) - distance(y) || y.detections - x.detections || a.localeCompare(b))
      .map(([local, host]): HostSummary => ({
        local,
        detections: host.detections,
        rules: Object.fromEntries([...host.rules.entries()].sort((x, y) => y[1] - x[1] || x[0].localeCompare(y[0]))),
        first: rfc3339(host.firstMs),
        last: rfc3339(host.lastMs),
        ...(at ? { nearest: rfc3339(host.nearestMs) } : {}),
      }));
    const bans = this.bans.sort((a, b) => a.timeMs - b.timeMs).map(({ timeMs: _, ...ban }) => ban);
    return {
      hosts,
      bans,
      records: this.records,
      lost_records: this.lost,
      ...(at ? { at: { time: rfc3339(at.timeMs), window_s: at.windowMs / 1000 } } : {}),
    };
  }
}
