#!/usr/bin/env bash
# End-to-end lab: real BitTorrent clients and ordinary servers in network namespaces, the LAN
# behind a routed gateway namespace where the real btwall daemon runs (FORWARD chain, XDP bans on
# every gateway interface). One run is one daemon with one ACTION: every scenario chosen runs at
# once, each from its own LAN host, while the ordinary traffic runs from another. The run reports
# facts (bytes each leecher got, hashes, the detection log, the ban list, each ordinary check's
# outcome) in OUT/result.json; test/e2e-lab.test.ts and `btwall demo` judge them.
#
#   bash test/lab/e2e-lab.sh --out DIR [--action drop|monitor] [--rtt MS] [--window SECONDS]
#        [--scenarios plain,encrypted,...,lsd,plain-v6] [--checks dns,tracker-name,https,https-v6,http,scp,iperf3,stun,turn|none]
#        [--capture] [--size KB] [--keep]
#
# --rtt: every packet a WAN host receives waits MS ms (../shared/bench/nfq-delay on its INPUT: this
# kernel has no netem), so LAN <-> WAN round trips take MS ms.
# --window: how long the leechers run. Under drop the whole window is watched (nothing may arrive
# within it); under monitor the run ends as soon as every download and ordinary check is done.
# --capture: tcpdump -p on the gateway's link to each scenario's LAN host, OUT/captures/NAME.pcap.
# E2E_PREFIX names the namespaces (default e2e<pid>), so that several runs can go at once.
#
# Topology (dual-stack; no namespace has a default route of either family, NAT or a link to the
# host's uplink):
#   LAN host k (scenario k)  10.1.k.2/24      --  lank 10.1.k.1      [gateway]  wan0 198.51.100.1/24
#                            fd00:10:1:k::2/64     fd00:10:1:k::1                   2001:db8:5100::1/64
#   the ordinary host        10.1.99.2 and .3, fd00:10:1:99::2  --  lan99         |  bridge in PFX-sw
#   WAN: tracker .69, web/ssh/iperf3/TURN server .80, resolver .53, SOCKS5 proxy .90,
#        DHT nodes .150-.165, one seeder per scenario .(100+k), a second peer .(120+k) for PEX;
#        the tracker and the web server also at 2001:db8:5100::69 and ::80 (the IPv6 HTTP tracker:
#        qBittorrent's embedded one on port 6970, Debian's opentracker being IPv4 only).
# A scenario named *-v6 runs entirely over IPv6: its LAN host and its seeder have IPv6 addresses
# only (fd00:10:1:k::2 and 2001:db8:5100::(100+k)), its torrent announces to the IPv6 tracker.
# Every host has IPv6 DAD off: a fresh veth's address is usable at once.
#   the lsd scenario's LAN segment: the gateway's bridge lank (10.1.k.1, fd00:10:1:k::1) is the LAN's
#   switch, its ports swkl and swks lead to the leecher's host PFX-lank 10.1.k.2 and the seeder's
#   PFX-lanks 10.1.k.3 (and ::2, ::3). Frames between them are bridged, and br_netfilter
#   (bridge-nf-call-iptables=1 in the gateway only) passes them through the FORWARD chain and
#   btwall's queue like routed ones. The ports are not in INTERFACE: the bridge (lan*) takes the XDP
#   program, and the kernel refuses one on a port of a bridge that has one (EEXIST).
# The gateway routes every other LAN host.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/bt-clients.sh"
TOOL="/usr/bin/python3 $HERE/bt-lab-tool.py"
CLI="$ROOT/dist/cli/main.js"

OUT=
ACTION=drop
RTT_MS=0
WINDOW=60
SCENARIOS=plain,encrypted,utp,udp-tracker,dht,pex,socks5,webseed,lsd,plain-v6
CHECKS=dns,tracker-name,https,https-v6,http,scp,iperf3,stun,turn
CAPTURE=0
SIZE_KB=2048
KEEP=0
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    --action) ACTION=$2; shift 2 ;;
    --rtt) RTT_MS=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --checks) CHECKS=$2; shift 2 ;;
    --capture) CAPTURE=1; shift ;;
    --size) SIZE_KB=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 --out DIR [--action drop|monitor] [--rtt MS] [--window S] [--scenarios A,B] [--checks A,B|none] [--capture] [--size KB] [--keep]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "e2e-lab: must run as root" >&2; exit 2; }
[ -n "$OUT" ] || { echo "e2e-lab: --out DIR is required" >&2; exit 2; }
[ -e "$CLI" ] || { echo "e2e-lab: build first (make build): no $CLI" >&2; exit 2; }
case $ACTION in drop|monitor) ;; *) echo "e2e-lab: --action drop or monitor" >&2; exit 2 ;; esac

# Every program the lab runs, from the Debian packages the Makefile's APT_PACKAGES installs: a
# missing one fails the run loudly instead of skipping what needs it.
for prog in transmission-cli aria2c qbittorrent-nox rtorrent opentracker mktorrent tcpdump nginx dnsmasq sshd scp ssh-keygen \
            iperf3 turnserver turnutils_stunclient turnutils_uclient turnutils_peer danted dig curl openssl gcc ping; do
  command -v "$prog" >/dev/null || [ -x "/usr/sbin/$prog" ] || { echo "e2e-lab: $prog is missing (make deps installs it)" >&2; exit 1; }
done
/usr/bin/python3 -c 'import libtorrent' || { echo "e2e-lab: python3-libtorrent is missing" >&2; exit 1; }

PFX=${E2E_PREFIX:-e2e$$}
NS_GW=$PFX-gw
NS_SW=$PFX-sw
WAN=198.51.100
GW_WAN=$WAN.1
WAN6=2001:db8:5100         # WAN host N of 198.51.100.N is $WAN6::N (a documentation prefix)
LAN6=fd00:10:1             # LAN host k of 10.1.k.2 is $LAN6:k::2 (unique local)
GW_WAN6=$WAN6::1
TRK6=$WAN6::69
WEB6=$WAN6::80
TRACKER6_PORT=6970
TRK=$WAN.69
WEB=$WAN.80
DNS=$WAN.53
SOCKS=$WAN.90
DHT_FIRST=150
DHT_COUNT=16
DHT_PORT=6881
TRACKER_PORT=6969
ORD_IDX=99
ORD=10.1.$ORD_IDX.2          # the ordinary traffic's host
ORD_NAMES=10.1.$ORD_IDX.3    # its second address: the tracker name's requests, expected to be dropped
ORD6=$LAN6:$ORD_IDX::2       # its IPv6 address
WEB_NAME=www.lab.example
TRACKER_NAME=tracker.lab.example
PIN_DIR=/sys/fs/bpf/btwall-$PFX
SEED_PORT=51000
LEECH_PORT=52000
SOCKS_PORT=1080

# scenario -> "SEEDER LEECHER MODE" (clients of bt-clients.sh; the mode is the clients' mode).
declare -A SCENARIO=(
  [plain]="transmission libtorrent plain"
  [encrypted]="libtorrent rtorrent encrypted"
  [utp]="qbittorrent libtorrent utp"
  [udp-tracker]="libtorrent aria2 udp-tracker"
  [dht]="libtorrent aria2 dht"
  [pex]="libtorrent libtorrent plain"
  [socks5]="transmission libtorrent plain"
  [webseed]="none libtorrent plain"
  [lsd]="libtorrent libtorrent lsd"
  [plain-v6]="libtorrent transmission plain"
)
ORDER=(plain encrypted utp udp-tracker dht pex socks5 webseed lsd plain-v6)
IFS=, read -r -a CHOSEN <<<"$SCENARIOS"
for s in "${CHOSEN[@]}"; do [ -n "${SCENARIO[$s]:-}" ] || { echo "e2e-lab: no scenario $s" >&2; exit 2; }; done
index_of() { local i; for i in "${!ORDER[@]}"; do [ "${ORDER[$i]}" = "$1" ] && { echo $((i + 1)); return; }; done; }
v6_only() { [[ $1 == *-v6 ]]; }
lan_ip() {   # lan_ip NAME : the address scenario NAME's LAN host uses
  local k; k=$(index_of "$1")
  if v6_only "$1"; then echo "$LAN6:$k::2"; else echo "10.1.$k.2"; fi
}
wan_ip() {   # wan_ip NAME N : WAN host N in scenario NAME's family
  if v6_only "$1"; then echo "$WAN6::$2"; else echo "$WAN.$2"; fi
}

DAEMON_PID=
teardown() {
  [ -n "$DAEMON_PID" ] && { kill -TERM "$DAEMON_PID" 2>/dev/null || true; wait "$DAEMON_PID" 2>/dev/null || true; }
  DAEMON_PID=
  remove_lab
  rm -rf "$PIN_DIR"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  teardown
  if [ $KEEP = 1 ]; then echo "e2e-lab: work files kept in $WORK" >&2; else rm -rf "$WORK"; fi
  exit $rc
}

# ---------------------------------------------------------------- topology

new_ns() {   # new_ns NS : a namespace whose name resolution goes nowhere (no public name resolves)
  ip netns add "$1"
  mkdir -p "/etc/netns/$1"
  echo 'nameserver 127.0.0.1' >"/etc/netns/$1/resolv.conf"
  printf '127.0.0.1 localhost\n' >"/etc/netns/$1/hosts"
  # No IPv6 DAD (about 1 s a fresh veth) for any address, link-local ones included; the addresses
  # the lab gives are also added nodad, whichever namespace's defaults their veth took.
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  ip -n "$1" link set lo up
}

lan_host() {   # lan_host K [6] : LAN host PFX-lanK, 10.1.K.2 and $LAN6:K::2 (or the latter only), on the gateway's lanK
  local ns=$PFX-lan$1
  new_ns "$ns"
  ip -n "$NS_GW" link add "lan$1" type veth peer name eth0 netns "$ns"
  ip -n "$NS_GW" addr add "10.1.$1.1/24" dev "lan$1"
  ip -n "$NS_GW" addr add "$LAN6:$1::1/64" dev "lan$1" nodad
  ip -n "$NS_GW" link set "lan$1" up
  [ "${2:-}" = 6 ] || ip -n "$ns" addr add "10.1.$1.2/24" dev eth0
  ip -n "$ns" addr add "$LAN6:$1::2/64" dev eth0 nodad
  ip -n "$ns" link set eth0 up
  if [ "${2:-}" != 6 ]; then
    ip -n "$ns" route add "$WAN.0/24" via "10.1.$1.1"
    ip -n "$ns" route add 10.1.0.0/16 via "10.1.$1.1"
  fi
  ip -6 -n "$ns" route add "$WAN6::/64" via "$LAN6:$1::1"
  ip -6 -n "$ns" route add "$LAN6::/48" via "$LAN6:$1::1"
}

lan_segment() {   # lan_segment K : LAN hosts PFX-lanK (10.1.K.2, $LAN6:K::2) and PFX-lanKs (.3, ::3) on one switch, the gateway's bridge lanK
  local spec ns port host
  ip -n "$NS_GW" link add "lan$1" type bridge
  ip -n "$NS_GW" addr add "10.1.$1.1/24" dev "lan$1"
  ip -n "$NS_GW" addr add "$LAN6:$1::1/64" dev "lan$1" nodad
  ip -n "$NS_GW" link set "lan$1" up
  # Bridged IPv4 (and IPv6) frames through the gateway's iptables, FORWARD among them: btwall sees
  # LAN-to-LAN traffic as it sees routed traffic. Per network namespace (the host's stays as it
  # is); a new one starts with 1 on this kernel, set anyway as the scenario depends on it (with 0
  # the leecher completes under drop and nothing is logged: checked).
  ip netns exec "$NS_GW" sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
  for spec in "$PFX-lan$1:sw${1}l:2" "$PFX-lan${1}s:sw${1}s:3"; do   # namespace:bridge port:host number
    IFS=: read -r ns port host <<<"$spec"
    new_ns "$ns"
    ip -n "$NS_GW" link add "$port" type veth peer name eth0 netns "$ns"
    ip -n "$NS_GW" link set "$port" master "lan$1" up
    ip -n "$ns" addr add "10.1.$1.$host/24" dev eth0
    ip -n "$ns" addr add "$LAN6:$1::$host/64" dev eth0 nodad
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add "$WAN.0/24" via "10.1.$1.1"
    ip -n "$ns" route add 10.1.0.0/16 via "10.1.$1.1"
    ip -6 -n "$ns" route add "$WAN6::/64" via "$LAN6:$1::1"
    ip -6 -n "$ns" route add "$LAN6::/48" via "$LAN6:$1::1"
    # No default route: multicast (LSD's group) needs a route of its own, on the LAN link.
    ip -n "$ns" route add 224.0.0.0/4 dev eth0
  done
}

wan_host() {   # wan_host NAME IP [IP...] : WAN host PFX-NAME on the WAN bridge (IPv4 /24s, IPv6 /64s)
  local ns=$PFX-$1 ip v4=0 v6=0
  new_ns "$ns"
  ip -n "$NS_SW" link add "v-$1" type veth peer name eth0 netns "$ns"
  ip -n "$NS_SW" link set "v-$1" master br0 up
  shift
  for ip in "$@"; do
    case $ip in
      *:*) ip -n "$ns" addr add "$ip/64" dev eth0 nodad; v6=1 ;;
      *) ip -n "$ns" addr add "$ip/24" dev eth0; v4=1 ;;
    esac
  done
  ip -n "$ns" link set eth0 up
  [ $v4 = 0 ] || ip -n "$ns" route add 10.1.0.0/16 via "$GW_WAN"
  [ $v6 = 0 ] || ip -6 -n "$ns" route add "$LAN6::/48" via "$GW_WAN6"
}

make_lab() {
  teardown
  new_ns "$NS_GW"
  new_ns "$NS_SW"
  ip netns exec "$NS_GW" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=1 net.ipv6.conf.all.forwarding=1
  ip -n "$NS_SW" link add br0 type bridge
  ip -n "$NS_SW" link set br0 up
  ip -n "$NS_SW" link add v-gw type veth peer name wan0 netns "$NS_GW"
  ip -n "$NS_SW" link set v-gw master br0 up
  ip -n "$NS_GW" addr add "$GW_WAN/24" dev wan0
  ip -n "$NS_GW" addr add "$GW_WAN6/64" dev wan0 nodad
  ip -n "$NS_GW" link set wan0 up
  wan_host trk "$TRK" "$TRK6"
  wan_host web "$WEB" "$WEB6"
  wan_host dns "$DNS"
  wan_host socks "$SOCKS"
  local n dht=()
  for n in $(seq $DHT_FIRST $((DHT_FIRST + DHT_COUNT - 1))); do dht+=("$WAN.$n"); done
  wan_host dht "${dht[@]}"
  local s k
  for s in "${CHOSEN[@]}"; do
    k=$(index_of "$s")
    if [ "$s" = lsd ]; then lan_segment "$k"; continue; fi
    if v6_only "$s"; then lan_host "$k" 6; else lan_host "$k"; fi
    wan_host "s$k" "$(wan_ip "$s" $((100 + k)))"
    [ "$s" = pex ] && wan_host "p$k" "$WAN.$((120 + k))"
  done
  lan_host $ORD_IDX
  ip -n "$PFX-lan$ORD_IDX" addr add "$ORD_NAMES/24" dev eth0
  for ns in $(lab_namespaces); do
    if ip -n "$ns" route show default | grep -q . || ip -6 -n "$ns" route show default | grep -q .; then
      echo "e2e-lab: $ns has a default route" >&2; exit 1
    fi
  done
  # Every LAN host reaches the WAN through the gateway (bridge ports forwarding, routes in place),
  # in each of its families.
  for s in "${CHOSEN[@]}"; do
    k=$(index_of "$s")
    v6_only "$s" || ip netns exec "$PFX-lan$k" ping -c1 -W3 "$TRK" >/dev/null
    ip netns exec "$PFX-lan$k" ping -6 -c1 -W3 "$TRK6" >/dev/null
  done
  # And the LAN segment's hosts reach each other through its switch.
  [[ " ${CHOSEN[*]} " == *" lsd "* ]] && ip netns exec "$PFX-lan$(index_of lsd)" ping -c1 -W3 "10.1.$(index_of lsd).3" >/dev/null
  ip netns exec "$PFX-lan$ORD_IDX" ping -c1 -W3 "$WEB" >/dev/null
  ip netns exec "$PFX-lan$ORD_IDX" ping -6 -c1 -W3 "$WEB6" >/dev/null
}

delay_wan() {   # every packet a WAN host receives waits RTT_MS: the LAN <-> WAN round trip
  local ns
  for ns in $(lab_namespaces); do
    case $ns in "$NS_GW"|"$NS_SW"|"$PFX"-lan*) continue ;; esac
    ip netns exec "$ns" iptables -w -A INPUT -i eth0 -j NFQUEUE --queue-num 9 --queue-bypass
    ip netns exec "$ns" ip6tables -w -A INPUT -i eth0 -j NFQUEUE --queue-num 9 --queue-bypass
    spawn "$ns" "$WORK/delay-${ns#"$PFX"-}.log" "$WORK/nfq-delay" 9 "$RTT_MS"
  done
}

# ---------------------------------------------------------------- WAN services

start_services() {
  # opentracker (HTTP and UDP announce). It chroots to -d and drops to -u before it reads the
  # whitelist (Debian builds it whitelist-only), hence the path relative to the chroot.
  mkdir -p -m 755 "$WORK/tracker"
  cat "$WORK"/hashes >"$WORK/tracker/whitelist"
  chmod 644 "$WORK/tracker/whitelist"
  echo 'access.whitelist /whitelist' >"$WORK/tracker/opentracker.conf"
  spawn "$PFX-trk" "$WORK/tracker.log" opentracker -f "$WORK/tracker/opentracker.conf" -i "$TRK" \
    -p "$TRACKER_PORT" -P "$TRACKER_PORT" -d "$WORK/tracker" -u nobody
  # The IPv6 HTTP tracker beside it (any infohash), for the *-v6 scenarios, listening before
  # their clients start.
  local s n
  for s in "${CHOSEN[@]}"; do
    v6_only "$s" || continue
    start_qbittorrent "$PFX-trk" "" "$TRK6" tracker "" "" "$TRACKER6_PORT" "$WORK/tracker6"
    for n in $(seq 50); do
      ip netns exec "$PFX-trk" ss -Hltn "sport = :$TRACKER6_PORT" | grep -q . && break
      sleep 0.2
    done
    break
  done

  if [[ " ${CHOSEN[*]} " == *" dht "* ]]; then
    local nodes=() n
    for n in $(seq $DHT_FIRST $((DHT_FIRST + DHT_COUNT - 1))); do nodes+=(--node "$WAN.$n,$DHT_PORT"); done
    spawn "$PFX-dht" "$WORK/dht-nodes.log" "$LTPY" "$BT_LT" dht-nodes "${nodes[@]}"
  fi

  # The web server: a self-signed CA's certificate for both names of the one address (a CDN
  # address serving a web site and a listed tracker name), a 20 MB file over HTTPS, a small one
  # over HTTP, and the webseed's files.
  local www=$WORK/www
  mkdir -p "$www/webseed"
  head -c $((20 << 20)) /dev/urandom >"$www/big.bin"
  head -c $((1 << 20)) /dev/urandom >"$www/small.bin"
  echo 'a tracker name on the web server' >"$www/announce"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=lab CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$WEB_NAME" -keyout "$WORK/web.key" -out "$WORK/web.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:%s\n' "$WEB_NAME" "$TRACKER_NAME" >"$WORK/web.ext"
  openssl x509 -req -in "$WORK/web.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial -days 2 \
    -extfile "$WORK/web.ext" -out "$WORK/web.pem" 2>/dev/null
  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
user root;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 256; }
http {
  access_log $WORK/nginx/access.log;
  client_body_temp_path $WORK/nginx;
  proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx;
  scgi_temp_path $WORK/nginx;
  default_type application/octet-stream;
  server {
    listen $WEB:80;
    listen $WEB:443 ssl;
    listen [$WEB6]:80;
    listen [$WEB6]:443 ssl;
    server_name $WEB_NAME $TRACKER_NAME;
    ssl_certificate $WORK/web.pem;
    ssl_certificate_key $WORK/web.key;
    root $www;
  }
}
EOF
  spawn "$PFX-web" "$WORK/nginx.log" nginx -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log"

  # sshd for scp: root with a key made for this run, nothing else.
  mkdir -p "$WORK/ssh" /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/client_key"
  cp "$WORK/ssh/client_key.pub" "$WORK/ssh/authorized_keys"
  cat >"$WORK/ssh/sshd_config" <<EOF
ListenAddress $WEB
HostKey $WORK/ssh/host_key
PermitRootLogin prohibit-password
AuthorizedKeysFile $WORK/ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $WORK/ssh/sshd.pid
Subsystem sftp internal-sftp
EOF
  spawn "$PFX-web" "$WORK/sshd.log" /usr/sbin/sshd -D -e -f "$WORK/ssh/sshd_config"

  spawn "$PFX-web" "$WORK/iperf3.log" iperf3 -s -B "$WEB"
  spawn "$PFX-web" "$WORK/turnserver.log" turnserver -n --no-cli --no-tls --no-dtls --listening-ip="$WEB" \
    --relay-ip="$WEB" --lt-cred-mech --user=lab:labsecret --realm=lab.example --log-file=stdout --no-stdout-log=false \
    --pidfile="$WORK/turnserver.pid" --allow-loopback-peers --cli-password=unused
  spawn "$PFX-web" "$WORK/turnpeer.log" turnutils_peer -L "$WEB" -p 3480

  # The resolver answers the lab's names only.
  spawn "$PFX-dns" "$WORK/dnsmasq.log" dnsmasq -k --no-resolv --no-hosts --no-poll --listen-address="$DNS" \
    --bind-interfaces --pid-file="$WORK/dnsmasq.pid" --user=root --log-queries --log-facility=- \
    --address="/$WEB_NAME/$WEB" --address="/$TRACKER_NAME/$WEB"

  # The SOCKS5 proxy (dante) on the WAN side, without authentication.
  cat >"$WORK/danted.conf" <<EOF
logoutput: stderr
internal: $SOCKS port = $SOCKS_PORT
external: $SOCKS
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 10.1.0.0/16 to: 0.0.0.0/0 }
socks pass { from: 10.1.0.0/16 to: 0.0.0.0/0 command: connect udpassociate bind }
EOF
  spawn "$PFX-socks" "$WORK/danted.log" danted -f "$WORK/danted.conf" -p "$WORK/danted.pid"
}

# ---------------------------------------------------------------- scenarios

prepare_scenario() {   # prepare_scenario NAME : its random file, torrent(s) and infohash
  local s=$1 k; k=$(index_of "$1")
  local dir=$WORK/$s
  mkdir -p "$dir/seed" "$dir/leech" "$dir/peer"
  local name=e2e-$s.bin
  head -c $((SIZE_KB * 1024)) /dev/urandom >"$dir/seed/$name"
  mktorrent -a "http://$TRK:$TRACKER_PORT/announce" -l 15 -o "$dir/http.torrent" "$dir/seed/$name" >"$dir/mktorrent.log"
  local tor=$dir/http.torrent
  case $s in
    plain-v6) tor=$dir/v6.torrent; $TOOL variant "$dir/http.torrent" "$tor" --announce "http://[$TRK6]:$TRACKER6_PORT/announce" ;;
    udp-tracker) tor=$dir/udp.torrent; $TOOL variant "$dir/http.torrent" "$tor" --announce "udp://$TRK:$TRACKER_PORT/announce" ;;
    dht) tor=$dir/dht.torrent; $TOOL variant "$dir/http.torrent" "$tor" --nodes "$WAN.$DHT_FIRST:$DHT_PORT" ;;
    # PEX: no tracker and no DHT, so the second peer can only be learnt from the first one.
    pex) tor=$dir/bare.torrent; $TOOL variant "$dir/http.torrent" "$tor" --nodes '' ;;
    # LSD: no tracker and no DHT (and the peers run no PEX): LSD's announces are the only way.
    lsd) tor=$dir/bare.torrent; $TOOL variant "$dir/http.torrent" "$tor" --nodes '' ;;
    webseed)
      cp "$dir/seed/$name" "$WORK/www/webseed/$name"
      tor=$dir/webseed.torrent; $TOOL variant "$dir/http.torrent" "$tor" --nodes '' --url-list "http://$WEB/webseed/" ;;
  esac
  cp "$tor" "$dir/torrent"
  $TOOL infohash "$tor" >"$dir/infohash"
  cat "$dir/infohash" >>"$WORK/hashes"
  echo "$name" >"$dir/name"
}

start_seeders() {   # start_seeders NAME
  local s=$1 k; k=$(index_of "$1")
  local dir=$WORK/$s tor=$WORK/$1/torrent name; name=$(cat "$WORK/$s/name")
  read -r seeder _ mode <<<"${SCENARIO[$s]}"
  [ "$seeder" = none ] && return
  local extra=()
  # A seeder that knows the leecher (as from its announce) connects in to it once the leecher has
  # started (its announce goes first, as on the Internet, where the seeder learns of it from the
  # tracker): the leecher's side of the gateway sees a remote peer's own BitTorrent bytes.
  case $s in encrypted|udp-tracker|plain-v6) extra=(--peer "$(lan_ip "$s"):$LEECH_PORT" --connect-delay 6) ;; esac
  BT_NAME=$name
  BT_DHT4=$WAN.$DHT_FIRST:$DHT_PORT
  BT_DHT6=
  if [ "$s" = pex ]; then
    # Three peers: the second one (.120+k) seeds; the first (.100+k), the only one the LAN leecher
    # is told of, downloads from it at a trickle (4 KB/s). The leecher can only finish in time
    # from the second peer, which it can learn of by PEX alone (no tracker, no DHT, no LSD).
    "start_$seeder" "$PFX-p$k" "$WAN.$((120 + k))" "" "$mode" "$tor" "$dir/seed" "$SEED_PORT" "$dir/second"
    "start_$seeder" "$PFX-s$k" "$WAN.$((100 + k))" "" "$mode" "$tor" "$dir/peer" "$SEED_PORT" "$dir/seeder" \
      --peer "$WAN.$((120 + k)):$SEED_PORT" --download-limit 4
    return
  fi
  if [ "$s" = lsd ]; then   # the seeder on the leecher's LAN segment
    "start_$seeder" "$PFX-lan${k}s" "10.1.$k.3" "" "$mode" "$tor" "$dir/seed" "$SEED_PORT" "$dir/seeder"
    return
  fi
  local ip4 ip6=
  ip4=$(wan_ip "$s" $((100 + k)))
  v6_only "$s" && { ip6=$ip4; ip4=; }
  "start_$seeder" "$PFX-s$k" "$ip4" "$ip6" "$mode" "$tor" "$dir/seed" "$SEED_PORT" "$dir/seeder" "${extra[@]}"
}

start_leecher() {   # start_leecher NAME
  local s=$1 k; k=$(index_of "$1")
  local dir=$WORK/$s tor=$WORK/$1/torrent name; name=$(cat "$WORK/$s/name")
  read -r _ leecher mode <<<"${SCENARIO[$s]}"
  local extra=()
  case $s in
    dht) tor="magnet:?xt=urn:btih:$(cat "$dir/infohash")&dn=$name" ;;
    # A leecher that knows the seeder (as from PEX or its own peer cache) besides the tracker.
    plain|utp|pex) extra=(--peer "$(wan_ip "$s" $((100 + k))):$SEED_PORT") ;;
    socks5) extra=(--proxy "$SOCKS:$SOCKS_PORT") ;;
  esac
  BT_NAME=$name
  BT_DHT4=$WAN.$DHT_FIRST:$DHT_PORT
  BT_DHT6=
  local ip4 ip6=
  ip4=$(lan_ip "$s")
  v6_only "$s" && { ip6=$ip4; ip4=; }
  "start_$leecher" "$PFX-lan$k" "$ip4" "$ip6" "$mode" "$tor" "$dir/leech" "$LEECH_PORT" "$dir/leecher" "${extra[@]}"
  echo "$LAST_PID" >"$dir/leecher.pid"
}

# ---------------------------------------------------------------- ordinary traffic

# Each check writes OUT-style JSON facts to $WORK/ordinary/NAME.json: {"ok":bool,"detail":...}.
want() { [[ ",$CHECKS," == *",$1,"* ]]; }
ord() { ip netns exec "$PFX-lan$ORD_IDX" "$@"; }
fact() {   # fact NAME OK DETAIL
  printf '{"name":"%s","ok":%s,"detail":%s}\n' "$1" "$2" "$(printf '%s' "$3" | /usr/bin/python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')" \
    >"$WORK/ordinary/$1.json"
}
same_hash() { [ "$(sha256sum <"$1")" = "$(sha256sum <"$2")" ]; }

run_ordinary() {
  mkdir -p "$WORK/ordinary" "$WORK/got"
  local out ok rc
  # DNS first: the lab's names from the lab resolver.
  if want dns; then
    out=$(ord dig +time=3 +tries=1 +short "@$DNS" "$WEB_NAME" 2>&1) || true
    ok=false; [ "$out" = "$WEB" ] && ok=true; fact dns "$ok" "$out"
  fi
  # The listed tracker name on the shared address: its lookup and its HTTPS request are expected
  # to be dropped (from the second address, so they count apart from the ordinary flows).
  if want tracker-name; then
    out=$(ord dig +time=3 +tries=1 +short -b "$ORD_NAMES" "@$DNS" "$TRACKER_NAME" 2>&1) || true
    ok=false; [ "$out" = "$WEB" ] && ok=true; fact tracker-name-dns "$ok" "$out"
    rc=0; out=$(ord curl -sS -m 8 --interface "$ORD_NAMES" --cacert "$WORK/ca.pem" --resolve "$TRACKER_NAME:443:$WEB" \
      -o /dev/null -w '%{http_code}' "https://$TRACKER_NAME/announce" 2>&1) || rc=$?
    ok=false; [ $rc = 0 ] && ok=true; fact tracker-name-https "$ok" "rc=$rc $out"
  fi
  # The web site on that address, from both addresses: 20 MB over HTTPS, hash checked.
  local from name
  if want https; then
    for from in "$ORD" "$ORD_NAMES"; do
      rc=0; out=$(ord curl -fsS -m 60 --interface "$from" --cacert "$WORK/ca.pem" --resolve "$WEB_NAME:443:$WEB" \
        -o "$WORK/got/big-$from.bin" -w '%{speed_download}' "https://$WEB_NAME/big.bin" 2>&1) || rc=$?
      ok=false; [ $rc = 0 ] && same_hash "$WORK/got/big-$from.bin" "$WORK/www/big.bin" && ok=true
      name=https; [ "$from" = "$ORD_NAMES" ] && name=https-after-tracker-name
      fact "$name" "$ok" "rc=$rc bytes/s=$out"
      want tracker-name || break
    done
  fi
  # The same site over IPv6, from the host's IPv6 address.
  if want https-v6; then
    rc=0; out=$(ord curl -fsS -m 60 -6 --interface "$ORD6" --cacert "$WORK/ca.pem" --resolve "$WEB_NAME:443:[$WEB6]" \
      -o "$WORK/got/big-v6.bin" -w '%{speed_download}' "https://$WEB_NAME/big.bin" 2>&1) || rc=$?
    ok=false; [ $rc = 0 ] && same_hash "$WORK/got/big-v6.bin" "$WORK/www/big.bin" && ok=true
    fact https-v6 "$ok" "rc=$rc bytes/s=$out"
  fi
  if want http; then
    rc=0; out=$(ord curl -fsS -m 30 --interface "$ORD" -o "$WORK/got/small.bin" -w '%{speed_download}' "http://$WEB/small.bin" 2>&1) || rc=$?
    ok=false; [ $rc = 0 ] && same_hash "$WORK/got/small.bin" "$WORK/www/small.bin" && ok=true; fact http "$ok" "rc=$rc bytes/s=$out"
  fi
  if want scp; then
    rc=0; out=$(ord scp -q -i "$WORK/ssh/client_key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -o BatchMode=yes -o ConnectTimeout=10 "root@$WEB:$WORK/www/small.bin" "$WORK/got/scp.bin" 2>&1) || rc=$?
    ok=false; [ $rc = 0 ] && same_hash "$WORK/got/scp.bin" "$WORK/www/small.bin" && ok=true; fact scp "$ok" "rc=$rc $out"
  fi
  # iperf3's payload is random unless --repeating-payload.
  if want iperf3; then
    rc=0; out=$(ord iperf3 -c "$WEB" -B "$ORD" -t 3 -J 2>&1) || rc=$?
    ok=false; [ $rc = 0 ] && ok=true; fact iperf3-tcp "$ok" "$(printf '%s' "$out" | /usr/bin/python3 -c 'import json,sys
try: r=json.load(sys.stdin); print("received bytes=%d" % r["end"]["sum_received"]["bytes"])
except Exception as e: print("unreadable:", e)')"
    rc=0; out=$(ord iperf3 -c "$WEB" -B "$ORD" -u -b 20M -t 3 -J 2>&1) || rc=$?
    ok=false; [ $rc = 0 ] && ok=true; fact iperf3-udp "$ok" "$(printf '%s' "$out" | /usr/bin/python3 -c 'import json,sys
try: r=json.load(sys.stdin); s=r["end"]["sum"]; print("packets=%d lost=%d" % (s["packets"], s["lost_packets"]))
except Exception as e: print("unreadable:", e)')"
  fi
  if want stun; then
    rc=0; out=$(ord timeout 20 turnutils_stunclient -L "$ORD" "$WEB" 2>&1) || rc=$?
    ok=false; [[ $out == *"UDP reflexive addr: $ORD:"* ]] && ok=true; fact stun "$ok" "$(printf '%s' "$out" | grep -i 'reflexive' | head -1)"
  fi
  # TURN: allocate a relay on the server, send through it to the echo peer and back.
  if want turn; then
    rc=0; out=$(ord timeout 30 turnutils_uclient -L "$ORD" -u lab -w labsecret -r 3480 -e "$WEB" -n 20 -m 1 -l 170 -y "$WEB" 2>&1) || rc=$?
    ok=false; [ $rc = 0 ] && [[ $out == *"Total lost packets 0 "* ]] && ok=true
    fact turn "$ok" "rc=$rc $(printf '%s' "$out" | grep -E 'Total lost|ERROR' | head -2)"
  fi
}

# ---------------------------------------------------------------- a run

WORK=$(mktemp -d /tmp/e2e-lab.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
chmod 700 "$OUT"
rm -rf "$OUT/detections.log" "$OUT/result.json" "$OUT/captures" "$OUT/logs"   # facts of this run only
: >"$WORK/hashes"
make_lab
mkdir -p "$WORK/www/webseed"
for s in "${CHOSEN[@]}"; do prepare_scenario "$s"; done
if [ "$RTT_MS" != 0 ]; then
  gcc -O2 -Wall -o "$WORK/nfq-delay" "$ROOT/../shared/bench/nfq-delay.c" -lnetfilter_queue -lmnl
  delay_wan
fi
start_services

# The daemon: its defaults but for the lab's facts (the LAN's prefix, the gateway's interfaces,
# its own pin directory and log), a verdict deadline for this shared, loaded machine, and the
# listed tracker name that shares the web server's address.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
env LOG_LEVEL=info CONTROL_SOCKET= ACTION="$ACTION" INTERFACE='lan*,wan0' BPF_PIN_DIR="$PIN_DIR" \
  LOCAL_CIDRS="10.1.0.0/16,$LAN6::/48" DETECTION_LOG="$OUT/detections.log" VERDICT_TIMEOUT_MS=3000 STATS_INTERVAL=10 \
  TRACKER_DOMAINS="$TRACKER_NAME" \
  nsenter --net="/run/netns/$NS_GW" node "$CLI" run >"$OUT/daemon.log" 2>"$OUT/daemon.stderr" &
DAEMON_PID=$!
for n in $(seq 200); do grep -qs '"btwall running"' "$OUT/daemon.log" && break; kill -0 $DAEMON_PID 2>/dev/null || break; sleep 0.1; done
grep -qs '"btwall running"' "$OUT/daemon.log" || { echo "e2e-lab: btwall did not start:" >&2; cat "$OUT/daemon.stderr" "$OUT/daemon.log" >&2; exit 1; }

if [ $CAPTURE = 1 ]; then
  mkdir -p "$OUT/captures"
  for s in "${CHOSEN[@]}"; do
    # -p: the gateway's own frames are what matters (a promiscuous link queues as usual: checked).
    # The lsd leecher's link is its bridge port: frames bridged between two ports never cross the bridge device.
    link=lan$(index_of "$s"); [ "$s" = lsd ] && link=sw$(index_of "$s")l
    spawn "$NS_GW" "$WORK/tcpdump-$s.log" tcpdump -p -i "$link" -s 0 -U -n -Z root -w "$OUT/captures/$s.pcap"
  done
  # The ordinary traffic is hundreds of MB: its packets' first 1024 bytes hold every header and
  # handshake the engine reads.
  spawn "$NS_GW" "$WORK/tcpdump-ordinary.log" tcpdump -p -i "lan$ORD_IDX" -s 1024 -U -n -Z root -w "$OUT/captures/ordinary.pcap"
  sleep 1
fi

for s in "${CHOSEN[@]}"; do start_seeders "$s"; done
sleep 3                              # the seeders check their data and announce before anyone asks
if [[ " ${CHOSEN[*]} " == *" dht "* ]]; then
  for n in $(seq 40); do grep -qs '^announce' "$WORK/dht-nodes.log" && break; sleep 0.5; done
fi
T0=$SECONDS
for s in "${CHOSEN[@]}"; do start_leecher "$s"; done
ORD_PID=
if [ "$CHECKS" != none ]; then
  run_ordinary >"$WORK/ordinary.log" 2>&1 &
  ORD_PID=$!
fi

complete() {   # complete NAME : the leecher's file is the seeder's
  local name; name=$(cat "$WORK/$1/name")
  cmp -s "$WORK/$1/leech/$name" "$WORK/$1/seed/$name"
}
while [ $((SECONDS - T0)) -lt "$WINDOW" ]; do
  if [ "$ACTION" = monitor ]; then
    all=1
    for s in "${CHOSEN[@]}"; do complete "$s" || all=0; done
    [ -n "$ORD_PID" ] && kill -0 "$ORD_PID" 2>/dev/null && all=0
    [ $all = 1 ] && break
  fi
  sleep 1
done
ELAPSED=$((SECONDS - T0))
[ -n "$ORD_PID" ] && wait "$ORD_PID" || true
sleep 2                              # the clients' last status lines (once a second)

# Facts, before anything stops: what each leecher has, the ban list, the ordinary checks.
{
  printf '{"action":"%s","rtt_ms":%s,"window_s":%s,"elapsed_s":%s,"size_kb":%s,' "$ACTION" "$RTT_MS" "$WINDOW" "$ELAPSED" "$SIZE_KB"
  printf '"services":{"tracker":"%s","web":"%s","resolver":"%s","socks5":"%s","gateway":"%s","tracker6":"%s","web6":"%s","gateway6":"%s"},' \
    "$TRK" "$WEB" "$DNS" "$SOCKS" "$GW_WAN" "$TRK6" "$WEB6" "$GW_WAN6"
  printf '"dht_nodes":['; sep=; for n in $(seq $DHT_FIRST $((DHT_FIRST + DHT_COUNT - 1))); do printf '%s"%s"' "$sep" "$WAN.$n"; sep=,; done; printf '],'
  printf '"ordinary_hosts":["%s","%s"],"ordinary_host6":"%s","scenarios":[' "$ORD" "$ORD_NAMES" "$ORD6"
  sep=
  for s in "${CHOSEN[@]}"; do
    k=$(index_of "$s"); read -r seeder leecher mode <<<"${SCENARIO[$s]}"
    name=$(cat "$WORK/$s/name")
    pieces=$($TOOL pieces "$WORK/$s/torrent" "$WORK/$s/seed/$name" "$WORK/$s/leech/$name")
    counter=$(grep -o 'received=[0-9]*' "$WORK/$s/leecher/client.log" 2>/dev/null | tail -1 | cut -d= -f2 || true)
    done_=false; complete "$s" && done_=true
    peers="\"$(wan_ip "$s" $((100 + k)))\""; [ "$s" = pex ] && peers="$peers,\"$WAN.$((120 + k))\""
    lan_peers=; [ "$s" = lsd ] && { peers=; lan_peers="\"10.1.$k.3\""; }   # the LSD seeder is a LAN host
    [ "$seeder" = none ] && peers=
    printf '%s{"name":"%s","seeder":"%s","leecher":"%s","mode":"%s","lan":"%s","lan6":"%s","peers":[%s],"lan_peers":[%s],"infohash":"%s","complete":%s,"pieces":%s,"client_received":%s}' \
      "$sep" "$s" "$seeder" "$leecher" "$mode" "$(lan_ip "$s")" "$LAN6:$k::2" "$peers" "$lan_peers" "$(cat "$WORK/$s/infohash")" "$done_" "$pieces" "${counter:-null}"
    sep=,
  done
  printf '],"ordinary":['
  sep=
  for f in "$WORK"/ordinary/*.json; do [ -e "$f" ] || continue; printf '%s%s' "$sep" "$(cat "$f")"; sep=,; done
  printf '],"bans":'
  BPF_PIN_DIR="$PIN_DIR" nsenter --net="/run/netns/$NS_GW" node "$CLI" bans list --json | tr -d '\n'
  printf '}\n'
} >"$OUT/result.json"
for s in "${CHOSEN[@]}"; do
  mkdir -p "$OUT/logs/$s"
  for r in seeder second leecher; do [ -e "$WORK/$s/$r/client.log" ] && cp "$WORK/$s/$r/client.log" "$OUT/logs/$s/$r.log"; done
done
cp "$WORK"/*.log "$OUT/logs/" 2>/dev/null || true
echo "e2e-lab: $ACTION rtt=${RTT_MS}ms: ${CHOSEN[*]} in ${ELAPSED}s; $OUT/result.json"
