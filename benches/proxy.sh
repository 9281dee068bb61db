#!/usr/bin/env bash
# The sidecar data path against Debian's proxies, side by side in one run.
#
# For every pair the same topology:
#
#   wrk ──plain──▶ client-side proxy ══mTLS══▶ server-side proxy ──plain──▶ backend
#   direct:  wrk ─────────────────────────────────────────────────────────▶ backend
#
# pairs: trellis (two `trellis connect proxy -sidecar-for` processes), haproxy (two processes,
# `nbthread 1`), stunnel (stunnel4, two processes, a thread per connection), nginx (`stream {}`
# for L4, `http {}` with upstream keep-alive for L7; two processes, `worker_processes 1`).
# Every pair, Trellis included, uses TLS 1.3, TLS_AES_128_GCM_SHA256 and X25519 only, the leaf
# certificates and roots of the Trellis agent's CA, and a full handshake for every connection
# (Trellis never resumes; the peers' resumption is turned off). The peers verify the chain
# only, Trellis also checks the SPIFFE IDs and the intentions. The backend is `trellis-bench
# baseline` answering a fixed BODY_BYTES body (iperf3 -s for MODE=bulk).
#
# Pinning: wrk, the backend and the agent on CPU 0, both proxies of every pair on the last CPU,
# one worker thread each (TOKIO_WORKER_THREADS=1 for Trellis). CPU time is utime+stime of the
# two proxy processes (and their children) from /proc/<pid>/stat, read before and after each run.
#
# Order within a round alternates: direct, peers..., trellis, then reversed, ROUNDS rounds.
#
# Modes (MODE=..., each writes its own result file):
#   tcp   L4: saturation (wrk), fixed rate open loop (h2load --rps), and new connections per
#         second (wrk with `Connection: close`: every request is a new mTLS connection)
#   http  L7: Trellis' HTTP path, haproxy `mode http`, nginx `http {}`: saturation, fixed rate
#   bulk  L4 bulk throughput: iperf3 through each pair, Gbit/s per proxy CPU-second
#   idle  RSS of each pair at rest, then holding IDLE_CONNS (1000 10000) idle connections
#         (each has carried one request), per connection
#   soak  the Trellis pair alone for SOAK (600s) at half its saturation rate: RSS and open
#         file descriptors sampled every SAMPLE (30s)
#   all   every mode above in turn, building once
#
# Knobs (environment): MODE (tcp), PEERS (tcp, bulk, idle: "haproxy stunnel nginx", http:
# "haproxy nginx", soak: none), ROUNDS (3), DURATION (10s),
# CONNS (16), WARMUP (2s), BODY_BYTES (1024), RATE (1000: a fixed-rate open-loop run with
# h2load --rps at RATE req/s in total after the saturation runs; 0 skips it), INSTALL (1: apt-get
# the missing Debian packages), BUILD (1), OUT (the result file, under the target directory),
# PROXY_BIN (trellis: `trellis connect proxy`; trellis-proxy: the proxy-only binary), TRELLIS_B
# (with PEERS=trellis-b: another build's proxy binary, run as a pair beside this build's).
#
# The L7 path always normalizes request paths (no flag turns it off, so none can weaken a
# deployment); its cost per request is measured against a no-op in the same run by
# `cargo bench -p trellis-intentions --bench path_normalize`, to compare with cpu_us/req here.
set -euo pipefail

if [[ "${MODE:-tcp}" == all ]]; then
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  if [[ "${BUILD:-1}" == 1 ]]; then
    (cd "$here/.." && cargo build --release -q -p trellis -p trellis-bench)
  fi
  for m in tcp http bulk idle soak; do
    MODE=$m BUILD=0 OUT= "$here/proxy.sh"
  done
  exit 0
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

MODE="${MODE:-tcp}"
PROXY_BIN="${PROXY_BIN:-trellis}"
case "$MODE" in
  tcp | bulk | idle) PEERS="${PEERS-haproxy stunnel nginx}"; LAYER=tcp ;;
  http) PEERS="${PEERS-haproxy nginx}"; LAYER=http ;;
  soak) PEERS=""; LAYER=tcp ;;
  *) echo "MODE must be tcp, http, bulk, idle, soak or all" >&2; exit 2 ;;
esac
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
CONNS="${CONNS:-16}"
WARMUP="${WARMUP:-2s}"
BODY_BYTES="${BODY_BYTES:-1024}"
RATE="${RATE:-1000}"
INSTALL="${INSTALL:-1}"
BUILD="${BUILD:-1}"
OUT="${OUT:-$TARGET_DIR/proxy-bench-$MODE.txt}"
SOAK="${SOAK:-600s}"
SAMPLE="${SAMPLE:-30s}"
SUITE=TLS_AES_128_GCM_SHA256
GROUP=X25519
# Descriptors: two per proxied connection on each proxy. Raise the limit as far as allowed;
# the connections every proxy may hold, and the idle mode's counts, follow from it.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
MAXCONN=$(( ($(ulimit -n) - 200) / 2 ))
(( MAXCONN > 32768 )) && MAXCONN=32768
if (( MAXCONN >= 10000 )); then
  IDLE_CONNS="${IDLE_CONNS:-1000 10000}"
else
  IDLE_CONNS="${IDLE_CONNS:-1000 $(( MAXCONN / 1000 * 1000 ))}"
fi

NCPU=$(nproc)
LOAD_CPU=0
PROXY_CPU=$((NCPU - 1))
LOAD_PIN=(taskset -c "$LOAD_CPU")
PROXY_PIN=(taskset -c "$PROXY_CPU")
CLK_TCK=$(getconf CLK_TCK)

PIDS=()
USED_PORTS=" "
WORK=""


cleanup() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
  if [[ -n "$WORK" && -d "$WORK" && -z "${KEEP_WORK:-}" ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Packages and binaries.

install_packages() {
  local need=() started=()
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v nginx >/dev/null || need+=(nginx)
  [[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || need+=(libnginx-mod-stream)
  command -v stunnel4 >/dev/null || need+=(stunnel4)
  command -v wrk >/dev/null || need+=(wrk)
  command -v h2load >/dev/null || need+=(nghttp2-client)
  command -v iperf3 >/dev/null || need+=(iperf3)
  command -v jq >/dev/null || need+=(jq)
  command -v openssl >/dev/null || need+=(openssl)
  [[ ${#need[@]} -eq 0 ]] && return 0
  [[ $INSTALL == 1 ]] || die "missing packages: ${need[*]} (INSTALL=0)"
  note "installing ${need[*]}..."
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2 \
    || { apt-get update -q >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2; }
  # The packages' own services, if their scripts started them, are not part of the benchmark.
  for s in haproxy nginx stunnel4 iperf3; do
    if [[ " ${need[*]} " == *" $s "* ]] && command -v service >/dev/null; then
      service "$s" stop >/dev/null 2>&1 || true
    fi
  done
}

# ---------------------------------------------------------------------------------------------
# Small tools.

# Starts "$@" in the background with output to $WORK/$LOG_NAME.log; sets LAST_PID.
spawn() {
  "$@" >"$WORK/$LOG_NAME.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# utime+stime in clock ticks of the given processes and their children.
cpu_ticks() {
  local total=0 pid c t
  for pid in "$@"; do
    for c in "$pid" $(pgrep -P "$pid" 2>/dev/null || true); do
      [[ -r /proc/$c/stat ]] || continue
      t=$(sed 's/.*) //' "/proc/$c/stat" | awk '{ print $12 + $13 }')
      total=$((total + t))
    done
  done
  echo "$total"
}

# Waits until $1 answers through whatever is in between: an iperf3 test of a second for
# MODE=bulk, else the backend's body over HTTP.
wait_ready() {
  local addr=$1 what=$2 i
  if [[ $MODE != bulk ]]; then wait_http "$addr" "$what"; return; fi
  for i in $(seq 1 60); do
    if iperf3 -c "${addr%:*}" -p "${addr##*:}" -t 1 >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  note "$what at $addr does not answer; logs:"
  tail -n 20 "$WORK"/*.log >&2 || true
  die "$what not ready"
}

# Waits until http://$1/ answers with the backend's body, through whatever is in between.
wait_http() {
  local addr=$1 what=$2 i
  for i in $(seq 1 150); do
    if [[ "$(curl -s --max-time 2 "http://$addr/" 2>/dev/null | wc -c)" -eq $BODY_BYTES ]]; then
      return 0
    fi
    sleep 0.2
  done
  note "$what at $addr does not answer; logs:"
  tail -n 20 "$WORK"/*.log >&2 || true
  die "$what not ready"
}

# Busy ticks (user, nice, system, irq, softirq, steal) of the proxy CPU, from /proc/stat.
cpu_busy() { awk -v c="cpu$PROXY_CPU" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
# Sets OTHER_S: seconds the proxy CPU spent on anything but the pair measured (another load on
# the machine shows here; it should stay near 0).
other_cpu() {
  OTHER_S=$(awk -v b0="$1" -v b1="$2" -v p0="$3" -v p1="$4" -v hz="$CLK_TCK" \
    'BEGIN { printf "%.2f", ((b1 - b0) - (p1 - p0)) / hz }')
}


# ---------------------------------------------------------------------------------------------
# Certificates from the Trellis CA.

fetch_certs() {
  local svc
  for svc in web db; do
    curl -sf "http://$AGENT_ADDR/v1/agent/connect/ca/leaf/$svc" >"$WORK/leaf-$svc.json"
    jq -r .CertPEM "$WORK/leaf-$svc.json" >"$WORK/$svc.crt"
    jq -r .PrivateKeyPEM "$WORK/leaf-$svc.json" >"$WORK/$svc.key"
    cat "$WORK/$svc.crt" "$WORK/$svc.key" >"$WORK/$svc.pem"
  done
  curl -sf "http://$AGENT_ADDR/v1/connect/ca/roots?pem=true" >"$WORK/ca.pem"
  openssl verify -CAfile "$WORK/ca.pem" "$WORK/db.crt" >/dev/null \
    || die "the db leaf does not verify against the roots"
  KEY_ALG=$(openssl x509 -in "$WORK/db.crt" -noout -text | sed -n 's/^ *Public Key Algorithm: //p' | head -1)
  KEY_CURVE=$(openssl x509 -in "$WORK/db.crt" -noout -text | sed -n 's/^ *NIST CURVE: //p' | head -1)
}

# ---------------------------------------------------------------------------------------------
# The pairs. Each sets OUT_ADDR[pair] (where wrk connects) and PAIR_PIDS[pair].

declare -A OUT_ADDR PAIR_PIDS IN_ADDR

start_backend() {
  head -c "$BODY_BYTES" /dev/zero | tr '\0' 'x' >"$WORK/body"
  free_port; BACKEND=127.0.0.1:$PORT
  if [[ $MODE == bulk ]]; then
    LOG_NAME=backend spawn "${LOAD_PIN[@]}" iperf3 -s -B 127.0.0.1 -p "$PORT"
  else
    LOG_NAME=backend spawn "${LOAD_PIN[@]}" "$BENCH" baseline --listen "$BACKEND" --body-file "$WORK/body"
  fi
  wait_ready "$BACKEND" backend
  OUT_ADDR[direct]=$BACKEND
  PAIR_PIDS[direct]=""
}

start_trellis() {
  local http srv tin tout webpub
  free_port; http=$PORT; free_port; srv=$PORT
  free_port; tin=$PORT; free_port; tout=$PORT; free_port; webpub=$PORT
  LOG_NAME=agent spawn "${LOAD_PIN[@]}" "$TRELLIS" agent -dev -http-port "$http" -server-port "$srv" -node bench
  AGENT_PID=$LAST_PID
  AGENT_ADDR=127.0.0.1:$http
  local i leader
  for i in $(seq 1 150); do
    kill -0 "$AGENT_PID" 2>/dev/null || die "the agent exited: $(tail -20 "$WORK/agent.log")"
    leader=$(curl -sf "http://$AGENT_ADDR/v1/status/leader" 2>/dev/null || true)
    [[ -n "$leader" && "$leader" != '""' ]] && break
    sleep 0.2
  done
  if [[ $LAYER == http ]]; then
    curl -sf -X PUT "http://$AGENT_ADDR/v1/config" \
      -d '{"Kind":"service-defaults","Name":"db","Protocol":"http"}' >/dev/null
  fi
  curl -sf -X PUT "http://$AGENT_ADDR/v1/agent/service/register" -d "{\"Name\":\"db\",\"Port\":${BACKEND##*:},
    \"Connect\":{\"SidecarService\":{\"Port\":$tin}}}" >/dev/null
  curl -sf -X PUT "http://$AGENT_ADDR/v1/agent/service/register" -d "{\"Name\":\"web\",\"Port\":8080,
    \"Connect\":{\"SidecarService\":{\"Port\":$webpub,\"Proxy\":{\"Upstreams\":
    [{\"DestinationName\":\"db\",\"LocalBindPort\":$tout}]}}}}" >/dev/null
  local svc pids=()
  for svc in db web; do
    LOG_NAME=trellis-$svc spawn env TRELLIS_HTTP_ADDR="$AGENT_ADDR" TOKIO_WORKER_THREADS=1 \
      "${PROXY_PIN[@]}" "${PROXY_CMD[@]}" -sidecar-for "$svc" -max-connections "$MAXCONN" \
      -tls-cipher-suites "$SUITE" -tls-groups "$GROUP"
    pids+=("$LAST_PID")
  done
  OUT_ADDR[trellis]=127.0.0.1:$tout
  IN_ADDR[trellis]=127.0.0.1:$tin
  PAIR_PIDS[trellis]="${pids[*]}"
  wait_ready "${OUT_ADDR[trellis]}" "the trellis pair"
}

# A second Trellis pair from another build ($TRELLIS_B: a `trellis-proxy` binary, or `trellis`
# run as `trellis connect proxy`), on the same agent, for an A/B of two builds in one run
# (`PEERS=trellis-b`; r is then this build over that one).
start_trellis-b() {
  [[ -x "${TRELLIS_B:-}" ]] || die "PEERS has trellis-b: set TRELLIS_B to an executable proxy binary"
  local tin tout webpub cmd=("$TRELLIS_B")
  [[ "${TRELLIS_B##*/}" == trellis ]] && cmd+=(connect proxy)
  free_port; tin=$PORT; free_port; tout=$PORT; free_port; webpub=$PORT
  if [[ $LAYER == http ]]; then
    curl -sf -X PUT "http://$AGENT_ADDR/v1/config" \
      -d '{"Kind":"service-defaults","Name":"db-b","Protocol":"http"}' >/dev/null
  fi
  curl -sf -X PUT "http://$AGENT_ADDR/v1/agent/service/register" -d "{\"Name\":\"db-b\",\"Port\":${BACKEND##*:},
    \"Connect\":{\"SidecarService\":{\"Port\":$tin}}}" >/dev/null
  curl -sf -X PUT "http://$AGENT_ADDR/v1/agent/service/register" -d "{\"Name\":\"web-b\",\"Port\":8080,
    \"Connect\":{\"SidecarService\":{\"Port\":$webpub,\"Proxy\":{\"Upstreams\":
    [{\"DestinationName\":\"db-b\",\"LocalBindPort\":$tout}]}}}}" >/dev/null
  local svc pids=()
  for svc in db-b web-b; do
    LOG_NAME=trellis-$svc spawn env TRELLIS_HTTP_ADDR="$AGENT_ADDR" TOKIO_WORKER_THREADS=1 \
      "${PROXY_PIN[@]}" "${cmd[@]}" -sidecar-for "$svc" -max-connections "$MAXCONN" \
      -tls-cipher-suites "$SUITE" -tls-groups "$GROUP"
    pids+=("$LAST_PID")
  done
  OUT_ADDR[trellis-b]=127.0.0.1:$tout
  IN_ADDR[trellis-b]=127.0.0.1:$tin
  PAIR_PIDS[trellis-b]="${pids[*]}"
  wait_ready "${OUT_ADDR[trellis-b]}" "the trellis-b pair"
}

start_haproxy() {
  local hin hout
  free_port; hin=$PORT; free_port; hout=$PORT
  local global="global
  nbthread 1
  maxconn $MAXCONN
  ssl-default-bind-ciphersuites $SUITE
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-server-ciphersuites $SUITE
  ssl-default-server-options ssl-min-ver TLSv1.3
  ssl-server-verify required
defaults
  mode $LAYER
  timeout connect 5s
  timeout client 120s
  timeout server 120s"
  cat >"$WORK/haproxy-in.cfg" <<EOF
$global
frontend in
  bind 127.0.0.1:$hin ssl crt $WORK/db.pem ca-file $WORK/ca.pem verify required curves $GROUP
  default_backend app
backend app
  server app $BACKEND
EOF
  cat >"$WORK/haproxy-out.cfg" <<EOF
$global
frontend out
  bind 127.0.0.1:$hout
  default_backend mesh
backend mesh
  server db 127.0.0.1:$hin ssl crt $WORK/web.pem ca-file $WORK/ca.pem verify required no-ssl-reuse
EOF
  local pids=() side
  for side in in out; do
    LOG_NAME=haproxy-$side spawn "${PROXY_PIN[@]}" haproxy -db -f "$WORK/haproxy-$side.cfg"
    pids+=("$LAST_PID")
  done
  OUT_ADDR[haproxy]=127.0.0.1:$hout
  IN_ADDR[haproxy]=127.0.0.1:$hin
  PAIR_PIDS[haproxy]="${pids[*]}"
  wait_ready "${OUT_ADDR[haproxy]}" "the haproxy pair"
}

start_stunnel() {
  local sin sout
  free_port; sin=$PORT; free_port; sout=$PORT
  local common="foreground = yes
pid =
debug = 3
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
sslVersionMin = TLSv1.3
ciphersuites = $SUITE
curves = $GROUP
CAfile = $WORK/ca.pem
verifyChain = yes"
  cat >"$WORK/stunnel-in.conf" <<EOF
$common
[in]
accept = 127.0.0.1:$sin
connect = $BACKEND
cert = $WORK/db.crt
key = $WORK/db.key
requireCert = yes
EOF
  cat >"$WORK/stunnel-out.conf" <<EOF
$common
[out]
client = yes
sessionResume = no
accept = 127.0.0.1:$sout
connect = 127.0.0.1:$sin
cert = $WORK/web.crt
key = $WORK/web.key
EOF
  local pids=() side
  for side in in out; do
    LOG_NAME=stunnel-$side spawn "${PROXY_PIN[@]}" stunnel4 "$WORK/stunnel-$side.conf"
    pids+=("$LAST_PID")
  done
  OUT_ADDR[stunnel]=127.0.0.1:$sout
  IN_ADDR[stunnel]=127.0.0.1:$sin
  PAIR_PIDS[stunnel]="${pids[*]}"
  wait_ready "${OUT_ADDR[stunnel]}" "the stunnel pair"
}

start_nginx() {
  local nin nout
  free_port; nin=$PORT; free_port; nout=$PORT
  mkdir -p "$WORK/nginx-tmp"
  local head="worker_processes 1;
daemon off;
error_log stderr error;
events { worker_connections $MAXCONN; }"
  # The server side's TLS, the same for both layers.
  local tls_in="ssl_certificate $WORK/db.crt;
    ssl_certificate_key $WORK/db.key;
    ssl_client_certificate $WORK/ca.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites $SUITE;
    ssl_ecdh_curve $GROUP;"
  # The client side's: the Trellis leafs carry only a SPIFFE URI SAN, no DNS name and an
  # empty subject, and proxy_ssl_verify always checks a host name; so OpenSSL verifies the
  # chain itself. No resumption: every connection is a full handshake, as in Trellis.
  local tls_out="proxy_ssl_certificate $WORK/web.crt;
    proxy_ssl_certificate_key $WORK/web.key;
    proxy_ssl_verify off;
    proxy_ssl_conf_command VerifyCAFile $WORK/ca.pem;
    proxy_ssl_conf_command VerifyMode Peer;
    proxy_ssl_protocols TLSv1.3;
    proxy_ssl_conf_command Ciphersuites $SUITE;
    proxy_ssl_conf_command Groups $GROUP;
    proxy_ssl_session_reuse off;"
  if [[ $LAYER == tcp ]]; then
    cat >"$WORK/nginx-in.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
$head
pid $WORK/nginx-in.pid;
stream {
  server {
    listen 127.0.0.1:$nin ssl;
    $tls_in
    proxy_pass $BACKEND;
  }
}
EOF
    cat >"$WORK/nginx-out.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
$head
pid $WORK/nginx-out.pid;
stream {
  server {
    listen 127.0.0.1:$nout;
    proxy_pass 127.0.0.1:$nin;
    proxy_ssl on;
    $tls_out
  }
}
EOF
  else
    local http_common="access_log off;
  client_body_temp_path $WORK/nginx-tmp/body;
  proxy_temp_path $WORK/nginx-tmp/proxy;
  fastcgi_temp_path $WORK/nginx-tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx-tmp/uwsgi;
  scgi_temp_path $WORK/nginx-tmp/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 120s;"
    cat >"$WORK/nginx-in.conf" <<EOF
$head
pid $WORK/nginx-in.pid;
http {
  $http_common
  upstream app { server $BACKEND; keepalive 64; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$nin ssl;
    $tls_in
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
    cat >"$WORK/nginx-out.conf" <<EOF
$head
pid $WORK/nginx-out.pid;
http {
  $http_common
  upstream mesh { server 127.0.0.1:$nin; keepalive 64; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$nout;
    location / {
      proxy_pass https://mesh;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      $tls_out
    }
  }
}
EOF
  fi
  local pids=() side
  for side in in out; do
    LOG_NAME=nginx-$side spawn "${PROXY_PIN[@]}" nginx -e stderr -c "$WORK/nginx-$side.conf"
    pids+=("$LAST_PID")
  done
  OUT_ADDR[nginx]=127.0.0.1:$nout
  IN_ADDR[nginx]=127.0.0.1:$nin
  PAIR_PIDS[nginx]="${pids[*]}"
  wait_ready "${OUT_ADDR[nginx]}" "the nginx pair"
}

# ---------------------------------------------------------------------------------------------
# Measuring.

# wrk through $1 (a pair name); sets RPS P50 P99 REQS BAD CPU_S (proxy CPU seconds).
run_wrk() {
  local pair=$1 file=$2 before after busy0 busy1
  # shellcheck disable=SC2086
  before=$(cpu_ticks ${PAIR_PIDS[$pair]}); busy0=$(cpu_busy)
  "${LOAD_PIN[@]}" wrk -t1 "-c$CONNS" "-d$DURATION" --latency ${WRK_EXTRA[@]+"${WRK_EXTRA[@]}"} "http://${OUT_ADDR[$pair]}/" >"$file"
  # shellcheck disable=SC2086
  after=$(cpu_ticks ${PAIR_PIDS[$pair]}); busy1=$(cpu_busy)
  other_cpu "$busy0" "$busy1" "$before" "$after"
  CPU_S=$(awk -v a="$after" -v b="$before" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (a - b) / hz }')
  read -r P50 P99 RPS REQS BAD < <(wrk_summary "$file")
  RPS=$(printf '%.0f' "$RPS")
}

# h2load at a fixed total rate through $1, open loop; sets P50 P99 (ms, from the per-request
# log), ACHIEVED (req/s) and CPU_S.
run_rate() {
  local pair=$1 file=$2 before after busy0 busy1 secs per_conn
  secs=${DURATION%s}
  per_conn=$(( (RATE + CONNS - 1) / CONNS ))
  # shellcheck disable=SC2086
  before=$(cpu_ticks ${PAIR_PIDS[$pair]}); busy0=$(cpu_busy)
  "${LOAD_PIN[@]}" h2load --h1 -c "$CONNS" --rps "$per_conn" -D "$secs" --log-file "$file.log" \
    "http://${OUT_ADDR[$pair]}/" >"$file" 2>&1 || true
  # shellcheck disable=SC2086
  after=$(cpu_ticks ${PAIR_PIDS[$pair]}); busy1=$(cpu_busy)
  other_cpu "$busy0" "$busy1" "$before" "$after"
  CPU_S=$(awk -v a="$after" -v b="$before" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (a - b) / hz }')
  # Log lines: start (µs since the epoch), status, duration (µs).
  read -r P50 P99 ACHIEVED BAD < <(awk -v secs="$secs" '
    { n++; if ($2 != 200) bad++ } END { printf "%d %d\n", n, bad + 0 }' "$file.log" | {
      read -r n bad
      sort -n -k3 "$file.log" | awk -v n="$n" -v secs="$secs" -v bad="$bad" '
        { d[NR] = $3 }
        END {
          if (n == 0) { print "0 0 0 0"; exit }
          i50 = int(n * 0.50); if (i50 < 1) i50 = 1
          i99 = int(n * 0.99); if (i99 < 1) i99 = 1
          printf "%.3f %.3f %.0f %d\n", d[i50] / 1000, d[i99] / 1000, n / secs, bad
        }'
    })
}

# ---------------------------------------------------------------------------------------------

main() {
  install_packages
  if [[ $BUILD == 1 ]]; then
    note "building release binaries..."
    (cd "$ROOT" && cargo build --release -q -p trellis -p trellis-bench)
  fi
  TRELLIS="$TARGET_DIR/release/trellis"
  BENCH="$TARGET_DIR/release/trellis-bench"
  case "$PROXY_BIN" in
    trellis) PROXY_CMD=("$TRELLIS" connect proxy) ;;
    trellis-proxy) PROXY_CMD=("$TARGET_DIR/release/trellis-proxy") ;;
    *) die "PROXY_BIN is trellis or trellis-proxy, not $PROXY_BIN" ;;
  esac
  mkdir -p "$TARGET_DIR" "$(dirname "$OUT")"
  WORK=$(mktemp -d "$TARGET_DIR/proxy-bench.XXXXXX")
  : >"$OUT"

  start_backend
  start_trellis
  fetch_certs
  local p pairs=(direct)
  for p in $PEERS; do
    case "$p" in
      haproxy | stunnel | nginx | trellis-b) "start_$p"; pairs+=("$p") ;;
      *) die "unknown peer $p" ;;
    esac
  done
  pairs+=(trellis)

  say "# benches/proxy.sh, MODE=$MODE ($( [[ $LAYER == tcp ]] && echo L4 || echo L7)), $(date -u +%Y-%m-%dT%H:%MZ)"
  say "# machine: nproc $NCPU, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)"
  say "# versions: $(haproxy -v 2>/dev/null | head -1 | awk '{print "haproxy", $3}'), $(nginx -v 2>&1 | sed 's/.*\///;s/^/nginx /'),\
 $(stunnel4 -version 2>&1 | sed -n 's/^stunnel \([0-9.]*\).*/stunnel \1/p' | head -1), $(openssl version | awk '{print "OpenSSL", $2}'), $(wrk -v 2>&1 | head -1 | awk '{print "wrk", $2}'), $(iperf3 --version | head -1 | awk '{print "iperf3", $2}'), $("$TRELLIS" version) (proxy: ${PROXY_CMD[*]##*/})"
  say "# certificates: Trellis CA, $KEY_ALG ${KEY_CURVE:-}, root -> leaf; every pair: TLS 1.3 $SUITE $GROUP, a full handshake per connection;"
  say "#   the peers verify the chain only, Trellis also checks SPIFFE IDs and intentions"
  say "# descriptors: limit $(ulimit -n) per process, so at most $MAXCONN connections per proxy"
  say "# pinning: load tool + backend + agent on CPU $LOAD_CPU, proxy pairs on CPU $PROXY_CPU, one worker thread each"
  [[ $MODE == bulk ]] || say "# backend: trellis-bench baseline, $BODY_BYTES-byte body"

  # What each pair's server side negotiates with an OpenSSL client holding the web leaf.
  for p in $PEERS trellis; do
    say "# $p inbound: $(openssl s_client -connect "${IN_ADDR[$p]}" -cert "$WORK/web.crt" -key "$WORK/web.key" \
      -CAfile "$WORK/ca.pem" -brief </dev/null 2>&1 | grep -E '^(Protocol version|Ciphersuite|Server Temp Key|Verification)' \
      | paste -sd ';' -)"
  done

  case "$MODE" in
    tcp | http)
      warm_up "${pairs[@]}"
      WRK_EXTRA=()
      saturation "saturation" "wrk -t1 -c$CONNS -d$DURATION, closed loop" "${pairs[@]}"
      fixed_rate "${pairs[@]}"
      if [[ $MODE == tcp ]]; then
        # Every request on a new connection: on each proxied pair that is a new mTLS
        # connection, so req/s here is new mTLS connections per second.
        WRK_EXTRA=(-H "Connection: close")
        saturation "new connections" "wrk -t1 -c$CONNS -d$DURATION -H 'Connection: close': one request per connection, req/s = new mTLS connections/s" "${pairs[@]}"
      fi
      ;;
    bulk) bulk "${pairs[@]}" ;;
    idle) idle "${pairs[@]:1}" ;;
    soak) soak ;;
  esac
  note "results in $OUT"
}

warm_up() {
  local p
  note "warming up every pair ($WARMUP)..."
  for p in "$@"; do
    "${LOAD_PIN[@]}" wrk -t1 "-c$CONNS" "-d$WARMUP" "http://${OUT_ADDR[$p]}/" >/dev/null
  done
}

# The pairs in round $1's order: as given in odd rounds, reversed in even ones.
round_order() {
  local r=$1 i; shift
  ORDER=("$@")
  if (( r % 2 == 0 )); then
    ORDER=(); for (( i=$#; i>=1; i-- )); do ORDER+=("${!i}"); done
  fi
}

# ROUNDS rounds of run_wrk over the pairs (with WRK_EXTRA), then the summary.
saturation() {
  local title=$1 how=$2 r p; shift 2
  declare -gA R_RPS R_P50 R_P99 R_EFF
  R_RPS=(); R_P50=(); R_P99=(); R_EFF=()
  say ""
  say "## $title ($how)"
  say "$(printf '%-5s %-8s %9s %8s %8s %9s %12s %12s %6s %10s' round pair req/s p50_ms p99_ms proxy_cpu req/proxy_cpu cpu_us/req errors "cpu${PROXY_CPU}_other")"
  for r in $(seq 1 "$ROUNDS"); do
    round_order "$r" "$@"
    for p in "${ORDER[@]}"; do
      note "$title, round $r: $p..."
      run_wrk "$p" "$WORK/wrk-$p-$r.txt"
      local eff="n/a" us="n/a"
      if [[ $p != direct ]]; then
        eff=$(awk -v n="$REQS" -v c="$CPU_S" 'BEGIN { if (c > 0) printf "%.0f", n / c; else print "n/a" }')
        us=$(awk -v n="$REQS" -v c="$CPU_S" 'BEGIN { if (n > 0) printf "%.1f", c * 1e6 / n; else print "n/a" }')
      fi
      say "$(printf '%-5s %-8s %9s %8s %8s %9s %12s %12s %6s %10s' "$r" "$p" "$RPS" "$P50" "$P99" \
        "$( [[ $p == direct ]] && echo - || echo "$CPU_S")" "$eff" "$us" "$BAD" "$OTHER_S")"
      R_RPS[$p]+="$RPS "; R_P50[$p]+="$P50 "; R_P99[$p]+="$P99 "; R_EFF[$p]+="$eff "
    done
  done
  summarize "$title" "$@"
}

fixed_rate() {
  [[ $RATE -gt 0 ]] || return 0
  if [[ "$(h2load --help 2>&1 | grep -c -- '--rps' || true)" == 0 ]]; then
    say ""; say "## fixed rate: skipped (this h2load has no --rps)"
    return 0
  fi
  local r p
  declare -gA R_RPS R_P50 R_P99 R_EFF
  R_RPS=(); R_P50=(); R_P99=(); R_EFF=()
  say ""
  say "## fixed rate, open loop (h2load --h1 -c$CONNS --rps $(( (RATE + CONNS - 1) / CONNS )) per connection -D ${DURATION%s}; target $RATE req/s)"
  say "$(printf '%-5s %-8s %9s %8s %8s %9s %12s %6s %10s' round pair achieved p50_ms p99_ms proxy_cpu cpu_us/req errors "cpu${PROXY_CPU}_other")"
  for r in $(seq 1 "$ROUNDS"); do
    round_order "$r" "$@"
    for p in "${ORDER[@]}"; do
      note "fixed rate, round $r: $p..."
      run_rate "$p" "$WORK/h2load-$p-$r.txt"
      local us="n/a"
      if [[ $p != direct ]]; then
        us=$(awk -v a="$ACHIEVED" -v c="$CPU_S" -v s="${DURATION%s}" 'BEGIN { if (a > 0) printf "%.1f", c * 1e6 / (a * s); else print "n/a" }')
      fi
      say "$(printf '%-5s %-8s %9s %8s %8s %9s %12s %6s %10s' "$r" "$p" "$ACHIEVED" "$P50" "$P99" \
        "$( [[ $p == direct ]] && echo - || echo "$CPU_S")" "$us" "$BAD" "$OTHER_S")"
      R_RPS[$p]+="$ACHIEVED "; R_P50[$p]+="$P50 "; R_P99[$p]+="$P99 "; R_EFF[$p]+="$us "
    done
  done
  summarize_rate "$@"
}

# iperf3 through every pair, ROUNDS rounds: received Gbit/s and Gbit per proxy CPU-second.
bulk() {
  local r p secs=${DURATION%s} file before after busy0 busy1 gbps gbits cpu eff
  declare -A B_GBPS B_EFF
  say ""
  say "## bulk throughput (iperf3 -c -t $secs, one stream; received side)"
  say "$(printf '%-5s %-8s %9s %9s %14s %10s' round pair Gbit/s proxy_cpu Gbit/proxy_cpu "cpu${PROXY_CPU}_other")"
  for r in $(seq 1 "$ROUNDS"); do
    round_order "$r" "$@"
    for p in "${ORDER[@]}"; do
      note "bulk, round $r: $p..."
      file="$WORK/iperf-$p-$r.json"
      # shellcheck disable=SC2086
      before=$(cpu_ticks ${PAIR_PIDS[$p]}); busy0=$(cpu_busy)
      "${LOAD_PIN[@]}" iperf3 -c "${OUT_ADDR[$p]%:*}" -p "${OUT_ADDR[$p]##*:}" -t "$secs" -J >"$file" || true
      # shellcheck disable=SC2086
      after=$(cpu_ticks ${PAIR_PIDS[$p]}); busy1=$(cpu_busy)
      other_cpu "$busy0" "$busy1" "$before" "$after"
      cpu=$(awk -v a="$after" -v b="$before" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (a - b) / hz }')
      gbps=$(jq -r '(.end.sum_received.bits_per_second // 0) / 1e9 | . * 100 | round / 100' "$file")
      gbits=$(jq -r '(.end.sum_received.bytes // 0) * 8 / 1e9' "$file")
      eff="n/a"
      [[ $p == direct ]] || eff=$(awk -v g="$gbits" -v c="$cpu" 'BEGIN { if (c > 0) printf "%.2f", g / c; else print "n/a" }')
      say "$(printf '%-5s %-8s %9s %9s %14s %10s' "$r" "$p" "$gbps" "$( [[ $p == direct ]] && echo - || echo "$cpu")" "$eff" "$OTHER_S")"
      B_GBPS[$p]+="$gbps "; B_EFF[$p]+="$eff "
    done
  done
  local best_g=0 best_e=0 m
  declare -A M_G M_E
  for p in "$@"; do
    # shellcheck disable=SC2086
    M_G[$p]=$(median ${B_GBPS[$p]})
    # shellcheck disable=SC2086
    M_E[$p]=$( [[ $p == direct ]] && echo n/a || median ${B_EFF[$p]})
    if [[ $p != direct && $p != trellis ]]; then
      m=${M_G[$p]}; awk -v a="$m" -v b="$best_g" 'BEGIN { exit !(a > b) }' && best_g=$m
      m=${M_E[$p]}; awk -v a="$m" -v b="$best_e" 'BEGIN { exit !(a > b) }' && best_e=$m
    fi
  done
  say ""
  say "## bulk: medians of $ROUNDS rounds (min-max); r = value / best peer (>1 better)"
  say "$(printf '%-8s %-20s %-6s %-22s %-6s' pair Gbit/s r Gbit/proxy_cpu_s r)"
  for p in "$@"; do
    # shellcheck disable=SC2086
    say "$(printf '%-8s %-20s %-6s %-22s %-6s' "$p" "${M_G[$p]} ($(minmax ${B_GBPS[$p]}))" "$(ratio "${M_G[$p]}" "$best_g")" \
      "$( [[ $p == direct ]] && echo - || echo "${M_E[$p]} ($(minmax ${B_EFF[$p]}))")" \
      "$( [[ $p == direct ]] && echo - || ratio "${M_E[$p]}" "$best_e")")"
  done
  say "(the peers verify the certificate chain only; Trellis also checks the SPIFFE IDs and the intentions)"
}

# The sum of /proc/<pid>/status field $1 (in KiB) over the given processes and their children.
status_kb() {
  local field=$1 total=0 pid c v; shift
  for pid in "$@"; do
    for c in "$pid" $(pgrep -P "$pid" 2>/dev/null || true); do
      v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$c/status" 2>/dev/null || true)
      total=$((total + ${v:-0}))
    done
  done
  echo "$total"
}

# Resident set size in KiB of the given processes and their children.
rss_kb() { status_kb VmRSS "$@"; }

# Private anonymous memory (RssAnon) in KiB of the given processes and their children: what
# RSS counts minus the mapped binary and libraries, which every process of the host running
# the same files shares.
anon_kb() { status_kb RssAnon "$@"; }

# Open file descriptors of the given processes and their children.
fd_count() {
  local total=0 pid c
  for pid in "$@"; do
    for c in "$pid" $(pgrep -P "$pid" 2>/dev/null || true); do
      total=$((total + $(find "/proc/$c/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)))
    done
  done
  echo "$total"
}

# Opens $2 connections to $1, sends one request on each and reads its answer, then holds
# them all open; writes "opened failed first-error" to $3 once done.
write_holder() {
  cat >"$WORK/hold.py" <<'EOF'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
n, ready = int(sys.argv[2]), sys.argv[3]
req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
held, failed, first = [], 0, ""
for _ in range(n):
    try:
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                raise OSError("closed before the response head")
            buf += d
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        need = length - len(rest)
        while need > 0:
            d = s.recv(need)
            if not d:
                raise OSError("closed before the body's end")
            need -= len(d)
        held.append(s)
    except OSError as e:
        failed += 1
        first = first or str(e).replace(" ", "_")
with open(ready, "w") as f:
    f.write(f"{len(held)} {failed} {first or '-'}\n")
time.sleep(3600)
EOF
}

# RSS of each pair at rest, then holding each count of IDLE_CONNS idle connections.
idle() {
  local p n base_out base_in held_out held_in per pids out_pid in_pid ready i res hpid fds
  write_holder
  say ""
  say "## idle: RSS at rest and holding N idle connections (each carried one request first)"
  say "   per_conn_KB = (RSS held - RSS at rest) of both proxies / N: one idle mTLS connection,"
  say "   both of its ends, with the plain connections on either side"
  say "   rest: RSS of each proxy, and in brackets its private anonymous memory (RssAnon)"
  say "$(printf '%-8s %-26s %7s %-18s %12s %12s %8s %7s %s' pair rest_MB_out+in N held_MB_out+in per_conn_KB out/in_KB fds opened failed)"
  for p in "$@"; do
    read -r out_pid in_pid <<<"$(pair_sides "$p")"
    base_out=$(rss_kb "$out_pid"); base_in=$(rss_kb "$in_pid")
    local anon
    anon=$(awk -v a="$(anon_kb "$out_pid")" -v b="$(anon_kb "$in_pid")" 'BEGIN { printf "(%.1f+%.1f)", a / 1024, b / 1024 }')
    for n in $IDLE_CONNS; do
      note "idle: $p holding $n connections..."
      ready="$WORK/ready-$p-$n"
      rm -f "$ready"
      "${LOAD_PIN[@]}" python3 "$WORK/hold.py" "${OUT_ADDR[$p]}" "$n" "$ready" &
      hpid=$!
      for i in $(seq 1 600); do [[ -s $ready ]] && break; sleep 0.5; done
      sleep 2
      held_out=$(rss_kb "$out_pid"); held_in=$(rss_kb "$in_pid")
      fds=$(fd_count "$out_pid" "$in_pid")
      res=$(cat "$ready" 2>/dev/null || echo "0 $n timeout")
      kill "$hpid" 2>/dev/null || true; wait "$hpid" 2>/dev/null || true
      per=$(awk -v a="$held_out" -v b="$held_in" -v c="$base_out" -v d="$base_in" -v n="$n" \
        'BEGIN { printf "%.1f", ((a + b) - (c + d)) / n }')
      say "$(printf '%-8s %-26s %7s %-18s %12s %12s %8s %s' "$p" \
        "$(awk -v a="$base_out" -v b="$base_in" 'BEGIN { printf "%.1f+%.1f", a / 1024, b / 1024 }') $anon" "$n" \
        "$(awk -v a="$held_out" -v b="$held_in" 'BEGIN { printf "%.1f+%.1f", a / 1024, b / 1024 }')" "$per" \
        "$(awk -v a="$held_out" -v b="$held_in" -v c="$base_out" -v d="$base_in" -v n="$n" \
          'BEGIN { printf "%.1f/%.1f", (a - c) / n, (b - d) / n }')" "$fds" "$res")"
      sleep 3
    done
  done
  say "(opened failed first-error: what the holder managed; a pair that could not open N is marked by failed > 0)"
}

# The client-side (out) and server-side (in) process of a pair, in that order (every pair
# starts its server side first).
pair_sides() {
  # shellcheck disable=SC2086
  set -- ${PAIR_PIDS[$1]}
  echo "$2 $1"
}

# The Trellis pair for SOAK at half its saturation rate; RSS and descriptors every SAMPLE.
soak() {
  local secs=${SOAK%s} step=${SAMPLE%s} rate per_conn out_pid in_pid t hpid file
  warm_up trellis
  WRK_EXTRA=()
  run_wrk trellis "$WORK/soak-saturation.txt"
  rate=$((RPS / 2))
  per_conn=$(( (rate + CONNS - 1) / CONNS ))
  read -r out_pid in_pid <<<"$(pair_sides trellis)"
  say ""
  say "## soak: the Trellis pair for ${secs}s at half its saturation rate ($RPS req/s measured, h2load --h1 -c$CONNS --rps $per_conn per connection)"
  say "$(printf '%-6s %10s %10s %8s %8s' t_s rss_out_KB rss_in_KB fds_out fds_in)"
  file="$WORK/soak-h2load.txt"
  "${LOAD_PIN[@]}" h2load --h1 -c "$CONNS" --rps "$per_conn" -D "$secs" "http://${OUT_ADDR[trellis]}/" >"$file" 2>&1 &
  hpid=$!
  local rss_o=() rss_i=() fd_o=() fd_i=()
  for (( t = step; t < secs; t += step )); do
    sleep "$step"
    rss_o+=("$(rss_kb "$out_pid")"); rss_i+=("$(rss_kb "$in_pid")")
    fd_o+=("$(fd_count "$out_pid")"); fd_i+=("$(fd_count "$in_pid")")
    say "$(printf '%-6s %10s %10s %8s %8s' "$t" "${rss_o[-1]}" "${rss_i[-1]}" "${fd_o[-1]}" "${fd_i[-1]}")"
  done
  wait "$hpid" || true
  local done_line
  done_line=$(grep -E '^requests:' "$file" || echo "requests: (no summary)")
  say ""
  say "## soak summary"
  say "h2load $done_line; $(grep -E '^status codes:' "$file" || true)"
  say "$(awk -v a="${rss_o[0]}" -v b="${rss_o[-1]}" -v c="${rss_i[0]}" -v d="${rss_i[-1]}" 'BEGIN {
    printf "RSS drift from the first sample to the last: out %+.1f%% (%d -> %d KB), in %+.1f%% (%d -> %d KB)", (b - a) * 100 / a, a, b, (d - c) * 100 / c, c, d }')"
  say "file descriptors (min-max over the samples): out $(minmax "${fd_o[@]}"), in $(minmax "${fd_i[@]}")"
}

# Medians (min-max) per pair and ratios to the best peer (peers: every pair but direct and
# trellis). r = value / best peer's value: above 1 is better for req/s and req/proxy-CPU-s,
# below 1 is better for latencies.
summarize() {
  local title=$1 p best_rps=0 best_p50=0 best_p99=0 best_eff=0 m
  shift
  declare -A M_RPS M_P50 M_P99 M_EFF
  for p in "$@"; do
    # shellcheck disable=SC2086
    M_RPS[$p]=$(median ${R_RPS[$p]}); M_P50[$p]=$(median ${R_P50[$p]}); M_P99[$p]=$(median ${R_P99[$p]})
    # shellcheck disable=SC2086
    M_EFF[$p]=$( [[ $p == direct ]] && echo n/a || median ${R_EFF[$p]})
    if [[ $p != direct && $p != trellis ]]; then
      m=${M_RPS[$p]}; awk -v a="$m" -v b="$best_rps" 'BEGIN { exit !(a > b) }' && best_rps=$m
      m=${M_EFF[$p]}; awk -v a="$m" -v b="$best_eff" 'BEGIN { exit !(a > b) }' && best_eff=$m
      m=${M_P50[$p]}; awk -v a="$m" -v b="$best_p50" 'BEGIN { exit !(b == 0 || a < b) }' && best_p50=$m
      m=${M_P99[$p]}; awk -v a="$m" -v b="$best_p99" 'BEGIN { exit !(b == 0 || a < b) }' && best_p99=$m
    fi
  done
  say ""
  say "## $title: medians of $ROUNDS rounds (min-max); r = value / best peer (req/s, req/CPU-s: >1 better; p50, p99: <1 better)"
  say "$(printf '%-8s %-22s %-6s %-22s %-6s %-24s %-6s %-22s %-6s' pair req/s r p50_ms r p99_ms r req/proxy_cpu_s r)"
  for p in "$@"; do
    # shellcheck disable=SC2086
    say "$(printf '%-8s %-22s %-6s %-22s %-6s %-24s %-6s %-22s %-6s' "$p" \
      "${M_RPS[$p]} ($(minmax ${R_RPS[$p]}))" "$(ratio "${M_RPS[$p]}" "$best_rps")" \
      "${M_P50[$p]} ($(minmax ${R_P50[$p]}))" "$(ratio "${M_P50[$p]}" "$best_p50")" \
      "${M_P99[$p]} ($(minmax ${R_P99[$p]}))" "$(ratio "${M_P99[$p]}" "$best_p99")" \
      "$( [[ $p == direct ]] && echo - || echo "${M_EFF[$p]} ($(minmax ${R_EFF[$p]}))")" \
      "$( [[ $p == direct ]] && echo - || ratio "${M_EFF[$p]}" "$best_eff")")"
  done
  say "(the peers verify the certificate chain only; Trellis also checks the SPIFFE IDs and the intentions)"
}

summarize_rate() {
  local p best_p50=0 best_p99=0 best_us=0 m d50 d99
  declare -A M_P50 M_P99 M_US M_ACH
  for p in "$@"; do
    # shellcheck disable=SC2086
    M_ACH[$p]=$(median ${R_RPS[$p]}); M_P50[$p]=$(median ${R_P50[$p]}); M_P99[$p]=$(median ${R_P99[$p]})
    # shellcheck disable=SC2086
    M_US[$p]=$( [[ $p == direct ]] && echo n/a || median ${R_EFF[$p]})
  done
  d50=${M_P50[direct]}; d99=${M_P99[direct]}
  for p in "$@"; do
    if [[ $p != direct && $p != trellis ]]; then
      m=$(awk -v a="${M_P50[$p]}" -v d="$d50" 'BEGIN { printf "%.3f", a - d }')
      awk -v a="$m" -v b="$best_p50" 'BEGIN { exit !(b == 0 || a < b) }' && best_p50=$m
      m=$(awk -v a="${M_P99[$p]}" -v d="$d99" 'BEGIN { printf "%.3f", a - d }')
      awk -v a="$m" -v b="$best_p99" 'BEGIN { exit !(b == 0 || a < b) }' && best_p99=$m
      m=${M_US[$p]}; awk -v a="$m" -v b="$best_us" 'BEGIN { exit !(b == 0 || a < b) }' && best_us=$m
    fi
  done
  say ""
  say "## fixed rate: medians of $ROUNDS rounds; added = pair - direct; r = value / best peer (<1 better)"
  say "$(printf '%-8s %-10s %-14s %-8s %-14s %-8s %-12s %-6s' pair achieved added_p50_ms r added_p99_ms r cpu_us/req r)"
  for p in "$@"; do
    local a50 a99
    a50=$(awk -v a="${M_P50[$p]}" -v d="$d50" 'BEGIN { printf "%.3f", a - d }')
    a99=$(awk -v a="${M_P99[$p]}" -v d="$d99" 'BEGIN { printf "%.3f", a - d }')
    if [[ $p == direct ]]; then
      say "$(printf '%-8s %-10s %-14s %-8s %-14s %-8s %-12s %-6s' "$p" "${M_ACH[$p]}" "p50 ${M_P50[$p]}" - "p99 ${M_P99[$p]}" - - -)"
    else
      say "$(printf '%-8s %-10s %-14s %-8s %-14s %-8s %-12s %-6s' "$p" "${M_ACH[$p]}" "$a50" "$(ratio "$a50" "$best_p50")" \
        "$a99" "$(ratio "$a99" "$best_p99")" "${M_US[$p]}" "$(ratio "${M_US[$p]}" "$best_us")")"
    fi
  done
  say "(a pair whose achieved rate is below the target is saturated: read its latency as such)"
}

main "$@"
