#!/usr/bin/env bash
# Load comparison over loopback with wrk: straight to an nginx upstream, through nginx as a
# reverse proxy, and through atgate (access log off, then on). Prints a markdown table with
# requests/s, p50/p99 latency and the proxy process's CPU time per request.
#
#   cargo build --release && benches/compare.sh            # needs wrk and nginx (apt-get install wrk nginx-light)
#   DURATION=30s CONNECTIONS=64 ROUNDS=3 benches/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-2}
BIN=${BIN:-target/release/atgate}
work=$(mktemp -d)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/up.conf" <<CONF
worker_processes 1; pid $work/up.pid; error_log $work/up.err warn;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:18081; location / { return 200 "ok"; } } }
CONF
cat > "$work/proxy.conf" <<CONF
worker_processes 1; pid $work/proxy.pid; error_log $work/proxy.err warn;
events { worker_connections 4096; }
http { access_log off; upstream up { server 127.0.0.1:18081; keepalive 64; }
  server { listen 127.0.0.1:18082; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
gateway_config() { # port level
  printf 'listen: 127.0.0.1:%s\nadmin_listen: "off"\nlog: { level: %s }\nupstreams:\n  up: { url: "http://127.0.0.1:18081" }\nroutes:\n  - { name: all, match: { path: / }, upstream: up, auth: none }\n' "$1" "$2"
}
gateway_config 18083 warn > "$work/atgate.yaml"
gateway_config 18084 info > "$work/atgate-logs.yaml"

nginx -c "$work/up.conf"
nginx -c "$work/proxy.conf"
"$BIN" run --config "$work/atgate.yaml" 2>/dev/null & echo $! > "$work/atgate.pid"
"$BIN" run --config "$work/atgate-logs.yaml" 2>/dev/null & echo $! > "$work/atgate-logs.pid"
sleep 1

# utime + stime of a process and its children (nginx's worker is a child of its master).
cpu_ticks() {
  local t=0 p
  for p in "$1" $(pgrep -P "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}

run() { # name url pid-file-or-empty
  local name=$1 url=$2 pid=${3:-} before=0 after=0 out
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$url")
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  local reqs rps p50 p99 cpu="-"
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  if [ -n "$pid" ]; then
    cpu=$(awk -v t=$((after - before)) -v r="$reqs" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t * 1e6 / hz / r}')
  fi
  grep -q "Non-2xx" <<<"$out" && name="$name (NON-2XX!)"
  echo "| $name | $rps | $p50 | $p99 | $cpu |"
}

echo "wrk -t1 -c$CONNECTIONS -d$DURATION, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "| target | req/s | p50 | p99 | proxy CPU µs/req |"
echo "|---|---|---|---|---|"
for _ in $(seq "$ROUNDS"); do
  run "direct to upstream" http://127.0.0.1:18081/xrpc/com.example.getThing
  run "nginx proxy (1 worker)" http://127.0.0.1:18082/xrpc/com.example.getThing "$(cat "$work/proxy.pid")"
  run "atgate, no auth" http://127.0.0.1:18083/xrpc/com.example.getThing "$(cat "$work/atgate.pid")"
  run "atgate, no auth, access log on" http://127.0.0.1:18084/xrpc/com.example.getThing "$(cat "$work/atgate-logs.pid")"
done
