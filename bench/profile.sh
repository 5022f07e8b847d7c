#!/usr/bin/env bash
# bench/profile.sh [--short] [RESULTS_DIR]: instructions per request, counted by
# callgrind, for strake-proxy (file mode) and for nginx doing the same job,
# plus the functions that cost the most. Exact and repeatable, unlike
# wall-clock time on a shared VM: use it to compare a proxy change before
# and after. Writes profile-*.json into RESULTS_DIR (default
# target/bench/profile) and keeps the callgrind dumps beside them for
# callgrind_annotate / kcachegrind.
#
# Needs valgrind (Debian package) and the release binaries (bench/run.sh
# builds them; the hyper floor, if built, is profiled too). Listens on
# 127.0.0.1:19111-19115 (STRAKE_PROFILE_PORT moves the first; the rest
# follow it) and stops what it starts. --short (bench/run.sh --short): 50
# warm-up and 500 counted requests, strake-proxy and nginx only; the counts
# per request hardly move with the number of requests, the time under
# callgrind does.
set -euo pipefail

short=0
if [[ ${1:-} == --short ]]; then
	short=1
	shift
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$root/target}/${STRAKE_BUILD_PROFILE:-release}"
out="$(mkdir -p "${1:-$root/target/bench/profile}" && cd "${1:-$root/target/bench/profile}" && pwd)"
work="$root/target/bench/profile-work"
warm=300 requests=2000
((short)) && warm=50 requests=500
base="${STRAKE_PROFILE_PORT:-19111}"
MOCK_PORT=$base NGINX_PORT=$((base + 1)) STRAKE_PORT=$((base + 2)) STRAKE_ADMIN_PORT=$((base + 3))
KEY=sk-bench-upstream-0123456789

log() { printf 'profile: %s\n' "$*" >&2; }
command -v valgrind >/dev/null || {
	log "valgrind is not installed (apt-get install valgrind); skipping"
	exit 0
}
for b in strake-bench strake-mock-upstream strake-proxy; do
	[[ -x $bin/$b ]] || {
		log "$bin/$b is not built (images/release.sh)"
		exit 1
	}
done

rm -rf "$work"
mkdir -p "$work"
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL -- "-$p" 2>/dev/null || true
	done
}
trap cleanup EXIT

# spawn NAME READY_URL CMD...: own session, so cleanup reaches its children.
spawn() {
	local name="$1" url="$2" i
	shift 2
	# A leftover server on the port would be measured instead, silently.
	if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
		log "$url already answers: stop whatever listens there first"
		return 1
	fi
	setsid "$@" >"$work/$name.log" 2>&1 &
	pids+=($!)
	echo $! >"$work/$name.pid"
	for ((i = 0; i < 600; i++)); do
		curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
		kill -0 "$!" 2>/dev/null || break
		sleep 0.1
	done
	tail -n 20 "$work/$name.log" >&2
	log "$name did not become ready"
	return 1
}

echo '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one short sentence."}]}' >"$work/chat.json"

spawn mock "http://127.0.0.1:$MOCK_PORT/__mock/health" \
	"$bin/strake-mock-upstream" --listen "127.0.0.1:$MOCK_PORT" --no-record --key "$KEY"

grind=(valgrind --tool=callgrind --compress-strings=no --compress-pos=no)

# measure TARGET URL CREDENTIAL OWN_PREFIX: warm up, zero the counters,
# serve $requests requests, dump, analyse.
measure() {
	local target="$1" url="$2" cred="$3" own="$4" pid
	pid="$(<"$work/$target.pid")"
	"$bin/strake-bench" load --target "$target" --experiment profile --out "$work/warm-$target.json" \
		--url "$url" --body "$work/chat.json" --bearer "$cred" --rate 0 --connections 4 \
		--warmup 0 --duration 300 --max-requests "$warm" 2>/dev/null
	callgrind_control -z "$pid" >/dev/null
	"$bin/strake-bench" load --target "$target" --experiment profile --out "$work/load-$target.json" \
		--url "$url" --body "$work/chat.json" --bearer "$cred" --rate 0 --connections 4 \
		--warmup 0 --duration 300 --max-requests "$requests" 2>/dev/null
	rm -f "$work/callgrind.$target".*
	callgrind_control -d "$pid" >/dev/null
	local ok
	ok="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$work/load-$target.json")"
	if [[ $ok != "$requests" ]]; then
		log "$target answered $ok of $requests requests with success; see $work/load-$target.json"
		return 1
	fi
	local dump
	dump="$(ls -t "$work/callgrind.$target".*.out.* | head -n1)"
	cp "$dump" "$out/callgrind-$target.out"
	local -a ownarg=()
	[[ -n $own ]] && ownarg=(--own-prefix "$own")
	"$bin/strake-bench" callgrind --target "$target" --experiment profile \
		--out "$out/profile-$target.json" --file "$out/callgrind-$target.out" \
		--requests "$requests" "${ownarg[@]}"
}

# strake-proxy in file mode, access log on (its default), to a file.
"$bin/strake-bench" tokens --count 10 --listen "127.0.0.1:$STRAKE_PORT" \
	--admin "127.0.0.1:$STRAKE_ADMIN_PORT" --config-out "$work/strake.yaml" \
	--tokens-out "$work/strake-tokens.txt" --upstream-url "http://127.0.0.1:$MOCK_PORT" \
	--upstream-key "$KEY" 2>/dev/null
log "strake-proxy under callgrind"
spawn strake "http://127.0.0.1:$STRAKE_ADMIN_PORT/readyz" \
	"${grind[@]}" --callgrind-out-file="$work/callgrind.strake.%p.out" \
	"$bin/strake-proxy" --config "$work/strake.yaml"
measure strake "http://127.0.0.1:$STRAKE_PORT/v1/chat/completions" \
	"$(head -n1 "$work/strake-tokens.txt")" "strake_proxy::"
kill -TERM -- "-$(<"$work/strake.pid")"
for _ in $(seq 100); do kill -0 "$(<"$work/strake.pid")" 2>/dev/null || break; sleep 0.1; done

# The variants beside it, in the full profile only.
if ((!short)); then
	log "strake-proxy under callgrind, access log filtered out"
	spawn strake-nolog "http://127.0.0.1:$STRAKE_ADMIN_PORT/readyz" \
		env RUST_LOG=info,access=off "${grind[@]}" --callgrind-out-file="$work/callgrind.strake-nolog.%p.out" \
		"$bin/strake-proxy" --config "$work/strake.yaml"
	measure strake-nolog "http://127.0.0.1:$STRAKE_PORT/v1/chat/completions" \
		"$(head -n1 "$work/strake-tokens.txt")" "strake_proxy::"

	# The floor: hyper's server and the same pooled legacy client, forwarding
	# with nothing in between (proxy/examples/floor.rs). What Strake costs over
	# it is its own stages; the rest is hyper's and tokio's.
	if [[ -x $bin/examples/floor ]]; then
		log "the hyper floor under callgrind"
		FLOOR_PORT=$((base + 4))
		spawn floor "http://127.0.0.1:$FLOOR_PORT/__mock/health" \
			"${grind[@]}" --callgrind-out-file="$work/callgrind.floor.%p.out" \
			"$bin/examples/floor" "127.0.0.1:$FLOOR_PORT" "http://127.0.0.1:$MOCK_PORT" "$KEY"
		measure floor "http://127.0.0.1:$FLOOR_PORT/v1/chat/completions" "sk-client" ""
	fi
fi

# nginx: one process (master_process off) so callgrind sees the worker.
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        keepalive_requests 1000000;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer $KEY";
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
EOF
if command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]]; then
	log "nginx under callgrind"
	spawn nginx "http://127.0.0.1:$NGINX_PORT/__mock/health" \
		"${grind[@]}" --callgrind-out-file="$work/callgrind.nginx.%p.out" \
		"$(command -v nginx || echo /usr/sbin/nginx)" -p "$work/nginx" -e "$work/nginx-error.log" -c "$work/nginx.conf"
	measure nginx "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" "sk-client" ""
fi
log "wrote $out"
