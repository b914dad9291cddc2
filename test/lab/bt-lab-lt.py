#!/usr/bin/python3
"""libtorrent (rasterbar) peer, DHT node and deluged launcher for test/lab/bt-lab.sh and e2e-lab.sh.

Runs under Debian's /usr/bin/python3 (python3-libtorrent lives there, not in pyenv).

  bt-lab-lt.py peer   --mode MODE --listen IP4,IP6 --port P --torrent T --save DIR
                      [--dht-node HOST:PORT]... [--peer HOST:PORT]... [--connect-delay S] [--proxy HOST:PORT] [--download-limit KBPS]
  bt-lab-lt.py dht-nodes --node IP4,IP6,PORT [--node IP4,IP6,PORT]...
  bt-lab-lt.py deluged --mode MODE --listen IP4,IP6 --port P [--dht-node HOST:PORT]... -- DELUGED-ARGS...

Every instance runs until it is killed; the lab decides when a run is over.

peer prints its state every second, with the payload bytes it received (received=N).
"""
import argparse
import signal
import sys
import time

import libtorrent as lt

# Never reach anything outside the lab, whatever the mode.
BASE = {
    'enable_upnp': False,
    'enable_natpmp': False,
    'enable_lsd': False,
    'enable_dht': False,
    'dht_bootstrap_nodes': '',
    'enable_ip_notifier': False,
    # All lab hosts share one /24 and one /64: without these, libtorrent's DHT keeps one node per subnet.
    'dht_restrict_routing_ips': False,
    'dht_restrict_search_ips': False,
    'dht_ignore_dark_internet': False,
    'dht_prefer_verified_node_ids': False,
    'alert_mask': lt.alert.category_t.error_notification | lt.alert.category_t.status_notification,
}

# One transport and one encryption policy per mode, so every flow of a run is what the mode says.
TCP_ONLY = {'enable_outgoing_utp': False, 'enable_incoming_utp': False}
PLAIN = {'out_enc_policy': 2, 'in_enc_policy': 2}           # pe_disabled
MODES = {
    'plain': dict(TCP_ONLY, **PLAIN),
    'udp-tracker': dict(TCP_ONLY, **PLAIN),
    # pe_forced both ways, RC4 only: the whole stream is encrypted, not just the MSE header.
    'encrypted': dict(TCP_ONLY, out_enc_policy=0, in_enc_policy=0, allowed_enc_level=2, prefer_rc4=True),
    'utp': dict(PLAIN, enable_outgoing_tcp=False, enable_incoming_tcp=False),
    'dht': dict(TCP_ONLY, enable_dht=True, **PLAIN),
    # BEP 14 Local Service Discovery: multicast announces on the LAN's own link, the only way this
    # mode's peers can find each other (the session also goes without the PEX plugin).
    'lsd': dict(TCP_ONLY, enable_lsd=True, **PLAIN),
}


def settings_for(mode, listen=None, port=None, dht_nodes=()):
    s = dict(BASE)
    s.update(MODES[mode])
    if listen:
        s['listen_interfaces'] = ','.join(
            ('[%s]:%d' if ':' in ip else '%s:%d') % (ip, port) for ip in listen.split(','))
    if dht_nodes:
        # Lab nodes only; the public routers libtorrent and its front ends default to never appear.
        s['dht_bootstrap_nodes'] = ','.join(dht_nodes)
    return s


def drain(ses):
    for a in ses.pop_alerts():
        if a.category() & lt.alert.category_t.error_notification:
            print('alert:', a.message(), flush=True)


def run_peer(args):
    s = settings_for(args.mode, args.listen[0], args.port, args.dht_node)
    if args.proxy:
        # Every peer and tracker connection through the SOCKS5 proxy, none around it.
        host, port = args.proxy.rsplit(':', 1)
        s.update(proxy_type=lt.proxy_type_t.socks5, proxy_hostname=host, proxy_port=int(port),
                 proxy_peer_connections=True, proxy_tracker_connections=True, proxy_hostnames=True)
    if args.peer:
        # The given peers are retried every second, not after libtorrent's minute of backoff, and
        # not given up after three failures: one may start listening after this peer first tried it.
        s['min_reconnect_time'] = 1
        s['max_failcount'] = 1000
    if args.download_limit:
        s['download_rate_limit'] = args.download_limit * 1024
    # Flags 0: none of the default plugins (ut_pex, ut_metadata, smart_ban), so that an lsd-mode
    # peer learns of no peer but by LSD.
    ses = lt.session(s, 0) if args.mode == 'lsd' else lt.session(s)
    h = ses.add_torrent({'ti': lt.torrent_info(args.torrent), 'save_path': args.save})
    given = [(host, int(port)) for host, port in (p.rsplit(':', 1) for p in args.peer)]
    connect_from = time.time() + args.connect_delay
    last = announced = 0.0
    while not STOP:
        time.sleep(0.5)
        drain(ses)
        now = time.time()
        if now - last >= 1:
            last = now
            st = h.status()
            print('state=%s progress=%.3f peers=%d received=%d' % (st.state, st.progress, st.num_peers,
                                                                  st.total_payload_download), flush=True)
            if not st.num_peers and now >= connect_from:
                # Again every second: a peer not listening yet (or a dropped attempt) would otherwise
                # wait out libtorrent's reconnect backoff.
                for ep in given:
                    h.connect_peer(ep)
            if args.mode == 'dht' and now - announced >= 10:
                # Look up and announce every 10 s instead of libtorrent's 15 minutes: a leecher that
                # announces late is then found (and connected to) by the seeder within the run.
                announced = now
                h.force_dht_announce()


def run_dht_nodes(args):
    """One DHT-only session per --node IP4,IP6,PORT, each told of all the others: a small DHT of its
    own. Some clients (transmission) only announce once their routing table holds 9+ nodes.
    Prints "announce" when a peer announces a torrent, which bt-lab.sh waits for."""
    nodes = [n.rsplit(',', 1) for n in args.node]
    sessions = []
    for listen, port in nodes:
        s = settings_for('dht', listen, int(port))
        s.update(enable_outgoing_tcp=False, enable_incoming_tcp=False,
                 alert_mask=BASE['alert_mask'] | lt.alert.category_t.dht_notification)
        sessions.append(lt.session(s))
    time.sleep(0.5)
    for (mine, _), ses in zip(nodes, sessions):
        for other, port in nodes:
            if other != mine:
                for ip in other.split(','):
                    ses.add_dht_node((ip, int(port)))
    while not STOP:
        time.sleep(0.5)
        for ses in sessions:
            for a in ses.pop_alerts():
                if isinstance(a, lt.dht_announce_alert):
                    print('announce %s from %s:%d' % (a.info_hash, a.ip, a.port), flush=True)


def run_deluged(args, rest):
    overrides = settings_for(args.mode, args.listen[0], args.port, args.dht_node)
    # Deluge opens its session with libtorrent's defaults (UPnP, NAT-PMP, LSD and DHT on, public
    # bootstrap routers, port 6881) and only then applies core.conf, and it has no switch for TCP/uTP: pin our
    # settings into every settings update it makes, starting with the session's construction.
    orig_session = lt.session

    def session(settings=None, flags=0):
        merged = dict(settings or {})
        merged.update(overrides)
        return orig_session(merged, flags)
    lt.session = session
    from deluge.core import core
    orig_apply = core.Core.apply_session_settings

    def apply_session_settings(self, settings):
        merged = dict(settings)
        merged.update({k: v for k, v in overrides.items() if k in settings or k == 'dht_bootstrap_nodes'})
        orig_apply(self, merged)
    core.Core.apply_session_settings = apply_session_settings
    from deluge.core.daemon_entry import start_daemon
    sys.argv = ['deluged'] + rest
    start_daemon()


STOP = False


def on_term(*_):
    # Leave the loop and let the session go down normally: that sends the trackers a "stopped" event.
    global STOP
    STOP = True


def main():
    argv = sys.argv[1:]
    rest = []
    if '--' in argv:
        i = argv.index('--')
        argv, rest = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser()
    p.add_argument('role', choices=['peer', 'dht-nodes', 'deluged'])
    p.add_argument('--mode', default='plain', choices=sorted(MODES))
    p.add_argument('--listen', action='append', help='IP4,IP6')
    p.add_argument('--node', action='append', help='dht-nodes: IP4,IP6,PORT of one node')
    p.add_argument('--port', type=int)
    p.add_argument('--torrent')
    p.add_argument('--proxy', help='peer: HOST:PORT of a SOCKS5 proxy for every connection')
    p.add_argument('--peer', action='append', default=[], help='peer: HOST:PORT to connect to at once')
    p.add_argument('--connect-delay', type=float, default=0, help='peer: seconds before the given peers are tried')
    p.add_argument('--download-limit', type=int, default=0, help='peer: KB/s it downloads at most')
    p.add_argument('--save')
    p.add_argument('--dht-node', action='append', default=[])
    args = p.parse_args(argv)
    if args.role != 'deluged':
        signal.signal(signal.SIGTERM, on_term)
    if args.role == 'peer':
        run_peer(args)
    elif args.role == 'dht-nodes':
        run_dht_nodes(args)
    else:
        run_deluged(args, rest)


if __name__ == '__main__':
    main()
