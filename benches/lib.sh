# Helpers the benchmark scripts share; sourced, not run. The caller sets OUT (where `say`
# appends) and USED_PORTS (" ", the ports handed out so far).

note() { printf '%s\n' "$*" >&2; }
say() { printf '%s\n' "$*" | tee -a "$OUT"; }
die() { note "error: $*"; exit 1; }

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
minmax() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'; }
# $1 / $2 to two places; "n/a" when $2 is 0 or either is "n/a".
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0 || a == "n/a" || b == "n/a") print "n/a"; else printf "%.2f\n", a / b }'; }

# Sets PORT to a free TCP port on 127.0.0.1 not handed out before.
free_port() {
  local p i
  for i in $(seq 1 500); do
    p=$((20000 + RANDOM % 12000))
    [[ "$USED_PORTS" == *" $p "* ]] && continue
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
    if command -v ss >/dev/null && [[ -n "$(ss -Htan "sport = :$p" 2>/dev/null)" ]]; then continue; fi
    USED_PORTS+="$p "
    PORT=$p
    return 0
  done
  die "no free port found"
}

# Reads wrk --latency output from file $1 and prints "p50_ms p99_ms req_per_s requests bad"
# (bad: non-2xx responses plus socket errors).
wrk_summary() {
  awk '
    function ms(v,  n) {
      n = v + 0
      if (v ~ /us$/) return n / 1000
      if (v ~ /ms$/) return n
      if (v ~ /[0-9]m$/) return n * 60000
      if (v ~ /s$/) return n * 1000
      return n
    }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    $1 == "Requests/sec:" { rps = $2 }
    $2 == "requests" && $3 == "in" { reqs = $1 }
    /Non-2xx or 3xx responses:/ { bad += $NF }
    /Socket errors:/ { for (i = 3; i <= NF; i++) { gsub(/,/, "", $i); if ($i ~ /^[0-9]+$/) bad += $i } }
    END { printf "%.3f %.3f %.1f %d %d\n", p50, p99, rps, reqs, bad }
  ' "$1"
}
