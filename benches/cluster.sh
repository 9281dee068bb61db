#!/usr/bin/env bash
# Server clusters: one server against three on loopback, catching up, failing over.
#
#   writes    PUT /v1/catalog/register (trellis-bench writes) at C=32 and C=1 against a
#             persistent one-server cluster and the leader of a persistent three-server cluster
#             (127.0.0.2-4), alternated ROUNDS times; every write fsynced on a quorum
#   catch-up  CATCHUP_N catalog registrations written to the three servers, then a fourth
#             server joins: time until it is a voter, and until the last write is readable on it
#   failover  FAILOVER_RUNS times: a fresh three-server cluster, writes spread over the servers,
#             the leader SIGKILLed after FAILOVER_WRITES/2 acknowledged writes, time until the
#             survivors name a new leader, FAILOVER_WRITES acknowledged in all; the old leader
#             restarted; every acknowledged write looked up on every server ("lost" counts the
#             acknowledged writes missing anywhere, "failed" the writes not acknowledged); the
#             write latency before the kill and from it on (writes are held through the election)
#   members   client-agent heartbeats (h2load, HTTP/2 to the server port) sent to the leader
#             and to a follower (which forwards them), against the status RPC as the baseline:
#             rate and leader CPU per request; then MEMBER_RUNS times a client agent with the
#             default 2 s heartbeat SIGKILLed (time until a server lists it failed) and one
#             stopped with SIGTERM (time until it is gone)
#
#   tls       writes through a follower, a cluster with TLS on the server port against one
#             without, alternated (ratios tls / plain)
#
# Results: stdout and benches/results/cluster.txt (OUT). Knobs (environment): PARTS ("writes
# catchup failover members tls"), ROUNDS (3), WRITES_N (2000), CATCHUP_N (100000), FAILOVER_RUNS (20),
# FAILOVER_WRITES (100), HEARTBEATS_N (200000), MEMBER_RUNS (10), BUILD (1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="${OUT:-$ROOT/benches/results/cluster.txt}"
PARTS="${PARTS:-writes catchup failover members tls}"
ROUNDS="${ROUNDS:-3}"
WRITES_N="${WRITES_N:-2000}"
CATCHUP_N="${CATCHUP_N:-100000}"
FAILOVER_RUNS="${FAILOVER_RUNS:-20}"
FAILOVER_WRITES="${FAILOVER_WRITES:-100}"
HEARTBEATS_N="${HEARTBEATS_N:-200000}"
MEMBER_RUNS="${MEMBER_RUNS:-10}"
BUILD="${BUILD:-1}"

PIDS=()
WORK=""
now_ms() { date +%s%3N; }

cleanup() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
  if [[ -n "$WORK" && -d "$WORK" ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NEXT_PORT=$((21000 + RANDOM % 8000))
port() { NEXT_PORT=$((NEXT_PORT + 1)); PORT=$NEXT_PORT; }

# Starts server $1 (name) on 127.0.0.$2 expecting $3 servers, joining "$4" (space-separated
# server addresses); data in $WORK/$1. Sets S_PID[$1], S_HTTP[$1], S_ADDR[$1]. A server
# already known keeps its ports (a restart).
declare -A S_PID S_HTTP S_ADDR S_ARGS
start_server() {
  local name=$1 ip=$2 expect=$3 join=$4 http srv args j
  if [[ -z "${S_ARGS[$name]:-}" ]]; then
    port; http=$PORT; port; srv=$PORT
    args="agent --server --bootstrap-expect $expect --data-dir $WORK/$name --node $name --bind $ip --client 127.0.0.1 --http-port $http --server-port $srv"
    for j in $join; do args+=" --retry-join $j"; done
    S_ARGS[$name]=$args
    S_HTTP[$name]=127.0.0.1:$http
    S_ADDR[$name]=$ip:$srv
  fi
  # shellcheck disable=SC2086
  "$TRELLIS" ${S_ARGS[$name]} >>"$WORK/$name.log" 2>&1 &
  S_PID[$name]=$!
  PIDS+=("$!")
}

leader_of() { curl -sf -m 2 "http://${S_HTTP[$1]}/v1/status/leader" 2>/dev/null | tr -d '"' || true; }

# Waits until every named server reports the same leader and $1 voters; sets LEADER (a name).
wait_agreed() {
  local voters=$1 i n l first ok; shift
  for i in $(seq 1 300); do
    ok=1; first=""
    for n in "$@"; do
      l=$(leader_of "$n")
      [[ -n "$l" ]] || { ok=0; break; }
      [[ -z "$first" ]] && first=$l
      [[ "$l" == "$first" ]] || { ok=0; break; }
      [[ "$(curl -sf -m 2 "http://${S_HTTP[$n]}/v1/status/peers" | jq length 2>/dev/null || echo 0)" == "$voters" ]] || { ok=0; break; }
    done
    if [[ $ok == 1 ]]; then
      for n in "${!S_ADDR[@]}"; do [[ "${S_ADDR[$n]}" == "$first" ]] && LEADER=$n; done
      return 0
    fi
    sleep 0.1
  done
  die "servers $* never agreed on a leader with $voters voters"
}

start_three() {
  local p=$1 extra=${2:-}
  S_ARGS=(); S_PID=(); S_HTTP=(); S_ADDR=()
  local a b c
  port; a=$PORT; port; b=$PORT; port; c=$PORT
  # Pick the server ports first so each can be told all three.
  local join="127.0.0.2:$a 127.0.0.3:$b 127.0.0.4:$c" i=0 n
  for n in "${p}1" "${p}2" "${p}3"; do
    i=$((i + 1))
    local http
    port; http=$PORT
    S_ARGS[$n]="agent --server --bootstrap-expect 3 --data-dir $WORK/$n --node $n --bind 127.0.0.$((i + 1)) --client 127.0.0.1 --http-port $http --server-port $(echo "$join" | awk -v i="$i" '{ split($i, x, ":"); print x[2] }')"
    local j; for j in $join; do S_ARGS[$n]+=" --retry-join $j"; done
    [[ -n "$extra" ]] && S_ARGS[$n]+=" $extra"
    S_HTTP[$n]=127.0.0.1:$http
    S_ADDR[$n]=$(echo "$join" | awk -v i="$i" '{ print $i }')
    start_server "$n" "" "" ""
  done
  wait_agreed 3 "${p}1" "${p}2" "${p}3"
}

stop_named() {
  local n
  for n in "$@"; do
    kill -9 "${S_PID[$n]}" 2>/dev/null || true
    wait "${S_PID[$n]}" 2>/dev/null || true
  done
}

writes_run() {
  local addr=$1 c=$2 prefix=$3 file=$4
  "$BENCH" writes --addr "$addr" --n "$WRITES_N" --concurrency "$c" --prefix "$prefix" >"$file"
}

# Writes at C=32 and C=1 against $2 (label $1) and $4 (label $3), alternated over ROUNDS, then
# medians and the ratio $3 / $1. $5: the file-name tag of this part.
ab_writes() {
  local a=$1 a_http=$2 b=$3 b_http=$4 tag=$5
  say "$(printf '%-6s %-6s %-8s %12s %10s %10s %6s' round c which regs_per_s p50_ms p99_ms errors)"
  declare -A RPS P50 P99
  local r c which addr file order
  for r in $(seq 1 "$ROUNDS"); do
    for c in 32 1; do
      if (( r % 2 == 1 )); then order="$a $b"; else order="$b $a"; fi
      for which in $order; do
        addr=$a_http; [[ $which == "$b" ]] && addr=$b_http
        file="$WORK/$tag-$which-$c-$r.json"
        note "$tag round $r, c=$c, $which..."
        writes_run "$addr" "$c" "$tag-r$r-c$c-$which" "$file"
        say "$(jq -r --arg r "$r" --arg w "$which" '[$r, .concurrency, $w, .registrations_per_sec, .p50_ms, .p99_ms, .errors] | @tsv' "$file" \
          | awk -F'\t' '{ printf "%-6s %-6s %-8s %12s %10s %10s %6s", $1, $2, $3, $4, $5, $6, $7 }')"
        RPS[$which-$c]+="$(jq -r .registrations_per_sec "$file") "
        P50[$which-$c]+="$(jq -r .p50_ms "$file") "
        P99[$which-$c]+="$(jq -r .p99_ms "$file") "
      done
    done
  done
  say ""
  say "## $tag: medians of $ROUNDS rounds; ratio = $b / $a${AB_GOAL:+ ($AB_GOAL)}"
  say "$(printf '%-4s %-22s %-22s %-22s' c regs_per_s p50_ms p99_ms)"
  for c in 32 1; do
    local r1 r3 a1 a3 b1 b3
    # shellcheck disable=SC2086
    r1=$(median ${RPS[$a-$c]}); r3=$(median ${RPS[$b-$c]})
    # shellcheck disable=SC2086
    a1=$(median ${P50[$a-$c]}); a3=$(median ${P50[$b-$c]})
    # shellcheck disable=SC2086
    b1=$(median ${P99[$a-$c]}); b3=$(median ${P99[$b-$c]})
    say "$(printf '%-4s %-22s %-22s %-22s' "$c" "$r1 -> $r3 ($(ratio "$r3" "$r1")x)" "$a1 -> $a3 ($(ratio "$a3" "$a1")x)" "$b1 -> $b3 ($(ratio "$b3" "$b1")x)")"
  done
}

part_writes() {
  note "writes: starting one server and a three-server cluster..."
  S_ARGS=(); S_PID=(); S_HTTP=(); S_ADDR=()
  start_server one 127.0.0.1 1 ""
  local one_http=${S_HTTP[one]}
  wait_agreed 1 one
  local one_pid=${S_PID[one]}
  start_three w
  local three_http=${S_HTTP[$LEADER]}
  say ""
  say "## writes: PUT /v1/catalog/register, $WRITES_N distinct nodes per run, persistent servers (redb, fsync) on $(df -T "$WORK" | awk 'NR == 2 { print $2 }'); one server vs the leader of three"
  ab_writes one "$one_http" three "$three_http" writes
  stop_named w1 w2 w3
  kill -9 "$one_pid" 2>/dev/null || true
}

part_catchup() {
  note "catch-up: a three-server cluster, $CATCHUP_N registrations..."
  start_three k
  local leader_http=${S_HTTP[$LEADER]} leader_addr=${S_ADDR[$LEADER]}
  "$BENCH" writes --addr "$leader_http" --n "$CATCHUP_N" --concurrency 64 --prefix catchup >"$WORK/catchup-writes.json"
  # One more write after all the others: the last entry of the log.
  local last="catchup-final"
  curl -sf -X PUT "http://$leader_http/v1/catalog/register" \
    -d "{\"Node\":\"$last\",\"Address\":\"10.0.0.1\"}" >/dev/null || die "the final write failed"
  curl -sf "http://$leader_http/v1/catalog/node/$last" >/dev/null || die "the last write ($last) is not on the leader"
  note "catch-up: starting a fourth server..."
  local t0 t_voter="" t_data="" i
  t0=$(now_ms)
  start_server k4 127.0.0.5 3 "$leader_addr"
  for i in $(seq 1 6000); do
    if [[ -z "$t_voter" ]] && curl -sf -m 2 "http://$leader_http/v1/operator/raft/configuration" \
        | jq -e --arg a "${S_ADDR[k4]}" '.Servers[] | select(.Address == $a and .Voter == true)' >/dev/null 2>&1; then
      t_voter=$(( $(now_ms) - t0 ))
    fi
    if [[ -z "$t_data" ]] && curl -sf -m 2 "http://${S_HTTP[k4]}/v1/catalog/node/$last?stale" >/dev/null 2>&1; then
      t_data=$(( $(now_ms) - t0 ))
    fi
    [[ -n "$t_voter" && -n "$t_data" ]] && break
    sleep 0.1
  done
  say ""
  say "## catch-up: $CATCHUP_N registrations written ($(jq -r .registrations_per_sec "$WORK/catchup-writes.json") regs/s at C=64), then a fourth server joins"
  say "voter after ${t_voter:-never} ms; the last write readable on it after ${t_data:-never} ms (from its start)"
  stop_named k1 k2 k3 k4
}

part_failover() {
  say ""
  say "## failover: $FAILOVER_RUNS runs; three servers, writes spread over them, the leader SIGKILLed after $((FAILOVER_WRITES / 2)) acknowledged"
  say "$(printf '%-4s %16s %8s %8s %7s %6s %14s' run new_leader_ms acked sent failed lost max_write_ms)"
  local run times=() lost_total=0 failed_total=0 after_kill=() before_kill=()
  for run in $(seq 1 "$FAILOVER_RUNS"); do
    note "failover run $run..."
    start_three "f${run}-"
    local names=("f${run}-1" "f${run}-2" "f${run}-3") old=$LEADER acked=() n=0 took="" live=() poller=""
    run_max=0
    while (( ${#acked[@]} < FAILOVER_WRITES )); do
      if (( ${#acked[@]} == FAILOVER_WRITES / 2 )) && [[ -z "$took" ]]; then
        local old_addr=${S_ADDR[$old]} t0 s
        kill -9 "${S_PID[$old]}"; wait "${S_PID[$old]}" 2>/dev/null || true
        t0=$(now_ms)
        live=(); for s in "${names[@]}"; do [[ $s != "$old" ]] && live+=("$s"); done
        # The writes go on at once (the survivors hold them through the election); a poller
        # beside them notes when the survivors name a new leader.
        rm -f "$WORK/took"
        (
          while :; do
            l=$(leader_of "${live[0]}")
            if [[ -n "$l" && "$l" != "$old_addr" ]]; then echo $(( $(now_ms) - t0 )) >"$WORK/took"; break; fi
            (( $(now_ms) - t0 < 30000 )) || { echo never >"$WORK/took"; break; }
            sleep 0.02
          done
        ) &
        poller=$!
        took=pending
      fi
      local targets=("${names[@]}")
      [[ -n "$took" ]] && targets=("${live[@]}")
      local target=${targets[$((n % ${#targets[@]}))]} name="w-$n"
      n=$((n + 1))
      local out code ms
      out=$(curl -s -m 10 -o /dev/null -w '%{http_code} %{time_total}' -X PUT "http://${S_HTTP[$target]}/v1/config" \
        -d "{\"Kind\":\"service-defaults\",\"Name\":\"$name\",\"Protocol\":\"tcp\"}" || true)
      code=${out%% *}
      ms=$(awk -v s="${out##* }" 'BEGIN { printf "%.1f", s * 1000 }')
      # Latency of every write, those sent after the kill apart (the hold covers the election).
      if [[ -n "$took" ]]; then after_kill+=("$ms"); else before_kill+=("$ms"); fi
      run_max=$(awk -v a="${run_max:-0}" -v b="$ms" 'BEGIN { print (b > a) ? b : a }')
      [[ "$code" == 200 ]] && acked+=("$name")
      (( n < 5000 )) || die "writes keep failing"
    done
    wait "$poller" 2>/dev/null || true
    took=$(cat "$WORK/took" 2>/dev/null || echo never)
    # The old leader back; every acknowledged write looked up on every server.
    start_server "$old" "" "" ""
    wait_agreed 3 "${names[@]}"
    local lost=0 s have
    for s in "${names[@]}"; do
      local tries
      for tries in $(seq 1 50); do
        have=$(curl -sf -m 5 "http://${S_HTTP[$s]}/v1/config/service-defaults?stale" | jq -r '.[].Name' | sort)
        [[ $(comm -23 <(printf '%s\n' "${acked[@]}" | sort) <(printf '%s\n' "$have") | wc -l) == 0 ]] && break
        sleep 0.2
      done
      lost=$((lost + $(comm -23 <(printf '%s\n' "${acked[@]}" | sort) <(printf '%s\n' "$have") | wc -l)))
    done
    lost_total=$((lost_total + lost))
    failed_total=$((failed_total + n - ${#acked[@]}))
    times+=("$took")
    say "$(printf '%-4s %16s %8s %8s %7s %6s %14s' "$run" "$took" "${#acked[@]}" "$n" "$((n - ${#acked[@]}))" "$lost" "$run_max")"
    stop_named "${names[@]}"
  done
  local sorted
  sorted=$(printf '%s\n' "${times[@]}" | grep -v never | sort -n)
  say "new leader after (ms): min $(echo "$sorted" | head -1), median $(median $sorted), p90 $(echo "$sorted" | awk '{ v[NR] = $1 } END { print v[int(NR * 0.9 + 0.5)] }'), max $(echo "$sorted" | tail -1); runs with no new leader: $(printf '%s\n' "${times[@]}" | grep -c never || true)"
  say "acknowledged writes lost, all runs: $lost_total; writes failed (not acknowledged), all runs: $failed_total"
  pct() { printf '%s\n' "$@" | sort -n | awk -v q="$PCT" '{ v[NR] = $1 } END { i = int(NR * q + 0.999); if (i < 1) i = 1; print v[i] }'; }
  say "write latency (ms), before the kill: p50 $(PCT=0.5 pct "${before_kill[@]}"), p99 $(PCT=0.99 pct "${before_kill[@]}"), max $(PCT=1 pct "${before_kill[@]}"); from the kill on (held through the election): p50 $(PCT=0.5 pct "${after_kill[@]}"), p99 $(PCT=0.99 pct "${after_kill[@]}"), max $(PCT=1 pct "${after_kill[@]}")"
}

# Writes through a follower of a three-server cluster with TLS on the server port
# (verify_incoming, verify_outgoing, verify_server_hostname; certificates from `trellis tls`)
# against one without, alternated ROUNDS times at C=32 and C=1.
part_tls() {
  note "tls: two three-server clusters, one with TLS on the server port..."
  local pki="$WORK/pki"
  mkdir -p "$pki"
  (cd "$pki" && "$TRELLIS" tls ca create >/dev/null && "$TRELLIS" tls cert create -server -dc dc1 >/dev/null)
  cat >"$WORK/tls.hcl" <<EOF
tls {
  defaults {
    ca_file         = "$pki/consul-agent-ca.pem"
    cert_file       = "$pki/dc1-server-consul-0.pem"
    key_file        = "$pki/dc1-server-consul-0-key.pem"
    verify_incoming = true
    verify_outgoing = true
  }
  internal_rpc {
    verify_server_hostname = true
  }
}
EOF
  declare -A FOLLOWER
  local which n
  for which in plain tls; do
    if [[ $which == tls ]]; then start_three t "--config-file $WORK/tls.hcl"; else start_three p; fi
    for n in "${!S_HTTP[@]}"; do
      [[ $n != "$LEADER" && $n == "${which:0:1}"* ]] && FOLLOWER[$which]=${S_HTTP[$n]}
    done
    # start_three resets the maps: keep the first cluster's processes in PIDS (killed at exit).
  done
  say ""
  say "## tls: PUT /v1/catalog/register through a follower (forwarded to the leader), $WRITES_N per run; TLS on the server port (verify_incoming, verify_outgoing, verify_server_hostname) against none"
  AB_GOAL="goal: latency <= 1.1x, throughput >= 0.9x" ab_writes plain "${FOLLOWER[plain]}" tls "${FOLLOWER[tls]}" tls
}

# CPU seconds (user + system) process $1 has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f\n", ($14 + $15) / hz }' "/proc/$1/stat"; }

# Member status (1 alive, 4 failed, "" absent) of node $2 as server $1 lists it.
member_status() {
  curl -sf -m 2 "http://${S_HTTP[$1]}/v1/agent/members" | jq -r --arg n "$2" '.[] | select(.Name == $n) | .Status' 2>/dev/null || true
}

part_members() {
  note "members: a three-server cluster..."
  start_three m
  local leader=$LEADER follower n
  for n in m1 m2 m3; do [[ $n != "$leader" ]] && follower=$n; done
  local lpid=${S_PID[$leader]}
  echo '{"node":"bench-client","address":"10.0.0.9","interval_ms":2000}' >"$WORK/hb.json"
  say ""
  say "## members: $HEARTBEATS_N requests per run with h2load -c 8 -m 16 (HTTP/2 to the server port); leader CPU per request; baseline: the status RPC on the leader"
  say "$(printf '%-34s %12s %16s %8s' what req_per_s leader_cpu_us_req failed)"
  local what target path data cpu0 cpu1 log rps failed per
  declare -A PER
  for what in "status RPC at the leader" "heartbeat at the leader" "heartbeat via a follower"; do
    case "$what" in
      status*) target=${S_ADDR[$leader]}; path=/v1/internal/status; data="" ;;
      "heartbeat at"*) target=${S_ADDR[$leader]}; path=/v1/internal/heartbeat; data="-d $WORK/hb.json" ;;
      *) target=${S_ADDR[$follower]}; path=/v1/internal/heartbeat; data="-d $WORK/hb.json" ;;
    esac
    log="$WORK/h2load-${what// /-}.txt"
    cpu0=$(cpu_s "$lpid")
    # shellcheck disable=SC2086
    h2load -n "$HEARTBEATS_N" -c 8 -m 16 -H 'content-type: application/json' $data "http://$target$path" >"$log" 2>&1 \
      || die "h2load failed: $(tail -5 "$log")"
    cpu1=$(cpu_s "$lpid")
    rps=$(awk '/^finished in/ { gsub(/,/, ""); print $4 }' "$log")
    failed=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^failed/) print $i }' "$log" | head -1)
    per=$(awk -v a="$cpu0" -v b="$cpu1" -v n="$HEARTBEATS_N" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')
    PER[$what]=$per
    say "$(printf '%-34s %12s %16s %8s' "$what" "$rps" "$per" "${failed:-?}")"
  done
  local hb=${PER["heartbeat at the leader"]} fw=${PER["heartbeat via a follower"]}
  say "heartbeat / status RPC leader CPU: $(ratio "$hb" "${PER["status RPC at the leader"]}")x; at the default 2 s interval 10,000 client agents would cost the leader $(awk -v p="$fw" 'BEGIN { printf "%.1f", p * 5000 / 1e4 }')% of one core through followers (extrapolated from the per-request CPU above)"

  say ""
  say "## members: $MEMBER_RUNS client agents with the default 2 s heartbeat: SIGKILL until a server lists it failed (three missed heartbeats: 4-6.5 s after the kill, by when the last was sent), SIGTERM until it is gone"
  say "$(printf '%-4s %16s %16s' run failed_after_ms gone_after_ms)"
  local run pid t0 st killed=() gone=() http join=${S_ADDR[$follower]}
  for run in $(seq 1 "$MEMBER_RUNS"); do
    local took_kill=never took_term=never c
    for c in kill term; do
      port; http=$PORT
      "$TRELLIS" agent --data-dir "$WORK/c$run-$c" --node "c$run-$c" --http-port "$http" --retry-join "$join" \
        >>"$WORK/c$run-$c.log" 2>&1 &
      pid=$!; PIDS+=("$pid"); disown "$pid"
      for _ in $(seq 1 200); do [[ "$(member_status "$leader" "c$run-$c")" == 1 ]] && break; sleep 0.05; done
      [[ "$(member_status "$leader" "c$run-$c")" == 1 ]] || die "client c$run-$c never alive"
      # At a random point of the heartbeat period.
      sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.2f", r / 32768 * 2 }')"
      if [[ $c == kill ]]; then kill -9 "$pid"; else kill -TERM "$pid"; fi
      t0=$(now_ms)
      while (( $(now_ms) - t0 < 30000 )); do
        st=$(member_status "$follower" "c$run-$c")
        if [[ $c == kill && "$st" == 4 ]] || [[ $c == term && -z "$st" ]]; then
          if [[ $c == kill ]]; then took_kill=$(( $(now_ms) - t0 )); else took_term=$(( $(now_ms) - t0 )); fi
          break
        fi
        sleep 0.05
      done
    done
    killed+=("$took_kill"); gone+=("$took_term")
    say "$(printf '%-4s %16s %16s' "$run" "$took_kill" "$took_term")"
  done
  say "failed after SIGKILL (ms): median $(median "${killed[@]}"), range $(minmax "${killed[@]}"); gone after SIGTERM (ms): median $(median "${gone[@]}"), range $(minmax "${gone[@]}")"
  stop_named m1 m2 m3
}

main() {
  if [[ $BUILD == 1 ]]; then
    note "building release binaries..."
    (cd "$ROOT" && cargo build --release -q -p trellis -p trellis-bench)
  fi
  TRELLIS="$TARGET_DIR/release/trellis"
  BENCH="$TARGET_DIR/release/trellis-bench"
  local need=()
  command -v jq >/dev/null || need+=(jq)
  [[ " $PARTS " == *" members "* ]] && ! command -v h2load >/dev/null && need+=(nghttp2-client)
  if (( ${#need[@]} )); then
    note "installing ${need[*]}..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2 \
      || { apt-get update -q >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2; }
  fi
  mkdir -p "$(dirname "$OUT")"
  : >"$OUT"
  WORK=$(mktemp -d "$TARGET_DIR/cluster-bench.XXXXXX")
  say "# benches/cluster.sh, $(date -u +%Y-%m-%dT%H:%MZ); nproc $(nproc), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); $("$TRELLIS" version)"
  say "# Raft timing: heartbeat 150 ms, election timeout 600-1200 ms (LAN)"
  local p
  for p in $PARTS; do
    case "$p" in
      writes) part_writes ;;
      catchup) part_catchup ;;
      failover) part_failover ;;
      tls) part_tls ;;
      members) part_members ;;
      *) die "unknown part $p" ;;
    esac
  done
  note "results in $OUT"
}

main "$@"
