import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GIVE_UP, MATCH, STRENGTH_EXACT } from '../../src/detect/detector.js';
import { lsdDetector } from '../../src/detect/lsd.js';
import { FlowRunner, type FlowEndpoints } from '../helpers/detector-run.js';
import { ascii } from '../helpers/frames.js';
import { listedTo } from '../helpers/listed.js';
import { dhcpDiscover, dnsQuery, dtlsClientHello, quicInitial, stunBindingRequest, wireguardInitiation } from '../helpers/udp-lookalikes.js';

const HASH = 'ED4F1085E885F98F9A69B70EE89EB988B8FD9115';
/** The datagram of bt_search.pcap. */
const QBITTORRENT_SEARCH = `BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 61197\r\nInfohash: ${HASH}\r\n\r\n\r\n`;
const MULTICAST4: FlowEndpoints = { family: 4, initiator: '192.168.0.102', initiatorPort: 6771, responder: '239.192.152.143', responderPort: 6771 };
const MULTICAST6: FlowEndpoints = { family: 6, initiator: '2001:db8::66', initiatorPort: 6771, responder: 'ff15::efc0:988f', responderPort: 6771 };
const UNICAST: FlowEndpoints = { family: 4, initiator: '10.1.2.3', initiatorPort: 50123, responder: '10.1.2.4', responderPort: 6771 };

function inspect(text: string | Uint8Array, endpoints = MULTICAST4): { outcome: number; runner: FlowRunner } {
  const runner = new FlowRunner(lsdDetector, endpoints);
  const payload = typeof text === 'string' ? ascii(text) : text;
  return { outcome: runner.run([{ dir: 0, payload }]).outcome, runner };
}

describe('LSD detector (BEP 14)', () => {
  it.each([
    ['bt_search.pcap (real capture)', QBITTORRENT_SEARCH, MULTICAST4],
    [
      'libtorrent: a cookie and two info-hashes, over IPv6',
      `BT-SEARCH * HTTP/1.1\r\nHost: [ff15::efc0:988f]:6771\r\nPort: 61197\r\nInfohash: ${HASH}\r\nInfohash: ${HASH.toLowerCase()}\r\ncookie: 4f1b2c\r\n\r\n\r\n`,
      MULTICAST6,
    ],
    ['sent unicast', QBITTORRENT_SEARCH, UNICAST],
    ['header names in another case, tabs and no trailing empty line', `BT-SEARCH * HTTP/1.1\r\nhost: 239.192.152.143:6771\r\nPORT:\t61197 \r\nINFOHASH:${HASH}\r\n`, MULTICAST4],
    ['a v2 info-hash written in full', `BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 61197\r\nInfohash: ${HASH}${'0'.repeat(24)}\r\n\r\n`, MULTICAST4],
  ] as [string, string, FlowEndpoints][])('matches %s and lists the announced port to the receiver', (_name, text, endpoints) => {
    const { outcome, runner } = inspect(text, endpoints);
    expect(outcome).toBe(MATCH);
    const { initiator, responder } = endpoints;
    expect(listedTo(runner, initiator, 61197, responder)).toBe(true);
    expect(listedTo(runner, initiator, 6771, responder)).toBe(false);
    // Not to the sender itself, nor to a host the datagram did not reach.
    expect(listedTo(runner, initiator, 61197, initiator)).toBe(false);
    expect(listedTo(runner, initiator, 61197, endpoints.family === 4 ? '10.9.9.9' : '2001:db8::99')).toBe(false);
    expect(runner.proven.inserts).toBe(0);
  });

  it('is exact evidence from a peer', () => {
    expect(lsdDetector.strength).toBe(STRENGTH_EXACT);
    expect(lsdDetector.producerIsPeer).toBe(true);
    expect(new FlowRunner(lsdDetector, UNICAST).run([{ dir: 0, payload: ascii(QBITTORRENT_SEARCH) }])).toMatchObject({ outcome: MATCH, strength: STRENGTH_EXACT });
  });

  it.each([
    ['SSDP M-SEARCH', 'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n'],
    ['SSDP NOTIFY', 'NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n\r\n'],
    ['HTTP/1.0', QBITTORRENT_SEARCH.replace('HTTP/1.1', 'HTTP/1.0')],
    ['a lower-case request line', QBITTORRENT_SEARCH.replace('BT-SEARCH', 'bt-search')],
    ['no Infohash header', 'BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 61197\r\n\r\n\r\n'],
    ['no Port header', `BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nInfohash: ${HASH}\r\n\r\n\r\n`],
    ['a 39-digit info-hash', QBITTORRENT_SEARCH.replace(HASH, HASH.slice(1))],
    ['an info-hash with a non-hex digit', QBITTORRENT_SEARCH.replace(HASH, `G${HASH.slice(1)}`)],
    ['port 0', QBITTORRENT_SEARCH.replace('61197', '0')],
    ['port 70000', QBITTORRENT_SEARCH.replace('61197', '70000')],
    ['a port with letters', QBITTORRENT_SEARCH.replace('61197', '61197x')],
    ['a header line without its line feed', QBITTORRENT_SEARCH.replace('Port: 61197\r\n', 'Port: 61197\r')],
    ['a datagram cut inside the headers', QBITTORRENT_SEARCH.slice(0, 70)],
    ['the request line alone', 'BT-SEARCH * HTTP/1.1\r\n'],
  ])('gives up on %s', (_name, text) => {
    expect(inspect(text).outcome).toBe(GIVE_UP);
  });

  it.each([
    ['DNS', dnsQuery('example.com', 0x1234)],
    ['STUN', stunBindingRequest()],
    ['DTLS', dtlsClientHello()],
    ['QUIC', quicInitial()],
    ['DHCP', dhcpDiscover()],
    ['WireGuard', wireguardInitiation()],
  ])('gives up on %s', (_name, payload) => {
    expect(inspect(payload).outcome).toBe(GIVE_UP);
  });

  it('reads nothing outside the datagram, whatever it holds', () => {
    const runner = new FlowRunner(lsdDetector, MULTICAST4);
    const message = ascii(QBITTORRENT_SEARCH);
    const datagram = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 200 }),
      fc.integer({ min: 1, max: message.length }).map((cut) => message.subarray(0, cut)),
      fc.tuple(fc.integer({ min: 0, max: message.length - 1 }), fc.integer({ min: 0, max: 255 })).map(([at, byte]) => {
        const copy = message.slice();
        copy[at] = byte;
        return copy;
      }),
    );
    fc.assert(
      fc.property(datagram, (payload) => {
        const result = runner.run([{ dir: 0, payload }], true);
        expect(result.strayReads).toEqual([]);
        expect([MATCH, GIVE_UP]).toContain(result.outcome);
      }),
      { numRuns: 3000 },
    );
  });
});
