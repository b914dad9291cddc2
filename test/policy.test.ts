import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { escalatedDurationS } from '../src/policy/escalation.js';
import {
  STRENGTH_ANNOUNCED,
  STRENGTH_CACHE,
  STRENGTH_EXACT,
  STRENGTH_HEURISTIC,
  STRENGTH_NAME,
  STRENGTH_RESPONSE,
} from '../src/detect/detector.js';
import { BanRateTable } from '../src/policy/ban-rate.js';
import { Clock } from '../src/flow/clock.js';
import { Evidence, Policy } from '../src/policy/policy.js';
import { policySettings, type HostFacts } from '../src/policy/settings.js';
import { ipv4Address, ipv6Address } from './helpers/frames.js';

const LOCAL = '10.8.0.2';
const REMOTE = '198.51.100.9';
const INITIATOR = 0;
const RESPONDER = 1;

interface EvidenceFields {
  rule?: string;
  strength?: number;
  producerIsPeer?: boolean;
  serviceIsTracker?: boolean;
  tcp?: boolean;
  tunnelled?: boolean;
  initiator?: string;
  responder?: string;
  producer?: number;
  handshakeSeen?: boolean;
  acknowledgesOtherSyn?: boolean;
  sameInterfaceBothWays?: boolean;
  established?: boolean;
}

/** A flow the local host opened to a remote peer, with the remote's bytes over a handshake seen both ways. */
function evidence(fields: EvidenceFields = {}): Evidence {
  const e = new Evidence();
  const initiator = fields.initiator ?? LOCAL;
  const responder = fields.responder ?? REMOTE;
  const v6 = initiator.includes(':');
  e.family = v6 ? 6 : 4;
  e.addresses[0].set(v6 ? ipv6Address(initiator) : ipv4Address(initiator));
  e.addresses[1].set(v6 ? ipv6Address(responder) : ipv4Address(responder));
  e.ports[0] = 50000;
  e.ports[1] = 51413;
  e.rule = fields.rule ?? 'handshake';
  e.strength = fields.strength ?? STRENGTH_EXACT;
  e.producerIsPeer = fields.producerIsPeer ?? true;
  e.serviceIsTracker = fields.serviceIsTracker ?? false;
  e.tcp = fields.tcp ?? true;
  e.tunnelled = fields.tunnelled ?? false;
  e.producer = fields.producer ?? RESPONDER;
  e.handshakeSeen = fields.handshakeSeen ?? e.tcp;
  e.acknowledgesOtherSyn = fields.acknowledgesOtherSyn ?? e.tcp;
  e.sameInterfaceBothWays = fields.sameInterfaceBothWays ?? false;
  e.established = fields.established ?? e.tcp;
  return e;
}

function policy(env: Record<string, string> = {}, host: HostFacts = { ownAddresses: [], resolvers: [] }, clock = new Clock()): Policy {
  return new Policy(policySettings(loadConfig(env), host), clock);
}

describe('policy: drop on any evidence', () => {
  it.each([
    ['exact', STRENGTH_EXACT],
    ['response', STRENGTH_RESPONSE],
    ['heuristic', STRENGTH_HEURISTIC],
    ['cache', STRENGTH_CACHE],
    ['announced', STRENGTH_ANNOUNCED],
    ['name', STRENGTH_NAME],
  ])('drops a flow on %s evidence and marks its connection', (_name, strength) => {
    for (const producer of [INITIATOR, RESPONDER]) {
      const decision = policy().decide(evidence({ strength, producer }));
      expect(decision).toMatchObject({ action: 'drop', markConnection: true, enforce: true });
    }
  });

  it('leaves a clean flow to the kernel through its connection mark, except inside a tunnel', () => {
    expect(policy().clean(false)).toMatchObject({ action: 'accept', markConnection: true, ban: null });
    expect(policy().clean(true)).toMatchObject({ action: 'accept', markConnection: false, ban: null });
  });

  it('in monitor-only mode decides the same drop and ban, and enforces neither', () => {
    for (const env of [{ MONITOR_ONLY: 'true' }, { ACTION: 'monitor' }] as Record<string, string>[]) {
      const decision = policy(env).decide(evidence());
      expect(decision).toMatchObject({ action: 'drop', enforce: false, ban: { address: REMOTE, durationS: 18000 } });
    }
  });

  it('under ACTION=throttle limits the flow through its mark and bans no one, even on proof', () => {
    const throttling = policy({ ACTION: 'throttle' });
    const decision = throttling.decide(evidence());
    expect(decision).toMatchObject({ action: 'throttle', markConnection: true, enforce: true, ban: null });
    expect(decision.reason).toBe('no ban: ACTION=throttle limits BitTorrent flows, it never bans');
    expect(throttling.bans).toBe(0);
  });
});

describe('policy: ban only on proof', () => {
  it('bans a remote peer whose own handshake came over a TCP handshake it saw both ways', () => {
    const decision = policy().decide(evidence());
    expect(decision.ban).toEqual({ family: 4, address: REMOTE, durationS: 18000 });
    expect(decision.reason).toBe(`ban: ${REMOTE} sent handshake bytes (exact) over TCP after a handshake seen both ways`);
    expect(decision.remember).toEqual({ as: 'proven', end: 1 });
  });

  it('bans a remote peer that connected in and spoke first, over IPv6 too', () => {
    const decision = policy().decide(evidence({ initiator: '2001:db8::9', responder: 'fd00::2', producer: INITIATOR }));
    expect(decision.ban).toEqual({ family: 6, address: '2001:db8::9', durationS: 18000 });
  });

  it("never bans the remote end for the local user's own bytes: a handshake written to a web server", () => {
    const decision = policy().decide(evidence({ producer: INITIATOR }));
    expect(decision.ban).toBeNull();
    expect(decision.reason).toBe(`no ban: the BitTorrent bytes came from the local end ${LOCAL}; a local user's bytes never ban the other end`);
    // The local host's own BitTorrent names its peer, for that host's later flows only.
    expect(decision.remember).toEqual({ as: 'listed', end: 1 });
  });

  it('never bans without the TCP handshake both ways, or bytes that do not acknowledge the SYN', () => {
    expect(policy().decide(evidence({ handshakeSeen: false })).reason).toBe("no ban: the gateway did not see this TCP connection's handshake both ways");
    const blind = policy().decide(evidence({ acknowledgesOtherSyn: false }));
    expect(blind.ban).toBeNull();
    expect(blind.reason).toContain('do not acknowledge');
  });

  it('never bans on an unsolicited UDP datagram, whose source can be anything', () => {
    for (const producer of [INITIATOR, RESPONDER]) {
      const decision = policy().decide(evidence({ tcp: false, rule: 'dht', initiator: producer === INITIATOR ? REMOTE : LOCAL, responder: producer === INITIATOR ? LOCAL : REMOTE, producer }));
      expect(decision.ban).toBeNull();
      expect(decision.reason).toBe('no ban: an unsolicited UDP datagram can carry any source address');
    }
  });

  it('bans the remote end of UDP that answers a local query (a uTP STATE for the local SYN)', () => {
    const decision = policy().decide(evidence({ tcp: false, rule: 'utp', strength: STRENGTH_RESPONSE }));
    expect(decision.ban?.address).toBe(REMOTE);
    expect(decision.reason).toBe(`ban: ${REMOTE} sent utp bytes (response) over UDP in answer to ${LOCAL}'s query`);
  });

  it("never bans when both ends' packets came in on one interface: one side forged the other's", () => {
    for (const tcp of [true, false]) {
      const decision = policy().decide(evidence({ tcp, strength: STRENGTH_RESPONSE, sameInterfaceBothWays: true }));
      expect(decision.ban).toBeNull();
      expect(decision.reason).toContain('same interface');
    }
  });

  it('never bans a UDP "response" from the end that opened the flow', () => {
    const decision = policy().decide(evidence({ tcp: false, strength: STRENGTH_RESPONSE, initiator: REMOTE, responder: LOCAL, producer: INITIATOR }));
    expect(decision.ban).toBeNull();
  });

  it.each([
    ['heuristic', STRENGTH_HEURISTIC],
    ['cache', STRENGTH_CACHE],
    ['announced', STRENGTH_ANNOUNCED],
    ['name', STRENGTH_NAME],
  ])('never bans on %s evidence, however good the exchange', (name, strength) => {
    const decision = policy().decide(evidence({ strength }));
    expect(decision.ban).toBeNull();
    expect(decision.reason).toBe(`no ban: ${name} evidence drops flows, it never bans`);
    expect(decision.remember).toBeNull();
  });

  it('never bans a service that carried BitTorrent: tracker, web seed, proxy, resolver', () => {
    const decision = policy().decide(evidence({ rule: 'http-tracker', producerIsPeer: false }));
    expect(decision.ban).toBeNull();
    expect(decision.reason).toContain('a service');
  });

  it("lists a tracker to the local client whose connection it answered, on its own answer only; no other service", () => {
    const tracker = { rule: 'http-tracker', producerIsPeer: false, serviceIsTracker: true };
    // The tracker's answer to the host's connection (on a route that shows what the LAN receives, all there is).
    expect(policy().decide(evidence({ ...tracker, producer: RESPONDER })).remember).toEqual({ as: 'listed', end: RESPONDER });
    // The host's request alone: a web page can have a browser send one to any web server, or
    // through a forward proxy; and a remote client's request to a local server names no tracker.
    expect(policy().decide(evidence({ ...tracker, producer: INITIATOR })).remember).toBeNull();
    expect(policy().decide(evidence({ ...tracker, initiator: REMOTE, responder: LOCAL, producer: INITIATOR })).remember).toBeNull();
    // An answer read first, from the middle of a flow: which end listens is not known.
    expect(policy().decide(evidence({ ...tracker, initiator: REMOTE, responder: LOCAL, producer: INITIATOR, handshakeSeen: false })).remember).toBeNull();
    // A web seed or a proxy serves everything else too; a name is no tracker's bytes; a local
    // tracker, or a flow with no local end, has no client to list it to.
    expect(policy().decide(evidence({ rule: 'http-bittorrent', producerIsPeer: false })).remember).toBeNull();
    expect(policy().decide(evidence({ ...tracker, strength: STRENGTH_NAME })).remember).toBeNull();
    expect(policy().decide(evidence({ ...tracker, responder: '10.0.0.9' })).remember).toBeNull();
    expect(policy().decide(evidence({ ...tracker, initiator: '198.51.100.77' })).remember).toBeNull();
    expect(policy().decide(evidence({ ...tracker, tunnelled: true })).remember).toBeNull();
  });

  it('never bans inside a tunnel, and leaves the tunnel connection unmarked', () => {
    const decision = policy().decide(evidence({ tunnelled: true }));
    expect(decision).toMatchObject({ action: 'drop', markConnection: false, ban: null, remember: null });
    expect(decision.reason).toContain('tunnel');
  });

  it('bans nobody when neither end is local', () => {
    const decision = policy().decide(evidence({ initiator: '203.0.113.5' }));
    expect(decision.ban).toBeNull();
    expect(decision.reason).toContain('LOCAL_CIDRS');
  });

  it('bans a local peer on the same proof only with BAN_LOCAL', () => {
    const inside = { initiator: '10.8.0.3', producer: INITIATOR };
    expect(policy().decide(evidence(inside)).ban).toBeNull();
    expect(policy({ BAN_LOCAL: 'true' }).decide(evidence(inside)).ban?.address).toBe('10.8.0.3');
  });

  it('honours LOCAL_CIDRS instead of the private ranges', () => {
    const env = { LOCAL_CIDRS: '203.0.113.0/24' };
    expect(policy(env).decide(evidence({ initiator: '203.0.113.5' })).ban?.address).toBe(REMOTE);
    // 10.8.0.2 is now just another remote address: neither end is local.
    expect(policy(env).decide(evidence()).ban).toBeNull();
  });
});

describe('policy: never banned, whatever the evidence', () => {
  const host: HostFacts = {
    resolvers: [{ family: 4, address: '192.0.2.53', prefix: 32 }],
    ownAddresses: [{ family: 4, address: '192.0.2.1', prefix: 32 }],
  };
  it.each([
    ['ALLOW_CIDRS', { ALLOW_CIDRS: '198.51.100.0/24' }, REMOTE],
    ['BAN_EXEMPT', { BAN_EXEMPT: '198.51.100.9' }, REMOTE],
    ['a resolver in /etc/resolv.conf', {}, '192.0.2.53'],
    ["one of the gateway's own addresses", {}, '192.0.2.1'],
    ['loopback, link-local, multicast or unspecified', {}, '224.0.0.251'],
    ['loopback, link-local, multicast or unspecified', {}, '127.0.0.1'],
  ])('%s', (label, env, address) => {
    const decision = policy(env, host).decide(evidence({ responder: address }));
    expect(decision.ban).toBeNull();
    expect(decision.reason).toBe(`no ban: ${address} is exempt (${label})`);
  });

  it('takes new settings while it runs (new host facts, a reload)', () => {
    const p = policy();
    expect(p.decide(evidence()).ban).toMatchObject({ address: REMOTE, durationS: 18000 });
    p.setSettings(policySettings(loadConfig({ BAN_DURATION: '60' }), { ownAddresses: [], resolvers: [] }));
    expect(p.decide(evidence({ responder: '198.51.100.10' })).ban).toMatchObject({ durationS: 60 });
    p.setSettings(policySettings(loadConfig({}), { ownAddresses: [{ family: 4, address: REMOTE, prefix: 32 }], resolvers: [] }));
    expect(p.decide(evidence()).reason).toBe(`no ban: ${REMOTE} is exempt (one of the gateway's own addresses)`);
  });
});

describe('policy: BAN_RATE', () => {
  it('bans at most BAN_RATE new addresses per local host and minute, and still drops the rest', () => {
    const clock = new Clock();
    clock.nowMs = 1_000_000;
    const p = policy({ BAN_RATE: '3' }, undefined, clock);
    const remote = (i: number) => `198.51.100.${i}`;
    const bans = [1, 2, 3, 4, 5].map((i) => p.decide(evidence({ responder: remote(i) })));
    expect(bans.map((d) => d.ban?.address ?? null)).toEqual([remote(1), remote(2), remote(3), null, null]);
    expect(bans.every((d) => d.action === 'drop')).toBe(true);
    expect(bans[3].reason).toBe(`no ban: ${LOCAL} reached BAN_RATE (3 bans a minute); the flow is still dropped`);
    expect(p.bansRateLimited).toBe(2);
    // Withheld by the rate, not by the proof: the decision says so (the metrics count it apart).
    expect(bans.map((d) => d.rateLimited)).toEqual([false, false, false, true, true]);
    // Another local host has its own count; the first one gets a new minute.
    expect(p.decide(evidence({ initiator: '10.8.0.7', responder: remote(6) })).ban).not.toBeNull();
    clock.nowMs += 60_000;
    expect(p.decide(evidence({ responder: remote(7) })).ban).not.toBeNull();
  });

  it('counts at most as many local hosts as its table holds', () => {
    const clock = new Clock();
    const settings = policySettings(loadConfig({ BAN_RATE: '1' }), { ownAddresses: [], resolvers: [] });
    // A table of one set: four hosts.
    const p = new Policy(settings, clock, new BanRateTable(4));
    for (let host = 1; host <= 50; host++) {
      clock.nowMs++;
      expect(p.decide(evidence({ initiator: `10.8.0.${host}` })).ban).not.toBeNull();
    }
    // Host 1 was forgotten to make room, so it starts a new count; host 50 is still counted.
    expect(p.decide(evidence({ initiator: '10.8.0.1' })).ban).not.toBeNull();
    expect(p.decide(evidence({ initiator: '10.8.0.50' })).ban).toBeNull();
  });

  it('counts against one limit in every policy that shares the table, as the queues of a daemon do', () => {
    const clock = new Clock();
    const settings = policySettings(loadConfig({ BAN_RATE: '3' }), { ownAddresses: [], resolvers: [] });
    const memory = BanRateTable.allocate(1024, true);
    const queues = [0, 1].map(() => new Policy(settings, clock, new BanRateTable(1024, memory)));
    const bans = [1, 2, 3, 4].map((i) => queues[i % 2].decide(evidence({ responder: `198.51.100.${i}` })).ban);
    expect(bans.map((ban) => ban?.address ?? null)).toEqual(['198.51.100.1', '198.51.100.2', '198.51.100.3', null]);
    expect(() => new BanRateTable(2048, memory)).toThrow(RangeError);
  });
});

describe('policy: cutting connections (CUT_ESTABLISHED)', () => {
  it('cuts a dropped TCP connection that was set up, by default', () => {
    expect(policy().decide(evidence({ strength: STRENGTH_HEURISTIC })).cut).toBe(true);
    expect(policy().decide(evidence()).cut).toBe(true);
  });

  it.each([
    ['with CUT_ESTABLISHED=false', { CUT_ESTABLISHED: 'false' }, {}],
    ['under ACTION=throttle', { ACTION: 'throttle' }, {}],
    ['under ACTION=monitor', { ACTION: 'monitor' }, {}],
    ['over UDP', {}, { tcp: false }],
    ['inside a tunnel', {}, { tunnelled: true }],
    ['at a SYN (nothing set up to reset)', {}, { established: false }],
  ] as [string, Record<string, string>, EvidenceFields][])('does not cut %s', (_name, env, fields) => {
    expect(policy(env).decide(evidence(fields)).cut).toBe(false);
  });
});

describe('policy: escalating bans (BAN_ESCALATION)', () => {
  it('doubles each ban in a row up to the cap, never below BAN_DURATION, and not at all when off', () => {
    const { banEscalation } = loadConfig({ BAN_ESCALATION: 'factor=2,max=3600' });
    expect(banEscalation).toEqual({ factor: 2, maxS: 3600, windowS: 86_400 });
    expect([1, 2, 3, 4, 5, 9].map((count) => escalatedDurationS(600, count, banEscalation))).toEqual([600, 1200, 2400, 3600, 3600, 3600]);
    expect(escalatedDurationS(7200, 3, banEscalation)).toBe(7200);
    expect(escalatedDurationS(600, 5, loadConfig({}).banEscalation)).toBe(600);
    expect(escalatedDurationS(100, 3, loadConfig({ BAN_ESCALATION: 'factor=1.5' }).banEscalation)).toBe(225);
  });
});
