#!/usr/bin/env bash
# BitTorrent client lab: real clients in network namespaces with no route out, one capture per
# (client, mode), labelled by construction. Writes fixtures/lab/bt/<client>-<mode>.pcap,
# manifests/<client>-<mode>.json (what each run was built to do), truth.json and captures.json.
# Run as root:
#
#   bash test/lab/bt-lab.sh [--only CLIENT[-MODE]]... [--seeder CLIENT] [--rtt MS] [--timeout SECONDS]
#                           [--out DIR] [--keep]
#
# --seeder: h1 runs that client instead of the leechers' own (implementations mixed on each side).
# --rtt: every packet the seeder sends waits MS ms (../shared/bench/nfq-delay; this kernel has no
# netem), so both directions interleave as on a real path; captures are named <client>-<mode>-rttMS.
# BTLAB_PREFIX names the lab's namespaces (default btlab), so that two labs can run at once.
#
# Topology: namespace btlab-sw holds bridge btlab-br; btlab-trk (tracker / DHT node) and btlab-h1..3
# (seeder, two leechers) hang off it by veth pairs, dual-stack 198.51.100.0/24 + 2001:db8:b7::/64.
# No namespace has a default route, NAT or a link to the host's uplink: nothing can leave the lab.
# Captures are taken on the bridge (promiscuous, full snaplen), so they hold every lab packet.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/bt-clients.sh"
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$ROOT/fixtures/lab/bt
TIMEOUT=60
KEEP=0
ONLY=()
SEEDER=
RTT_MS=0
while [ $# -gt 0 ]; do
  case $1 in
    --only) ONLY+=("$2"); shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --seeder) SEEDER=$2; shift 2 ;;
    --rtt) RTT_MS=$2; shift 2 ;;
    *) echo "usage: $0 [--only CLIENT[-MODE]]... [--seeder CLIENT] [--rtt MS] [--timeout S] [--out DIR] [--keep]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bt-lab: must run as root" >&2; exit 2; }

PFX=${BTLAB_PREFIX:-btlab}
NS_SW=$PFX-sw
BRIDGE=$PFX-br
NS_TRK=$PFX-trk
HOSTS=(1 2 3)                  # h1 seeds, h2 and h3 leech
NET4=198.51.100
NET6=2001:db8:b7:
TRK4=$NET4.1
TRK6=${NET6}:1
TRACKER_PORT=6969
DHT_NODES=($(seq 101 116))     # lab DHT nodes, all in btlab-trk: .101-.116 and ::101-::116
# The public DHT routers clients hard-code resolve, inside the lab, to lab nodes on the same ports.
DHT_ROUTER_NAMES="router.bittorrent.com router.utorrent.com dht.transmissionbt.com router.bitcomet.com dht.aelitis.com"
DHT_LT_NAME=dht.libtorrent.org
DHT4=$NET4.${DHT_NODES[0]}
DHT6=${NET6}:${DHT_NODES[0]}
TOOL="python3 $HERE/bt-lab-tool.py"
DATA_KB=256

CLIENTS=(transmission aria2 qbittorrent rtorrent deluge libtorrent ctorrent)
MODES=(plain encrypted utp dht udp-tracker)
# What each client can do on the wire (see fixtures/lab/bt/README.md for why the gaps).
declare -A SUPPORTS=(
  [transmission]="plain encrypted utp dht udp-tracker"
  [aria2]="plain encrypted dht udp-tracker"
  [qbittorrent]="plain encrypted utp dht udp-tracker"
  [rtorrent]="plain encrypted dht udp-tracker"
  [deluge]="plain encrypted utp dht udp-tracker"
  [libtorrent]="plain encrypted utp dht udp-tracker"
  [ctorrent]="plain"
)

ip4() { echo "$NET4.1$1"; }
dht_port() {   # dht_port NODE : .102 and .103 stand in for the public routers, on their ports
  case $1 in 102) echo 6881 ;; 103) echo 25401 ;; *) echo "$RPORT" ;; esac
}
ip6() { echo "${NET6}:1$1"; }

# ---------------------------------------------------------------- packages

install_packages() {
  local want=(transmission-cli transmission-daemon aria2 qbittorrent-nox rtorrent deluged deluge-console
              python3-libtorrent ctorrent opentracker mktorrent tcpdump ethtool iproute2)
  local missing=() p
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  for p in "${missing[@]}"; do
    apt-cache policy "$p" | grep 'Candidate: [0-9]' >/dev/null || { echo "bt-lab: no Debian package $p" >&2; exit 1; }
  done
  # transmission-daemon, deluged and opentracker ship services that would start in the host's own
  # namespace, with the public DHT: keep dpkg from starting anything while we install.
  local guard=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; guard=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}"
  [ $guard = 1 ] && rm -f /usr/sbin/policy-rc.d
  if [ -d /run/systemd/system ]; then
    systemctl disable --now transmission-daemon.service deluged.service opentracker.service 2>/dev/null || true
  fi
}

# ---------------------------------------------------------------- processes

teardown() { remove_lab; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  teardown
  if [ $KEEP = 1 ]; then echo "bt-lab: work files kept in $WORK" >&2; else rm -rf "$WORK"; fi
  exit $rc
}

# ---------------------------------------------------------------- topology

make_host() {   # make_host NS VETH IP4 IP6
  local ns=$1 veth=$2
  ip netns add "$ns"
  # Name resolution inside the lab goes nowhere: the public bootstrap host names some clients
  # hard-code resolve to nothing instead of reaching the host's resolver.
  mkdir -p "/etc/netns/$ns"
  echo 'nameserver 127.0.0.1' >"/etc/netns/$ns/resolv.conf"
  printf '127.0.0.1 localhost\n::1 localhost\n%s %s\n%s %s\n%s %s\n%s %s\n' \
    "$NET4.102" "$DHT_ROUTER_NAMES" "${NET6}:102" "$DHT_ROUTER_NAMES" \
    "$NET4.103" "$DHT_LT_NAME" "${NET6}:103" "$DHT_LT_NAME" >"/etc/netns/$ns/hosts"
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.accept_ra=0 net.ipv6.conf.default.router_solicitations=0 \
    net.ipv6.conf.default.dad_transmits=0
  ip -n "$NS_SW" link add "$veth" type veth peer name eth0 netns "$ns"
  ip -n "$NS_SW" link set "$veth" master "$BRIDGE" up
  ip netns exec "$NS_SW" ethtool -K "$veth" tso off gso off gro off tx off >/dev/null 2>&1 || true
  # No segmentation or checksum offload: the bridge must see MTU-sized frames with real checksums.
  ip netns exec "$ns" ethtool -K eth0 tso off gso off gro off tx off >/dev/null 2>&1 || true
  ip -n "$ns" addr add "$3/24" dev eth0
  ip -n "$ns" -6 addr add "$4/64" dev eth0 nodad
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  if ip -n "$ns" route show default | grep -q . || ip -n "$ns" -6 route show default | grep -q .; then
    echo "bt-lab: $ns has a default route, refusing to go on" >&2; exit 1
  fi
}

make_lab() {
  teardown
  ip netns add "$NS_SW"
  ip netns exec "$NS_SW" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$NS_SW" link add "$BRIDGE" type bridge
  ip -n "$NS_SW" link set "$BRIDGE" up
  make_host "$NS_TRK" "$PFX-vt" "$TRK4" "$TRK6"
  local n
  for n in "${DHT_NODES[@]}"; do
    ip -n "$NS_TRK" addr add "$NET4.$n/24" dev eth0
    ip -n "$NS_TRK" -6 addr add "${NET6}:$n/64" dev eth0 nodad
  done
  local i
  for i in "${HOSTS[@]}"; do make_host "$PFX-h$i" "$PFX-v$i" "$(ip4 "$i")" "$(ip6 "$i")"; done
  # Wait until every host reaches every other on both families (bridge ports forwarding).
  for i in "${HOSTS[@]}"; do
    ip netns exec "$PFX-h$i" ping -c1 -W2 "$TRK4" >/dev/null
    ip netns exec "$PFX-h$i" ping -6 -c1 -W2 "$TRK6" >/dev/null
  done
}

# ---------------------------------------------------------------- clients

start_host() {   # start_host CLIENT I MODE TORRENT SAVE PORT : CLIENT (bt-clients.sh) in btlab-hI
  "start_$1" "$PFX-h$2" "$(ip4 "$2")" "$(ip6 "$2")" "$3" "$4" "$5" "$6" "$RUN/h$2"
}

# UDP port role per client (what bt-lab-tool.py labels a UDP flow to that port as, by construction).
udp_role() {   # udp_role CLIENT MODE
  case $1-$2 in
    aria2-dht|aria2-udp-tracker|rtorrent-dht) echo dht ;;
    aria2-*|rtorrent-*|ctorrent-*) echo none ;;
    *-utp) echo utp ;;
    *-dht) echo dht ;;
    *) echo dht+utp ;;
  esac
}

client_version() {
  case $1 in
    libtorrent) echo "libtorrent-rasterbar $(dpkg-query -W -f='${Version}' python3-libtorrent) (python bindings)" ;;
    transmission) echo "transmission-cli $(dpkg-query -W -f='${Version}' transmission-cli)" ;;
    deluge) echo "deluged $(dpkg-query -W -f='${Version}' deluged) on libtorrent-rasterbar $(dpkg-query -W -f='${Version}' python3-libtorrent)" ;;
    qbittorrent) echo "qbittorrent-nox $(dpkg-query -W -f='${Version}' qbittorrent-nox) on libtorrent-rasterbar $(dpkg-query -W -f='${Version}' libtorrent-rasterbar2.0)" ;;
    rtorrent) echo "rtorrent $(dpkg-query -W -f='${Version}' rtorrent) on libtorrent $(dpkg-query -W -f='${Version}' libtorrent21)" ;;
    *) echo "$1 $(dpkg-query -W -f='${Version}' "$1")" ;;
  esac
}

# ---------------------------------------------------------------- one capture

run_one() {   # run_one CLIENT MODE CLIENT_INDEX MODE_INDEX
  local client=$1 mode=$2 cap=$1-$2
  [ -n "$SEEDER" ] && cap=$cap-from-$SEEDER
  [ "$RTT_MS" != 0 ] && cap=$cap-rtt$RTT_MS
  local base=$((20000 + $3 * 1000 + $4 * 100))
  RUN=$WORK/$cap
  RPORT=$((base + 50))
  NAME=btlab-$cap.bin
  BT_NAME=$NAME
  BT_DHT4=$DHT4:$RPORT
  BT_DHT6=[$DHT6]:$RPORT
  rm -rf "$RUN"; mkdir -p "$RUN"
  local i seeder=${SEEDER:-$client}
  [ "$mode" = dht ] && seeder=libtorrent   # see README: reliable DHT announce from a lab seeder
  for i in "${HOSTS[@]}"; do mkdir -p "$RUN/h$i/cfg" "$RUN/h$i/save"; done
  cp "$WORK/data.bin" "$RUN/h1/save/$NAME"

  local http=http://$TRK4:$TRACKER_PORT/announce
  mktorrent -a "$http" -l 15 -o "$RUN/http.torrent" "$RUN/h1/save/$NAME" >"$RUN/mktorrent.log"
  local tor=$RUN/http.torrent
  case $mode in
    udp-tracker) tor=$RUN/udp.torrent; $TOOL variant "$RUN/http.torrent" "$tor" --announce "udp://$TRK4:$TRACKER_PORT/announce" ;;
    dht) tor=$RUN/dht.torrent; $TOOL variant "$RUN/http.torrent" "$tor" --nodes "$DHT4:$RPORT,[$DHT6]:$RPORT" ;;
  esac
  local hash; hash=$($TOOL infohash "$tor")

  local pcap=$RUN/$cap.pcap
  spawn "$NS_SW" "$RUN/tcpdump.log" tcpdump -i "$BRIDGE" -s 0 -U -n -Z root -w "$pcap"
  local dump=$LAST_PID
  for i in $(seq 50); do grep -qs 'listening on' "$RUN/tcpdump.log" && break; sleep 0.1; done

  local infra=()
  if [ "$mode" = dht ]; then
    local nodes=() n
    for n in "${DHT_NODES[@]}"; do nodes+=(--node "$NET4.$n,${NET6}:$n,$(dht_port "$n")"); done
    spawn "$NS_TRK" "$RUN/dht-nodes.log" "$LTPY" "$HERE/bt-lab-lt.py" dht-nodes "${nodes[@]}"
  else
    # opentracker chroots to -d and drops to -u before it reads the whitelist (Debian builds it
    # whitelist-only), hence the path relative to the chroot.
    mkdir -p -m 755 "$RUN/tracker"
    echo "$hash" >"$RUN/tracker/whitelist"
    chmod 644 "$RUN/tracker/whitelist"
    echo 'access.whitelist /whitelist' >"$RUN/tracker/opentracker.conf"
    spawn "$NS_TRK" "$RUN/tracker.log" opentracker -f "$RUN/tracker/opentracker.conf" -i "$TRK4" \
      -p "$TRACKER_PORT" -P "$TRACKER_PORT" -d "$RUN/tracker" -u nobody
  fi
  infra+=("$LAST_PID")
  sleep 1
  [ "$mode" = dht ] && sleep 4     # the lab DHT nodes find each other

  local peers=() t0=$SECONDS
  if [ "$RTT_MS" != 0 ]; then
    # The seeder stands for the far side of a WAN path: all it sends is delayed.
    ip netns exec "$PFX-h1" iptables -A OUTPUT -j NFQUEUE --queue-num 9 --queue-bypass
    ip netns exec "$PFX-h1" ip6tables -A OUTPUT -j NFQUEUE --queue-num 9 --queue-bypass
    spawn "$PFX-h1" "$RUN/delay.log" "$WORK/nfq-delay" 9 "$RTT_MS"
    infra+=("$LAST_PID")
  fi
  start_host "$seeder" 1 "$mode" "$tor" "$RUN/h1/save" $((base + 1))
  peers+=("$LAST_PID")
  sleep 3                          # the seeder checks its data and announces before anyone asks
  if [ "$mode" = dht ]; then
    for i in $(seq 40); do grep -qs '^announce' "$RUN/dht-nodes.log" && break; sleep 0.5; done
  fi
  for i in 2 3; do
    start_host "$client" "$i" "$mode" "$tor" "$RUN/h$i/save" $((base + i))
    peers+=("$LAST_PID")
  done

  local completed=false limit=$TIMEOUT
  # Clients look peers up in the DHT on their own schedule (rtorrent and transmission take up to a
  # minute before their first announce): give DHT runs twice the time.
  [ "$mode" = dht ] && limit=$((TIMEOUT * 2))
  while [ $((SECONDS - t0)) -lt "$limit" ]; do
    if cmp -s "$RUN/h2/save/$NAME" "$WORK/data.bin" && cmp -s "$RUN/h3/save/$NAME" "$WORK/data.bin"; then
      completed=true; break
    fi
    sleep 1
  done
  [ $completed = true ] && sleep 3 # let the last have/choke/tracker "completed" exchanges happen
  local secs=$((SECONDS - t0))
  stop_pids "${peers[@]}"
  stop_pids "${infra[@]}"
  if [ "$RTT_MS" != 0 ]; then
    ip netns exec "$PFX-h1" iptables -F OUTPUT
    ip netns exec "$PFX-h1" ip6tables -F OUTPUT
  fi
  kill -INT "$dump" 2>/dev/null || true
  wait "$dump" 2>/dev/null || true
  PIDS=()

  local pairing="h1 $(client_version "$seeder") seeds; h2, h3 $(client_version "$client") leech"
  [ "$RTT_MS" != 0 ] && pairing="$pairing; the seeder's packets delayed ${RTT_MS} ms"
  if [ "$mode" = dht ]; then
    pairing="$pairing; btlab-trk runs a libtorrent DHT node; no tracker"
  else
    pairing="$pairing; btlab-trk runs opentracker $(dpkg-query -W -f='${Version}' opentracker)"
  fi
  local hosts="" role
  for i in "${HOSTS[@]}"; do
    local c=$client; [ "$i" = 1 ] && c=$seeder
    role=$(udp_role "$c" "$mode")
    local udp=$((base + i)); [ "$role" = none ] && udp=null
    hosts+="${hosts:+,}{\"name\":\"h$i\",\"client\":\"$c\",\"ips\":[\"$(ip4 "$i")\",\"$(ip6 "$i")\"],\"tcp\":$((base + i)),\"udp\":$udp,\"udp_role\":\"$role\"}"
  done
  local tracker=null router=null
  if [ "$mode" = dht ]; then
    local eps="" n
    for n in "${DHT_NODES[@]}"; do
      eps+="${eps:+,}[\"$NET4.$n\",$(dht_port "$n")],[\"${NET6}:$n\",$(dht_port "$n")]"
    done
    router="[$eps]"
  else
    tracker="{\"ip\":\"$TRK4\",\"port\":$TRACKER_PORT}"
  fi
  mkdir -p "$OUT/manifests"
  cp "$pcap" "$OUT/$cap.pcap"
  cat >"$OUT/manifests/$cap.json" <<EOF
{"capture":"$cap.pcap","client":"$client","mode":"$mode","pairing":"$pairing","completed":$completed,
 "seconds":$secs,"infohash":"$hash","tracker":$tracker,"dht_nodes":$router,"hosts":[$hosts]}
EOF
  echo "bt-lab: $cap completed=$completed in ${secs}s, $(stat -c %s "$OUT/$cap.pcap") bytes"
}

selected() {   # selected CLIENT MODE
  [ ${#ONLY[@]} -eq 0 ] && return 0
  local o
  for o in "${ONLY[@]}"; do [ "$o" = "$1" ] || [ "$o" = "$1-$2" ] && return 0; done
  return 1
}

# ---------------------------------------------------------------- main

install_packages
WORK=$(mktemp -d /tmp/btlab.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM
make_lab
if [ "$RTT_MS" != 0 ]; then
  gcc -O2 -Wall -o "$WORK/nfq-delay" "$ROOT/../shared/bench/nfq-delay.c" -lnetfilter_queue -lmnl
fi
head -c $((DATA_KB * 1024)) /dev/urandom >"$WORK/data.bin"
ci=0
for client in "${CLIENTS[@]}"; do
  ci=$((ci + 1)); mi=0
  for mode in "${MODES[@]}"; do
    mi=$((mi + 1))
    case " ${SUPPORTS[$client]} " in *" $mode "*) ;; *) continue ;; esac
    selected "$client" "$mode" || continue
    run_one "$client" "$mode" "$ci" "$mi"
  done
done
# Label every capture present (runs of earlier invocations with --only included).
$TOOL label "$OUT"/manifests/*.json --truth "$OUT/truth.json" --captures "$OUT/captures.json"
