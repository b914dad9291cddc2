#!/usr/bin/python3
"""A real BitTorrent client (Debian's python3-libtorrent) for the namespace tests, run inside them.

  bt-client.py seed DIR PORT SIZE_MB LIFETIME_S   creates DIR/data and DIR/data.torrent, seeds on PORT
  bt-client.py leech DIR TORRENT SEEDER_HOST SEEDER_PORT RATE_KBPS LIFETIME_S
                                                  downloads from that one peer at most RATE_KBPS

No DHT, local peer discovery, UPnP or NAT-PMP, no tracker, no encryption (so the handshake is the
plain BEP 3 one), no uTP (TCP only): the only peer is the one given. Prints one JSON line per event: listening,
progress (every 0.5 s: bytes verified, payload bytes received, connected peers), and each peer error libtorrent reports
(a reset shows as "Connection reset by peer").
"""
import json
import os
import sys
import time

import libtorrent as lt


def emit(**fields):
    print(json.dumps(fields), flush=True)


def session(port):
    settings = {
        'listen_interfaces': f'0.0.0.0:{port},[::]:{port}',
        'enable_dht': False,
        'enable_lsd': False,
        'enable_upnp': False,
        'enable_natpmp': False,
        'out_enc_policy': lt.enc_policy.disabled,
        'in_enc_policy': lt.enc_policy.disabled,
        'alert_mask': lt.alert.category_t.error_notification | lt.alert.category_t.peer_notification | lt.alert.category_t.connect_notification,
        'allow_multiple_connections_per_ip': True,
        # TCP only: a connection to cut (uTP is UDP, which has none).
        'enable_outgoing_utp': False,
        'enable_incoming_utp': False,
    }
    return lt.session(settings)


def watch(ses, handle, lifetime):
    end = time.time() + lifetime
    next_progress = 0.0
    while time.time() < end:
        for alert in ses.pop_alerts():
            if isinstance(alert, (lt.peer_error_alert, lt.peer_disconnected_alert)):
                emit(event='peer-error', kind=type(alert).__name__, message=alert.error.message(), time=time.time())
        if time.time() >= next_progress:
            status = handle.status()
            emit(event='progress', done=status.total_done, received=status.total_payload_download, peers=status.num_peers, time=time.time())
            next_progress = time.time() + 0.5
        time.sleep(0.05)


def main():
    mode = sys.argv[1]
    if mode == 'seed':
        directory, port, size_mb, lifetime = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
        data = os.path.join(directory, 'data')
        with open(data, 'wb') as f:
            f.write(os.urandom(size_mb << 20))
        files = lt.file_storage()
        lt.add_files(files, data)
        torrent = lt.create_torrent(files, 1 << 18)
        lt.set_piece_hashes(torrent, directory)
        with open(data + '.torrent', 'wb') as f:
            f.write(lt.bencode(torrent.generate()))
        ses = session(port)
        handle = ses.add_torrent({'ti': lt.torrent_info(data + '.torrent'), 'save_path': directory, 'flags': lt.torrent_flags.seed_mode})
        emit(event='listening', torrent=data + '.torrent')
        watch(ses, handle, lifetime)
    else:
        directory, torrent, host, port, rate_kbps, lifetime = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
        ses = session(0)
        handle = ses.add_torrent({'ti': lt.torrent_info(torrent), 'save_path': directory})
        # The torrent's own limit: the session's exempts peers on a local network, as the lab's are.
        handle.set_download_limit(rate_kbps * 1024)
        handle.connect_peer((host, port))
        emit(event='started')
        watch(ses, handle, lifetime)


main()
