/**
 * "Could someone who wants X cut off make btwall ban X?" In the client <-> gateway <-> server lab,
 * with the daemon on the gateway's FORWARD chain and XDP on both its links: a local user's forged
 * handshake to a web server, datagrams from outside with forged sources, names of trackers on a
 * shared address and a poisoned peer list all get flows dropped and nobody banned, and the
 * server stays reachable for another user. The positive control: a remote peer that connects in
 * and sends its own handshake is banned, and XDP cuts it off.
 */
import { existsSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { btwall, CLI, peer, startDaemon, stopPeers, type LogLine, type RunningDaemon } from './helpers/daemon.js';
import { ascii } from './helpers/frames.js';
import { clientHello, dnsMessage, dnsName } from './helpers/names.js';
import { dhtPeers, dhtPing, ST_STATE, utpPacket } from './helpers/exchanges.js';
import { canUseKernel, createTopology, deviceWith, type Namespace, type Topology } from './helpers/netns.js';

const SEND_UDP = resolve(import.meta.dirname, 'helpers/send-udp.py');
const CLIENT = '10.77.1.2';
/** A second user behind the gateway. */
const OTHER_USER = '10.77.1.3';
const SERVER = '10.77.2.2';
/** Addresses a spoofer claims: the upstream resolver, and a peer that will prove itself. */
const RESOLVER = '10.77.2.53';
const PEER = '10.77.2.9';

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

interface BanList {
  enforced: boolean;
  bans: { address: string; rule: string }[];
}


describe.runIf(canUseKernel())('no forged or third-party packet bans anyone', () => {
  let net: Topology;
  let daemon: RunningDaemon;
  const pinDir = `/sys/fs/bpf/btwall-test-${process.pid}-abuse`;
  const banList = (): BanList => JSON.parse(btwall(net.gateway, ['bans', 'list', '--json'], { BPF_PIN_DIR: pinDir }).stdout) as BanList;

  /** Bytes a TCP sink on the server received from one connection made by `from` (from `source`). */
  async function delivered(from: Namespace, source: string, host: string, port: number, kind: string): Promise<number> {
    const sink = peer(host === CLIENT ? net.client : net.server, 'tcp-sink', port, 2500);
    await sink.ready;
    await peer(from, 'tcp-send', host, port, kind, 800, 1, source).done;
    const lines = await sink.done;
    return lines.filter((l) => l.event === 'closed').reduce((sum, l) => sum + Number(l.bytes), 0);
  }

  /** Sends datagrams from the server's namespace with whatever source address, as an off-path spoofer can. */
  function spoof(source: string, sport: number, destination: string, dport: number, payload: Uint8Array, count = 1): void {
    net.server.must('python3', [SEND_UDP, source, String(sport), destination, String(dport), hex(payload), String(count)]);
  }

  /** The detections logged so far whose flow has this end, one per flow. */
  const detections = (address: string): LogLine[] =>
    daemon.lines.filter((l) => l.msg === 'BitTorrent detected' && (l.source === address || l.destination === address));

  /** The detections of `address` after the first `seen`, once there are `count` of them (or 5 s passed). */
  async function detected(address: string, seen = 0, count = 1): Promise<LogLine[]> {
    const deadline = Date.now() + 5000;
    while (detections(address).length < seen + count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    return detections(address).slice(seen);
  }

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error('build first: make test builds before testing');
    net = createTopology('ab');
    net.client.must('ip', ['addr', 'add', `${OTHER_USER}/24`, 'dev', net.clientDevice]);
    const serverDevice = deviceWith(net.server, SERVER);
    for (const address of [RESOLVER, PEER]) net.server.must('ip', ['addr', 'add', `${address}/24`, 'dev', serverDevice]);
    const links = [deviceWith(net.gateway, '10.77.1.1'), deviceWith(net.gateway, '10.77.2.1')];
    daemon = startDaemon(net.gateway, { INTERFACE: links.join(','), BPF_PIN_DIR: pinDir, LOCAL_CIDRS: '10.77.1.0/24,fd77:1::/64', DETECTION_LOG: '' });
    await daemon.waitFor('btwall running');
    expect(banList().enforced).toBe(true);
  });

  afterAll(async () => {
    stopPeers();
    if (daemon?.running) await daemon.stop();
    net?.destroy();
    rmSync(pinDir, { recursive: true, force: true });
  });

  it("a local user's handshake to a web server's port 443 is dropped; the server is not banned", async () => {
    expect(await delivered(net.client, CLIENT, SERVER, 443, 'handshake')).toBe(0);
    const [record] = await detected(SERVER);
    expect(record).toMatchObject({ rule: 'handshake', evidence: 'exact, from the initiator', ban: 'none' });
    expect(String(record.reason)).toContain('local end 10.77.1.2');
    expect(await delivered(net.client, OTHER_USER, SERVER, 443, `hex:${hex(clientHello('www.example.org'))}`)).toBeGreaterThan(0);
    expect(banList().bans).toEqual([]);
  });

  it('unsolicited DHT, uTP and UDP tracker datagrams with a forged resolver source are dropped; the resolver is not banned', async () => {
    const sink = peer(net.client, 'udp-sink', 51413, 2000);
    await sink.ready;
    spoof(RESOLVER, 53, CLIENT, 51413, dhtPing());
    spoof(RESOLVER, 123, CLIENT, 51413, utpPacket(ST_STATE, 7000, 500, 100));
    spoof(RESOLVER, 6969, CLIENT, 51413, Uint8Array.from([0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 9, 9, 9, 9]));
    const records = await detected(RESOLVER, 0, 2);
    expect(records.map((r) => r.rule).sort()).toEqual(['dht', 'udp-tracker']);
    for (const record of records) expect(record).toMatchObject({ ban: 'none', reason: 'no ban: an unsolicited UDP datagram can carry any source address' });
    expect(banList().bans).toEqual([]);
    expect(await delivered(net.client, OTHER_USER, RESOLVER, 8053, 'text')).toBeGreaterThan(0);
  });

  it('a TLS server name, an HTTP Host and a forged DNS answer naming a tracker on a shared address ban nobody', async () => {
    const [seenServer, seenResolver] = [detections(SERVER).length, detections(RESOLVER).length];
    const sni = hex(clientHello('tracker.opentrackr.org'));
    expect(await delivered(net.client, CLIENT, SERVER, 8443, `hex:${sni}`)).toBe(0);
    const host = hex(ascii('GET /announce HTTP/1.1\r\nHost: tracker.opentrackr.org\r\n\r\n'));
    expect(await delivered(net.client, CLIENT, SERVER, 8080, `hex:${host}`)).toBe(0);
    const sink = peer(net.client, 'udp-sink', 40053, 2000);
    await sink.ready;
    const answer = dnsMessage('tracker.opentrackr.org', [[dnsName('tracker.opentrackr.org'), 1, [10, 77, 2, 2]]]);
    spoof(RESOLVER, 53, CLIENT, 40053, answer);
    const records = await detected(SERVER, seenServer, 2);
    expect(records.map((r) => r.rule).sort()).toEqual(['tracker-host', 'tracker-sni']);
    for (const record of records) expect(record.ban).toBe('none');
    const dns = await detected(RESOLVER, seenResolver);
    expect(dns.some((r) => r.rule === 'tracker-domain' && r.ban === 'none')).toBe(true);
    expect(banList().bans).toEqual([]);
    expect(await delivered(net.client, OTHER_USER, SERVER, 8080, 'text')).toBeGreaterThan(0);
  });

  it("a peer list naming a web server drops only its receiver's flows there, and bans nothing", async () => {
    const sink = peer(net.client, 'udp-sink', 51414, 2000);
    await sink.ready;
    const [seenServer, seenResolver] = [detections(SERVER).length, detections(RESOLVER).length];
    spoof(RESOLVER, 6881, CLIENT, 51414, dhtPeers([`${SERVER}:8000`]));
    expect(await detected(RESOLVER, seenResolver)).toHaveLength(1);
    expect(await delivered(net.client, OTHER_USER, SERVER, 8000, 'text')).toBeGreaterThan(0);
    expect(await delivered(net.client, CLIENT, SERVER, 8000, 'text')).toBe(0);
    const records = await detected(SERVER, seenServer);
    expect(records.at(-1)).toMatchObject({ rule: 'peer-cache', evidence: 'announced, from the initiator', ban: 'none', source: CLIENT });
    expect(banList().bans).toEqual([]);
  });

  it('positive control: a remote peer that connects in and sends its handshake is banned, and XDP cuts it off', async () => {
    expect(await delivered(net.server, PEER, CLIENT, 6881, 'handshake')).toBe(0);
    const banned = await daemon.waitFor('banned', { address: PEER });
    expect(banned.rule).toBe('handshake');
    const [record] = await detected(PEER);
    expect(record).toMatchObject({ evidence: 'exact, from the initiator', ban: `${PEER} for 18000 s` });
    expect(banList().bans.map((b) => b.address)).toEqual([PEER]);
    expect(await delivered(net.client, OTHER_USER, PEER, 9100, 'text')).toBe(0);
    // The server's other addresses are not touched.
    expect(await delivered(net.client, OTHER_USER, SERVER, 9100, 'text')).toBeGreaterThan(0);
  });
});

