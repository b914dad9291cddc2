#!/usr/bin/env bash
# False-positive lab: real captures of traffic btwall must never flag (web, SSH, DNS, STUN/TURN,
# SIP/RTP, iperf3 and the encrypted proxies and VPNs of the users our operators serve), made between
# two network namespaces with no route out, labelled by construction.
#
#   bash test/lab/clean-lab.sh          (as root; writes fixtures/lab/clean/*.pcap and truth.json)
#
# Environment: OUT (output folder), MAX_PACKETS (packets kept per flow, default 200), ONLY (space-
# separated session names to run, default all), KEEP_WORK=1 (keep the scratch folder for debugging).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${OUT:-$ROOT/fixtures/lab/clean}
MAX_PACKETS=${MAX_PACKETS:-200}
SESSIONS_ALL="http tls ssh dns stun turn sip iperf3 shadowsocks-chacha20-ietf-poly1305 shadowsocks-aes-256-gcm
shadowsocks-aes-256-cfb obfs4 vmess vmess-tls wireguard"
ONLY=${ONLY:-$SESSIONS_ALL}

# Everything is named after the area so parallel labs never collide. Addresses: TEST-NET-1 and the
# IPv6 documentation prefix on the veth pair, the benchmark range inside the WireGuard tunnel.
NSC=btl-clean-c
NSS=btl-clean-s
VC=btl-clean-c0
VS=btl-clean-s0
C4=192.0.2.10
S4=192.0.2.20
C6=2001:db8:c1ea::10
S6=2001:db8:c1ea::20

PACKAGES="tcpdump ethtool iputils-ping iproute2 nginx openssl curl openssh-server openssh-client dnsmasq-base bind9-dnsutils
coturn stun-client iperf3 shadowsocks-libev obfs4proxy v2ray wireguard-tools wireguard-go sip-tester"

log() { printf '[clean-lab] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (namespaces, tcpdump, apt-get)"

WORK=$(mktemp -d /tmp/btl-clean.XXXXXX)
mkdir -p "$WORK/raw" "$WORK/log" "$WORK/www" "$OUT"
declare -A PID=()

remove_namespaces() {
  local ns pid
  for ns in "$NSC" "$NSS"; do
    [[ -e /run/netns/$ns ]] || continue
    # Only the lab's own processes live in these namespaces.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -f /var/run/wireguard/btl-clean-*.sock
}

cleanup() {
  local status=$? name
  for name in "${!PID[@]}"; do kill "${PID[$name]}" 2>/dev/null || true; done
  remove_namespaces
  if [[ ${KEEP_WORK:-0} == 1 || $status != 0 ]]; then log "scratch kept in $WORK"; else rm -rf "$WORK"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_packages() {
  local missing=() p
  for p in $PACKAGES; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  ((${#missing[@]} == 0)) && return
  log "installing ${missing[*]}"
  # Package scripts must not start the daemons on the host (nginx, sshd, coturn): the lab runs its own.
  local made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get update -qq -o DPkg::Lock::Timeout=600
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
  ((made_policy)) && rm -f /usr/sbin/policy-rc.d
  return 0
}

in_c() { ip netns exec "$NSC" "$@"; }
in_s() { ip netns exec "$NSS" "$@"; }

# start NAME NS CMD...: a daemon inside a namespace, its output in $WORK/log/NAME.log.
start() {
  local name=$1 ns=$2
  shift 2
  ip netns exec "$ns" "$@" </dev/null >"$WORK/log/$name.log" 2>&1 &
  PID[$name]=$!
}

stop() {
  local name
  for name in "$@"; do
    [[ -n ${PID[$name]:-} ]] || continue
    kill "${PID[$name]}" 2>/dev/null || true
    wait "${PID[$name]}" 2>/dev/null || true
    unset "PID[$name]"
  done
}

# wait_for DESCRIPTION CMD...: polls CMD for up to 10 s.
wait_for() {
  local what=$1 i
  shift
  for i in $(seq 50); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "timed out waiting for $what"
}

listening() { in_s ss -Hln"$1" | grep -q "[:.]$2 "; }

make_namespaces() {
  remove_namespaces
  ip netns add "$NSC"
  ip netns add "$NSS"
  ip link add "$VC" netns "$NSC" type veth peer name "$VS" netns "$NSS"
  local ns dev a4 a6
  for ns in "$NSC" "$NSS"; do
    if [[ $ns == "$NSC" ]]; then dev=$VC a4=$C4 a6=$C6; else dev=$VS a4=$S4 a6=$S6; fi
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0
    ip -n "$ns" addr add "$a4/24" dev "$dev"
    ip -n "$ns" -6 addr add "$a6/64" dev "$dev" nodad
    # Segmentation offloads would hand tcpdump 64 KB super-packets no wire ever carries.
    ip netns exec "$ns" ethtool -K "$dev" tso off gso off gro off tx off rx off >/dev/null 2>&1 || true
    ip -n "$ns" link set "$dev" up
  done
  # Only the connected routes exist: nothing can leave the pair.
  local routes
  routes=$(for ns in "$NSC" "$NSS"; do ip -n "$ns" route show default; ip -n "$ns" -6 route show default; done)
  [[ -z $routes ]] || die "a namespace has a default route: $routes"
  wait_for "the veth pair" in_c ping -c1 -W1 "$S4"
}

# ---------------------------------------------------------------- capture and labels

RULES=$WORK/rules.tsv
CAPTURE=

capture_start() {
  CAPTURE=$1
  ip netns exec "$NSS" tcpdump -i "$VS" -s 0 -B 65536 -U --immediate-mode -n -Z root -w "$WORK/raw/$CAPTURE" >"$WORK/log/tcpdump-$CAPTURE.log" 2>&1 &
  PID[tcpdump]=$!
  wait_for "tcpdump on $VS" grep -q 'listening on' "$WORK/log/tcpdump-$CAPTURE.log"
}

capture_stop() {
  # Late FINs and keepalives belong to the session; immediate mode leaves nothing in the ring.
  sleep 1
  kill -TERM "${PID[tcpdump]}"
  wait "${PID[tcpdump]}" || true
  unset 'PID[tcpdump]'
  local dropped
  dropped=$(sed -n 's/^\([0-9]*\) packets dropped by kernel/\1/p' "$WORK/log/tcpdump-$CAPTURE.log")
  [[ ${dropped:-0} == 0 ]] || log "warning: $CAPTURE: tcpdump dropped $dropped packets"
  log "$CAPTURE: $(grep 'captured' "$WORK/log/tcpdump-$CAPTURE.log")"
}

# rule CAPTURE L4 SERVER_PORT|* PROTO CATEGORY: how clean-label.py names the flows of a capture.
rule() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$RULES"; }

# ---------------------------------------------------------------- shared servers

make_content() {
  # Incompressible bodies: what a proxy carries is mostly already-encrypted or compressed.
  head -c 16384 /dev/urandom > "$WORK/www/small.bin"
  head -c 262144 /dev/urandom > "$WORK/www/mid.bin"
  head -c 3145728 /dev/urandom > "$WORK/www/big.bin"
  echo '<!doctype html><title>lab</title><p>clean lab' > "$WORK/www/index.html"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=lab.test -addext "subjectAltName=DNS:lab.test,IP:$S4,IP:$S6" \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
}

start_nginx() {
  mkdir -p "$WORK/nginx"
  cat > "$WORK/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/log/nginx-error.log warn;
events { worker_connections 512; }
http {
  access_log off;
  default_type application/octet-stream;
  sendfile on;
  keepalive_requests 1000;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  server {
    listen 80;
    listen [::]:80;
    listen 443 ssl http2;
    listen [::]:443 ssl http2;
    server_name lab.test;
    ssl_certificate $WORK/tls.crt;
    ssl_certificate_key $WORK/tls.key;
    root $WORK/www;
  }
}
EOF
  start nginx "$NSS" nginx -p "$WORK/nginx" -c "$WORK/nginx.conf"
  wait_for nginx listening t 443
}

start_dnsmasq() {
  local long txt=()
  long=$(printf 'v=lab1 %0240d' 0)
  txt=(--txt-record=txt.lab.test,"v=spf1 ip4:$S4 -all" --txt-record="big.lab.test,$long,$long,$long")
  local hosts=() i
  for i in $(seq 1 24); do hosts+=(--host-record="h$i.lab.test,198.51.100.$i,2001:db8:c1ea:100::$i"); done
  start dnsmasq "$NSS" dnsmasq --keep-in-foreground --no-resolv --no-hosts --no-poll --user=root \
    --pid-file="$WORK/dnsmasq.pid" --bind-interfaces --listen-address="$S4,$S6" --port=53 \
    --local=/lab.test/ --domain=lab.test --host-record="www.lab.test,$S4,$S6" "${hosts[@]}" "${txt[@]}" \
    --mx-host=lab.test,mail.lab.test,10 --host-record="mail.lab.test,$S4" \
    --srv-host=_sip._udp.lab.test,www.lab.test,5060,0,10 --cname=alias.lab.test,www.lab.test \
    --ptr-record=20.2.0.192.in-addr.arpa,www.lab.test
  wait_for dnsmasq listening u 53
}

# ---------------------------------------------------------------- sessions

get() { in_c timeout 20 curl -sS --limit-rate 25M -o /dev/null "$@"; }

# get_many OPTION... -- URL...: several requests on one kept-alive connection.
get_many() {
  local opts=() outs=() url
  while [[ $1 != -- ]]; do opts+=("$1"); shift; done
  shift
  for url in "$@"; do outs+=(-o /dev/null); done
  in_c timeout 20 curl -sS "${opts[@]}" "${outs[@]}" "$@"
}

session_http() {
  rule http.pcap tcp 80 HTTP Web
  capture_start http.pcap
  local i
  get "http://$S4/big.bin"
  get -g "http://[$S6]/mid.bin"
  for i in $(seq 8); do get "http://$S4/small.bin"; done
  get_many -- "http://$S4/index.html" "http://$S4/small.bin" "http://$S4/mid.bin"
  for i in $(seq 4); do get -g "http://[$S6]/small.bin"; done
  capture_stop
}

session_tls() {
  rule tls.pcap tcp 443 TLS Web
  capture_start tls.pcap
  local i
  get -k --http1.1 "https://$S4/big.bin"
  get -k --http2 "https://$S4/big.bin"
  get -k --http2 -g "https://[$S6]/mid.bin"
  for i in $(seq 5); do get -k --http1.1 "https://$S4/small.bin"; get -k --http2 "https://$S4/small.bin"; done
  get_many -k --http2 -- "https://$S4/index.html" "https://$S4/small.bin" "https://$S4/mid.bin"
  for i in $(seq 3); do get -k --http1.1 --tlsv1.2 --tls-max 1.2 -g "https://[$S6]/small.bin"; done
  capture_stop
}

session_ssh() {
  mkdir -p "$WORK/ssh" /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host_ed25519"
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/client"
  cp "$WORK/ssh/client.pub" "$WORK/ssh/authorized_keys"
  cat > "$WORK/ssh/sshd_config" <<EOF
ListenAddress $S4
ListenAddress $S6
HostKey $WORK/ssh/host_ed25519
PidFile $WORK/ssh/sshd.pid
AuthorizedKeysFile $WORK/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
  start sshd "$NSS" /usr/sbin/sshd -D -f "$WORK/ssh/sshd_config" -E "$WORK/log/sshd-detail.log"
  wait_for sshd listening t 22
  rule ssh.pcap tcp 22 SSH RemoteAccess
  capture_start ssh.pcap
  local opts=(-F /dev/null -i "$WORK/ssh/client" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    -o BatchMode=yes -o LogLevel=ERROR)
  in_c timeout 20 ssh "${opts[@]}" "root@$S4" 'uname -a; id; ls -la /etc | head -40' >/dev/null
  in_c timeout 20 ssh "${opts[@]}" "root@$S6" 'cat /etc/os-release; df -h' >/dev/null
  # Interactive-ish: a terminal, commands typed with pauses, as a person would.
  { for cmd in 'ls /' 'echo hello' 'date' 'ps ax | head' 'exit'; do sleep 0.4; printf '%s\n' "$cmd"; done; } |
    in_c timeout 20 ssh -tt "${opts[@]}" "root@$S4" >/dev/null
  in_c timeout 30 scp -q "${opts[@]}" "$WORK/www/big.bin" "root@$S4:$WORK/scp-copy.bin"
  in_c timeout 30 scp -q -O "${opts[@]}" "$WORK/www/mid.bin" "root@[$S6]:$WORK/scp-copy-legacy.bin"
  capture_stop
  stop sshd
}

session_dns() {
  rule dns.pcap udp 53 DNS Network
  rule dns.pcap tcp 53 DNS Network
  capture_start dns.pcap
  local i name q=(+tries=1 +time=2)
  for i in $(seq 1 24); do
    in_c dig "${q[@]}" @"$S4" "h$i.lab.test" A >/dev/null
    in_c dig "${q[@]}" @"$S6" "h$i.lab.test" AAAA >/dev/null
  done
  for name in txt.lab.test big.lab.test; do in_c dig "${q[@]}" @"$S4" "$name" TXT >/dev/null; done
  in_c dig "${q[@]}" @"$S4" lab.test MX >/dev/null
  in_c dig "${q[@]}" @"$S4" _sip._udp.lab.test SRV >/dev/null
  in_c dig "${q[@]}" @"$S4" alias.lab.test A >/dev/null
  in_c dig "${q[@]}" @"$S4" -x "$S4" >/dev/null
  in_c dig "${q[@]}" @"$S4" nosuchname.lab.test A >/dev/null
  # No EDNS: the 760-byte TXT answer comes back truncated and dig retries over TCP.
  in_c dig "${q[@]}" +noedns @"$S4" big.lab.test TXT >/dev/null
  for i in $(seq 1 8); do in_c dig "${q[@]}" +tcp @"$S4" "h$i.lab.test" A >/dev/null; done
  for i in $(seq 9 12); do in_c dig "${q[@]}" +tcp @"$S6" "h$i.lab.test" AAAA >/dev/null; done
  in_c dig "${q[@]}" +tcp +keepopen @"$S4" h1.lab.test A h2.lab.test AAAA big.lab.test TXT >/dev/null
  capture_stop
}

start_coturn() {
  start turnserver "$NSS" turnserver -n --no-cli --no-tls --no-dtls --listening-ip="$S4" --listening-ip="$S6" \
    --relay-ip="$S4" --relay-ip="$S6" --min-port=49152 --max-port=49400 --lt-cred-mech --user=lab:labpass \
    --realm=lab.test --fingerprint --pidfile="$WORK/turnserver.pid" --log-file=stdout --simple-log
  wait_for turnserver listening u 3478
}

session_stun() {
  start_coturn
  rule stun.pcap udp 3478 STUN Network
  rule stun.pcap tcp 3478 STUN Network
  # RFC 5780 behaviour discovery: answers from the alternate port 3479 open flows of their own.
  rule stun.pcap udp 3479 STUN Network
  capture_start stun.pcap
  local i
  for i in $(seq 6); do in_c timeout 5 turnutils_stunclient "$S4" >/dev/null || true; done
  for i in $(seq 3); do in_c timeout 5 turnutils_stunclient "$S6" >/dev/null || true; done
  # RFC 3489 client: its change-request tests go unanswered (no alternate address), as on many servers.
  for i in $(seq 3); do in_c timeout 8 stun "$S4" >/dev/null 2>&1 || true; done
  capture_stop
  stop turnserver
}

session_turn() {
  start_coturn
  start turnpeer "$NSS" turnutils_peer -L "$S4" -L "$S6" -p 3480
  wait_for turnutils_peer listening u 3480
  rule turn.pcap udp 3478 STUN Network
  rule turn.pcap tcp 3478 STUN Network
  rule turn.pcap udp 3479 STUN Network
  capture_start turn.pcap
  local auth=(-u lab -w labpass -r 3480 -n 30 -l 180 -z 20)
  in_c timeout 20 turnutils_uclient "${auth[@]}" -m 4 -e "$S4" "$S4" >/dev/null 2>&1 || true
  in_c timeout 20 turnutils_uclient "${auth[@]}" -m 2 -c -e "$S4" "$S4" >/dev/null 2>&1 || true
  in_c timeout 20 turnutils_uclient "${auth[@]}" -m 2 -t -e "$S4" "$S4" >/dev/null 2>&1 || true
  in_c timeout 20 turnutils_uclient "${auth[@]}" -m 2 -e "$S6" "$S6" >/dev/null 2>&1 || true
  capture_stop
  stop turnpeer turnserver
}

make_sip_files() {
  # Two seconds of a 440 Hz tone in G.711 mu-law: the payload RTP actually carries.
  python3 - "$WORK/tone.ulaw" <<'EOF'
import math, sys
def ulaw(s):
    sign = 0x80 if s < 0 else 0
    s = min(abs(s), 32635) + 0x84
    exp, mask = 7, 0x4000
    while not s & mask and exp:
        exp, mask = exp - 1, mask >> 1
    return ~(sign | exp << 4 | (s >> (exp + 3)) & 0x0F) & 0xFF
open(sys.argv[1], 'wb').write(bytes(ulaw(int(8000 * math.sin(2 * math.pi * 440 * n / 8000))) for n in range(16000)))
EOF
  cat > "$WORK/uac-rtp.xml" <<'EOF'
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="UAC call with an RTP stream">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: lab <sip:lab@[local_ip]:[local_port]>;tag=[pid]Tag[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:lab@[local_ip]:[local_port]
      Max-Forwards: 70
      Subject: clean lab
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=lab 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [rtpstream_audio_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: lab <sip:lab@[local_ip]:[local_port]>;tag=[pid]Tag[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:lab@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <nop><action><exec rtp_stream="TONE,1,0"/></action></nop>
  <pause milliseconds="2500"/>
  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: lab <sip:lab@[local_ip]:[local_port]>;tag=[pid]Tag[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:lab@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
EOF
  sed -i "s|TONE|$WORK/tone.ulaw|" "$WORK/uac-rtp.xml"
}

session_sip() {
  make_sip_files
  # One UAS per transport, each echoing the RTP it gets back to the caller.
  start sipp-uas-udp "$NSS" sipp -sn uas -t u1 -i "$S4" -p 5060 -mi "$S4" -mp 6000 -rtp_echo -nostdin \
    -trace_err -error_file "$WORK/log/sipp-uas-udp-errors.log"
  start sipp-uas-tcp "$NSS" sipp -sn uas -t t1 -i "$S4" -p 5060 -mi "$S4" -mp 6010 -rtp_echo -nostdin \
    -trace_err -error_file "$WORK/log/sipp-uas-tcp-errors.log"
  wait_for "sipp uas" listening u 5060
  wait_for "sipp uas" listening t 5060
  rule sip.pcap udp 5060 SIP VoIP
  rule sip.pcap tcp 5060 SIP VoIP
  rule sip.pcap udp '*' RTP Media
  capture_start sip.pcap
  local transport media
  for transport in u1:16000 t1:16010; do
    media=${transport#*:} transport=${transport%:*}
    (cd "$WORK" && in_c timeout 30 sipp "$S4:5060" -sf "$WORK/uac-rtp.xml" -s lab -t "$transport" -i "$C4" \
      -mi "$C4" -mp "$media" -m 4 -l 2 -r 2 -nostdin -trace_err -error_file "$WORK/log/sipp-uac-errors.log" \
      >>"$WORK/log/sipp-uac.log" 2>&1) || log "warning: sipp uac ($transport) exited non-zero"
  done
  capture_stop
  stop sipp-uas-tcp sipp-uas-udp
}

session_iperf3() {
  start iperf3 "$NSS" iperf3 -s -p 5201
  wait_for iperf3 listening t 5201
  rule iperf3.pcap tcp 5201 iperf3 Network
  rule iperf3.pcap udp 5201 iperf3 Network
  capture_start iperf3.pcap
  in_c timeout 15 iperf3 -c "$S4" -t 2 -P 2 -b 20M >/dev/null
  in_c timeout 15 iperf3 -c "$S4" -t 2 -R -b 20M >/dev/null
  in_c timeout 15 iperf3 -c "$S4" -u -t 2 -b 4M -l 1200 >/dev/null
  in_c timeout 15 iperf3 -c "$S6" -u -t 2 -b 2M -l 1000 >/dev/null
  in_c timeout 15 iperf3 -c "$S6" -t 1 -b 10M >/dev/null
  capture_stop
  stop iperf3
}

# query N: a query string of N characters, so that requests (and the first packets of the tunnels
# that carry them) spread over sizes the way real requests do.
query() { printf '?q=%s' "$(head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n' | head -c "$1")"; }

# proxied_gets SOCKS_URL: the downloads every proxy session carries: many short connections (their first
# packets are what a detector might misjudge), a few longer ones, plain HTTP and TLS inside.
proxied_gets() {
  local socks=$1 i
  for i in $(seq 14); do get --proxy "$socks" "http://$S4/small.bin$(query $((i * 67 % 700)))"; done
  for i in $(seq 6); do get --proxy "$socks" -k "https://$S4/small.bin$(query $((i * 131 % 900)))"; done
  get --proxy "$socks" "http://$S4/mid.bin"
  get --proxy "$socks" -k --http2 "https://$S4/big.bin"
}

# session_shadowsocks CIPHER: the AEAD ciphers of SIP004 and, for comparison, aes-256-cfb, the old
# stream construction (IV, then the encrypted target address) that older clients still speak.
session_shadowsocks() {
  local cipher=$1 capture="shadowsocks-$1.pcap" password
  password=$(head -c 18 /dev/urandom | base64)
  start ss-server "$NSS" ss-server -s "$S4" -s "$S6" -p 8388 -k "$password" -m "$cipher" -u
  wait_for ss-server listening t 8388
  start ss-local4 "$NSC" ss-local -s "$S4" -p 8388 -b 127.0.0.1 -l 1080 -k "$password" -m "$cipher"
  start ss-local6 "$NSC" ss-local -s "$S6" -p 8388 -b 127.0.0.1 -l 1081 -k "$password" -m "$cipher"
  # UDP relay: DNS through the tunnel, as ss-tunnel/ss-redir users send it.
  start ss-tunnel "$NSC" ss-tunnel -s "$S4" -p 8388 -b 127.0.0.1 -l 5300 -L "$S4:53" -u -k "$password" -m "$cipher"
  wait_for ss-local in_c bash -c "ss -Hlnt | grep -q ':1081 ' && ss -Hlnu | grep -q ':5300 '"
  rule "$capture" tcp 8388 Shadowsocks VPN
  rule "$capture" udp 8388 Shadowsocks VPN
  capture_start "$capture"
  proxied_gets socks5h://127.0.0.1:1080
  local i
  for i in $(seq 4); do get --proxy socks5h://127.0.0.1:1081 "http://$S4/small.bin"; done
  for i in $(seq 6); do in_c dig +tries=1 +time=2 @127.0.0.1 -p 5300 "h$i.lab.test" A >/dev/null; done
  capture_stop
  stop ss-tunnel ss-local6 ss-local4 ss-server
}

# obfs4_server NAME ADDR:PORT IAT_MODE: obfs4proxy as Tor runs it, forwarding to nginx as the "ORPort".
obfs4_server() {
  local name=$1 bind=$2 iat=$3
  mkdir -p "$WORK/$name"
  start "$name" "$NSS" env TOR_PT_MANAGED_TRANSPORT_VER=1 TOR_PT_STATE_LOCATION="$WORK/$name" \
    TOR_PT_SERVER_TRANSPORTS=obfs4 TOR_PT_SERVER_BINDADDR="obfs4-$bind" TOR_PT_ORPORT="$S4:80" \
    TOR_PT_SERVER_TRANSPORT_OPTIONS="obfs4:iat-mode=$iat" obfs4proxy
  wait_for "$name" grep -q '^SMETHODS DONE' "$WORK/log/$name.log"
}

obfs4_cert() { sed -n 's/.* cert=\([^ ]*\) .*/\1/p' "$WORK/$1/obfs4_bridgeline.txt"; }

session_obfs4() {
  obfs4_server obfs4-s0 "$S4:4443" 0
  obfs4_server obfs4-s1 "$S4:4444" 1
  obfs4_server obfs4-s6 "[$S6]:4445" 0
  mkdir -p "$WORK/obfs4-c"
  start obfs4-c "$NSC" env TOR_PT_MANAGED_TRANSPORT_VER=1 TOR_PT_STATE_LOCATION="$WORK/obfs4-c" \
    TOR_PT_CLIENT_TRANSPORTS=obfs4 obfs4proxy
  wait_for obfs4-client grep -q '^CMETHODS DONE' "$WORK/log/obfs4-c.log"
  local socks
  socks=$(sed -n 's/^CMETHOD obfs4 socks5 //p' "$WORK/log/obfs4-c.log")
  rule obfs4.pcap tcp 4443 obfs4 VPN
  rule obfs4.pcap tcp 4444 obfs4 VPN
  rule obfs4.pcap tcp 4445 obfs4 VPN
  capture_start obfs4.pcap
  # The SOCKS user name and password carry the bridge arguments (pt-spec 3.5); CONNECT names the
  # bridge itself, and what the client sends after it reaches the ORPort, here nginx.
  local i c0 c1 c6
  c0=$(obfs4_cert obfs4-s0) c1=$(obfs4_cert obfs4-s1) c6=$(obfs4_cert obfs4-s6)
  local via0=(--socks5 "$socks" --proxy-user "cert=$c0;iat-mode=:0")
  for i in $(seq 16); do get "${via0[@]}" "http://$S4:4443/small.bin$(query $((i * 67 % 700)))"; done
  get "${via0[@]}" "http://$S4:4443/mid.bin"
  get "${via0[@]}" "http://$S4:4443/big.bin"
  for i in $(seq 6); do get --socks5 "$socks" --proxy-user "cert=$c1;iat-mode=:1" "http://$S4:4444/small.bin"; done
  for i in $(seq 4); do get --socks5 "$socks" --proxy-user "cert=$c6;iat-mode=:0" -g "http://[$S6]:4445/small.bin"; done
  capture_stop
  stop obfs4-c obfs4-s6 obfs4-s1 obfs4-s0
}

session_vmess() {
  local id tls=$1 capture
  id=$(cat /proc/sys/kernel/random/uuid)
  local tls_server='' tls_client=''
  if ((tls)); then
    capture=vmess-tls.pcap
    tls_server=", \"streamSettings\": {\"network\": \"tcp\", \"security\": \"tls\", \"tlsSettings\": {\"certificates\": [{\"certificateFile\": \"$WORK/tls.crt\", \"keyFile\": \"$WORK/tls.key\"}]}}"
    tls_client=", \"streamSettings\": {\"network\": \"tcp\", \"security\": \"tls\", \"tlsSettings\": {\"serverName\": \"lab.test\", \"allowInsecure\": true}}"
  else
    capture=vmess.pcap
  fi
  # Port 10086 takes AEAD headers (alterId 0), 10087 the legacy MD5 auth (alterId 4): both are in use.
  cat > "$WORK/v2ray-server.json" <<EOF
{
  "log": {"loglevel": "warning"},
  "inbounds": [
    {"listen": "::", "port": 10086, "protocol": "vmess",
     "settings": {"clients": [{"id": "$id", "alterId": 0}]}$tls_server},
    {"listen": "::", "port": 10087, "protocol": "vmess",
     "settings": {"clients": [{"id": "$id", "alterId": 4}]}$tls_server}
  ],
  "outbounds": [{"protocol": "freedom"}]
}
EOF
  local vnext='' inbounds='' rules='' n=0 server port alter security
  for target in "$S4 10086 0 auto" "$S4 10087 4 auto" "$S4 10086 0 chacha20-poly1305" "$S6 10086 0 aes-128-gcm"; do
    read -r server port alter security <<<"$target"
    [[ $n == 0 ]] || { vnext+=','; inbounds+=','; rules+=','; }
    inbounds+="{\"tag\": \"in$n\", \"listen\": \"127.0.0.1\", \"port\": $((1080 + n)), \"protocol\": \"socks\", \"settings\": {\"udp\": false}}"
    vnext+="{\"tag\": \"out$n\", \"protocol\": \"vmess\", \"settings\": {\"vnext\": [{\"address\": \"$server\", \"port\": $port, \"users\": [{\"id\": \"$id\", \"alterId\": $alter, \"security\": \"$security\"}]}]}$tls_client}"
    rules+="{\"type\": \"field\", \"inboundTag\": [\"in$n\"], \"outboundTag\": \"out$n\"}"
    n=$((n + 1))
  done
  cat > "$WORK/v2ray-client.json" <<EOF
{
  "log": {"loglevel": "warning"},
  "inbounds": [$inbounds],
  "outbounds": [$vnext],
  "routing": {"rules": [$rules]}
}
EOF
  start v2ray-server "$NSS" v2ray -config "$WORK/v2ray-server.json"
  start v2ray-client "$NSC" v2ray -config "$WORK/v2ray-client.json"
  wait_for v2ray-server listening t 10087
  wait_for v2ray-client in_c bash -c "ss -Hlnt | grep -q ':1083 '"
  local proto=VMess
  ((tls)) && proto=TLS.VMess
  rule "$capture" tcp 10086 "$proto" VPN
  rule "$capture" tcp 10087 "$proto" VPN
  capture_start "$capture"
  proxied_gets socks5h://127.0.0.1:1080
  local i
  for i in $(seq 6); do get --proxy socks5h://127.0.0.1:1081 "http://$S4/small.bin"; done
  get --proxy socks5h://127.0.0.1:1081 "http://$S4/mid.bin"
  for i in $(seq 4); do get --proxy socks5h://127.0.0.1:1082 "http://$S4/small.bin"; done
  for i in $(seq 4); do get --proxy socks5h://127.0.0.1:1083 "http://$S4/small.bin"; done
  capture_stop
  stop v2ray-client v2ray-server
}

WG_MODE=

# wg_up NS NAME ADDR4 ADDR6: a WireGuard interface inside a namespace, the kernel's where there is the
# module, else wireguard-go (userspace, the same wire protocol).
wg_up() {
  local ns=$1 name=$2
  if [[ $WG_MODE == kernel ]]; then
    ip -n "$ns" link add "$name" type wireguard
  else
    start "$name" "$ns" env WG_PROCESS_FOREGROUND=1 wireguard-go "$name"
    wait_for "$name" test -S "/var/run/wireguard/$name.sock"
  fi
  ip -n "$ns" addr add "$3" dev "$name"
  ip -n "$ns" -6 addr add "$4" dev "$name" nodad
  ip -n "$ns" link set "$name" mtu 1420 up
}

# wg_down NS NAME: deleting the interface also ends its wireguard-go.
wg_down() {
  ip -n "$1" link del "$2"
  stop "$2"
}

session_wireguard() {
  if ip -n "$NSC" link add btl-clean-wgprobe type wireguard 2>/dev/null; then
    ip -n "$NSC" link del btl-clean-wgprobe
    WG_MODE=kernel
  else
    WG_MODE=userspace
    log "wireguard: no kernel module, using wireguard-go (same wire protocol)"
  fi
  local skey ckey spub cpub
  skey=$(wg genkey) ckey=$(wg genkey)
  spub=$(wg pubkey <<<"$skey") cpub=$(wg pubkey <<<"$ckey")
  printf '%s\n' "$skey" > "$WORK/wg-s.key"
  printf '%s\n' "$ckey" > "$WORK/wg-c.key"
  local sif=btl-clean-wgs cif=btl-clean-wgc
  wg_up "$NSS" "$sif" 198.18.0.1/24 2001:db8:c1ea:1::1/64
  in_s wg set "$sif" private-key "$WORK/wg-s.key" listen-port 51820 peer "$cpub" allowed-ips 198.18.0.2/32,2001:db8:c1ea:1::2/128
  rule wireguard.pcap udp 51820 WireGuard VPN
  capture_start wireguard.pcap
  # Each round is a fresh client (new source port): a new handshake, keepalives, traffic inside.
  local round outer
  for round in 1 2 3 4 5 6 7 8; do
    if ((round % 2)); then outer=$S4:51820; else outer=[$S6]:51820; fi
    wg_up "$NSC" "$cif" 198.18.0.2/24 2001:db8:c1ea:1::2/64
    in_c wg set "$cif" private-key "$WORK/wg-c.key" peer "$spub" endpoint "$outer" \
      allowed-ips 198.18.0.1/32,2001:db8:c1ea:1::1/128 persistent-keepalive 1
    in_c ping -c 3 -i 0.2 -W 2 198.18.0.1 >/dev/null
    get "http://198.18.0.1/small.bin"
    get -g "http://[2001:db8:c1ea:1::1]/small.bin"
    ((round > 2)) || get "http://198.18.0.1/mid.bin"
    sleep 1.2
    wg_down "$NSC" "$cif"
  done
  capture_stop
  wg_down "$NSS" "$sif"
}

# ---------------------------------------------------------------- main

install_packages
make_namespaces
make_content
start_nginx
start_dnsmasq

for session in $ONLY; do
  log "session $session"
  case $session in
    shadowsocks-*) session_shadowsocks "${session#shadowsocks-}" ;;
    vmess) session_vmess 0 ;;
    vmess-tls) session_vmess 1 ;;
    *) "session_${session//-/_}" ;;
  esac
done

log "cutting flows to $MAX_PACKETS packets and labelling"
python3 "$ROOT/test/lab/clean-label.py" "$WORK/raw" "$OUT" "$RULES" --max-packets "$MAX_PACKETS"
log "versions:"
{
  for p in $PACKAGES; do dpkg-query -W -f='${Package} ${Version}\n' "$p"; done
  uname -sr
} >&2
du -ch "$OUT"/*.pcap | tail -1 >&2
