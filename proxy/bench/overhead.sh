#!/usr/bin/env bash
# A first, quick overhead number: wrk against the mock upstream directly,
# through strake-proxy, through a bare hyper forwarder (the floor, if built)
# and through nginx (if installed) doing the same header swap. Not the
# benchmark (that is bench/'s job); a sanity check that runs in a minute.
#
#   cargo build --release -p strake-proxy -p strake-mock-upstream --examples
#   proxy/bench/overhead.sh        # DURATION=10s CONNS="1 64" RUST_LOG=info to log access lines
#
# Columns: requests/s, wrk's p50/p99 latency, and the forwarder's CPU time
# per request (user+system, all threads): the steadiest number on a busy
# machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-"1 64"}
MOCK_PORT=${MOCK_PORT:-28280}
PROXY_PORT=${PROXY_PORT:-28281}
NGINX_PORT=${NGINX_PORT:-28282}
FLOOR_PORT=${FLOOR_PORT:-28283}
ADMIN_PORT=${ADMIN_PORT:-28291}
KEY=sk-bench-real-key
work=$(mktemp -d /tmp/strake-overhead.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

read -r TOKEN SHA < <("$BIN/strake-proxy" mint --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["token"], d["sha256"])')
cat >"$work/strake.yaml" <<YAML
listen: 127.0.0.1:$PROXY_PORT
admin: 127.0.0.1:$ADMIN_PORT
upstreams:
  - {name: openai, provider: openai, baseUrl: "http://127.0.0.1:$MOCK_PORT", apiKey: $KEY}
tokens:
  - {name: bench, identity: bench@example.com, sha256: $SHA, upstreams: [openai]}
YAML
"$BIN/strake-mock-upstream" --listen "127.0.0.1:$MOCK_PORT" --bench --key "$KEY" >/dev/null &
pids+=($!)
RUST_LOG=${RUST_LOG:-info,access=off} "$BIN/strake-proxy" --config "$work/strake.yaml" 2>"$work/proxy.log" &
strake_pid=$!
pids+=($strake_pid)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.1; done

floor_pid=
if [ -x "$BIN/examples/floor" ]; then
  "$BIN/examples/floor" "127.0.0.1:$FLOOR_PORT" "http://127.0.0.1:$MOCK_PORT" "$KEY" &
  floor_pid=$!
  pids+=($floor_pid)
fi

nginx_pids=
if command -v nginx >/dev/null; then
  cat >"$work/nginx.conf" <<NGINX
worker_processes ${NGINX_WORKERS:-auto};
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/t; proxy_temp_path $work/t; fastcgi_temp_path $work/t; uwsgi_temp_path $work/t; scgi_temp_path $work/t;
  upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer $KEY";
      proxy_buffering off;
    }
  }
}
NGINX
  nginx -c "$work/nginx.conf" -g 'daemon off;' &
  nginx_master=$!
  pids+=($nginx_master)
  sleep 0.5
  nginx_pids="$nginx_master $(pgrep -P "$nginx_master" | tr '\n' ' ')"
fi
sleep 0.3

cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BEARER")
LUA

cpu_ticks() { # pids... -> user+system clock ticks of all their threads
  local t=0
  for p in "$@"; do
    for s in /proc/"$p"/task/*/stat; do
      read -ra f <"$s" && t=$((t + f[13] + f[14]))
    done
  done
  echo "$t"
}

run() { # name url bearer conns pids...
  local name=$1 url=$2 bearer=$3 conns=$4
  shift 4
  local before after
  before=$(cpu_ticks "$@")
  BEARER=$bearer wrk -t1 -c"$conns" -d"$DURATION" --latency -s "$work/post.lua" "$url/v1/chat/completions" >"$work/wrk.out"
  after=$(cpu_ticks "$@")
  awk -v n="$name" -v c="$conns" -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" '
    /Requests\/sec/ {rps=$2} / 50%/ {p50=$2} / 99%/ {p99=$2} /requests in/ {reqs=$1}
    END {
      cpu = (n == "direct") ? "-" : sprintf("%.1fus", ticks / hz * 1e6 / reqs)
      printf "%-7s c=%-3s rps=%-10s p50=%-9s p99=%-9s cpu/req=%s\n", n, c, rps, p50, p99, cpu
    }' "$work/wrk.out"
}

for c in $CONNS; do
  run direct "http://127.0.0.1:$MOCK_PORT" "$KEY" "$c"
  run strake "http://127.0.0.1:$PROXY_PORT" "$TOKEN" "$c" "$strake_pid"
  if [ -n "$floor_pid" ]; then run floor "http://127.0.0.1:$FLOOR_PORT" "$TOKEN" "$c" "$floor_pid"; fi
  # shellcheck disable=SC2086
  if [ -n "$nginx_pids" ]; then run nginx "http://127.0.0.1:$NGINX_PORT" "$TOKEN" "$c" $nginx_pids; fi
done
