#!/usr/bin/env python3
"""Torrent variants and flow labels for the BitTorrent client lab (test/lab/bt-lab.sh). Stdlib only.

  bt-lab-tool.py variant IN OUT [--announce URL] [--nodes HOST:PORT,...] [--url-list URL]
      Rewrite a .torrent's top level (the info dict, hence the infohash, is untouched): replace the
      announce URL, or drop it and add BEP 5 "nodes" for a trackerless torrent (--nodes '': none,
      a torrent only given peers can fetch), or add a BEP 19 web seed.
  bt-lab-tool.py infohash TORRENT
  bt-lab-tool.py pieces TORRENT ORIGINAL FILE
      How many of the torrent's pieces FILE holds (the same bytes as ORIGINAL's piece): a missing
      file holds none; piece data received and written, whatever the client says.
  bt-lab-tool.py label DIR/manifests/*.json --truth OUT.json --captures OUT.json
      Label every flow of each run's capture from what the run was built to do (its manifest: which
      host runs which client on which ports, in which mode), never from payload classification; the
      payload is only read to check the construction held (MSE really hides the handshake, DHT
      datagrams are bencoded, uTP headers are uTP). Exits 1 when a check fails.
  bt-lab-tool.py e2e-label RESULT.json CAPTURES_DIR OUT.json
      Per-flow expectations for the end-to-end lab's captures (e2e-lab.sh --capture), from what the
      run was built to do: a scenario's LAN host runs nothing but its client, so each of its flows
      that carries payload is BitTorrent (a SOCKS5 connection that tunnelled nothing excepted: a
      UDP ASSOCIATE's control connection, a refused CONNECT); the ordinary host's flows are clean, but for those naming the
      listed tracker name, which name evidence drops.
  bt-lab-tool.py recall TRUTH.json CAPTURES.json VERDICTS.ndjson
      Recall per mode and label, with and without the flows only the peer cache caught.
"""
import hashlib
import ipaddress
import json
import os
import struct
import sys

HANDSHAKE = b'\x13BitTorrent protocol'


# ---- bencode (just enough for .torrent files)

def bdecode(data, i=0):
    c = data[i:i + 1]
    if c == b'i':
        j = data.index(b'e', i)
        return int(data[i + 1:j]), j + 1
    if c == b'l':
        out, i = [], i + 1
        while data[i:i + 1] != b'e':
            v, i = bdecode(data, i)
            out.append(v)
        return out, i + 1
    if c == b'd':
        out, i = {}, i + 1
        while data[i:i + 1] != b'e':
            k, i = bdecode(data, i)
            v, i = bdecode(data, i)
            out[k] = v
        return out, i + 1
    j = data.index(b':', i)
    n = int(data[i:j])
    return data[j + 1:j + 1 + n], j + 1 + n


def bencode(v):
    if isinstance(v, int):
        return b'i%de' % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b'%d:%s' % (len(v), v)
    if isinstance(v, list):
        return b'l' + b''.join(bencode(x) for x in v) + b'e'
    return b'd' + b''.join(bencode(k) + bencode(v[k]) for k in sorted(v)) + b'e'


def info_span(data):
    """Byte range of the info dict as written, so the infohash is taken over the original bytes."""
    i = 1
    while data[i:i + 1] != b'e':
        k, i = bdecode(data, i)
        start = i
        _, i = bdecode(data, i)
        if k == b'info':
            return start, i
    raise ValueError('no info dict')


def cmd_variant(args):
    src, dst = args[0], args[1]
    data = open(src, 'rb').read()
    meta, _ = bdecode(data)
    s, e = info_span(data)
    for k in (b'announce', b'announce-list', b'nodes'):
        meta.pop(k, None)
    if '--announce' in args:
        meta[b'announce'] = args[args.index('--announce') + 1].encode()
    if '--nodes' in args:
        nodes = []
        for ep in filter(None, args[args.index('--nodes') + 1].split(',')):
            host, _, port = ep.rpartition(':')
            nodes.append([host.strip('[]').encode(), int(port)])
        if nodes:
            meta[b'nodes'] = nodes
    if '--url-list' in args:
        meta[b'url-list'] = args[args.index('--url-list') + 1].encode()
    info = data[s:e]
    meta[b'info'] = None
    # Re-encode the top level around the untouched info bytes.
    out = b'd'
    for k in sorted(meta):
        out += bencode(k) + (info if k == b'info' else bencode(meta[k]))
    out += b'e'
    open(dst, 'wb').write(out)


def cmd_infohash(args):
    data = open(args[0], 'rb').read()
    s, e = info_span(data)
    print(hashlib.sha1(data[s:e]).hexdigest())


def cmd_pieces(args):
    data = open(args[0], 'rb').read()
    s, e = info_span(data)
    info, _ = bdecode(data[s:e])
    size = info[b'piece length']
    try:
        got = open(args[2], 'rb')
    except FileNotFoundError:
        print(0)
        return
    held = 0
    with open(args[1], 'rb') as want, got:
        while True:
            piece = want.read(size)
            if not piece:
                break
            held += got.read(size) == piece
    print(held)


# ---- pcap reading

def read_pcap(path):
    """Yield (wire_len, frame bytes) of an Ethernet pcap as tcpdump -w writes it."""
    with open(path, 'rb') as fh:
        data = fh.read()
    magic = data[:4]
    if magic in (b'\xd4\xc3\xb2\xa1', b'\x4d\x3c\xb2\xa1'):
        end = '<'
    elif magic in (b'\xa1\xb2\xc3\xd4', b'\xa1\xb2\x3c\x4d'):
        end = '>'
    else:
        raise ValueError('%s: not a pcap file' % path)
    linktype = struct.unpack(end + 'I', data[20:24])[0]
    if linktype != 1:
        raise ValueError('%s: link type %d, expected Ethernet' % (path, linktype))
    off = 24
    while off + 16 <= len(data):
        _, _, caplen, wirelen = struct.unpack(end + 'IIII', data[off:off + 16])
        yield wirelen, data[off + 16:off + 16 + caplen]
        off += 16 + caplen


def decode(frame):
    """(l4, src_ip, sport, dst_ip, dport, ipproto, tcp_flags, payload) or None for non-IP frames."""
    et = struct.unpack('>H', frame[12:14])[0]
    off = 14
    while et in (0x8100, 0x88a8):
        et = struct.unpack('>H', frame[off + 2:off + 4])[0]
        off += 4
    if et == 0x0800:
        ihl = (frame[off] & 15) * 4
        total = struct.unpack('>H', frame[off + 2:off + 4])[0]
        proto = frame[off + 9]
        src = str(ipaddress.IPv4Address(frame[off + 12:off + 16]))
        dst = str(ipaddress.IPv4Address(frame[off + 16:off + 20]))
        l4off, end = off + ihl, off + total
    elif et == 0x86dd:
        plen = struct.unpack('>H', frame[off + 4:off + 6])[0]
        proto = frame[off + 6]
        src = str(ipaddress.IPv6Address(frame[off + 8:off + 24]))
        dst = str(ipaddress.IPv6Address(frame[off + 24:off + 40]))
        l4off, end = off + 40, off + 40 + plen
        while proto in (0, 43, 60):           # hop-by-hop (MLD), routing, destination options
            proto, l4off = frame[l4off], l4off + (frame[l4off + 1] + 1) * 8
    else:
        return None
    if proto == 6:
        sp, dp = struct.unpack('>HH', frame[l4off:l4off + 4])
        doff = (frame[l4off + 12] >> 4) * 4
        return 'tcp', src, sp, dst, dp, proto, frame[l4off + 13], frame[l4off + doff:end]
    if proto == 17:
        sp, dp = struct.unpack('>HH', frame[l4off:l4off + 4])
        return 'udp', src, sp, dst, dp, proto, 0, frame[l4off + 8:end]
    return 'other', src, 0, dst, 0, proto, 0, b''


def ep(ip, port):
    return ('[%s]:%d' if ':' in ip else '%s:%d') % (ip, port)


def flows_of(path):
    """Flows in first-seen order; a is the side that sent the first packet (the SYN for TCP)."""
    flows = {}
    for wirelen, frame in read_pcap(path):
        d = decode(frame)
        if d is None:
            continue
        l4, src, sp, dst, dp, proto, flags, payload = d
        k = (l4, proto) + tuple(sorted([(src, sp), (dst, dp)]))
        f = flows.get(k)
        if f is None:
            f = flows[k] = {'l4': l4, 'ipproto': proto, 'a': (src, sp), 'b': (dst, dp),
                            'packets': 0, 'bytes': 0, 'payload': [[], []]}
        f['packets'] += 1
        f['bytes'] += wirelen
        if payload:
            f['payload'][0 if (src, sp) == f['a'] else 1].append(bytes(payload))
    return list(flows.values())


# ---- labels

def label_capture(man, path):
    """Truth entries for one capture and the list of construction checks that failed."""
    mode = man['mode']
    tracker = (man['tracker']['ip'], man['tracker']['port']) if man.get('tracker') else None
    router = set((ip, port) for ip, port in man['dht_nodes']) if man.get('dht_nodes') else set()
    tcp_ports, udp_ports = set(), {}
    for h in man['hosts']:
        for ip in h['ips']:
            tcp_ports.add((ip, h['tcp']))
            if h.get('udp'):
                udp_ports[(ip, h['udp'])] = h['udp_role']
    truth, problems = [], []
    for f in flows_of(path):
        a, b = f['a'], f['b']
        up, down = b''.join(f['payload'][0]), b''.join(f['payload'][1])
        first = f['payload'][0][0] if f['payload'][0] else (f['payload'][1][0] if f['payload'][1] else b'')
        entry = {'l4': f['l4'], 'a': ep(*a), 'b': ep(*b)}
        proto = None
        if f['l4'] == 'other':
            entry.update(proto={1: 'ICMP', 58: 'ICMPV6', 2: 'IGMP'}.get(f['ipproto'], 'Unknown'),
                         bittorrent=False, ipproto=f['ipproto'])
            entry['a'], entry['b'] = a[0], b[0]
        elif f['l4'] == 'tcp' and tracker in (a, b):
            proto = 'BitTorrent.tracker-http'
        elif f['l4'] == 'udp' and tracker in (a, b):
            proto = 'BitTorrent.tracker-udp'
        elif f['l4'] == 'udp' and (a in router or b in router):
            proto = 'BitTorrent.dht'
        elif f['l4'] == 'udp' and b[1] == 6771 and ipaddress.ip_address(b[0]).is_multicast:
            proto = 'BitTorrent.lsd'
        elif f['l4'] == 'tcp' and (a in tcp_ports or b in tcp_ports):
            proto = 'BitTorrent.peer'
        elif f['l4'] == 'udp' and (a in udp_ports or b in udp_ports):
            role = udp_ports.get(b) or udp_ports.get(a)
            if role == 'utp':
                proto = 'BitTorrent.utp'
            elif role == 'dht':
                proto = 'BitTorrent.dht'
            else:
                # One socket serves DHT and uTP (libtorrent, transmission, aria2's DHT + UDP tracker
                # client); the mode disables one of them, so the first datagram tells which is left.
                proto = 'BitTorrent.dht' if first[:1] == b'd' else 'BitTorrent.utp'
        else:
            entry.update(proto='Unknown', bittorrent=False)
            problems.append('unexpected flow %s %s %s' % (f['l4'], entry['a'], entry['b']))
        if proto:
            if not first:
                # Only SYN/RST or empty datagrams: nothing a DPI engine could classify (nDPI says
                # Unknown), so the flow counts neither as BitTorrent nor as clean.
                entry.update(proto='Unknown', bittorrent=False, nopayload=True, intended=proto)
            else:
                entry.update(proto=proto, bittorrent=True)
                if proto == 'BitTorrent.peer' and not first.startswith(HANDSHAKE):
                    # An MSE flow. In the encrypted mode both ends allow RC4 only, so the handshake
                    # must never show. Elsewhere MSE is a client's own choice: its "plaintext" crypto
                    # method (aria2's default) sends the handshake in clear right after the key
                    # exchange; "unfinished" is an MSE attempt the other end dropped (aria2 then
                    # retries with a plain handshake on a new connection).
                    entry['encrypted'] = True
                    clear = HANDSHAKE in up or HANDSHAKE in down
                    if mode == 'encrypted':
                        entry['crypto'] = 'rc4'
                        if clear:
                            problems.append('plaintext handshake in MSE flow %s %s' % (entry['a'], entry['b']))
                    else:
                        entry['crypto'] = 'plaintext' if clear else 'unfinished'
                elif proto == 'BitTorrent.peer' and mode == 'encrypted':
                    problems.append('peer flow %s %s is not MSE' % (entry['a'], entry['b']))
                elif proto == 'BitTorrent.dht' and first[:1] != b'd':
                    problems.append('DHT flow %s %s is not bencoded' % (entry['a'], entry['b']))
                elif proto == 'BitTorrent.utp' and (first[0] & 15 != 1 or first[0] >> 4 > 4):
                    problems.append('uTP flow %s %s has no uTP v1 header' % (entry['a'], entry['b']))
        entry['packets'], entry['bytes'] = f['packets'], f['bytes']
        truth.append(entry)
    return truth, problems


def cmd_label(args):
    truth_out = args[args.index('--truth') + 1]
    caps_out = args[args.index('--captures') + 1]
    manifests = [a for i, a in enumerate(args) if not a.startswith('--') and args[i - 1] not in ('--truth', '--captures')]
    truth, caps, failed = {}, {}, False
    for mpath in sorted(manifests):
        man = json.load(open(mpath))
        pcap = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(mpath))), man['capture'])
        flows, problems = label_capture(man, pcap)
        truth[man['capture']] = flows
        by_proto = {}
        for f in flows:
            if f['l4'] != 'other':
                by_proto[f['proto']] = by_proto.get(f['proto'], 0) + 1
        caps[man['capture']] = dict(
            {k: man[k] for k in ('client', 'mode', 'pairing', 'completed', 'seconds')},
            bytes=os.path.getsize(pcap), packets=sum(f['packets'] for f in flows),
            flows=by_proto, mse_rc4_flows=sum(1 for f in flows if f.get('crypto') == 'rc4'),
            mse_plaintext_flows=sum(1 for f in flows if f.get('crypto') == 'plaintext'),
            mse_unfinished_flows=sum(1 for f in flows if f.get('crypto') == 'unfinished'),
            ipv6_flows=sum(1 for f in flows if f['l4'] != 'other' and f['a'].startswith('[')),
            problems=problems)
        for p in problems:
            print('%s: %s' % (man['capture'], p), file=sys.stderr)
        if any(not p.startswith('unexpected') for p in problems) or not man['completed']:
            failed = True
    with open(truth_out, 'w') as fh:
        json.dump(truth, fh, indent=1, sort_keys=True)
        fh.write('\n')
    with open(caps_out, 'w') as fh:
        json.dump(caps, fh, indent=1, sort_keys=True)
        fh.write('\n')
    return 1 if failed else 0


def cmd_e2e_label(args):
    result = json.load(open(args[0]))
    out = {}
    tracker_name = b'tracker.lab.example'
    dns_name = b'\x07tracker\x03lab\x07example'
    for sc in result['scenarios'] + [{'name': 'ordinary'}]:
        path = os.path.join(args[1], sc['name'] + '.pcap')
        flows = []
        for f in flows_of(path):
            if f['l4'] not in ('tcp', 'udp') or not (f['payload'][0] or f['payload'][1]):
                continue
            sent = b''.join(f['payload'][0])
            if sc['name'] == 'ordinary':
                named = tracker_name in sent or dns_name in sent
                expect, why = ('bittorrent', 'names the listed tracker name') if named else ('clean', 'ordinary traffic')
            elif f['l4'] == 'tcp' and f['b'][0] == result['services']['socks5'] and len(sent) <= 13:
                # The method greeting (3 bytes) and an IPv4 request (10): no tunnelled byte after
                # them (a UDP ASSOCIATE's control connection, a CONNECT the proxy refused).
                expect, why = 'clean', 'SOCKS5 exchange only: no tunnelled bytes'
            else:
                expect, why = 'bittorrent', '%s %s traffic of the scenario host' % (sc['name'], f['l4'])
            flows.append({'l4': f['l4'], 'a': ep(*f['a']), 'b': ep(*f['b']), 'expect': expect, 'why': why})
        out[sc['name'] + '.pcap'] = flows
    with open(args[2], 'w') as fh:
        json.dump(out, fh, indent=1)
        fh.write('\n')


def cmd_recall(args):
    """Recall per mode and per label of `btwall scan` verdicts, and how much of it rests on the peer
    cache (flows caught only because an earlier flow of the capture named or proved the peer)."""
    truth, caps = json.load(open(args[0])), json.load(open(args[1]))

    def key(cap, l4, e1, e2):
        return (os.path.basename(cap), l4) + tuple(sorted([e1, e2]))

    def split(s):
        host, _, port = s.rpartition(':')
        return str(ipaddress.ip_address(host.strip('[]'))), int(port)
    verdicts = {}
    for line in open(args[2]):
        d = json.loads(line)
        k = key(d['file'], d['l4'], (str(ipaddress.ip_address(d['src'])), d['sport']),
                (str(ipaddress.ip_address(d['dst'])), d['dport']))
        if verdicts.get(k, {}).get('verdict') != 'bittorrent':
            verdicts[k] = d
    rows = {}
    for cap, flows in truth.items():
        mode = caps[cap]['mode']
        for f in flows:
            if f['l4'] == 'other' or not f['bittorrent']:
                continue
            d = verdicts.get(key(cap, f['l4'], split(f['a']), split(f['b'])), {})
            label = f['proto'] + (' mse-' + f['crypto'] if 'crypto' in f else '')
            for r in ('all', mode, '%s %s' % (mode, label)):
                row = rows.setdefault(r, [0, 0, 0, {}])
                row[0] += 1
                if d.get('verdict') == 'bittorrent':
                    row[1] += 1
                    row[2] += d.get('rule') != 'peer-cache'
                    row[3][d.get('rule')] = row[3].get(d.get('rule'), 0) + 1
    for r in sorted(rows):
        n, hit, own, rules = rows[r]
        print('%-44s %4d  recall=%.3f  without-peer-cache=%.3f  %s' % (r, n, hit / n, own / n, rules))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == 'variant':
        cmd_variant(args)
    elif cmd == 'infohash':
        cmd_infohash(args)
    elif cmd == 'pieces':
        cmd_pieces(args)
    elif cmd == 'e2e-label':
        cmd_e2e_label(args)
    elif cmd == 'label':
        sys.exit(cmd_label(args))
    elif cmd == 'recall':
        cmd_recall(args)
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main()
