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
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${SECONDS_PER_RUN:-8}
CONNECTIONS=${CONNECTIONS:-32}
BIN=target/release
work=$(mktemp -d)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/up.conf" <<CONF
worker_processes 1; pid $work/up.pid; error_log $work/up.err warn;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:18081; location / { return 200 "ok"; } } }
CONF
last=$(( $(nproc) - 1 ))
if [ "${PIN:-yes}" = yes ] && [ "$last" -gt 0 ]; then
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
sleep 1
pid=$(cat "$work/atgate.pid")

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

row() { # name url mode measure-atgate
  local before after out ok cpu="-"
  before=$(cpu_ticks "$pid")
  out=$("${client[@]}" "$BIN/atgate-load" run --url "$2" --mode "$3" --dir "$work" --connections "$CONNECTIONS" --seconds "$RUN" 2>/dev/null)
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

echo "atgate-load, $CONNECTIONS connections, ${RUN}s per row, $(nproc) cores, $(date -u +%Y-%m-%d)"
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
