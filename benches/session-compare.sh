#!/usr/bin/env bash
# What a browser session costs per request: `atgate demo` (memory session store), signed in
# as alice.test with curl through the real flow (sign-in form, PAR, the dev PDS's consent
# form, callback), then wrk against a public route and against the oauth_session route
# with the session cookie. Prints a markdown table with requests/s, p50/p99 and the
# gateway process's CPU time per request (the demo's own dev servers run in the same
# process but are idle during the runs). The gateway runs on its own core with one tokio
# worker, as in benches/dpop-compare.sh.
#
#   cargo build --release && benches/session-compare.sh      # needs wrk and curl
#   SECONDS_PER_RUN=10 CONNECTIONS=32 benches/session-compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${SECONDS_PER_RUN:-8}
CONNECTIONS=${CONNECTIONS:-32}
work=$(mktemp -d)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

# The gateway on the last core with one tokio worker, wrk on the others (PIN=no: shared).
last=$(( $(nproc) - 1 ))
if [ "${PIN:-yes}" = yes ] && [ "$last" -gt 0 ]; then
  gateway=(taskset -c "$last" env TOKIO_WORKER_THREADS=1)
  client=(taskset -c "0-$((last - 1))")
else
  gateway=(env)
  client=(env)
fi
"${gateway[@]}" target/release/atgate demo > "$work/demo.out" 2>"$work/demo.err" & echo $! > "$work/demo.pid"
for _ in $(seq 100); do grep -q 'gateway on' "$work/demo.out" 2>/dev/null && break; sleep 0.1; done
base=$(sed -n 's/.*gateway on \(http:[^,]*\),.*/\1/p' "$work/demo.out")
[ -n "$base" ] || { echo "the demo did not start" >&2; cat "$work/demo.err" >&2; exit 1; }

jar="$work/jar"
c() { curl -s -b "$jar" -c "$jar" "$@"; }
location() { sed -n 's/^[Ll]ocation: \(.*\)\r$/\1/p'; }
authorize=$(c -o /dev/null -D - -H "Origin: $base" --data 'handle=alice.test&return_to=/app/x' "$base/auth/login" | location)
consent=$(c "$authorize")
request_uri=$(printf '%s' "$consent" | sed -n 's/.*name="request_uri" value="\([^"]*\)".*/\1/p')
as_origin=$(printf '%s' "$authorize" | sed 's|^\(http://[^/]*\)/.*|\1|')
callback=$(c -o /dev/null -D - --data-urlencode "request_uri=$request_uri" --data 'decision=allow' "$as_origin/oauth/authorize" | location)
c -o /dev/null "$callback"
cookie=$(awk '$6 == "atgate_session" { print $7 }' "$jar")
[ -n "$cookie" ] || { echo "sign-in failed" >&2; exit 1; }
check=$(curl -s -H "Cookie: atgate_session=$cookie" -H 'Accept: application/json' "$base/app/x")
printf '%s' "$check" | grep -q '"x-atproto-auth":"oauth-session"' || { echo "the session does not work: $check" >&2; exit 1; }

pid=$(cat "$work/demo.pid")
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

row() { # name url [header]
  local out before after
  before=$(cpu_ticks "$pid")
  if [ -n "${3:-}" ]; then
    out=$("${client[@]}" wrk -t1 -c"$CONNECTIONS" -d"${RUN}s" --latency -H "$3" "$2")
  else
    out=$("${client[@]}" wrk -t1 -c"$CONNECTIONS" -d"${RUN}s" --latency "$2")
  fi
  after=$(cpu_ticks "$pid")
  local rps p50 p99 total cpu
  rps=$(printf '%s\n' "$out" | awk '/Requests\/sec/ { printf "%d", $2 }')
  p50=$(printf '%s\n' "$out" | awk '$1 == "50%" { print $2 }')
  p99=$(printf '%s\n' "$out" | awk '$1 == "99%" { print $2 }')
  non2xx=$(printf '%s\n' "$out" | awk '/Non-2xx/ { print $4 }')
  total=$(printf '%s\n' "$out" | awk '/requests in/ { print $1 }')
  cpu=$(awk -v t="$((after - before))" -v n="$total" -v hz="$hz" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
  printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$rps" "$p50" "$p99" "$cpu" "${non2xx:-0}"
}

echo "| path | requests/s | p50 | p99 | gateway CPU µs/request | non-2xx |"
echo "|---|---|---|---|---|---|"
row "public route (auth: none)" "$base/demo/x"
row "oauth_session route (memory store)" "$base/app/x" "Cookie: atgate_session=$cookie"
