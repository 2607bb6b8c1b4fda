#!/usr/bin/env bash
# Soak: atgate with everything a production replica runs (DPoP with a Redis replay store,
# a per-DID rate limit, signed identity assertions, config reloads every 30 s) driven by
# atgate-load for SOAK_MINUTES (default 3), all on 127.0.0.1. Prints the gateway's RSS
# after warm-up and after each round, the requests and error responses the gateway
# counted, and fails when any response was an error.
#
#   cargo build --release && benches/soak.sh      # needs nginx and redis-server
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${SOAK_MINUTES:-3}
ROUND=${ROUND_SECONDS:-20}
CONNECTIONS=${CONNECTIONS:-32}
BIN=target/release
work=$(mktemp -d)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/up.conf" <<CONF
worker_processes 1; pid $work/up.pid; error_log $work/up.err warn;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:18091; location / { return 200 "ok"; } } }
CONF
nginx -c "$work/up.conf"
redis-server --port 18092 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes --pidfile "$work/redis.pid" >/dev/null
"$BIN/atgate-load" keys --dir "$work" >/dev/null
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/nonce-secret"
echo "redis://127.0.0.1:18092/" > "$work/redis-url"
echo "{\"keys\":[$("$BIN/atgate" keygen 2>/dev/null)]}" > "$work/assertion.json"
config() { # the config, with a comment that changes on each reload
  cat <<CONF
# generation $1
listen: 127.0.0.1:18095
admin_listen: 127.0.0.1:18096
log: { level: warn }
reload: { interval: 1s }
trusted_proxies: [127.0.0.1]
dpop: { nonce_secret_file: $work/nonce-secret }
replay: { store: redis, redis: { url_file: $work/redis-url }, failure: fail_closed }
assertion: { keys_file: $work/assertion.json }
issuers:
  - issuer: https://as.load.test
    jwks_file: $work/jwks.json
    audiences: [did:web:load.test]
upstreams:
  up: { url: "http://127.0.0.1:18091" }
routes:
  - name: xrpc
    match: { path: /xrpc/ }
    upstream: up
    auth: dpop
    assertion: true
    rate_limits: [{ by: did, rate: 1000000/s }]
CONF
}
config 0 > "$work/atgate.yaml"
"$BIN/atgate" run --config "$work/atgate.yaml" 2>"$work/atgate.err" & echo $! > "$work/atgate.pid"
trap 'cat "$work/atgate.err" >&2; kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
pid=$(cat "$work/atgate.pid")
ready=no
for _ in $(seq 50); do curl -sf http://127.0.0.1:18096/readyz >/dev/null && { ready=yes; break; }; sleep 0.1; done
[ "$ready" = yes ] || { echo "soak: the gateway did not become ready" >&2; exit 1; }

rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
metric() { curl -s http://127.0.0.1:18096/metrics | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {print s + 0}'; }
round() {
  "$BIN/atgate-load" run --url http://127.0.0.1:18095/xrpc/com.example.getThing --mode dpop-cached --dir "$work" \
    --connections "$CONNECTIONS" --seconds "$ROUND" --requests $(( ROUND * 8000 )) 2>/dev/null
}

round >/dev/null # warm-up: pools, caches, allocator arenas
start_rss=$(rss)
echo "soak: ${MINUTES} min in ${ROUND} s rounds, $CONNECTIONS connections, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo "after warm-up: RSS $start_rss KiB"
rounds=$(( MINUTES * 60 / ROUND ))
generation=0
next_reload=$(( $(date +%s) + 30 ))
for i in $(seq "$rounds"); do
  out=$(round)
  if [ "$(date +%s)" -ge "$next_reload" ]; then
    generation=$((generation + 1))
    config "$generation" > "$work/atgate.yaml.new" && mv "$work/atgate.yaml.new" "$work/atgate.yaml"
    next_reload=$(( $(date +%s) + 30 ))
  fi
  echo "round $i: $out rss_kib=$(rss)"
done
sleep 2
end_rss=$(rss)
total=$(metric 'atgate_requests_total{')
# Each round's nonce probe is answered use_dpop_nonce (outcome dpop_nonce_missing) by design; anything else not 2xx is an error.
probes=$(metric 'atgate_requests_total{route="xrpc",method="GET",status="4xx",outcome="dpop_nonce_missing"}')
errors=$(( total - probes - $(metric 'atgate_requests_total{route="xrpc",method="GET",status="2xx"') ))
reloads=$(metric 'atgate_reloads_total{kind="config",result="success"}')
failed_reloads=$(metric 'atgate_reloads_total{kind="config",result="failure"}')
echo "end: RSS $end_rss KiB (start $start_rss KiB); gateway answered $total requests ($probes nonce probes), $errors errors; config reloads $reloads ok, $failed_reloads failed"
curl -s http://127.0.0.1:18096/metrics | grep '^atgate_requests_total' | grep -v 'status="2xx"' || true
[ "$errors" -eq 0 ] && [ "$failed_reloads" -eq 0 ]
