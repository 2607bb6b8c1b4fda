#!/usr/bin/env bash
# What auth costs: the load generator (atgate-load) against an nginx upstream directly,
# through atgate with no auth, and through atgate's DPoP path with a cached token and with
# a fresh token per request. Prints a markdown table with requests/s, p50/p99 and the
# gateway's CPU time per request.
#
# The gateway is pinned to the last core with one tokio worker, nginx and the load
# generator to the others, so the gateway's CPU time per request is not inflated by
# sharing a core with the client (set PIN=no to let them share).
#
#   cargo build --release && benches/dpop-compare.sh      # needs nginx (apt-get install nginx-light)
#   SECONDS_PER_RUN=10 CONNECTIONS=32 benches/dpop-compare.sh
#   RATE=3000 benches/dpop-compare.sh   # every row offered the same requests/s, paced, so
#                                        # kernel costs per request match between rows
#   COUNT=instructions benches/dpop-compare.sh   # needs valgrind
#
# COUNT=instructions runs the gateway under callgrind and reports the user-space
# instructions it executes per request (REQUESTS of them per row, after a warm-up), and
# those of one P-256 verification (`atgate-load verify`): exact and repeatable whatever
# else the machine does, so the cost of each auth path can be stated in verifications
# even on a noisy machine without hardware counters. CACHE_SIM=yes adds callgrind's
# simulated L1 instruction and data misses per request (slower).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${SECONDS_PER_RUN:-8}
CONNECTIONS=${CONNECTIONS:-32}
pace=()
if [ -n "${RATE:-}" ]; then pace=(--rate "$RATE"); fi
BIN=target/release
work=$(mktemp -d)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/up.conf" <<CONF
worker_processes 1; pid $work/up.pid; error_log $work/up.err warn;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:18081; location / { return 200 "ok"; } } }
CONF
last=$(( $(nproc) - 1 ))
if [ "${COUNT:-time}" = instructions ]; then
  REQUESTS=${REQUESTS:-1000}
  callgrind=(valgrind --tool=callgrind "--cache-sim=${CACHE_SIM:-no}")
  gateway=(env TOKIO_WORKER_THREADS=1 "${callgrind[@]}" --callgrind-out-file="$work/gateway.cg")
  client=(env)
elif [ "${PIN:-yes}" = yes ] && [ "$last" -gt 0 ]; then
  client_cpus="0-$((last - 1))"
  gateway=(taskset -c "$last" env TOKIO_WORKER_THREADS=1)
  client=(taskset -c "$client_cpus")
else
  gateway=(env)
  client=(env)
fi
"${client[@]}" nginx -c "$work/up.conf"
"$BIN/atgate-load" keys --dir "$work" >/dev/null
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/nonce-secret"
cat > "$work/atgate.yaml" <<CONF
listen: 127.0.0.1:18085
public_url: http://127.0.0.1:18085
admin_listen: "off"
log: { level: warn }
trusted_proxies: [127.0.0.1]
dpop: { nonce_secret_file: $work/nonce-secret }
issuers:
  - issuer: https://as.load.test
    jwks_file: $work/jwks.json
    audiences: [did:web:load.test]
upstreams:
  up: { url: "http://127.0.0.1:18081" }
routes:
  - { name: plain, match: { path: /plain/ }, upstream: up, auth: none }
  - { name: xrpc, match: { path: /xrpc/ }, upstream: up, auth: dpop }
CONF
"${gateway[@]}" "$BIN/atgate" run --config "$work/atgate.yaml" 2>"$work/atgate.err" & echo $! > "$work/atgate.pid"
pid=$(cat "$work/atgate.pid")
for _ in $(seq 1 100); do
  curl -s -o /dev/null http://127.0.0.1:18085/plain/ready && break
  sleep 0.2
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

row() { # name url mode measure-atgate
  local before after out ok cpu="-"
  before=$(cpu_ticks "$pid")
  out=$("${client[@]}" "$BIN/atgate-load" run --url "$2" --mode "$3" --dir "$work" --connections "$CONNECTIONS" --seconds "$RUN" "${pace[@]}" 2>/dev/null)
  after=$(cpu_ticks "$pid")
  ok=$(sed -E 's/.* ok=([0-9]+) .*/\1/' <<<"$out")
  if [ "$4" = yes ]; then
    cpu=$(awk -v t=$((after - before)) -v r="$ok" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t * 1e6 / hz / r}')
  fi
  local rps p50 p99 errors
  rps=$(sed -E 's/.* rps=([0-9]+) .*/\1/' <<<"$out")
  p50=$(sed -E 's/.* p50_us=([0-9]+) .*/\1/' <<<"$out")
  p99=$(sed -E 's/.* p99_us=([0-9]+).*/\1/' <<<"$out")
  errors=$(sed -E 's/.* errors=([0-9]+) .*/\1/' <<<"$out")
  echo "| $1 | $rps | $p50 µs | $p99 µs | $cpu | $errors |"
}

if [ "${COUNT:-time}" = instructions ]; then
  # Events per request from a callgrind dump: "Ir I1mr D1mr D1mw" sums.
  per_request() {
    awk -v n="$2" '/^events:/ {for (i = 2; i <= NF; i++) col[$i] = i - 1}
      /^summary:/ {ir = $(col["Ir"] + 1); i1 = col["I1mr"] ? $(col["I1mr"] + 1) : 0
        d1 = col["D1mr"] ? $(col["D1mr"] + 1) + $(col["D1mw"] + 1) : 0
        printf "%.0f %.0f %.0f\n", ir / n, i1 / n, d1 / n}' "$1"
  }
  "${callgrind[@]}" --callgrind-out-file="$work/verify.cg" --toggle-collect='*verify_all*' \
    "$BIN/atgate-load" verify --count "$REQUESTS" >/dev/null 2>&1
  read -r verify verify_i1 verify_d1 < <(per_request "$work/verify.cg" "$REQUESTS")
  base=""
  irow() { # name url mode
    local dumps
    "$BIN/atgate-load" run --url "$2" --mode "$3" --dir "$work" --connections 8 --seconds 100 \
      --requests $((REQUESTS / 5)) >/dev/null 2>&1
    callgrind_control -z "$pid" >/dev/null 2>&1
    "$BIN/atgate-load" run --url "$2" --mode "$3" --dir "$work" --connections 8 --seconds 100 \
      --requests "$REQUESTS" >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1
    dumps=("$work"/gateway.cg.*)
    read -r ir i1 d1 < <(per_request "$(ls -t "${dumps[@]}" | head -1)" "$REQUESTS")
    if [ -z "$base" ]; then base=$ir; fi
    awk -v name="$1" -v ir="$ir" -v base="$base" -v v="$verify" -v i1="$i1" -v d1="$d1" -v sim="${CACHE_SIM:-no}" \
      'BEGIN {extra = ir - base; printf "| %s | %d | %s | %s |", name, ir, extra ? extra : "-", extra ? sprintf("%.2f", extra / v) : "-"
        if (sim == "yes") printf " %d | %d |", i1, d1; print ""}'
  }
  echo "callgrind, user-space instructions per request, $REQUESTS requests per row, $(date -u +%Y-%m-%d)"
  echo
  if [ "${CACHE_SIM:-no}" = yes ]; then
    echo "| target | instructions/req | beyond no auth | in P-256 verifications | L1i misses/req | L1d misses/req |"
    echo "|---|---|---|---|---|---|"
    echo "| one P-256 verification (\`atgate-load verify\`) | $verify | - | 1.00 | $verify_i1 | $verify_d1 |"
  else
    echo "| target | instructions/req | beyond no auth | in P-256 verifications |"
    echo "|---|---|---|---|"
    echo "| one P-256 verification (\`atgate-load verify\`) | $verify | - | 1.00 |"
  fi
  irow "atgate, no auth" http://127.0.0.1:18085/plain/x plain
  irow "atgate, DPoP, cached token" http://127.0.0.1:18085/xrpc/com.example.getThing dpop-cached
  irow "atgate, DPoP, fresh token" http://127.0.0.1:18085/xrpc/com.example.getThing dpop-fresh
  exit 0
fi

echo "atgate-load, $CONNECTIONS connections, ${RUN}s per row, ${RATE:-unpaced} req/s offered, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "| target | req/s | p50 | p99 | gateway CPU µs/req | errors |"
echo "|---|---|---|---|---|---|"
row "direct to upstream" http://127.0.0.1:18081/xrpc/com.example.getThing plain no
row "atgate, no auth" http://127.0.0.1:18085/plain/x plain yes
row "atgate, DPoP, cached token" http://127.0.0.1:18085/xrpc/com.example.getThing dpop-cached yes
row "atgate, DPoP, fresh token" http://127.0.0.1:18085/xrpc/com.example.getThing dpop-fresh yes
if [ -n "${PROFILE:-}" ]; then
  perf record -F 999 -g -p "$pid" -o "$PROFILE" -- sleep "$RUN" >/dev/null 2>&1 &
  perf_pid=$!
  sleep 0.2
  row "atgate, DPoP, cached token (profiled)" http://127.0.0.1:18085/xrpc/com.example.getThing dpop-cached yes
  wait "$perf_pid"
fi
