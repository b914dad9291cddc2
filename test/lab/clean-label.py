#!/usr/bin/env python3
"""Cuts the clean lab's raw captures to their first packets per flow and labels every TCP/UDP flow.

Labels come from how the lab built each capture (which server listened on which port), never from
btwall's detectors: the rules file says, per capture, "this l4 and responder port is protocol P".
A flow that matches no rule is an error, because it means the lab carried traffic it did not plan.

usage: clean-label.py RAW_DIR OUT_DIR RULES_TSV [--max-packets N]

RULES_TSV lines: capture <TAB> l4 <TAB> server port or * <TAB> proto <TAB> category
Writes OUT_DIR/<capture> (classic pcap, same link type) and OUT_DIR/truth.json in the format of
/work/shared/corpus/ndpi/truth.json.
"""
import argparse
import ipaddress
import json
import os
import struct
import sys

ETH_HEADER = 14
ETHERTYPE_VLAN = (0x8100, 0x88A8)
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPV6_EXTENSION_HEADERS = (0, 43, 60)
IPV6_FRAGMENT = 44


def read_pcap(path):
    with open(path, 'rb') as f:
        data = f.read()
    magic = data[:4]
    if magic == b'\xd4\xc3\xb2\xa1' or magic == b'\x4d\x3c\xb2\xa1':
        endian = '<'
    elif magic == b'\xa1\xb2\xc3\xd4' or magic == b'\xa1\xb2\x3c\x4d':
        endian = '>'
    else:
        raise SystemExit('%s: not a classic pcap file' % path)
    linktype = struct.unpack(endian + 'I', data[20:24])[0]
    if linktype != 1:
        raise SystemExit('%s: link type %d, the lab captures Ethernet only' % (path, linktype))
    header = data[:24]
    records = []
    off = 24
    while off + 16 <= len(data):
        _sec, _frac, incl, orig = struct.unpack(endian + 'IIII', data[off:off + 16])
        end = off + 16 + incl
        if end > len(data):
            raise SystemExit('%s: truncated record at offset %d' % (path, off))
        records.append((data[off:end], data[off + 16:end], orig))
        off = end
    return header, records


def flow_of(frame):
    """What a frame is: None (not TCP/UDP), ('frag', key) for a non-first IP fragment, or
    ('flow', l4, src ip, sport, dst ip, dport, tcp flags, fragment key or None)."""
    off = ETH_HEADER
    if len(frame) < off:
        return None
    ethertype = struct.unpack('>H', frame[12:14])[0]
    while ethertype in ETHERTYPE_VLAN and len(frame) >= off + 4:
        ethertype = struct.unpack('>H', frame[off + 2:off + 4])[0]
        off += 4
    fragment_key = None
    if ethertype == ETHERTYPE_IPV4:
        if len(frame) < off + 20:
            return None
        ihl = (frame[off] & 0x0F) * 4
        proto = frame[off + 9]
        src = ipaddress.ip_address(frame[off + 12:off + 16])
        dst = ipaddress.ip_address(frame[off + 16:off + 20])
        ident, fragment = struct.unpack('>HH', frame[off + 4:off + 8])
        if fragment & 0x3FFF:
            fragment_key = (src, dst, ident, proto)
            if fragment & 0x1FFF:
                return ('frag', fragment_key)
        off += ihl
    elif ethertype == ETHERTYPE_IPV6:
        if len(frame) < off + 40:
            return None
        proto = frame[off + 6]
        src = ipaddress.ip_address(frame[off + 8:off + 24])
        dst = ipaddress.ip_address(frame[off + 24:off + 40])
        off += 40
        while proto in IPV6_EXTENSION_HEADERS + (IPV6_FRAGMENT,) and len(frame) >= off + 8:
            if proto == IPV6_FRAGMENT:
                offset_field, ident = struct.unpack('>HI', frame[off + 2:off + 8])
                fragment_key = (src, dst, ident)
                if offset_field & 0xFFF8:
                    return ('frag', fragment_key)
                proto, off = frame[off], off + 8
            else:
                proto, off = frame[off], off + (frame[off + 1] + 1) * 8
    else:
        return None
    if proto not in (IPPROTO_TCP, IPPROTO_UDP) or len(frame) < off + 4:
        return None
    sport, dport = struct.unpack('>HH', frame[off:off + 4])
    flags = frame[off + 13] if proto == IPPROTO_TCP and len(frame) > off + 13 else 0
    return ('flow', 'tcp' if proto == IPPROTO_TCP else 'udp', src, sport, dst, dport, flags, fragment_key)


def endpoint(ip, port):
    return ('[%s]:%d' if ip.version == 6 else '%s:%d') % (ip.compressed, port)


def load_rules(path):
    rules = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip('\n')
            if not line or line.startswith('#'):
                continue
            capture, l4, port, proto, category = line.split('\t')
            rules.setdefault(capture, []).append((l4, None if port == '*' else int(port), proto, category))
    return rules


def label(capture, rules, l4, ports):
    """The first rule whose port is either end's (a server may answer from another port, as STUN's
    alternate port does, and so open the flow itself)."""
    for rule_l4, port, proto, category in rules.get(capture, ()):
        if rule_l4 == l4 and (port is None or port in ports):
            return proto, category
    return None


def process(raw_path, out_path, capture, rules, max_packets):
    header, records = read_pcap(raw_path)
    flows = {}
    order = []
    kept = []
    fragments = {}
    for record, frame, orig in records:
        parsed = flow_of(frame)
        if parsed is None:
            kept.append(record)
            continue
        if parsed[0] == 'frag':
            # Later fragments carry no ports: they belong to the flow of their first fragment.
            key = fragments.get(parsed[1])
            if key is None:
                raise SystemExit('%s: a fragment arrived before its first fragment' % capture)
            flow = flows[key]
            if flow['packets'] < max_packets:
                flow['packets'] += 1
                flow['bytes'] += orig
                kept.append(record)
            continue
        _, l4, src, sport, dst, dport, flags, fragment_key = parsed
        key = (l4,) + tuple(sorted(((src, sport), (dst, dport)), key=lambda e: (e[0].version, int(e[0]), e[1])))
        if fragment_key is not None:
            fragments[fragment_key] = key
        flow = flows.get(key)
        if flow is None:
            # The initiator is whoever sent the flow's first packet: the capture starts before
            # every session, so that is the SYN or the first datagram.
            if l4 == 'tcp' and flags & 0x12 != 0x02:
                raise SystemExit('%s: TCP flow %s:%d -> %s:%d starts without a SYN' % (capture, src, sport, dst, dport))
            flow = flows[key] = {'l4': l4, 'a': (src, sport), 'b': (dst, dport), 'packets': 0, 'bytes': 0,
                                 'dirs': set()}
            order.append(key)
        if flow['packets'] >= max_packets:
            continue
        flow['packets'] += 1
        flow['bytes'] += orig
        flow['dirs'].add((src, sport) == flow['a'])
        kept.append(record)
    with open(out_path, 'wb') as f:
        f.write(header)
        f.writelines(kept)
    truth = []
    unplanned = []
    for key in order:
        flow = flows[key]
        found = label(capture, rules, flow['l4'], (flow['a'][1], flow['b'][1]))
        a, b = endpoint(*flow['a']), endpoint(*flow['b'])
        if found is None:
            unplanned.append('%s %s -> %s' % (flow['l4'], a, b))
            continue
        entry = {'a': a, 'b': b, 'bittorrent': False, 'bytes': flow['bytes'], 'category': found[1],
                 'confidence': 'By construction', 'l4': flow['l4'], 'packets': flow['packets'],
                 'proto': found[0]}
        if len(flow['dirs']) < 2:
            entry['unidir'] = True
        truth.append(entry)
    if unplanned:
        raise SystemExit('%s: flows the lab did not plan:\n  %s' % (capture, '\n  '.join(unplanned)))
    return truth, len(records), len(kept)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('raw_dir')
    parser.add_argument('out_dir')
    parser.add_argument('rules')
    parser.add_argument('--max-packets', type=int, default=200)
    args = parser.parse_args(argv)
    rules = load_rules(args.rules)
    truth_path = os.path.join(args.out_dir, 'truth.json')
    truth = {}
    if os.path.exists(truth_path):
        # A partial run (ONLY=...) replaces its own captures' labels and keeps the others.
        with open(truth_path) as f:
            truth = json.load(f)
    for capture in sorted(rules):
        raw = os.path.join(args.raw_dir, capture)
        if not os.path.exists(raw):
            print('%s: not made, see the lab log' % capture, file=sys.stderr)
            continue
        flows, before, after = process(raw, os.path.join(args.out_dir, capture), capture, rules,
                                       args.max_packets)
        truth[capture] = flows
        print('%-40s %4d flows %6d packets (%d before the cut)' % (capture, len(flows), after, before))
    with open(truth_path, 'w') as f:
        json.dump(truth, f, indent=1, sort_keys=True)
        f.write('\n')


if __name__ == '__main__':
    main(sys.argv[1:])
