/**
 * The CrowdSec link's pieces: the pure parts alone, the publisher and the decisions feed against
 * a real Local API (Debian's crowdsec on a free loopback port, its own database). The feed writes
 * into a ban table kept in memory here; the XDP maps are the fleet lab's (test/fleet-lab.test.ts).
 */
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BanOutcome, BanTable } from '../src/bans/sink.js';
import { CidrSet } from '../src/config/cidr.js';
import { DecisionFeed, lapiRule, originSelected } from '../src/fleet/decisions.js';
import { FleetBanSink, type FleetLink } from '../src/fleet/fleet.js';
import { LapiClient, parseGoDuration } from '../src/fleet/lapi.js';
import { backoffMs, banAlert, BanPublisher } from '../src/fleet/publisher.js';
import { Reachability, type FleetState } from '../src/fleet/state.js';
import { DryRunBanSink, type BanSink } from '../src/bans/sink.js';
import { loadConfig } from '../src/config/config.js';
import { canonicalAddress, neverBanReason } from '../src/fleet/decisions.js';
import { decisionNeverBan } from '../src/policy/settings.js';
import { freePort, haveCrowdsec, Lapi } from '../src/bench/lapi.js';

const silent = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

/** Bans kept in a map, with their rule: what the feed wrote, for the assertions. */
class MemoryTable implements BanTable {
  readonly bans = new Map<string, { durationS: number; rule: string }>();
  put(address: string, durationS: number, rule: string): boolean {
    if (address === '127.0.0.1') return false;
    this.bans.set(address, { durationS, rule });
    return true;
  }
  lift(address: string): boolean {
    return this.bans.delete(address);
  }
  entries(): { address: string; rule: string }[] {
    return [...this.bans].map(([address, { rule }]) => ({ address, rule }));
  }
}

async function until(what: string, test: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!test()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('CrowdSec link, pure parts', () => {
  it('reads Go durations as the LAPI writes them', () => {
    expect(parseGoDuration('3h59m58.5s')).toBe(((3 * 60 + 59) * 60 + 58.5) * 1000);
    expect(parseGoDuration('9m59.331374483s')).toBeCloseTo(599_331.374483, 5);
    expect(parseGoDuration('-14.922791ms')).toBeCloseTo(-14.922791, 6);
    expect(parseGoDuration('1h')).toBe(3_600_000);
    expect(parseGoDuration('500µs')).toBe(0.5);
    expect(parseGoDuration('0')).toBe(0);
    expect(parseGoDuration('10')).toBeNaN();
    expect(parseGoDuration('1d')).toBeNaN();
    expect(parseGoDuration('')).toBeNaN();
  });

  it('selects decisions by origin: btwall means btwall scenarios, all means every one', () => {
    const ours = { origin: 'crowdsec', scenario: 'btwall/bittorrent-handshake' };
    const manual = { origin: 'cscli', scenario: "manual 'ban' from 'gw'" };
    const sshBf = { origin: 'crowdsec', scenario: 'crowdsecurity/ssh-bf' };
    expect([ours, manual, sshBf].map((d) => originSelected(['btwall'], d))).toEqual([true, false, false]);
    expect([ours, manual, sshBf].map((d) => originSelected(['cscli'], d))).toEqual([false, true, false]);
    expect([ours, manual, sshBf].map((d) => originSelected('all', d))).toEqual([true, true, true]);
    expect([ours, manual].map(lapiRule)).toEqual(['lapi:handshake', 'lapi:cscli']);
  });

  it('publishes a ban as an alert with one Ip ban decision, its duration, scenario and evidence', () => {
    const alert = banAlert({ address: '203.0.113.7', durationS: 600, rule: 'handshake', evidence: { protocol: 'TCP', sourcePort: '51413' }, timeMs: Date.UTC(2026, 0, 2, 3, 4, 5) });
    expect(alert.scenario).toBe('btwall/bittorrent-handshake');
    expect(alert.decisions).toEqual([{ origin: 'crowdsec', type: 'ban', scope: 'Ip', value: '203.0.113.7', duration: '600s', scenario: 'btwall/bittorrent-handshake' }]);
    expect(alert.source).toEqual({ scope: 'Ip', value: '203.0.113.7', ip: '203.0.113.7' });
    expect(alert.meta).toEqual([
      { key: 'rule', value: 'handshake' },
      { key: 'protocol', value: 'TCP' },
      { key: 'sourcePort', value: '51413' },
    ]);
    expect(alert.start_at).toBe('2026-01-02T03:04:05.000Z');
  });

  it("refuses decisions on the gateway's users (unless BAN_LOCAL), ALLOW_CIDRS, BAN_EXEMPT, its own addresses and resolvers", () => {
    const host = { ownAddresses: [{ family: 4 as const, address: '203.0.113.1', prefix: 32 }], resolvers: [{ family: 4 as const, address: '203.0.113.53', prefix: 32 }] };
    const env = { LOCAL_CIDRS: '10.66.0.0/16', ALLOW_CIDRS: '198.51.100.0/28', BAN_EXEMPT: '2001:db8:e::/48' };
    const reason = (lists: ReturnType<typeof decisionNeverBan>, text: string) => {
      const a = canonicalAddress(text)!;
      return neverBanReason(lists, a.family, a.bytes);
    };
    const lists = decisionNeverBan(loadConfig(env), host);
    expect(['10.66.3.4', '198.51.100.9', '2001:DB8:E::1', '203.0.113.1', '203.0.113.53', '127.0.0.1', '192.0.2.9'].map((t) => reason(lists, t))).toEqual([
      "LOCAL_CIDRS (the gateway's users; BAN_LOCAL=false)",
      'ALLOW_CIDRS',
      'BAN_EXEMPT',
      "one of the gateway's own addresses",
      'a resolver in /etc/resolv.conf',
      'loopback, link-local, multicast or unspecified',
      null,
    ]);
    expect(reason(decisionNeverBan(loadConfig({ ...env, BAN_LOCAL: 'true' }), host), '10.66.3.4')).toBeNull();
    // Without LOCAL_CIDRS the private ranges are the users'.
    expect(reason(decisionNeverBan(loadConfig({}), host), '192.168.1.1')).toContain('LOCAL_CIDRS');
    expect(canonicalAddress('2001:DB8:0::0:9')?.text).toBe('2001:db8::9');
    expect(canonicalAddress('1.2.3.0/24')).toBeNull();
  });

  it('backs off 1 s, doubling, at most 30 s', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 20].map(backoffMs)).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });

  it('the fleet sink bans locally first and publishes only what the local sink placed', () => {
    const published: string[] = [];
    const fleet: FleetLink = {
      publish: (address) => void published.push(address),
      describe: () => 'fleet',
      setNeverBan: () => {},
      state: (): FleetState => ({ lapiUrl: 'u', lapiReachable: true, lastSyncMs: null, decisionsReceived: 3, decisionsRejected: 1, decisionsLifted: 0, published: 2, queued: 0, publishDropped: 0 }),
      close: () => {},
    };
    const placed: string[] = [];
    const local: BanSink = Object.assign(new DryRunBanSink(silent), {
      ban: (address: string): BanOutcome => {
        placed.push(address);
        return address === '192.0.2.1' ? 'refused' : 'added';
      },
    });
    const sink = new FleetBanSink(local, fleet);
    expect(sink.ban('198.51.100.1', 60, 'handshake')).toBe('added');
    expect(sink.ban('192.0.2.1', 60, 'handshake')).toBe('refused');
    expect(placed).toEqual(['198.51.100.1', '192.0.2.1']);
    expect(published).toEqual(['198.51.100.1']);
    expect(sink.stats()).toMatchObject({ fleetDecisionsReceived: 3, fleetDecisionsRejected: 1, fleetPublished: 2, fleetLapiReachable: 1, fleetLastSyncAgeS: -1 });
    expect(sink.describe()).toBe(`${local.describe()}; fleet`);
  });
});

describe.runIf(haveCrowdsec())('CrowdSec link against a real Local API', () => {
  let lapi: Lapi;
  let client: LapiClient;
  let apiKey: string;
  const machine = { id: `btwall-unit-${process.pid}`, password: 'unit-test-password-1' };

  beforeAll(async () => {
    lapi = new Lapi(`127.0.0.1:${await freePort()}`, null);
    client = new LapiClient(`http://${lapi.listen}`);
    lapi.addMachine(machine.id, machine.password);
    lapi.useMachineForCscli(machine.id, machine.password);
    apiKey = lapi.addBouncer('unit');
  }, 30_000);
  afterAll(() => lapi?.destroy());

  it('queues bans while the LAPI is down (bounded, the oldest dropped), then publishes them when it answers, logging in again after its restart', async () => {
    const reachability = new Reachability();
    const publisher = new BanPublisher(client, machine, 3, reachability, silent);
    const ban = (n: number) => ({ address: `198.51.100.${n}`, durationS: 3600, rule: 'handshake', evidence: { reason: 'unit test' }, timeMs: Date.now() });
    for (let n = 1; n <= 5; n++) publisher.publish(ban(n));
    await until('the first failure', () => publisher.failures > 0);
    expect(reachability.reachable).toBe(false);
    expect([publisher.queued, publisher.dropped, publisher.published]).toEqual([3, 2, 0]);
    // The one in flight when the queue filled went back to its front: 2 and 3 were the oldest waiting.
    expect(publisher.isPending('198.51.100.1')).toBe(true);
    expect(publisher.isPending('198.51.100.2')).toBe(false);

    await lapi.start();
    await until('the queued bans published', () => publisher.published === 3, 10_000);
    expect(reachability.reachable).toBe(true);
    expect(publisher.queued).toBe(0);
    const listed = lapi.decisions().filter((d) => d.value.startsWith('198.51.100.'));
    expect(listed.map((d) => d.value).sort()).toEqual(['198.51.100.1', '198.51.100.4', '198.51.100.5']);
    expect(listed.every((d) => d.scenario === 'btwall/bittorrent-handshake' && d.type === 'ban' && d.origin === 'crowdsec')).toBe(true);

    // A restarted LAPI signs with a new secret: the old token is refused (401), the publisher logs in again.
    await lapi.stop();
    await lapi.start();
    const logins = () => lapi.output.split('\n').filter((l) => l.includes('POST /v1/watchers/login') && l.includes(' 200 ')).length;
    const [loginsBefore, failuresBefore] = [logins(), publisher.failures];
    publisher.publish(ban(6));
    await until('the ban after the restart published', () => publisher.published === 4, 10_000);
    expect(publisher.failures).toBe(failuresBefore);
    expect(logins()).toBeGreaterThan(loginsBefore);
    expect(lapi.output).toMatch(/POST \/v1\/alerts HTTP\/1\.1 401/);
    publisher.close();
  }, 40_000);

  it('enforces the decisions of the chosen origins, lifts deleted ones, refuses the never-ban lists, and resyncs in full after a restart', async () => {
    if (!lapi.running) await lapi.start();
    const table = new MemoryTable();
    // A local ban of this gateway's policy: no resync may lift it.
    table.put('192.0.2.50', 3600, 'handshake');
    const local = { label: 'LOCAL_CIDRS', cidrs: new CidrSet([{ family: 4, address: '10.66.0.0', prefix: 16 }]) };
    const reachability = new Reachability();
    const open = (origins: 'all' | string[]) => new DecisionFeed(client, { apiKey, pollIntervalMs: 100, origins, capacity: 1000 }, table, () => [local], () => false, reachability, silent);
    let feed = open(['btwall', 'cscli']);
    feed.start();
    await until('the first sync', () => feed.lastSyncMs !== null);
    // The publisher's bans of the test before are btwall's scenario: enforced, with their remaining time.
    expect(table.bans.get('198.51.100.4')).toMatchObject({ rule: 'lapi:handshake' });
    expect(table.bans.get('198.51.100.4')!.durationS).toBeGreaterThan(3500);

    lapi.cscli(['decisions', 'add', '--ip', '192.0.2.77', '--duration', '1h']);
    lapi.cscli(['decisions', 'add', '--ip', '10.66.1.2', '--duration', '1h']);
    lapi.cscli(['decisions', 'add', '--ip', '2001:DB8:0::0:9', '--duration', '30m']);
    await until('the cscli decisions', () => table.bans.has('192.0.2.77') && table.bans.has('2001:db8::9'));
    expect(table.bans.get('192.0.2.77')).toMatchObject({ rule: 'lapi:cscli' });
    expect(table.bans.get('2001:db8::9')!.durationS).toBeLessThanOrEqual(1800);
    await until('the refusal', () => feed.rejected === 1);
    expect(table.bans.has('10.66.1.2')).toBe(false);

    lapi.cscli(['decisions', 'delete', '--ip', '192.0.2.77']);
    await until('the deletion', () => !table.bans.has('192.0.2.77'));
    expect(feed.lifted).toBe(1);

    // The feed stops (a gateway restart); meanwhile a decision goes and another comes.
    feed.close();
    lapi.cscli(['decisions', 'delete', '--ip', '2001:DB8:0::0:9']);
    lapi.cscli(['decisions', 'add', '--ip', '192.0.2.88', '--duration', '1h']);
    feed = open(['btwall', 'cscli']);
    feed.start();
    await until('the resync', () => feed.lastSyncMs !== null);
    expect(table.bans.has('2001:db8::9')).toBe(false);
    expect(table.bans.has('192.0.2.88')).toBe(true);
    expect(table.bans.has('198.51.100.4')).toBe(true);
    expect(table.bans.get('192.0.2.50')).toMatchObject({ rule: 'handshake' });

    // The LAPI down: bans stay; back, a full resync (startup=true) and the changes flow again.
    await lapi.stop();
    await until('the outage seen', () => reachability.reachable === false);
    expect(table.bans.has('192.0.2.88')).toBe(true);
    await lapi.start();
    const synced = feed.lastSyncMs!;
    await until('the resync after the outage', () => feed.lastSyncMs! > synced && reachability.reachable === true, 10_000);
    expect([...table.bans.keys()].sort()).toEqual(['192.0.2.50', '192.0.2.88', '198.51.100.1', '198.51.100.4', '198.51.100.5', '198.51.100.6']);
    feed.close();

    // Only the origins asked for: with `btwall` alone, cscli's decisions go at the next full read.
    feed = open(['btwall']);
    feed.start();
    await until('the resync with btwall only', () => feed.lastSyncMs !== null);
    expect(table.bans.has('192.0.2.88')).toBe(false);
    expect(table.bans.has('198.51.100.4')).toBe(true);
    feed.close();
  }, 60_000);
});
