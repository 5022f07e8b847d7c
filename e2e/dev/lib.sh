# shellcheck shell=bash
# Shared by up.sh, down.sh and service.sh: the layout of a dev directory and
# the three local processes (mock upstream, proxy, operator) that run against
# the control plane in DIR/cluster. Everything listens on 127.0.0.1 only.

dev_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$dev_here/../.." && pwd)"
CLUSTER_SCRIPTS="$ROOT/e2e/cluster"

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "$*"; exit 1; }

NAMESPACE=strake-system
RELEASE=strake

# The fake "real" provider keys the mock upstream accepts. They are what a
# team would otherwise share; the log scan at the end of the e2e suite
# proves none of them reaches a log.
UPSTREAM_OPENAI_KEY=sk-upstream-dev-openai-4f1c9a7be0d2
UPSTREAM_ANTHROPIC_KEY=sk-upstream-dev-anthropic-8e3b6d05a9c7
UPSTREAM_AZURE_KEY=sk-upstream-dev-azure-2a7e4c1f8b93
UPSTREAM_GEMINI_KEY=sk-upstream-dev-gemini-6d0f3b9e5a14

# dev_init DIR: absolute paths of everything under DIR.
dev_init() {
	[[ -n "${1:-}" ]] || die "usage: $(basename "$0") DIR ..."
	mkdir -p "$1"
	DEV="$(cd "$1" && pwd)"
	LOGS="$DEV/logs"
	RUN="$DEV/run"
	CLUSTER="$DEV/cluster"
	ENV_FILE="$DEV/env"
	KUBECONFIGS="$DEV/kubeconfigs"
	mkdir -p "$LOGS" "$RUN"
	ports_load
}

# Ports: from the environment (STRAKE_MOCK_PORT, STRAKE_PROXY_PORT,
# STRAKE_PROXY_ADMIN_PORT, STRAKE_PROXY2_PORT, STRAKE_PROXY2_ADMIN_PORT,
# STRAKE_OPERATOR_ADMIN_PORT), else what DIR last used, else the defaults.
# up.sh records them in DIR/ports.env so that service.sh restarts a process
# where the others expect it. proxy2 is a second proxy replica, so that usage
# is summed over replicas as in a cluster.
ports_load() {
	MOCK_PORT="" PROXY_PORT="" PROXY_ADMIN_PORT="" PROXY2_PORT="" PROXY2_ADMIN_PORT="" OPERATOR_ADMIN_PORT=""
	BINDIR=""
	if [[ -f "$DEV/ports.env" ]]; then
		# shellcheck source=/dev/null
		source "$DEV/ports.env"
	fi
	MOCK_PORT="${STRAKE_MOCK_PORT:-${MOCK_PORT:-18080}}"
	PROXY_PORT="${STRAKE_PROXY_PORT:-${PROXY_PORT:-18081}}"
	PROXY_ADMIN_PORT="${STRAKE_PROXY_ADMIN_PORT:-${PROXY_ADMIN_PORT:-18091}}"
	PROXY2_PORT="${STRAKE_PROXY2_PORT:-${PROXY2_PORT:-18082}}"
	PROXY2_ADMIN_PORT="${STRAKE_PROXY2_ADMIN_PORT:-${PROXY2_ADMIN_PORT:-18093}}"
	OPERATOR_ADMIN_PORT="${STRAKE_OPERATOR_ADMIN_PORT:-${OPERATOR_ADMIN_PORT:-18092}}"
	# The binaries the processes run: the debug build, unless
	# STRAKE_DEV_BINDIR named another when the stack came up (the benchmarks
	# run the stack on their release build). Recorded like the ports, so that
	# service.sh and down.sh find the processes up.sh started.
	BINDIR="${STRAKE_DEV_BINDIR:-${BINDIR:-$(default_bindir)}}"
	ENDPOINT="http://127.0.0.1:$PROXY_PORT"
	# How often the operator collects usage from the replicas: shorter than
	# its 10 s default so that tests and the demo see usage sooner, and so
	# that a spent budget reaches every replica within 2 s (one collection
	# plus the record's publication).
	USAGE_INTERVAL="${STRAKE_USAGE_INTERVAL:-1s}"
	# Seconds the operator's and the proxies' clocks are shifted by (the
	# test-only --dev-clock-offset-file): budget tests roll periods over.
	CLOCK_OFFSET_FILE="$DEV/clock-offset"
	# The CA of the OIDC issuers the tests start on loopback (standing in
	# for GitHub's): the proxies trust it with --issuer-ca-file.
	ISSUER_CA_DIR="$DEV/issuer-ca"
	MOCK_HOST=127.0.0.1
	PROXY_ADMIN_URL="http://127.0.0.1:$PROXY_ADMIN_PORT"
	PROXY2_URL="http://127.0.0.1:$PROXY2_PORT"
	PROXY2_ADMIN_URL="http://127.0.0.1:$PROXY2_ADMIN_PORT"
	OPERATOR_ADMIN_URL="http://127.0.0.1:$OPERATOR_ADMIN_PORT"
	if node_mode; then
		# Pods reach the mock on the node's address; the proxy's Service has
		# a fixed ClusterIP, so the operator's endpoint can name it.
		MOCK_HOST="$NODE_IP"
		ENDPOINT="http://$PROXY_SERVICE_IP"
		# The admin port is on its own Service (<fullname>-proxy-admin).
		PROXY_ADMIN_URL=""
		# Both replicas are behind the Service; no second process.
		PROXY2_URL="" PROXY2_ADMIN_URL=""
		# No Service in front of the operators' admin ports.
		OPERATOR_ADMIN_URL=""
	fi
	MOCK_URL="http://$MOCK_HOST:$MOCK_PORT"
}

# The node variant (see up.sh); DIR/node records it.
NODE_IP=198.18.0.1
PROXY_SERVICE_IP=198.18.1.80
node_mode() { [[ -f "$DEV/node" ]]; }

# issuer_ca_ensure: DIR/issuer-ca/ca.{key,crt}, kept across restarts so a
# running proxy's trust stays valid. EC P-256: generated instantly.
issuer_ca_ensure() {
	[[ -f "$ISSUER_CA_DIR/ca.crt" ]] && return 0
	mkdir -p "$ISSUER_CA_DIR"
	chmod 700 "$ISSUER_CA_DIR"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$ISSUER_CA_DIR/ca.key" 2>/dev/null
	openssl req -x509 -new -key "$ISSUER_CA_DIR/ca.key" -subj "/CN=strake-e2e-issuer-ca" -days 3650 \
		-sha256 -addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-out "$ISSUER_CA_DIR/ca.crt.tmp" 2>/dev/null
	mv "$ISSUER_CA_DIR/ca.crt.tmp" "$ISSUER_CA_DIR/ca.crt"
}

# write_env: DIR/env, for a shell (source it) and for the e2e harness.
# KUBECONFIG, BIN: from the cluster's cluster.env (cluster_env).
# shellcheck disable=SC2153
write_env() {
	cat >"$ENV_FILE.tmp" <<ENV
# Written by e2e/dev/up.sh. Usage: source $ENV_FILE
export KUBECONFIG=$KUBECONFIG
export STRAKE_PROXY_URL=$ENDPOINT
export STRAKE_PROXY_ADMIN_URL=$PROXY_ADMIN_URL
export STRAKE_PROXY2_URL=$PROXY2_URL
export STRAKE_PROXY2_ADMIN_URL=$PROXY2_ADMIN_URL
export STRAKE_OPERATOR_ADMIN_URL=$OPERATOR_ADMIN_URL
export STRAKE_NAMESPACE=$NAMESPACE
export STRAKE_RELEASE=$RELEASE
export STRAKE_OPERATOR_SA=$(service_account operator)
export STRAKE_PROXY_SA=$(service_account proxy)
export MOCK_UPSTREAM_URL=$MOCK_URL
export MOCK_OPENAI_KEY=$UPSTREAM_OPENAI_KEY
export MOCK_ANTHROPIC_KEY=$UPSTREAM_ANTHROPIC_KEY
export MOCK_AZURE_KEY=$UPSTREAM_AZURE_KEY
export MOCK_GEMINI_KEY=$UPSTREAM_GEMINI_KEY
export STRAKE_DEV_DIR=$DEV
export STRAKE_CLUSTER_DIR=$CLUSTER
export STRAKE_CLUSTER_BIN=$BIN
export STRAKE_NODE=$(node_mode && echo 1 || echo 0)
export PATH=$BIN:\$PATH
ENV
	mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# node_stack_up: the control plane with a node, the images imported, the mock
# on the node's address and the chart installed as pods; the install is the
# chart README's, step for step, apart from where the images come from.
node_stack_up() {
	[[ -n "${STRAKE_IMAGES_ENV:-}" && -f "$STRAKE_IMAGES_ENV" ]] ||
		die "STRAKE_IMAGES_ENV names no images.env (run: make images)"
	# shellcheck source=/dev/null
	source "$STRAKE_IMAGES_ENV"
	export STRAKE_APISERVER_ADDRESS="$NODE_IP" STRAKE_SERVICE_CIDR=198.18.1.0/24
	"$CLUSTER_SCRIPTS/node.sh" "$CLUSTER" net-up
	"$CLUSTER_SCRIPTS/up.sh" "$CLUSTER" >/dev/null
	cluster_env
	"$CLUSTER_SCRIPTS/node.sh" "$CLUSTER" up
	"$CLUSTER_SCRIPTS/node.sh" "$CLUSTER" import "$STRAKE_OPERATOR_TAR" "$STRAKE_PROXY_TAR"
	start mock
	wait_ready mock
	kubectl apply --server-side --force-conflicts -f "$ROOT/crds/" >/dev/null
	kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
	helm upgrade --install "$RELEASE" "$ROOT/charts/strake" -n "$NAMESPACE" --wait --timeout 5m \
		--set "endpoint=$ENDPOINT" --set "proxy.service.clusterIP=$PROXY_SERVICE_IP" \
		--set "operator.allowedUpstreamHosts={$MOCK_URL}" \
		--set "operator.image.repository=$STRAKE_OPERATOR_IMAGE" \
		--set "operator.image.tag=$STRAKE_OPERATOR_TAG" --set operator.image.pullPolicy=Never \
		--set "proxy.image.repository=$STRAKE_PROXY_IMAGE" \
		--set "proxy.image.tag=$STRAKE_PROXY_TAG" --set proxy.image.pullPolicy=Never >/dev/null
	log "chart installed in $NAMESPACE: $(kubectl get pods -n "$NAMESPACE" --no-headers | wc -l) pods ready"
}

# node_stack_down: the node first (its pods stopped while the API server
# runs), then the control plane, then the host restored and verified.
node_stack_down() {
	stop mock
	"$CLUSTER_SCRIPTS/node.sh" "$CLUSTER" down
	"$CLUSTER_SCRIPTS/down.sh" "$CLUSTER"
	"$CLUSTER_SCRIPTS/node.sh" "$CLUSTER" net-down
}

default_bindir() { echo "${CARGO_TARGET_DIR:-$ROOT/target}/debug"; }

ports_save() {
	printf 'MOCK_PORT=%s\nPROXY_PORT=%s\nPROXY_ADMIN_PORT=%s\nPROXY2_PORT=%s\nPROXY2_ADMIN_PORT=%s\nOPERATOR_ADMIN_PORT=%s\nBINDIR=%q\n' \
		"$MOCK_PORT" "$PROXY_PORT" "$PROXY_ADMIN_PORT" "$PROXY2_PORT" "$PROXY2_ADMIN_PORT" \
		"$OPERATOR_ADMIN_PORT" "$BINDIR" >"$DEV/ports.env"
}

# cluster_env: KUBECONFIG (admin), PATH (kubectl, helm) and APISERVER_PORT
# from the file the cluster's up.sh wrote.
cluster_env() {
	[[ -f "$CLUSTER/cluster.env" ]] || die "no control plane in $CLUSTER (run up.sh first)"
	# shellcheck source=/dev/null
	source "$CLUSTER/cluster.env"
}

# replica_slice: the two proxy processes as endpoints of the chart's proxy
# admin Service, ready while they run, as its pods would be in a cluster: the
# proxies count each other with --replica-service just as they do there (and
# share each token's rate limits by that count). The API server refuses
# loopback IPs in an EndpointSlice, so the processes are named by FQDN
# (*.localhost), a type the API accepts with a deprecation warning. Only the
# proxies read this slice; the operator is given the admin URLs.
replica_slice() {
	local name ready out endpoints=""
	for name in proxy proxy2; do
		ready=false
		pid_of "$name" >/dev/null && ready=true
		endpoints+="  - addresses: [$name.localhost]
    conditions: {ready: $ready, serving: $ready}
"
	done
	out="$(kubectl apply --server-side --force-conflicts --field-manager=strake-dev-stack -f - 2>&1 <<YAML
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $RELEASE-proxy-admin-processes
  namespace: $NAMESPACE
  labels:
    kubernetes.io/service-name: $RELEASE-proxy-admin
    endpointslice.kubernetes.io/managed-by: dev-stack.strake.sh
addressType: FQDN
endpoints:
$endpoints
YAML
)" || die "cannot write the proxies' EndpointSlice: $out"
}

# --- processes --------------------------------------------------------------

binary() {
	case "$1" in
	mock) echo "$BINDIR/strake-mock-upstream" ;;
	proxy | proxy2) echo "$BINDIR/strake-proxy" ;;
	operator) echo "$BINDIR/strake-operator" ;;
	*) die "unknown service '$1' (mock, proxy, proxy2 or operator)" ;;
	esac
}

# pid_of NAME: the pid if NAME's pid file points at a live, non-zombie process
# still running NAME's binary (guards against a recycled pid).
pid_of() {
	local pid
	[[ -f "$RUN/$1.pid" ]] || return 1
	pid="$(<"$RUN/$1.pid")"
	[[ "$pid" =~ ^[0-9]+$ && -d "/proc/$pid" ]] || return 1
	[[ "$(awk '/^State:/{print $2}' "/proc/$pid/status" 2>/dev/null)" != Z ]] || return 1
	[[ "$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n1)" == "$(binary "$1")" ]] || return 1
	echo "$pid"
}

# current NAME: running, and from the binary now on disk. Cargo replaces a
# rebuilt binary with a new file, so an older process no longer runs it.
current() {
	local pid
	pid="$(pid_of "$1")" || return 1
	[[ "/proc/$pid/exe" -ef "$(binary "$1")" ]]
}

# port_busy PORT [ADDRESS]: something accepts connections there.
port_busy() { (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

# ready NAME: the process's own readiness endpoint answers 200.
ready() {
	local url
	case "$1" in
	mock) url="$MOCK_URL/__mock/health" ;;
	proxy) url="http://127.0.0.1:$PROXY_ADMIN_PORT/readyz" ;;
	proxy2) url="http://127.0.0.1:$PROXY2_ADMIN_PORT/readyz" ;;
	operator) url="http://127.0.0.1:$OPERATOR_ADMIN_PORT/readyz" ;;
	esac
	curl -fsS --max-time 2 -o /dev/null "$url" 2>/dev/null
}

ports_of() {
	case "$1" in
	mock) echo "$MOCK_PORT" ;;
	proxy) echo "$PROXY_PORT $PROXY_ADMIN_PORT" ;;
	proxy2) echo "$PROXY2_PORT $PROXY2_ADMIN_PORT" ;;
	operator) echo "$OPERATOR_ADMIN_PORT" ;;
	esac
}

# service_kubeconfig SA FILE: a kubeconfig that authenticates as the chart's
# ServiceAccount SA, so that the chart's RBAC is what the process gets. The
# token is requested anew on every start (48 h, longer than any session).
service_kubeconfig() {
	local sa="$1" file="$2" token
	mkdir -p "$KUBECONFIGS"
	chmod 700 "$KUBECONFIGS"
	token="$(kubectl create token "$sa" -n "$NAMESPACE" --duration=48h)" ||
		die "cannot create a token for ServiceAccount $NAMESPACE/$sa (is the chart installed?)"
	cat >"$file.tmp" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: strake-dev
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$CLUSTER/pki/ca.crt")
users:
- name: $sa
  user:
    token: $token
contexts:
- name: strake-dev
  context: {cluster: strake-dev, user: $sa, namespace: $NAMESPACE}
current-context: strake-dev
YAML
	chmod 600 "$file.tmp"
	mv "$file.tmp" "$file"
}

# service_account ROLE: the name of the chart's ServiceAccount for the
# operator or the proxy, found by the chart's component label.
service_account() {
	local name
	name="$(kubectl get serviceaccounts -n "$NAMESPACE" \
		-l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=$1" \
		-o jsonpath='{.items[0].metadata.name}' 2>/dev/null)" || true
	[[ -n "$name" ]] || die "the chart created no ServiceAccount labelled app.kubernetes.io/component=$1 in $NAMESPACE"
	echo "$name"
}

# start NAME: starts NAME unless it already runs the current binary (an
# older build is restarted), detached (setsid) so that it outlives the
# caller, appending to DIR/logs/NAME.log. Does not wait; see wait_ready.
start() {
	local name="$1" bin port
	bin="$(binary "$name")"
	if current "$name"; then
		return 0
	fi
	if pid_of "$name" >/dev/null; then
		log "$name runs an older build; restarting it"
		stop "$name"
	fi
	[[ -x "$bin" ]] || die "$bin is not built (run: cargo build --workspace --bins)"
	local addr=127.0.0.1
	[[ "$name" == mock ]] && addr="$MOCK_HOST"
	for port in $(ports_of "$name"); do
		port_busy "$port" "$addr" && die "$addr:$port is in use by another process (needed by $name)"
	done
	local -a env=() args=()
	case "$name" in
	mock)
		# Keys through the environment, so that ps does not show them.
		env=(STRAKE_MOCK_OPENAI_KEY="$UPSTREAM_OPENAI_KEY" STRAKE_MOCK_ANTHROPIC_KEY="$UPSTREAM_ANTHROPIC_KEY"
			STRAKE_MOCK_AZURE_KEY="$UPSTREAM_AZURE_KEY" STRAKE_MOCK_GEMINI_KEY="$UPSTREAM_GEMINI_KEY")
		args=(--listen "$MOCK_HOST:$MOCK_PORT" --verbose)
		;;
	proxy | proxy2)
		service_kubeconfig "$(service_account proxy)" "$KUBECONFIGS/$name.kubeconfig"
		env=(KUBECONFIG="$KUBECONFIGS/$name.kubeconfig")
		local -a ports
		read -r -a ports <<<"$(ports_of "$name")"
		# The cluster's issuer is what the apiserver's --service-account-issuer
		# says (e2e/cluster/lib.sh); keys are refetched after 1 s at most, so
		# the key rotation test does not wait the default 10 s.
		args=(--kube --namespace "$NAMESPACE" --replica-service "$RELEASE-proxy-admin"
			--listen "127.0.0.1:${ports[0]}" --admin "127.0.0.1:${ports[1]}"
			--cluster-issuer https://kubernetes.default.svc.cluster.local
			--issuer-ca-file "$ISSUER_CA_DIR/ca.crt" --jwks-min-refetch 1s
			--dev-clock-offset-file "$CLOCK_OFFSET_FILE")
		;;
	operator)
		service_kubeconfig "$(service_account operator)" "$KUBECONFIGS/operator.kubeconfig"
		env=(KUBECONFIG="$KUBECONFIGS/operator.kubeconfig")
		# The only upstream this stack calls is the mock on loopback, so
		# that is the only host UpstreamKeys may send a key to.
		args=(--proxy-namespace "$NAMESPACE" --endpoint "$ENDPOINT"
			--admin-addr "127.0.0.1:$OPERATOR_ADMIN_PORT"
			--cluster-issuer https://kubernetes.default.svc.cluster.local
			--allowed-upstream-hosts "http://127.0.0.1:$MOCK_PORT"
			--leader-elect --lease-namespace "$NAMESPACE"
			--proxy-admin-urls "http://127.0.0.1:$PROXY_ADMIN_PORT,http://127.0.0.1:$PROXY2_ADMIN_PORT"
			--usage-interval "$USAGE_INTERVAL"
			--dev-clock-offset-file "$CLOCK_OFFSET_FILE")
		;;
	esac
	printf '\n=== %s starting %s\n' "$(date -u +%FT%TZ)" "$name" >>"$LOGS/$name.log"
	# Without job control a background child is not a process-group leader,
	# so setsid execs in place and $! is the service's own pid.
	env "${env[@]}" setsid "$bin" "${args[@]}" </dev/null >>"$LOGS/$name.log" 2>&1 &
	echo $! >"$RUN/$name.pid"
	log "started $name (pid $!), log: $LOGS/$name.log"
}

# wait_ready NAME...: polls every 100 ms until each is ready; fails after
# STRAKE_START_TIMEOUT seconds (default 60) or as soon as one exits.
wait_ready() {
	local name i limit=$((${STRAKE_START_TIMEOUT:-60} * 10))
	for name in "$@"; do
		for ((i = 0; ; i++)); do
			ready "$name" && break
			if ! pid_of "$name" >/dev/null; then
				tail -n 20 "$LOGS/$name.log" >&2 || true
				die "$name exited before it was ready (log: $LOGS/$name.log)"
			fi
			((i < limit)) || die "timed out waiting for $name to be ready (log: $LOGS/$name.log)"
			sleep 0.1
		done
	done
}

# stop NAME: SIGTERM (the proxy drains, the operator releases its lease),
# then SIGKILL after STRAKE_STOP_TIMEOUT seconds (default 20).
stop() {
	local name="$1" pid i limit=$((${STRAKE_STOP_TIMEOUT:-20} * 10))
	if ! pid="$(pid_of "$name")"; then
		rm -f "$RUN/$name.pid"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < limit; i++)); do
		pid_of "$name" >/dev/null || break
		sleep 0.1
	done
	if pid_of "$name" >/dev/null; then
		log "$name (pid $pid) did not exit in time; killing it"
		kill -KILL "$pid" 2>/dev/null || true
		while pid_of "$name" >/dev/null; do sleep 0.1; done
	fi
	rm -f "$RUN/$name.pid"
	log "stopped $name"
}

# crash NAME: SIGKILL, as an out-of-memory kill or a lost node would.
crash() {
	local name="$1" pid
	if pid="$(pid_of "$name")"; then
		kill -KILL "$pid" 2>/dev/null || true
		while pid_of "$name" >/dev/null; do sleep 0.1; done
		log "killed $name (pid $pid)"
	fi
	rm -f "$RUN/$name.pid"
}
