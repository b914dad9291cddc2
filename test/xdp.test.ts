/**
 * The XDP ban program over crafted frames, through BPF_PROG_TEST_RUN: no device, no namespace, the
 * real object file and maps (pinned under a directory of this test's own).
 */
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BanMaps, modesToTry, parseAddress, XDP_DROP, XDP_PASS, XdpBanTable, XdpProgram, type LinkKind } from '../src/bans/xdp.js';
import { CidrSet } from '../src/config/cidr.js';
import { banMapsBytes } from '../src/config/sizing.js';
import { ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN, ascii, ethernet, ipv4, ipv6, ipv6Extension, packet4, packet6, tcp, udp, PROTO_TCP, PROTO_UDP, type VlanTag } from './helpers/frames.js';
import { canUseKernel } from './helpers/netns.js';
import { NO_ESCALATION, type Escalation } from '../src/policy/escalation.js';

const silent = pino({ level: 'silent' });
const PEER4 = '198.51.100.7';
const PEER6 = '2001:db8:77::7';
const CLIENT4 = '10.0.0.2';
const CLIENT6 = '2001:db8::2';

const payload = udp(6881, 51413, ascii('d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe'));
const v4 = (src: string, dst: string) => packet4(src, dst, PROTO_UDP, payload);
const v6 = (src: string, dst: string) => packet6(src, dst, PROTO_UDP, payload);

const TCP_FIN = 0x01;
const TCP_SYN = 0x02;
const TCP_RST = 0x04;
const TCP_ACK = 0x10;

function bytes(text: string): { family: 4 | 6; bytes: Uint8Array } {
  const parsed = parseAddress(text);
  if (parsed === null) throw new Error(`bad address ${text}`);
  return parsed;
}

describe('XDP_MODE=auto', () => {
  it('tries native where the driver has it or the kernel cannot say, generic where it has not; a set mode is the only one', () => {
    expect(modesToTry('auto', true)).toEqual(['native', 'generic']);
    expect(modesToTry('auto', null)).toEqual(['native', 'generic']);
    expect(modesToTry('auto', false)).toEqual(['generic']);
    expect(modesToTry('native', false)).toEqual(['native']);
    expect(modesToTry('offload', null)).toEqual(['offload']);
    expect(modesToTry('auto', true, true)).toEqual(['generic']);
    expect(modesToTry('native', true, true)).toEqual(['native']);
  });
});

describe.runIf(canUseKernel())('XDP ban program (BPF_PROG_TEST_RUN)', () => {
  const pinDir = `/sys/fs/bpf/btwall-test-${process.pid}-xdp`;
  let program: XdpProgram;
  let maps: BanMaps;

  const verdict = (kind: LinkKind, frame: Uint8Array) => program.testRun(kind, frame).retval;
  const ban = (text: string, durationS = 60, rule = 'handshake', escalation = NO_ESCALATION) => {
    const a = bytes(text);
    return maps.ban(a.family, a.bytes, durationS, rule, escalation);
  };
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  beforeAll(() => {
    program = XdpProgram.load(pinDir, 4096, silent);
    maps = program.maps;
  });
  beforeEach(() => void maps.flush());
  afterAll(() => {
    program?.close();
    rmSync(pinDir, { recursive: true, force: true });
  });

  it('as a ban table (bans from a fleet): puts with the rule given, refuses loopback and own addresses, lifts, lists', () => {
    const table = new XdpBanTable(maps, () => new CidrSet([{ family: 4, address: CLIENT4, prefix: 32 }]));
    expect(table.put(PEER4, 600, 'lapi:cscli')).toBe(true);
    expect(table.put(PEER6, 60, 'lapi:handshake')).toBe(true);
    expect(table.put('127.0.0.1', 60, 'lapi:cscli')).toBe(false);
    expect(table.put(CLIENT4, 60, 'lapi:cscli')).toBe(false);
    expect(table.put('not-an-address', 60, 'lapi:cscli')).toBe(false);
    expect(table.entries()).toEqual([expect.objectContaining({ address: PEER4, rule: 'lapi:cscli' }), expect.objectContaining({ address: PEER6, rule: 'lapi:handshake' })]);
    expect(verdict('ethernet', ethernet(ETHERTYPE_IPV4, v4(PEER4, CLIENT4)))).toBe(XDP_DROP);
    expect(table.lift(PEER4)).toBe(true);
    expect(table.lift(PEER4)).toBe(false);
    expect(verdict('ethernet', ethernet(ETHERTYPE_IPV4, v4(PEER4, CLIENT4)))).toBe(XDP_PASS);
  });

  it('pins the ban maps and the drop counters by name under the pin directory', () => {
    expect(readdirSync(pinDir).sort()).toEqual(['ban4', 'ban6', 'drops']);
  });

  it('drops IPv4 from or to a banned peer and counts it, and passes everything else', () => {
    ban(PEER4);
    const before = maps.drops().v4;
    const fromPeer = ethernet(ETHERTYPE_IPV4, v4(PEER4, CLIENT4));
    expect(verdict('ethernet', fromPeer)).toBe(XDP_DROP);
    expect(verdict('ethernet', ethernet(ETHERTYPE_IPV4, v4(CLIENT4, PEER4)))).toBe(XDP_DROP);
    expect(verdict('ethernet', ethernet(ETHERTYPE_IPV4, v4(CLIENT4, '198.51.100.8')))).toBe(XDP_PASS);
    const after = maps.drops().v4;
    expect(after.packets - before.packets).toBe(2);
    expect(after.bytes - before.bytes).toBe(2 * fromPeer.length);
  });

  it('keys on the address in network byte order: the byte-swapped address passes', () => {
    ban(PEER4);
    const swapped = PEER4.split('.').reverse().join('.');
    expect(verdict('ethernet', ethernet(ETHERTYPE_IPV4, v4(swapped, CLIENT4)))).toBe(XDP_PASS);
    expect(verdict('ethernet', ethernet(ETHERTYPE_IPV4, v4(CLIENT4, swapped)))).toBe(XDP_PASS);
  });

  it('drops IPv6 from or to a banned peer, counted apart from IPv4', () => {
    ban(PEER6);
    const before = maps.drops();
    expect(verdict('ethernet', ethernet(ETHERTYPE_IPV6, v6(PEER6, CLIENT6)))).toBe(XDP_DROP);
    expect(verdict('ethernet', ethernet(ETHERTYPE_IPV6, v6(CLIENT6, PEER6)))).toBe(XDP_DROP);
    expect(verdict('ethernet', ethernet(ETHERTYPE_IPV6, v6(CLIENT6, '2001:db8:77::8')))).toBe(XDP_PASS);
    const after = maps.drops();
    expect(after.v6.packets - before.v6.packets).toBe(2);
    expect(after.v4.packets).toBe(before.v4.packets);
  });

  it('sees through an 802.1Q tag and a QinQ pair of tags', () => {
    ban(PEER4);
    ban(PEER6);
    const tags: VlanTag[][] = [[[ETHERTYPE_VLAN, 100]], [[ETHERTYPE_QINQ, 200], [ETHERTYPE_VLAN, 100]], [[ETHERTYPE_VLAN, 300], [ETHERTYPE_VLAN, 100]]];
    for (const tagged of tags) {
      expect(verdict('ethernet', ethernet(ETHERTYPE_IPV4, v4(PEER4, CLIENT4), tagged))).toBe(XDP_DROP);
      expect(verdict('ethernet', ethernet(ETHERTYPE_IPV6, v6(CLIENT6, PEER6), tagged))).toBe(XDP_DROP);
      expect(verdict('ethernet', ethernet(ETHERTYPE_IPV4, v4(CLIENT4, '198.51.100.8'), tagged))).toBe(XDP_PASS);
    }
  });

  it('reads frames without a link header (WireGuard, tun) on the L3 entry point', () => {
    ban(PEER4);
    ban(PEER6);
    expect(verdict('l3', v4(PEER4, CLIENT4))).toBe(XDP_DROP);
    expect(verdict('l3', v4(CLIENT4, PEER4))).toBe(XDP_DROP);
    expect(verdict('l3', v6(PEER6, CLIENT6))).toBe(XDP_DROP);
    expect(verdict('l3', v6(CLIENT6, '2001:db8:77::8'))).toBe(XDP_PASS);
    // The Ethernet entry point reads a bare IP packet as a (bogus) MAC header and passes it.
    expect(verdict('ethernet', v4(PEER4, CLIENT4))).toBe(XDP_PASS);
  });

  it('passes an expired ban and deletes it from the map', async () => {
    ban(PEER4, 1);
    const frame = ethernet(ETHERTYPE_IPV4, v4(PEER4, CLIENT4));
    expect(verdict('ethernet', frame)).toBe(XDP_DROP);
    await new Promise((r) => setTimeout(r, 1100));
    expect(verdict('ethernet', frame)).toBe(XDP_PASS);
    // Deleted by the program itself: nothing is left for userspace to delete.
    expect(maps.unban(4, bytes(PEER4).bytes)).toBe(false);
  });

  it('passes every frame cut short of the addresses it needs, without reading past the end', () => {
    ban(PEER4);
    ban(PEER6);
    const cases: [LinkKind, Uint8Array, number][] = [
      ['ethernet', ethernet(ETHERTYPE_IPV4, v4(PEER4, CLIENT4)), 14 + 20],
      ['ethernet', ethernet(ETHERTYPE_IPV4, v4(CLIENT4, PEER4)), 14 + 20],
      ['ethernet', ethernet(ETHERTYPE_IPV6, v6(CLIENT6, PEER6)), 14 + 40],
      ['ethernet', ethernet(ETHERTYPE_IPV4, v4(PEER4, CLIENT4), [[ETHERTYPE_QINQ, 1], [ETHERTYPE_VLAN, 2]]), 22 + 20],
      ['l3', v4(CLIENT4, PEER4), 20],
      ['l3', v6(PEER6, CLIENT6), 40],
    ];
    // BPF_PROG_TEST_RUN takes no frame under 14 bytes (an Ethernet header).
    for (const [kind, frame, needed] of cases) {
      for (let length = 14; length <= frame.length; length++) {
        expect([kind, needed, length, verdict(kind, frame.subarray(0, length))]).toEqual([kind, needed, length, length >= needed ? XDP_DROP : XDP_PASS]);
      }
    }
  });

  it('returns only PASS or DROP on arbitrary frames, and drops only what names a banned address', () => {
    ban(PEER4);
    const banned = bytes(PEER4).bytes;
    const ethertypes = fc.constantFrom(ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, ETHERTYPE_QINQ, 0x0806, 0x9100);
    fc.assert(
      fc.property(fc.constantFrom<LinkKind>('ethernet', 'l3'), ethertypes, fc.uint8Array({ minLength: 0, maxLength: 120 }), (kind, ethertype, body) => {
        const frame = kind === 'ethernet' ? ethernet(ethertype, body) : Uint8Array.from([...body, ...new Array(14).fill(0)]);
        const retval = verdict(kind, frame);
        expect([XDP_PASS, XDP_DROP]).toContain(retval);
        if (retval === XDP_DROP) expect(Buffer.from(frame).includes(Buffer.from(banned))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  describe('reporting dropped TCP segments to be answered with resets (CUT_ESTABLISHED)', () => {
    beforeAll(() => program.setResetTcp(true));
    afterAll(() => program.setResetTcp(false));
    beforeEach(() => void program.takeSegments());
    const requests = () => {
      const drops = maps.drops();
      return drops.v4.resets + drops.v6.resets;
    };

    it('drops a banned IPv4 segment and reports its addresses, ports, numbers, flags and payload length', () => {
      ban(PEER4);
      const before = { drops: maps.drops().v4.packets, requests: requests() };
      const segment = tcp(51413, 6881, ascii('hello peer'), { seq: 5000, ack: 0x89abcdef, flags: TCP_ACK | 0x08 });
      expect(verdict('ethernet', ethernet(ETHERTYPE_IPV4, ipv4(PROTO_TCP, segment, { src: CLIENT4, dst: PEER4 })))).toBe(XDP_DROP);
      expect(program.takeSegments()).toEqual([{ family: 4, source: CLIENT4, destination: PEER4, sourcePort: 51413, destinationPort: 6881, seq: 5000, ack: 0x89abcdef, flags: TCP_ACK | 0x08, length: 10 }]);
      expect(maps.drops().v4.packets).toBe(before.drops + 1);
      expect(requests()).toBe(before.requests + 1);
      // Read once: the ring holds each report until it is taken.
      expect(program.takeSegments()).toEqual([]);
    });

    it('reports IPv6 segments with TCP options (a SYN), behind VLAN tags and on devices without a link header', () => {
      ban(PEER6);
      ban(PEER4);
      const syn = tcp(6881, 51413, new Uint8Array(), { seq: 0xfffffffe, flags: TCP_SYN, options: [2, 4, 5, 0xb4] });
      expect(verdict('ethernet', ethernet(ETHERTYPE_IPV6, ipv6(PROTO_TCP, syn, { src: PEER6, dst: CLIENT6 }), [[ETHERTYPE_VLAN, 42]]))).toBe(XDP_DROP);
      const fin = tcp(51413, 6881, ascii('0123456789'), { seq: 100, flags: TCP_FIN });
      expect(verdict('l3', ipv4(PROTO_TCP, fin, { src: CLIENT4, dst: PEER4 }))).toBe(XDP_DROP);
      expect(program.takeSegments()).toEqual([
        { family: 6, source: PEER6, destination: CLIENT6, sourcePort: 6881, destinationPort: 51413, seq: 0xfffffffe, ack: 0, flags: TCP_SYN, length: 0 },
        { family: 4, source: CLIENT4, destination: PEER4, sourcePort: 51413, destinationPort: 6881, seq: 100, ack: 0, flags: TCP_FIN, length: 10 },
      ]);
    });

    it('only drops what must not or cannot be answered: resets, UDP, IPv4 options, fragments, IPv6 extension headers', () => {
      ban(PEER4);
      ban(PEER6);
      const before = requests();
      const segment = tcp(51413, 6881, ascii('x'), { ack: 9, flags: TCP_ACK });
      for (const frame of [
        ipv4(PROTO_TCP, tcp(51413, 6881, new Uint8Array(), { flags: TCP_RST | TCP_ACK }), { src: CLIENT4, dst: PEER4 }),
        ipv4(PROTO_UDP, payload, { src: CLIENT4, dst: PEER4 }),
        ipv4(PROTO_TCP, segment, { src: CLIENT4, dst: PEER4, options: [1, 1, 1, 0] }),
        ipv4(PROTO_TCP, segment, { src: CLIENT4, dst: PEER4, moreFragments: true }),
        ipv6(0, ipv6Extension(PROTO_TCP, 1, segment), { src: CLIENT6, dst: PEER6 }),
      ]) {
        expect(verdict('l3', frame)).toBe(XDP_DROP);
      }
      expect(program.takeSegments()).toEqual([]);
      expect(requests()).toBe(before);
    });

    it('reports nothing when the setting is off, and nothing of traffic that is not banned', () => {
      ban(PEER4);
      const segment = tcp(51413, 6881, ascii('x'), { ack: 9, flags: TCP_ACK });
      expect(verdict('l3', ipv4(PROTO_TCP, segment, { src: CLIENT4, dst: '198.51.100.8' }))).toBe(XDP_PASS);
      program.setResetTcp(false);
      try {
        expect(verdict('l3', ipv4(PROTO_TCP, segment, { src: CLIENT4, dst: PEER4 }))).toBe(XDP_DROP);
      } finally {
        program.setResetTcp(true);
      }
      expect(program.takeSegments()).toEqual([]);
    });
  });

  it('never drops for a ban on loopback, link-local or one of its own addresses', () => {
    program.setOwnAddresses([{ family: 4, address: '203.0.113.1', prefix: 32 }, { family: 6, address: '2001:db8:1::1', prefix: 128 }]);
    for (const address of ['127.0.0.1', '169.254.1.1', '203.0.113.1']) {
      ban(address);
      expect(verdict('ethernet', ethernet(ETHERTYPE_IPV4, v4(address, CLIENT4)))).toBe(XDP_PASS);
    }
    for (const address of ['::1', 'fe80::1', '2001:db8:1::1']) {
      ban(address);
      expect(verdict('ethernet', ethernet(ETHERTYPE_IPV6, v6(address, CLIENT6)))).toBe(XDP_PASS);
    }
    // An own address that is no longer one can be banned again.
    program.setOwnAddresses([]);
    expect(verdict('ethernet', ethernet(ETHERTYPE_IPV4, v4('203.0.113.1', CLIENT4)))).toBe(XDP_DROP);
  });

  it('extends a ban on a re-ban, never shortens it, and lists address, time left, count and rule', () => {
    expect(ban(PEER4, 100, 'handshake')).toEqual({ outcome: 'added', remainingS: 100, count: 1 });
    const shorter = ban(PEER4, 10, 'dht');
    expect(shorter.outcome).toBe('kept');
    expect(shorter.remainingS).toBeGreaterThan(99);
    expect(ban(PEER4, 300, 'utp')).toEqual({ outcome: 'extended', remainingS: 300, count: 1 });
    expect(maps.active()).toEqual({ v4: 1, v6: 0 });
    ban(PEER6, 50, 'manual');
    const listed = maps.list();
    expect(listed.map((b) => [b.family, b.address, b.rule, b.count])).toEqual([
      [4, PEER4, 'utp', 1],
      [6, PEER6, 'manual', 1],
    ]);
    expect(listed[0].remainingS).toBeGreaterThan(299);
    expect(listed[0].remainingS).toBeLessThanOrEqual(300);
  });

  it('sweeps only expired bans', async () => {
    ban(PEER4, 1);
    ban(PEER6, 60);
    await sleep(1100);
    // An expired entry not yet swept is not in force: not counted, and a new ban of it is new.
    expect(maps.active()).toEqual({ v4: 0, v6: 1 });
    expect(maps.sweep()).toBe(1);
    expect(maps.list().map((b) => b.address)).toEqual([PEER6]);
  });

  it('calls a ban of an address whose ban expired, not yet swept, a new one', async () => {
    ban(PEER4, 1);
    await sleep(1100);
    expect(ban(PEER4, 60).outcome).toBe('added');
  });

  it('escalates a ban that comes within the window of the last one\'s end, counts it in the entry, and forgets after the window', async () => {
    const doubling: Escalation = { factor: 2, maxS: 3, windowS: 2 };
    const peer = bytes(PEER4);
    const fromPeer = ethernet(ETHERTYPE_IPV4, v4(PEER4, CLIENT4));
    expect(maps.ban(4, peer.bytes, 1, 'handshake', doubling)).toMatchObject({ remainingS: 1, count: 1 });
    // Proven again while the ban runs: the same ban, not one more.
    expect(maps.ban(4, peer.bytes, 1, 'handshake', doubling).count).toBe(1);
    await sleep(1100);
    // Expired: the program passes the peer, but the entry stays for the window.
    expect(verdict('ethernet', fromPeer)).toBe(XDP_PASS);
    expect(maps.list()).toEqual([]);
    expect(maps.sweep()).toBe(0);
    expect(maps.ban(4, peer.bytes, 1, 'utp', doubling)).toMatchObject({ remainingS: 2, count: 2 });
    expect(verdict('ethernet', fromPeer)).toBe(XDP_DROP);
    expect(maps.list()).toEqual([expect.objectContaining({ address: PEER4, count: 2, rule: 'utp' })]);
    await sleep(2100);
    // The third in a row doubles again, up to the cap.
    expect(maps.ban(4, peer.bytes, 1, 'utp', doubling)).toMatchObject({ remainingS: 3, count: 3 });
    await sleep(3100 + 2100);
    // Past the end and the window: the program deletes the entry on sight, and the next ban starts over.
    expect(verdict('ethernet', fromPeer)).toBe(XDP_PASS);
    expect(maps.sweep()).toBe(0);
    expect(maps.ban(4, peer.bytes, 1, 'utp', doubling)).toMatchObject({ remainingS: 1, count: 1 });
  });
});

describe.runIf(canUseKernel())('XDP ban maps across loads', () => {
  const pinDir = `/sys/fs/bpf/btwall-test-${process.pid}-reload`;
  afterAll(() => rmSync(pinDir, { recursive: true, force: true }));

  it('takes the kernel memory the sizing counts for the ban maps (fdinfo memlock), whatever the capacity', () => {
    /** memlock of each map this process holds a descriptor of with these entries, once per map id. */
    const memlock = (entries: number) => {
      const byId = new Map<string, number>();
      for (const fd of readdirSync('/proc/self/fd')) {
        const info = (() => {
          try {
            return readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:bpf-map' ? readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8') : '';
          } catch {
            return ''; // the descriptor readdir itself used, gone
          }
        })();
        const field = (name: string) => new RegExp(`^${name}:\\s+(\\d+)$`, 'm').exec(info)?.[1];
        if (Number(field('max_entries')) === entries && field('map_id') !== undefined) byId.set(field('map_id')!, Number(field('memlock')));
      }
      return [...byId.values()].reduce((sum, bytes) => sum + bytes, 0);
    };
    for (const capacity of [4096, 1 << 17]) {
      const program = XdpProgram.load(`${pinDir}-memory`, capacity, silent);
      try {
        expect(memlock(capacity)).toBe(banMapsBytes(capacity));
      } finally {
        program.close();
        rmSync(`${pinDir}-memory`, { recursive: true, force: true });
      }
    }
  });

  it('keeps every ban with its expiry over a reload, and across a capacity change', () => {
    const first = XdpProgram.load(pinDir, 1024, silent);
    const a = bytes(PEER4);
    first.maps.ban(a.family, a.bytes, 1000, 'handshake', NO_ESCALATION);
    const before = first.maps.list()[0].remainingS;
    first.close();
    expect(existsSync(`${pinDir}/ban4`)).toBe(true);

    const second = XdpProgram.load(pinDir, 1024, silent);
    const again = second.maps.list();
    expect(again.map((b) => [b.address, b.rule])).toEqual([[PEER4, 'handshake']]);
    expect(again[0].remainingS).toBeLessThanOrEqual(before);
    expect(again[0].remainingS).toBeGreaterThan(before - 5);
    expect(second.testRun('ethernet', ethernet(ETHERTYPE_IPV4, v4(PEER4, CLIENT4))).retval).toBe(XDP_DROP);
    second.close();

    const bigger = XdpProgram.load(pinDir, 2048, silent);
    expect(bigger.maps.list().map((b) => b.address)).toEqual([PEER4]);
    const pinned = BanMaps.openPinned(pinDir)!;
    expect(pinned.list().map((b) => b.address)).toEqual([PEER4]);
    pinned.close();
    bigger.close();
  });
});
