import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ConnectionCutter, tcpReset } from '../src/actions/cutter.js';
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
    expect(cutter.stats()).toEqual({ connectionsCut: 1, resetsSent: 2, conntrackDeletions: 1, cutFailures: 0 });
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
