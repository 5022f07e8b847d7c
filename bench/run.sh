#!/usr/bin/env bash
# bench/run.sh [--short] [--only kube-features]: Strake's benchmarks, side
# by side in one run.
#
#   overhead     open-loop constant-rate load: direct to the mock, nginx,
#                strake-proxy (file mode), LiteLLM, the Portkey gateway;
#                added latency over direct
#   saturation   closed-loop maximum throughput of each
#   streaming    time to first byte and gaps between SSE events
#   scale        strake-proxy with 10 / 10,000 / 100,000 tokens: startup, RSS, latency
#   revocation   on the local control plane (make dev-up): delete -> 401
#   operator     10,000 StrakeTokens to Ready on the local control plane, tokens
#                revoked meanwhile (delete -> 401 during the storm)
#   usage        the operator's usage status writes per second with 10,000
#                active tokens (a simulated proxy replica reports them all)
#   kube-features  on the local control plane: a budgeted and a keyless
#                StrakeToken against a minted one, through a kube-mode
#                strake-proxy (release build) of the bench's own
#
# Writes docs/benchmarks.md (full) or target/bench/benchmarks-short.md
# (--short: CI-sized, a few minutes). --only kube-features runs that step
# alone (with the mode's parameters) and writes
# target/bench/kube-features-{full,short}.md. Everything it starts listens on
# 127.0.0.1 ports 19101-19110, 19116-19119 and 19131-19133 (bench/profile.sh:
# 19111-19115) and is stopped on exit. See bench/README.md.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

usage() {
	echo "usage: bench/run.sh [--short] [--only kube-features]" >&2
	exit 2
}
mode=full only=""
while (($#)); do
	case "$1" in
	--short) mode=short ;;
	--only)
		[[ ${2:-} == kube-features ]] || usage
		only="$2"
		shift
		;;
	*) usage ;;
	esac
	shift
done

export STRAKE_CACHE="${STRAKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strake}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
profile="${STRAKE_BUILD_PROFILE:-release}"
bin="$target_dir/$profile"
work="$root/target/bench/$mode${only:+-$only}"
results="$work/results"
logs="$work/logs"
run="$work/run"
if [[ -n $only ]]; then
	report="$root/target/bench/$only-$mode.md"
	plots="$work/plots"
elif [[ $mode == full ]]; then
	report="$root/docs/benchmarks.md"
	plots="$root/docs/benchmarks"
else
	report="$root/target/bench/benchmarks-short.md"
	plots="$work/plots"
fi

# --- what each mode measures --------------------------------------------------

if [[ $mode == full ]]; then
	warmup=2 duration=10 point_timeout=102
	rates=(20 50 500 2000 5000)
	litellm_rates=(20 50)
	portkey_rates=(20 50 500)
	stream_n=20 stream_c=4 stream_chunks=50 stream_ms=20
	scale_counts=(10 10000 100000)
	scale_rate=2000
	revocation_trials=30 revocation_timeout=30
	operator_tokens=10000 operator_revocations=30 operator_revocation_every=2
	usage_tokens=10000 usage_window=60
	kube_rates=(500 2000)
	aa=1 # direct measured twice per rate: the run-to-run noise floor
	profile_args=()
else
	# Enough to show every section working, in the least time: each target
	# at one rate (the gateways' rate: LiteLLM saturates below 100 rps) and
	# short points; the scale and kube-mode rows keep 2000 rps.
	warmup=0.5 duration=1.5 point_timeout=92
	rates=(20)
	litellm_rates=(20)
	portkey_rates=(20)
	stream_n=8 stream_c=4 stream_chunks=20 stream_ms=20
	scale_counts=(10 10000)
	scale_rate=2000
	revocation_trials=5 revocation_timeout=15
	operator_tokens=100 operator_revocations=3 operator_revocation_every=0.5
	usage_tokens=300 usage_window=5
	kube_rates=(2000)
	aa=0
	profile_args=(--short)
fi
connections=32

# Ports: clear of the dev stack (18080-18092) and the cluster (16443, 23790, 23800).
MOCK_PORT=19101 NGINX_PORT=19102 STRAKE_PORT=19103 STRAKE_ADMIN_PORT=19104
LITELLM_PORT=19105 SCALE_PORT=19106 SCALE_ADMIN_PORT=19107
NOLOG_PORT=19108 NOLOG_ADMIN_PORT=19109 NOPRICING_PORT=19110 NOPRICING_ADMIN_PORT=19116
USAGE_REPORT_PORT=19117 USAGE_OPERATOR_ADMIN_PORT=19118 PORTKEY_PORT=19119
KUBE_PROXY_PORT=19131 KUBE_PROXY_ADMIN_PORT=19132 KUBE_OPERATOR_ADMIN_PORT=19133

# Pinning: the server under test gets core 0 to itself; the load generator
# and the mock upstream share core 1. Every proxy runs one worker (nginx
# worker_processes 1, LiteLLM 1 worker, tokio sizes itself to its affinity).
if (($(nproc) >= 2)); then
	SUT_CPU=0 LOAD_CPU=1
	pin_sut=(taskset -c "$SUT_CPU")
	pin_load=(taskset -c "$LOAD_CPU")
	layout="server under test pinned to core $SUT_CPU (taskset); load generator and mock upstream on core $LOAD_CPU"
else
	pin_sut=() pin_load=()
	layout="one core: nothing pinned"
fi

UPSTREAM_KEY=sk-bench-upstream-0123456789
LITELLM_KEY=sk-litellm-bench-master

began=$SECONDS
log() { printf 'bench [%4ss]: %s\n' "$((SECONDS - began))" "$*" >&2; }
die() {
	log "$*"
	exit 1
}

# --- processes ------------------------------------------------------------------

mkdir -p "$work"
rm -rf "$results" "$logs" "$run" "$work/conf"
mkdir -p "$results" "$logs" "$run" "$work/conf"

# stop NAME: SIGTERM to the process group that start made, SIGKILL after 10 s.
stop() {
	local f="$run/$1.pid" pid i
	[[ -f $f ]] || return 0
	pid="$(<"$f")"
	rm -f "$f"
	kill -CONT -- "-$pid" 2>/dev/null || true
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "$1 (pid $pid) ignored SIGTERM; killing it"
	kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

dev_started=0
cleanup() {
	local f
	for f in "$run"/*.pid; do
		[[ -e $f ]] && stop "$(basename "$f" .pid)"
	done
	if ((dev_started)); then
		log "stopping the dev stack this run started"
		timeout 120 e2e/dev/down.sh "$root/target/dev" >/dev/null 2>&1 || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start NAME EXPERIMENT READY_URL CMD...: starts CMD in its own session (so
# stop reaches its children), waits until READY_URL answers 200, records the
# time to ready and the memory then in results (scale-*) or work/startup.
start() {
	local name="$1" experiment="$2" url="$3"
	shift 3
	local out="$work/startup-$name.json"
	[[ $experiment == scale-* ]] && out="$results/startup-$experiment.json"
	if ! timeout 200 "$bin/strake-bench" startup --target "$name" --experiment "$experiment" \
		--out "$out" --ready-url "$url" --timeout 180 \
		--pid-file "$run/$name.pid" --log "$logs/$name.log" -- setsid "$@" >&2; then
		tail -n 20 "$logs/$name.log" >&2 || true
		return 1
	fi
}

pid() { cat "$run/$1.pid"; }

# load TARGET EXPERIMENT RATE URL [strake-bench load args...]
load() {
	local target="$1" experiment="$2" rate="$3" url="$4" name
	shift 4
	name="$experiment-$target-${rate}"
	local -a pidarg=()
	[[ -f "$run/${SERVER[$target]:-none}.pid" ]] && pidarg=(--pid "$(pid "${SERVER[$target]}")")
	pause_others "${SERVER[$target]:-none}"
	timeout "$point_timeout" "${pin_load[@]}" "$bin/strake-bench" load \
		--target "$target" --experiment "$experiment" --out "$results/load-$name.json" \
		--url "$url" --body "$work/conf/chat.json" --rate "$rate" \
		--warmup "$warmup" --duration "$duration" --connections "$connections" \
		"${pidarg[@]}" "$@" ||
		log "load $name failed (exit $?)"
	resume_all
}

# The servers share the measured core: while one is measured, the others
# are stopped (SIGSTOP), so an idle one's timers (LiteLLM's event loop,
# say) cannot steal that core's time. The mock upstream keeps running, and
# so does the operator that feeds the kube-mode proxy (it collects that
# proxy's usage and republishes its budget's spend while it serves).
pause_others() {
	local keep="$1" f name
	for f in "$run"/*.pid; do
		[[ -e $f ]] || continue
		name="$(basename "$f" .pid)"
		[[ $name == "$keep" || $name == mock || $name == kube-operator ]] && continue
		kill -STOP -- "-$(<"$f")" 2>/dev/null || true
	done
}

resume_all() {
	local f
	for f in "$run"/*.pid; do
		[[ -e $f ]] && { kill -CONT -- "-$(<"$f")" 2>/dev/null || true; }
	done
}

skip() {
	local target="$1" experiment="$2" reason="$3"
	log "skipping $target ($experiment): $reason"
	python3 -c 'import json,sys; print(json.dumps({"kind":"skipped","target":sys.argv[1],"experiment":sys.argv[2],"reason":sys.argv[3]}))' \
		"$target" "$experiment" "$reason" >"$results/skipped-$target-$experiment.json"
}

# The process behind each target, for its CPU and memory.
declare -A SERVER=([direct]=mock [direct-repeat]=mock [nginx]=nginx [strake]=strake
	[strake-nolog]=strake-nolog [strake-nopricing]=strake-nopricing [litellm]=litellm
	[portkey]=portkey [strake-policy]=strake [strake-h2]=strake
	[kube-minted]=kube-proxy [kube-budget]=kube-proxy [kube-keyless]=kube-proxy)

# --- the local control plane and the report ------------------------------------

# dev_stack: the dev stack (make dev-up) for the control-plane steps, started
# unless it runs; sets dev_ok and sources its env (KUBECONFIG, URLs).
dev_stack() {
	dev="$root/target/dev"
	if [[ -f $dev/env ]] && timeout 10 e2e/dev/service.sh "$dev" status proxy >/dev/null 2>&1 &&
		timeout 10 e2e/dev/service.sh "$dev" status operator >/dev/null 2>&1; then
		log "using the running dev stack ($dev, binaries in $(sed -n "s/^BINDIR=//p" "$dev/ports.env" 2>/dev/null))"
		dev_ok=1
	else
		log "starting the dev stack (make dev-up)"
		dev_started=1
		# On the benchmarks' own build, so the operator and the proxy measured
		# here are the ones the images carry, not debug builds.
		if STRAKE_DEV_BINDIR="$bin" timeout 900 make -s dev-up >"$logs/dev-up.log" 2>&1; then
			dev_ok=1
		else
			dev_ok=0
			tail -n 20 "$logs/dev-up.log" >&2 || true
			local why="make dev-up failed (see ${logs#"$root/"}/dev-up.log)"
			[[ -z $only ]] && skip strake revocation "$why"
			skip strake kube-features "$why"
		fi
	fi
	if ((dev_ok)); then
		# shellcheck source=/dev/null
		source "$dev/env"
	fi
}

# proxy_kubeconfig FILE: the chart's proxy ServiceAccount (the RBAC the dev
# stack's proxies run with) on the admin kubeconfig's cluster; the token
# outlives any run.
proxy_kubeconfig() {
	local server ca token
	server="$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')" &&
		ca="$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')" &&
		token="$(kubectl create token "$STRAKE_PROXY_SA" -n "$STRAKE_NAMESPACE" --duration 2h)" &&
		[[ -n $server && -n $ca && -n $token ]] || return 1
	(
		umask 077
		cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: strake-dev
  cluster: {server: "$server", certificate-authority-data: "$ca"}
users:
- name: proxy
  user: {token: "$token"}
contexts:
- name: strake-dev
  context: {cluster: strake-dev, user: proxy, namespace: "$STRAKE_NAMESPACE"}
current-context: strake-dev
EOF
	)
}

KUBE_NAMESPACE=strake-bench-features

# kube_features: budgets and keyless tokens exist only in kube mode, so this
# step runs a strake-proxy --kube of its own: the same release build as the
# file-mode rows, pinned like every server under test, watching the dev
# stack's proxy namespace as the chart's proxy ServiceAccount, with the dev
# stack's proxy flags (e2e/dev/lib.sh) but its own ports and without two
# test hooks: --dev-clock-offset-file (a file read at every budget
# decision) and --jwks-min-refetch 1s (for a key rotation test). The dev
# operator lets UpstreamKeys reach only the dev mock (it logs and records
# every request), so these StrakeTokens get an operator of
# their own, the same release build, that may reach the bench's mock and
# collects the bench proxy's usage every second, as the dev stack's does;
# the dev operator is stopped meanwhile, as for the usage writes.
kube_features() {
	log "kube-features: a minted, a budgeted and a keyless StrakeToken at ${kube_rates[*]} rps"
	e2e/dev/service.sh "$dev" stop operator >/dev/null 2>&1 || true
	kube_features_measure || true
	# While this step's operator runs, so that its finalizers let go.
	timeout 150 kubectl delete namespace "$KUBE_NAMESPACE" --ignore-not-found --timeout=120s >/dev/null 2>&1 ||
		log "kube-features: namespace $KUBE_NAMESPACE not deleted yet"
	stop kube-proxy
	stop kube-operator
	e2e/dev/service.sh "$dev" start operator >/dev/null 2>&1 || log "could not restart the dev operator"
}

# kube_features_measure: the step itself; a failure is a skip with its reason.
kube_features_measure() {
	local conf="$work/conf/kube" issuer i rate t
	local url="http://127.0.0.1:$KUBE_PROXY_PORT/v1/chat/completions"
	local -a issuer_ca=() order
	mkdir -p "$conf"
	chmod 700 "$conf"
	# A previous run's namespace may still be going away.
	timeout 150 kubectl wait --for=delete "namespace/$KUBE_NAMESPACE" --timeout=120s >/dev/null 2>&1 || true
	# The cluster's issuer as the API server announces it (its --service-account-issuer).
	if ! issuer="$(kubectl get --raw /.well-known/openid-configuration |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["issuer"])')"; then
		skip strake kube-features "the API server's issuer discovery (/.well-known/openid-configuration) did not answer"
		return 1
	fi
	if ! proxy_kubeconfig "$conf/proxy.kubeconfig"; then
		skip strake kube-features "no token for the proxy's ServiceAccount $STRAKE_NAMESPACE/$STRAKE_PROXY_SA"
		return 1
	fi
	[[ -f $STRAKE_DEV_DIR/issuer-ca/ca.crt ]] && issuer_ca=(--issuer-ca-file "$STRAKE_DEV_DIR/issuer-ca/ca.crt")
	# The benchmark's model priced as in the file-mode config, so that the
	# budget's USD counts every request.
	echo '- {provider: openai, model: gpt-4o-mini, input: 0.15, cachedInput: 0.075, output: 0.6}' \
		>"$conf/prices.yaml"
	if ! start kube-operator startup "http://127.0.0.1:$KUBE_OPERATOR_ADMIN_PORT/readyz" \
		"$bin/strake-operator" --proxy-namespace "$STRAKE_NAMESPACE" \
		--endpoint "http://127.0.0.1:$KUBE_PROXY_PORT" \
		--admin-addr "127.0.0.1:$KUBE_OPERATOR_ADMIN_PORT" --watch-namespaces "$KUBE_NAMESPACE" \
		--cluster-issuer "$issuer" --prices "$conf/prices.yaml" \
		--allowed-upstream-hosts "http://127.0.0.1:$MOCK_PORT" \
		--proxy-admin-urls "http://127.0.0.1:$KUBE_PROXY_ADMIN_PORT" --usage-interval 1s; then
		skip strake kube-features "the step's operator did not start (see ${logs#"$root/"}/kube-operator.log)"
		return 1
	fi
	log "kube-features: starting strake-proxy --kube (core ${SUT_CPU:-any})"
	if ! start kube-proxy startup "http://127.0.0.1:$KUBE_PROXY_ADMIN_PORT/readyz" \
		env KUBECONFIG="$conf/proxy.kubeconfig" "${pin_sut[@]}" "$bin/strake-proxy" --kube \
		--namespace "$STRAKE_NAMESPACE" --replica-service "$STRAKE_RELEASE-proxy-admin" \
		--listen "127.0.0.1:$KUBE_PROXY_PORT" --admin "127.0.0.1:$KUBE_PROXY_ADMIN_PORT" \
		--cluster-issuer "$issuer" "${issuer_ca[@]}" --prices "$conf/prices.yaml"; then
		skip strake kube-features "strake-proxy --kube did not become ready (see ${logs#"$root/"}/kube-proxy.log)"
		return 1
	fi
	if ! timeout 300 "$bin/strake-bench" kube-features issue --namespace "$KUBE_NAMESPACE" \
		--mock-url "http://127.0.0.1:$MOCK_PORT" --mock-key "$UPSTREAM_KEY" \
		--proxy-url "http://127.0.0.1:$KUBE_PROXY_PORT" --credentials "$conf" --timeout 60; then
		skip strake kube-features "the StrakeTokens were not accepted by the kube-mode proxy in time (see the run's output)"
		return 1
	fi
	# The order is reversed from one rate to the next, so that a drift of
	# the machine during the step does not always favour the same row.
	for i in "${!kube_rates[@]}"; do
		rate="${kube_rates[i]}"
		order=(direct kube-minted kube-budget kube-keyless)
		if ((i % 2)); then
			order=(kube-keyless kube-budget kube-minted direct)
		fi
		for t in "${order[@]}"; do
			if [[ $t == direct ]]; then
				load direct kube-features "$rate" "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" \
					--bearer "$UPSTREAM_KEY"
			else
				load "$t" kube-features "$rate" "$url" --bearer-file "$conf/$t.credential"
			fi
		done
	done
	# DESIGN.md's rule, checked on this step's own logs: printed, not asserted.
	if cat "$conf"/kube-*.credential | grep -qF -f - "$logs/kube-proxy.log" "$logs/kube-operator.log"; then
		log "kube-features: a credential appears in the kube-mode proxy's or operator's log"
	fi
	timeout 90 "$bin/strake-bench" kube-features budget --target kube-budget --experiment kube-features \
		--out "$results/budget-spend-kube-features.json" --namespace "$KUBE_NAMESPACE" --timeout 60 ||
		log "kube-features: the budget's spend could not be read back"
}

# write_report: the plots (when matplotlib is installed) and the markdown.
write_report() {
	rm -rf "$plots"
	if [[ -n $venv && -x $venv/bin/python ]] && "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
		timeout 120 "$venv/bin/python" bench/plot.py "$results" "$plots" || log "plots failed"
	fi
	local elapsed=$((SECONDS - began))
	"$bin/strake-bench" report --results "$results" --out "$report" --plots "$plots" \
		--note "$mode mode${only:+, $only only}, $(date -u +%Y-%m-%d), ${elapsed} s"
	log "wrote $report in ${elapsed} s"
}

# --- build ----------------------------------------------------------------------

# The release build the images carry (images/release.sh): the node suite
# runs these very binaries, and after make images this is a no-op.
log "building (profile $profile): strake-bench, strake-mock-upstream, strake-proxy, strake-operator"
timeout 1800 images/release.sh -q >&2 ||
	die "cargo build failed"
litellm_ok=0 venv="" portkey_ok=0 gateways=""
if [[ -z $only ]]; then
	# The hyper floor the full profile compares with (proxy/examples/floor.rs).
	if [[ $mode == full ]]; then
		timeout 600 images/release.sh -q -p strake-proxy --example floor >&2 ||
			log "the hyper floor did not build; the profile leaves it out"
	fi
	if venv="$(timeout 1300 bench/venv.sh | tail -n1)" && [[ -x "$venv/bin/litellm" ]]; then
		litellm_ok=1
	else
		skip litellm overhead "the LiteLLM proxy could not be installed from PyPI here (bench/venv.sh failed)"
	fi
	if gateways="$(bench/npm.sh | tail -n1)" && [[ -f "$gateways/node_modules/@portkey-ai/gateway/build/start-server.js" ]]; then
		portkey_ok=1
	else
		skip portkey overhead "the Portkey gateway could not be installed from npm here (bench/npm.sh failed)"
	fi
fi

# --- the machine ----------------------------------------------------------------

# busy_pct SECONDS: how busy the whole machine was over SECONDS, in percent.
busy_pct() {
	local -a a b
	read -ra a </proc/stat
	sleep "$1"
	read -ra b </proc/stat
	local busy=$(((b[1] + b[2] + b[3] + b[6] + b[7] + b[8]) - (a[1] + a[2] + a[3] + a[6] + a[7] + a[8])))
	local idle=$(((b[4] + b[5]) - (a[4] + a[5])))
	echo $((100 * busy / (busy + idle + 1)))
}
# Timings mean little while something else (a build, a test suite) runs on
# these two cores: the full run waits up to 10 minutes for a quiet machine.
background="$(busy_pct 2)"
if [[ $mode == full ]]; then
	for ((i = 0; i < 120 && background > 10; i++)); do
		((i % 12 == 0)) && log "the machine is busy (${background}% CPU used by others); waiting for it to settle"
		sleep 3
		background="$(busy_pct 2)"
	done
fi
log "background CPU before the run: ${background}%"

machine() {
	local cpu kernel nginx_v rustc_v litellm_v="not installed" portkey_v="not installed" commit
	cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -n1)"
	kernel="$(uname -sr)"
	nginx_v="$(nginx -v 2>&1 | sed 's/^nginx version: //')"
	rustc_v="$(rustc -V)"
	((portkey_ok)) && portkey_v="$(node -p 'require(process.argv[1]).version' "$gateways/node_modules/@portkey-ai/gateway/package.json") (npm, Node.js $(node --version))"
	((litellm_ok)) && litellm_v="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"
	commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- proxy 2>/dev/null || echo ' (proxy/ modified)')"
	python3 - "$results/machine.json" <<EOF
import json, sys
items = [
    ["CPU", "$cpu"],
    ["cores", "$(nproc) ($(lscpu | sed -n 's/^Thread(s) per core: *//p') thread(s) per core)"],
    ["memory", "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"],
    ["kernel", "$kernel"],
    ["rustc", "$rustc_v"],
    ["nginx", "$nginx_v (Debian package)"],
    ["LiteLLM", "$litellm_v (PyPI, Python $(python3 -c 'import platform; print(platform.python_version())'))"],
    ["Portkey gateway", "$portkey_v"],
    ["Strake", "commit $commit, $profile build"],
    ["pinning", "$layout"],
    ["background load", "${background}% CPU busy with other work just before the run (0-5% is a quiet machine)"],
    ["load", "$connections keep-alive HTTP/1.1 connections; ${warmup} s warm-up + ${duration} s measured per point"],
]
json.dump({"kind": "machine", "items": items}, open(sys.argv[1], "w"))
EOF
}
machine

# --- the servers ----------------------------------------------------------------

cat >"$work/conf/chat.json" <<'EOF'
{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one short sentence."}]}
EOF
# The mock paces the stream by a model-name suffix, so every proxy forwards
# the same request (LiteLLM maps an alias to it).
stream_body() {
	echo '{"model":"'"$1"'","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Count slowly."}]}'
}
stream_body "gpt-4o-mini@chunks=$stream_chunks,interval-ms=$stream_ms" >"$work/conf/stream.json"
stream_body gpt-4o-mini-stream >"$work/conf/stream-litellm.json"

ports=("$MOCK_PORT" "$KUBE_PROXY_PORT" "$KUBE_PROXY_ADMIN_PORT" "$KUBE_OPERATOR_ADMIN_PORT")
[[ -z $only ]] && ports+=("$NGINX_PORT" "$STRAKE_PORT" "$STRAKE_ADMIN_PORT" "$LITELLM_PORT"
	"$SCALE_PORT" "$SCALE_ADMIN_PORT" "$NOLOG_PORT" "$NOLOG_ADMIN_PORT" "$PORTKEY_PORT")
for port in "${ports[@]}"; do
	port_busy "$port" && die "127.0.0.1:$port is in use; stop whatever listens there first"
done

log "starting the mock upstream (core ${LOAD_CPU:-any})"
start mock startup "http://127.0.0.1:$MOCK_PORT/__mock/health" \
	"${pin_load[@]}" "$bin/strake-mock-upstream" --listen "127.0.0.1:$MOCK_PORT" --no-record \
	--key "$UPSTREAM_KEY" || die "the mock upstream did not start"

if [[ -n $only ]]; then
	dev_stack
	((dev_ok)) && kube_features
	stop mock
	write_report
	exit 0
fi

# nginx: the same job as the proxy minus the token check: swap the
# credential, keep-alive upstream pool, HTTP/1.1 upstream, no buffering.
mkdir -p "$work/nginx"
cat >"$work/conf/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $logs/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        keepalive_requests 1000000;
        keepalive_timeout 75s;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer $UPSTREAM_KEY";
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
EOF
log "starting nginx (core ${SUT_CPU:-any})"
start nginx startup "http://127.0.0.1:$NGINX_PORT/__mock/health" \
	"${pin_sut[@]}" nginx -p "$work/nginx" -e "$logs/nginx-error.log" -c "$work/conf/nginx.conf" -g 'daemon off;' ||
	die "nginx did not start"

# strake-proxy, file mode, 10 tokens (scale varies this below).
gen_tokens() { # COUNT LISTEN ADMIN CONFIG TOKENS
	timeout 300 "$bin/strake-bench" tokens --count "$1" --listen "$2" --admin "$3" \
		--config-out "$4" --tokens-out "$5" --upstream-url "http://127.0.0.1:$MOCK_PORT" \
		--upstream-key "$UPSTREAM_KEY" --sample 1000
}
gen_tokens 10 "127.0.0.1:$STRAKE_PORT" "127.0.0.1:$STRAKE_ADMIN_PORT" \
	"$work/conf/strake.yaml" "$work/conf/strake-tokens.txt"
strake_token="$(head -n1 "$work/conf/strake-tokens.txt")"
# The second token carries the policy a platform team would set: an
# allowed-model list and per-minute limits far above the load, so every
# request takes the glob match and both limiters without being refused.
policy_token="$(sed -n 2p "$work/conf/strake-tokens.txt")"
python3 - "$work/conf/strake.yaml" <<'PY'
import sys
path = sys.argv[1]
lines = open(path).read().split("\n")
at = lines.index("  - name: bench-000001")
up = next(i for i in range(at, len(lines)) if lines[i].startswith("    upstreams:"))
lines[up + 1:up + 1] = [
    '    allowedModels: ["gpt-4o*", "gpt-4.1*", "o3*", "claude-*"]',
    "    limits: {requestsPerMinute: 100000000, tokensPerMinute: 1000000000}",
]
open(path, "w").write("\n".join(lines))
PY
# The benchmark's model priced as a platform team would (prices:), so every
# request takes the priced path.
cat >>"$work/conf/strake.yaml" <<EOF
prices:
  - {provider: openai, model: gpt-4o-mini, input: 0.15, cachedInput: 0.075, output: 0.6}
EOF
log "starting strake-proxy (core ${SUT_CPU:-any})"
strake_ok=1
start strake startup "http://127.0.0.1:$STRAKE_ADMIN_PORT/readyz" \
	"${pin_sut[@]}" "$bin/strake-proxy" --config "$work/conf/strake.yaml" || {
	strake_ok=0
	skip strake overhead "strake-proxy did not become ready (see target/bench/$mode/logs/strake.log)"
}

# The same proxy with its access log filtered out, as nginx runs here
# (access_log off): how much of the difference is the log.
nolog_ok=0
if ((strake_ok)); then
	sed -e "s/^listen: .*/listen: \"127.0.0.1:$NOLOG_PORT\"/" \
		-e "s/^admin: .*/admin: \"127.0.0.1:$NOLOG_ADMIN_PORT\"/" \
		"$work/conf/strake.yaml" >"$work/conf/strake-nolog.yaml"
	start strake-nolog startup "http://127.0.0.1:$NOLOG_ADMIN_PORT/readyz" \
		env RUST_LOG=info,access=off "${pin_sut[@]}" "$bin/strake-proxy" \
		--config "$work/conf/strake-nolog.yaml" && nolog_ok=1
fi

# The same proxy with pricing off (--no-pricing): what pricing costs on the
# request path, measured in the same run.
nopricing_ok=0
if ((strake_ok)); then
	sed -e "s/^listen: .*/listen: \"127.0.0.1:$NOPRICING_PORT\"/" \
		-e "s/^admin: .*/admin: \"127.0.0.1:$NOPRICING_ADMIN_PORT\"/" \
		"$work/conf/strake.yaml" >"$work/conf/strake-nopricing.yaml"
	start strake-nopricing startup "http://127.0.0.1:$NOPRICING_ADMIN_PORT/readyz" \
		"${pin_sut[@]}" "$bin/strake-proxy" --no-pricing \
		--config "$work/conf/strake-nopricing.yaml" && nopricing_ok=1
fi

if ((litellm_ok)); then
	cat >"$work/conf/litellm.yaml" <<EOF
# LiteLLM per its docs: a model_list entry pointing api_base at the mock as
# an OpenAI model, a master key, no database. One worker per core.
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: $UPSTREAM_KEY
  # LiteLLM rejects model names with the mock's knob suffix, so the
  # streaming model gets a plain alias.
  - model_name: gpt-4o-mini-stream
    litellm_params:
      model: openai/gpt-4o-mini@chunks=$stream_chunks,interval-ms=$stream_ms
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: $UPSTREAM_KEY
general_settings:
  master_key: $LITELLM_KEY
litellm_settings:
  set_verbose: false
  telemetry: false
EOF
	log "starting LiteLLM (core ${SUT_CPU:-any}; takes a few seconds)"
	start litellm startup "http://127.0.0.1:$LITELLM_PORT/health/liveliness" \
		env LITELLM_LOG=ERROR LITELLM_LOCAL_MODEL_COST_MAP=True \
		"${pin_sut[@]}" "$venv/bin/litellm" --config "$work/conf/litellm.yaml" \
		--host 127.0.0.1 --port "$LITELLM_PORT" --num_workers 1 || {
		litellm_ok=0
		skip litellm overhead "LiteLLM installed but did not start (see target/bench/$mode/logs/litellm.log)"
	}
fi

if ((portkey_ok)); then
	# The Portkey gateway per its docs: the provider and a custom host (the
	# mock) in headers, the real key as the client's bearer. Its open-source
	# build has no per-identity keys, so, like nginx, it does less than
	# Strake: no token check and no usage accounting.
	log "starting the Portkey gateway (core ${SUT_CPU:-any})"
	start portkey startup "http://127.0.0.1:$PORTKEY_PORT/" \
		env NODE_ENV=production "${pin_sut[@]}" node \
		"$gateways/node_modules/@portkey-ai/gateway/build/start-server.js" \
		--port="$PORTKEY_PORT" --headless || {
		portkey_ok=0
		skip portkey overhead "the Portkey gateway installed but did not start (see target/bench/$mode/logs/portkey.log)"
	}
fi
portkey_headers=(--header "x-portkey-provider: openai"
	--header "x-portkey-custom-host: http://127.0.0.1:$MOCK_PORT/v1")

url_of() {
	case "$1" in
	direct | direct-repeat) echo "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" ;;
	nginx) echo "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" ;;
	strake | strake-policy | strake-h2) echo "http://127.0.0.1:$STRAKE_PORT/v1/chat/completions" ;;
	strake-nolog) echo "http://127.0.0.1:$NOLOG_PORT/v1/chat/completions" ;;
	strake-nopricing) echo "http://127.0.0.1:$NOPRICING_PORT/v1/chat/completions" ;;
	litellm) echo "http://127.0.0.1:$LITELLM_PORT/v1/chat/completions" ;;
	portkey) echo "http://127.0.0.1:$PORTKEY_PORT/v1/chat/completions" ;;
	esac
}
cred_of() {
	case "$1" in
	direct | direct-repeat) echo "$UPSTREAM_KEY" ;;
	nginx) echo "sk-client-credential-nginx-replaces" ;;
	strake | strake-nolog | strake-nopricing | strake-h2) echo "$strake_token" ;;
	strake-policy) echo "$policy_token" ;;
	litellm) echo "$LITELLM_KEY" ;;
	portkey) echo "$UPSTREAM_KEY" ;;
	esac
}
# extra_of TARGET: what a target needs on the load generator beyond the credential.
extra_of() {
	case "$1" in
	portkey) printf '%s\n' "${portkey_headers[@]}" ;;
	strake-h2) echo --http2 ;;
	esac
}
targets=(direct nginx)
((strake_ok)) && targets+=(strake)

# --- 1. overhead ----------------------------------------------------------------

log "overhead: rates ${rates[*]} rps (LiteLLM at ${litellm_rates[*]}, Portkey at ${portkey_rates[*]} only)"
for rate in "${rates[@]}"; do
	these=("${targets[@]}")
	if ((litellm_ok)) && [[ " ${litellm_rates[*]} " == *" $rate "* ]]; then
		these+=(litellm)
	fi
	if ((portkey_ok)) && [[ " ${portkey_rates[*]} " == *" $rate "* ]]; then
		these+=(portkey)
	fi
	((nolog_ok && aa)) && these+=(strake-nolog)
	((nopricing_ok)) && these+=(strake-nopricing)
	# What the features cost, on the same process: a token with a policy,
	# and the same token as strake over HTTP/2.
	((strake_ok)) && these+=(strake-policy strake-h2)
	((aa)) && these+=(direct-repeat)
	for t in "${these[@]}"; do
		mapfile -t extra < <(extra_of "$t")
		load "$t" overhead "$rate" "$(url_of "$t")" --bearer "$(cred_of "$t")" "${extra[@]}"
	done
done

log "saturation: closed loop, $connections connections"
sat_targets=("${targets[@]}")
((litellm_ok)) && sat_targets+=(litellm)
((portkey_ok)) && sat_targets+=(portkey)
for t in "${sat_targets[@]}" $( ((nolog_ok)) && echo strake-nolog); do
	mapfile -t extra < <(extra_of "$t")
	load "$t" saturation 0 "$(url_of "$t")" --bearer "$(cred_of "$t")" "${extra[@]}"
done

# --- 2. streaming ---------------------------------------------------------------

log "streaming: $stream_n streams of $stream_chunks chunks every $stream_ms ms"
for t in "${sat_targets[@]}"; do
	if [[ $t == portkey ]]; then
		# Seen with 1.15.2 on Node.js 20: every streamed chat completion is
		# a 500 ("TypeError: immutable" in its updateHeaders), the fault its
		# issues #1389 and #1550 describe.
		skip portkey streaming "Portkey 1.15.2 answers every streamed request with a 500 on Node.js here (TypeError: immutable; Portkey issues #1389, #1550)"
		continue
	fi
	mapfile -t extra < <(extra_of "$t")
	timeout 300 "${pin_load[@]}" "$bin/strake-bench" stream --target "$t" --experiment streaming \
		--out "$results/stream-$t.json" --url "$(url_of "$t")" \
		--body "$work/conf/stream$([[ $t == litellm ]] && echo -litellm).json" \
		--bearer "$(cred_of "$t")" "${extra[@]}" --streams "$stream_n" --concurrency "$stream_c" ||
		log "stream $t failed"
done

stop litellm
stop portkey
stop nginx
stop strake-nolog
stop strake-nopricing

# --- 5. instructions per request (callgrind) ----------------------------------------

log "profile: instructions per request under callgrind"
timeout 600 bench/profile.sh "${profile_args[@]}" "$work/profile" >&2 || log "profile failed"
cp "$work"/profile/profile-*.json "$results/" 2>/dev/null || true

# --- 4. scale (file mode) ---------------------------------------------------------

if ((strake_ok)); then
	stop strake
	for n in "${scale_counts[@]}"; do
		log "scale: $n tokens"
		cfg="$work/conf/scale-$n.yaml" toks="$work/conf/scale-$n-tokens.txt"
		gen_tokens "$n" "127.0.0.1:$SCALE_PORT" "127.0.0.1:$SCALE_ADMIN_PORT" "$cfg" "$toks"
		if ! start strake "scale-$n" "http://127.0.0.1:$SCALE_ADMIN_PORT/readyz" \
			"${pin_sut[@]}" "$bin/strake-proxy" --config "$cfg"; then
			skip strake "scale-$n" "strake-proxy with $n tokens did not become ready"
			stop strake
			continue
		fi
		load direct "scale-$n" "$scale_rate" "$(url_of direct)" --bearer "$UPSTREAM_KEY"
		load strake "scale-$n" "$scale_rate" "http://127.0.0.1:$SCALE_PORT/v1/chat/completions" \
			--bearer-file "$toks"
		stop strake
	done
fi
# --- 3. revocation and operator scale, 6. kube-mode features (local control plane)

dev_stack
if ((dev_ok)); then
	kube_features
	log "revocation: $revocation_trials trials"
	timeout $((revocation_trials * 70 + 60)) "$bin/strake-bench" revocation --target strake \
		--experiment revocation --out "$results/revocation.json" \
		--namespace strake-bench --mock-url "$MOCK_UPSTREAM_URL" --mock-key "$MOCK_OPENAI_KEY" \
		--proxy-url "$STRAKE_PROXY_URL" --trials "$revocation_trials" --poll-ms 5 \
		--timeout "$revocation_timeout" ||
		log "revocation failed"
	log "operator: $operator_tokens StrakeTokens to Ready"
	timeout 3600 "$bin/strake-bench" operator-scale --target strake --experiment operator \
		--out "$results/operator.json" --namespace strake-bench-scale \
		--mock-url "$MOCK_UPSTREAM_URL" --mock-key "$MOCK_OPENAI_KEY" \
		--count "$operator_tokens" --concurrency 32 --operator-pid-file "$dev/run/operator.pid" \
		--proxy-url "$STRAKE_PROXY_URL" --revocations "$operator_revocations" \
		--revocation-every "$operator_revocation_every" --timeout 900 ||
		log "operator scale failed"

	# A dedicated operator whose only proxy replica is the bench's simulated
	# one; the dev stack's operator is stopped meanwhile, so one operator
	# writes these tokens' status.
	log "usage writes: $usage_tokens active tokens"
	e2e/dev/service.sh "$dev" stop operator >/dev/null 2>&1 || true
	if start usage-operator usage-operator "http://127.0.0.1:$USAGE_OPERATOR_ADMIN_PORT/readyz" \
		"$bin/strake-operator" --proxy-namespace "$STRAKE_NAMESPACE" --endpoint "$STRAKE_PROXY_URL" \
		--admin-addr "127.0.0.1:$USAGE_OPERATOR_ADMIN_PORT" --watch-namespaces strake-bench-usage \
		--allowed-upstream-hosts "$MOCK_UPSTREAM_URL" \
		--proxy-admin-urls "http://127.0.0.1:$USAGE_REPORT_PORT" --usage-interval 2s \
		--usage-writes-per-second 100; then
		timeout 1200 "$bin/strake-bench" usage-writes --target strake --experiment usage-writes \
			--out "$results/usage-writes.json" --namespace strake-bench-usage \
			--count "$usage_tokens" --listen "127.0.0.1:$USAGE_REPORT_PORT" \
			--duration "$usage_window" --bound 100 ||
			log "usage writes failed"
	else
		log "usage writes: the operator did not start"
	fi
	stop usage-operator
	kubectl delete namespace strake-bench-usage --wait=false >/dev/null 2>&1 || true
	e2e/dev/service.sh "$dev" start operator >/dev/null 2>&1 || log "could not restart the dev operator"
fi
stop mock

write_report
