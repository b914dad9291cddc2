# Real BitTorrent clients started inside network namespaces: the launch code shared by the capture
# lab (bt-lab.sh) and the end-to-end lab (e2e-lab.sh). Sourced, never run.
#
# start_CLIENT NS IP4 IP6 MODE TORRENT SAVE PORT DIR : run CLIENT in namespace NS, bound to IP4 (and
# IP6 when not empty; the libtorrent peer and transmission take IP4 empty for an IPv6-only client),
# seeding when SAVE already holds the data, leeching otherwise. Its
# configuration goes to DIR/cfg, its output to DIR/client.log. MODE is one of plain, encrypted, utp,
# dht, udp-tracker (what bt-lab.sh captures) and, for the libtorrent peer, what bt-lab-lt.py adds;
# qBittorrent's MODE tracker is its embedded HTTP tracker alone (see start_qbittorrent).
# The caller sets, before starting a client:
#   BT_DHT4, BT_DHT6  HOST:PORT and [HOST]:PORT of the lab DHT node a dht-mode client bootstraps from
#                     (BT_DHT6 may be empty: IPv4 only)
#   BT_NAME           the torrent's file name (ctorrent wants the file itself)
# Every client's configuration disables UPnP, NAT-PMP, LSD and the public DHT bootstrap, whatever
# the mode, but for the libtorrent peer's lsd mode, whose LSD announces stay on the LAN's link. LAST_PID is the started process; PIDS collects all of them for stop_pids.

BT_CLIENTS_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LTPY=/usr/bin/python3          # Debian's python, where python3-libtorrent is installed
BT_LT=$BT_CLIENTS_HERE/bt-lab-lt.py

PIDS=()
LAST_PID=
spawn() {   # spawn NS LOG CMD... : start CMD inside namespace NS, remember its pid
  local ns=$1 log=$2; shift 2
  ip netns exec "$ns" "$@" </dev/null >"$log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

stop_pids() {   # TERM, give them 6 s to say goodbye (tracker "stopped" events), then KILL
  local pid n
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for n in $(seq 60); do
    local alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}

lab_namespaces() { ip netns list | awk '{print $1}' | grep "^$PFX-" || true; }

remove_lab() {   # stops what spawn started, then kills what is left in the $PFX- namespaces and removes them
  [ ${#PIDS[@]} -gt 0 ] && stop_pids "${PIDS[@]}"
  PIDS=()
  local ns pid
  for ns in $(lab_namespaces); do
    # Anything still in a lab namespace was started by this lab (or a previous run of it).
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
  done
}

# "IP4,IP6", "IP4" or "IP6" for the libtorrent launcher's --listen.
bt_listen() { local IFS=,; local ips=($1 $2); echo "${ips[*]}"; }

bt_dht_nodes() {   # the lab DHT node(s) as repeated OPTION HOST:PORT arguments
  echo "$1" "$BT_DHT4"
  [ -n "${BT_DHT6:-}" ] && echo "$1" "$BT_DHT6"
  return 0
}

start_transmission() {
  local ns=$1 ip4=$2 ip6=$3 mode=$4 tor=$5 save=$6 port=$7 cfg=$8/cfg
  local dht=false utp=false enc=-et
  [ "$mode" = dht ] && dht=true
  [ "$mode" = utp ] && utp=true
  [ "$mode" = encrypted ] && enc=-er
  mkdir -p "$cfg"
  cat >"$cfg/settings.json" <<JSON
{"dht-enabled": $dht, "lpd-enabled": false, "pex-enabled": true, "port-forwarding-enabled": false,
 "utp-enabled": $utp, "peer-port": $port, "peer-port-random-on-start": false,
 "bind-address-ipv4": "${ip4:-0.0.0.0}", "bind-address-ipv6": "${ip6:-::}", "rpc-enabled": false,
 "download-dir": "$save", "incomplete-dir-enabled": false, "rename-partial-files": false,
 "blocklist-enabled": false, "speed-limit-up-enabled": false, "speed-limit-down-enabled": false,
 "ratio-limit-enabled": false, "idle-seeding-limit-enabled": false, "message-level": 2}
JSON
  # transmission reads extra DHT bootstrap nodes from this file; it falls back to the public
  # dht.transmissionbt.com only by name, which cannot resolve in the lab.
  # (IPv4 only: transmission 3.00 runs its IPv6 DHT only with a global address it finds by a
  # connect() towards a public IPv6 address, which the lab cannot route.)
  [ "$mode" = dht ] && echo "${BT_DHT4%:*} ${BT_DHT4##*:}" >"$cfg/dht.bootstrap"
  spawn "$ns" "$8/client.log" transmission-cli -g "$cfg" -w "$save" -p "$port" "$enc" -M "$tor"
}

start_aria2() {
  local ns=$1 ip4=$2 ip6=$3 mode=$4 tor=$5 save=$6 port=$7 cfg=$8/cfg
  local dht=false dht6=false crypto=(--bt-require-crypto=false --bt-min-crypto-level=plain) entry=()
  mkdir -p "$cfg"
  # aria2's UDP tracker client rides on its DHT socket: --enable-dht is the only way to get it.
  [ "$mode" = udp-tracker ] && dht=true
  if [ "$mode" = dht ]; then
    dht=true
    entry=(--dht-entry-point="$BT_DHT4")
    [ -n "${BT_DHT6:-}" ] && { dht6=true; entry+=(--dht-entry-point6="$BT_DHT6"); }
  fi
  [ "$mode" = encrypted ] && crypto=(--bt-require-crypto=true --bt-min-crypto-level=arc4)
  spawn "$ns" "$8/client.log" aria2c --no-conf --dir="$save" --listen-port="$port" \
    --dht-listen-port="$port" --enable-dht="$dht" --enable-dht6="$dht6" "${entry[@]}" \
    --dht-file-path="$cfg/dht.dat" --dht-file-path6="$cfg/dht6.dat" --bt-enable-lpd=false \
    --enable-peer-exchange=true "${crypto[@]}" --seed-ratio=0.0 --seed-time=60 --check-integrity=true \
    --file-allocation=none --auto-save-interval=0 --summary-interval=5 --console-log-level=notice "$tor"
}

# MODE tracker: qBittorrent's embedded HTTP tracker on PORT (every address of NS, both families:
# Debian's opentracker is built IPv4 only), no torrent (TORRENT and SAVE empty), its own
# BitTorrent port PORT+1.
start_qbittorrent() {
  local ns=$1 ip4=$2 ip6=$3 mode=$4 tor=$5 save=$6 port=$7 cfg=$8/cfg
  local dht=false proto=TCP enc=2 tracker=false tracker_port=0 torrent=()
  [ "$mode" = tracker ] && { tracker=true; tracker_port=$port; port=$((port + 1)); }
  [ -n "$tor" ] && torrent=("$tor")
  [ "$mode" = dht ] && dht=true
  [ "$mode" = utp ] && proto=UTP
  [ "$mode" = encrypted ] && enc=1
  mkdir -p "$cfg/qBittorrent/config"
  # qBittorrent 4.5 hard-codes its DHT bootstrap routers (by name): the lab hosts file sends those
  # names to lab nodes; the torrent's BEP 5 "nodes" list names the lab node too.
  cat >"$cfg/qBittorrent/config/qBittorrent.conf" <<CONF
[LegalNotice]
Accepted=true

[BitTorrent]
TrackerEnabled=$tracker
Session\Port=$port
Session\DHTEnabled=$dht
Session\LSDEnabled=false
Session\PeXEnabled=true
Session\Encryption=$enc
Session\BTProtocol=$proto
Session\AnonymousModeEnabled=false
Session\QueueingSystemEnabled=false
Session\DefaultSavePath=$save
Session\TempPathEnabled=false
Session\AddTrackersEnabled=false
Session\GlobalMaxRatio=-1

[Network]
PortForwardingEnabled=false

[Preferences]
Connection\UPnP=false
Advanced\trackerPort=$tracker_port
Advanced\trackerPortForwarding=false
Connection\ResolvePeerCountries=false
General\Locale=en
WebUI\Address=127.0.0.1
WebUI\Port=$((port + 10000))
WebUI\UseUPnP=false
WebUI\LocalHostAuth=false
CONF
  spawn "$ns" "$8/client.log" qbittorrent-nox --profile="$cfg" --webui-port=$((port + 10000)) \
    ${save:+--save-path="$save"} "${torrent[@]}"
}

start_rtorrent() {
  local ns=$1 ip4=$2 ip6=$3 mode=$4 tor=$5 save=$6 port=$7 cfg=$8/cfg
  local dht=disable enc=none
  [ "$mode" = dht ] && dht=on
  [ "$mode" = encrypted ] && enc=allow_incoming,try_outgoing,require,require_RC4
  mkdir -p "$cfg/session"
  cat >"$cfg/rtorrent.rc" <<RC
system.daemon.set = true
session.path.set = $cfg/session
directory.default.set = $save
network.port_range.set = $port-$port
network.port_random.set = no
dht.mode.set = $dht
dht.port.set = $port
protocol.pex.set = yes
trackers.use_udp.set = yes
protocol.encryption.set = $enc
pieces.hash.on_completion.set = no
log.open_file = "main", $8/rtorrent.log
log.add_output = "info", "main"
RC
  [ "$mode" = dht ] && echo "schedule2 = lab_dht_node, 1, 0, \"dht.add_node=$BT_DHT4\"" >>"$cfg/rtorrent.rc"
  spawn "$ns" "$8/client.log" rtorrent -n -o "import=$cfg/rtorrent.rc" "$tor"
}

start_deluge() {
  local ns=$1 ip4=$2 ip6=$3 mode=$4 tor=$5 save=$6 port=$7 cfg=$8/cfg
  local dht=false pol=2 lvl=0 nodes=()
  [ "$mode" = dht ] && { dht=true; nodes=($(bt_dht_nodes --dht-node)); }
  [ "$mode" = encrypted ] && { pol=0; lvl=1; }
  mkdir -p "$cfg"
  cat >"$cfg/core.conf" <<CONF
{"file": 1, "format": 1}{
 "listen_ports": [$port, $port], "random_port": false, "listen_interface": "", "outgoing_interface": "",
 "dht": $dht, "upnp": false, "natpmp": false, "lsd": false, "utpex": true,
 "enc_in_policy": $pol, "enc_out_policy": $pol, "enc_level": $lvl,
 "download_location": "$save", "new_release_check": false, "send_info": false,
 "daemon_port": 58846, "allow_remote": false, "pre_allocate_storage": false,
 "stop_seed_at_ratio": false, "copy_torrent_file": false, "move_completed": false, "add_paused": false
}
CONF
  spawn "$ns" "$8/client.log" "$LTPY" "$BT_LT" deluged --mode "$mode" \
    --listen "$(bt_listen "$ip4" "$ip6")" --port "$port" "${nodes[@]}" -- \
    -d -c "$cfg" -L info -l "$8/deluged.log"
  local n
  for n in $(seq 40); do
    ip netns exec "$ns" deluge-console -c "$cfg" "add -p $save $tor" >>"$8/console.log" 2>&1 \
      && grep -q 'Torrent added' "$8/console.log" && return
    sleep 0.5
  done
  echo "bt-clients: deluged in $ns took no torrent" >&2
}

# The libtorrent peer also takes, after the eight arguments, bt-lab-lt.py peer's own options
# (--peer HOST:PORT, --connect-delay S, --proxy HOST:PORT, --download-limit KBPS).
start_libtorrent() {
  local ns=$1 ip4=$2 ip6=$3 mode=$4 tor=$5 save=$6 port=$7 dir=$8 nodes=()
  shift 8
  [ "$mode" = dht ] && nodes=($(bt_dht_nodes --dht-node))
  mkdir -p "$dir"
  spawn "$ns" "$dir/client.log" "$LTPY" "$BT_LT" peer --mode "$mode" \
    --listen "$(bt_listen "$ip4" "$ip6")" --port "$port" --torrent "$tor" --save "$save" "${nodes[@]}" "$@"
}

start_ctorrent() {
  local ns=$1 ip4=$2 ip6=$3 mode=$4 tor=$5 save=$6 port=$7
  spawn "$ns" "$8/client.log" ctorrent -s "$save/$BT_NAME" -p "$port" -i "$ip4" -e 1 -M 20 "$tor"
}
