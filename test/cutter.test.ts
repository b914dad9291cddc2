import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ConnectionCutter, SEGMENT_RESETS_PER_S, tcpReset } from '../src/actions/cutter.js';
import { loadConfig } from '../src/config/config.js';
import { installCommands, shellLine } from '../src/firewall/rules.js';
import { PacketDecoder } from '../src/packet/decode.js';
import { LINKTYPE_RAW } from '../src/packet/linktype.js';
import { DECODED_TCP_UDP, PacketInfo } from '../src/packet/packet.js';

/** The ones' complement sum of the TCP segment with its pseudo-header: 0xffff when the checksum is right. */
function tcpChecksumOk(packet: Uint8Array, family: 4 | 6): boolean {
  const ip = family === 4 ? 20 : 40;
  const words: number[] = [];
  const add = (bytes: Uint8Array) => {
    for (let i = 0; i < bytes.length; i += 2) words.push((bytes[i] << 8) | (bytes[i + 1] ?? 0));
  };
  add(family === 4 ? packet.subarray(12, 20) : packet.subarray(8, 40));
  words.push(6, packet.length - ip);
  add(packet.subarray(ip));
  let total = words.reduce((a, b) => a + b, 0);
  while (total > 0xffff) total = (total & 0xffff) + (total >>> 16);
  return total === 0xffff;
}

describe('connection cutter', () => {
  it.each([4, 6] as const)('builds an IPv%d TCP reset the decoder reads back, with valid checksums', (family) => {
    const from = { address: family === 4 ? '10.8.0.2' : 'fd00::2', port: 51413 };
    const to = { address: family === 4 ? '198.51.100.9' : '2001:db8::9', port: 6881 };
    const packet = tcpReset(family, from, to, 0xfffffff0, 77);
    const info = new PacketInfo();
    expect(new PacketDecoder().decode(packet, 0, packet.length, LINKTYPE_RAW, info)).toBe(DECODED_TCP_UDP);
    expect([info.sport, info.dport, info.tcpSeq >>> 0, info.tcpAck, info.tcpFlags, info.payloadLen]).toEqual([51413, 6881, 0xfffffff0, 77, 0x14, 0]);
    expect(tcpChecksumOk(packet, family)).toBe(true);
  });

  it('deletes the conntrack entry either way round, then resets each end with the number it expects', async () => {
    const ran: string[][] = [];
    const sent: { to: string; packet: Uint8Array }[] = [];
    const cutter = new ConnectionCutter(
      pino({ level: 'silent' }),
      (args) => {
        ran.push(args);
        return Promise.resolve(args[4] === '10.8.0.2');
      },
      (_family, destination, packet) => {
        expect(ran).toHaveLength(2);
        sent.push({ to: Buffer.from(destination).join('.'), packet });
      },
    );
    await cutter.cutConnection({ family: 4, initiator: { address: '10.8.0.2', port: 50000 }, responder: { address: '198.51.100.9', port: 6881 }, producer: 'initiator', seq: 1000, seqEnd: 1068, ack: 2000 });
    expect(ran).toEqual([
      ['-D', '-p', 'tcp', '--orig-src', '10.8.0.2', '--orig-dst', '198.51.100.9', '--sport', '50000', '--dport', '6881'],
      ['-D', '-p', 'tcp', '--orig-src', '198.51.100.9', '--orig-dst', '10.8.0.2', '--sport', '6881', '--dport', '50000'],
    ]);
    const numbers = (p: Uint8Array) => [new DataView(p.buffer).getUint32(24), new DataView(p.buffer).getUint32(28)];
    // To the responder, from the initiator, at the dropped packet's sequence number; to the initiator, at its acknowledgement.
    expect(sent.map((s) => [s.to, ...numbers(s.packet)])).toEqual([
      ['198.51.100.9', 1000, 2000],
      ['10.8.0.2', 2000, 1068],
    ]);
    expect(cutter.stats()).toEqual({ connectionsCut: 1, resetsSent: 2, segmentResetsLimited: 0, conntrackDeletions: 1, cutFailures: 0 });
  });

  it("answers a banned address's dropped segments: the sender at its acknowledgement, the receiver at its sequence number; a SYN only back", () => {
    const sent: { to: string; from: string; seq: number; ack: number; flags: number }[] = [];
    const cutter = new ConnectionCutter(pino({ level: 'silent' }), () => Promise.resolve(false), (_family, destination, packet) => {
      const view = new DataView(packet.buffer);
      sent.push({ to: Buffer.from(destination).join('.'), from: Buffer.from(packet.subarray(12, 16)).join('.'), seq: view.getUint32(24), ack: view.getUint32(28), flags: packet[33] });
      expect(tcpChecksumOk(packet, 4)).toBe(true);
    });
    const segment = { family: 4 as const, source: '10.8.0.2', destination: '198.51.100.9', sourcePort: 50000, destinationPort: 6881, seq: 1000, ack: 2000, flags: 0x18, length: 68 };
    cutter.resetSegments([segment, { ...segment, source: '198.51.100.9', destination: '10.8.0.2', sourcePort: 6881, destinationPort: 50000, seq: 0xffffffff, ack: 0, flags: 0x02, length: 0 }], 1_000);
    expect(sent).toEqual([
      { to: '10.8.0.2', from: '198.51.100.9', seq: 2000, ack: 1068, flags: 0x14 },
      { to: '198.51.100.9', from: '10.8.0.2', seq: 1000, ack: 2000, flags: 0x14 },
      { to: '198.51.100.9', from: '10.8.0.2', seq: 0, ack: 0, flags: 0x14 },
    ]);
    expect(cutter.stats()).toMatchObject({ resetsSent: 3, segmentResetsLimited: 0 });
  });

  it(`answers at most ${SEGMENT_RESETS_PER_S} segments a second, so that a flood of a banned peer's segments is not turned into resets`, () => {
    let sent = 0;
    const cutter = new ConnectionCutter(pino({ level: 'silent' }), () => Promise.resolve(false), () => void sent++);
    const syn = { family: 4 as const, source: '198.51.100.9', destination: '10.8.0.2', sourcePort: 6881, destinationPort: 50000, seq: 7, ack: 0, flags: 0x02, length: 0 };
    cutter.resetSegments(Array.from({ length: SEGMENT_RESETS_PER_S * 2 }, () => syn), 10_000);
    expect([sent, cutter.segmentResetsLimited]).toEqual([SEGMENT_RESETS_PER_S, SEGMENT_RESETS_PER_S]);
    // Half a second later, half a second's worth more.
    cutter.resetSegments(Array.from({ length: SEGMENT_RESETS_PER_S }, () => syn), 10_500);
    expect(sent).toBe(SEGMENT_RESETS_PER_S * 1.5);
  });

  it('samples unmarked TCP connections past the inspection window into the queue, only with ACTION=drop and CUT_ESTABLISHED', () => {
    const sampled = (env: Record<string, string>) => installCommands(loadConfig(env)).map(shellLine).filter((r) => r.includes('btwall-old'));
    const rules = sampled({ QUEUE_NUM: '2' });
    expect(rules).toEqual([
      'iptables -w -A BTWALL -p tcp -m connmark --mark 0x0/0xc0000000 -m hashlimit --hashlimit-upto 2/sec --hashlimit-burst 40 --hashlimit-mode srcip,srcport,dstip,dstport --hashlimit-name btwall-old4 -j NFQUEUE --queue-num 2 --queue-bypass',
      'ip6tables -w -A BTWALL -p tcp -m connmark --mark 0x0/0xc0000000 -m hashlimit --hashlimit-upto 2/sec --hashlimit-burst 40 --hashlimit-mode srcip,srcport,dstip,dstport --hashlimit-name btwall-old6 -j NFQUEUE --queue-num 2 --queue-bypass',
    ]);
    const all = installCommands(loadConfig({})).map(shellLine);
    expect(all.findIndex((r) => r.includes('btwall-old4'))).toBeGreaterThan(all.findIndex((r) => r.startsWith('iptables') && r.includes('connbytes')));
    expect(sampled({ CUT_ESTABLISHED: 'false' })).toEqual([]);
    expect(sampled({ ACTION: 'throttle' })).toEqual([]);
    expect(sampled({ ACTION: 'monitor' })).toEqual([]);
  });
});
