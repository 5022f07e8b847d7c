# shellcheck shell=bash
# Shared by up.sh, down.sh, apiserver.sh and node.sh: layout of a cluster
# directory, certificates, kubeconfigs, and starting/stopping the processes.
# Everything listens on 127.0.0.1, except the kube-apiserver of a cluster
# with a node: it listens on the node's bridge address, where pods reach it.

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "$*"; exit 1; }

# cluster_init DIR: absolute paths of everything under DIR.
cluster_init() {
	[[ -n "${1:-}" ]] || die "usage: $(basename "$0") DIR ..."
	mkdir -p "$1"
	DIR="$(cd "$1" && pwd)"
	PKI="$DIR/pki"
	LOGS="$DIR/logs"
	RUN="$DIR/run"
	CONF="$DIR/cluster.env"
	KUBECONFIG_ADMIN="$DIR/admin.kubeconfig"
	KUBECONFIG_KCM="$DIR/kube-controller-manager.kubeconfig"
	mkdir -p "$LOGS" "$RUN"
}

# cluster_lock: one script at a time changes the processes of DIR, so two
# concurrent up.sh runs cannot both start a server. Held until exit.
cluster_lock() {
	exec 8>"$RUN/lock"
	flock 8
}

# Ports and binaries. up.sh takes them from the environment (ports falling
# back to what DIR last used, then to defaults; binaries to build.sh) and
# records them in DIR/cluster.env; the other scripts take DIR/cluster.env
# first, so a restarted apiserver keeps the port and binary that the
# kubeconfigs and the running processes use.
config_load() {
	local prefer_env="$1"
	local env_etcd="${STRAKE_ETCD_PORT:-}" env_peer="${STRAKE_ETCD_PEER_PORT:-}"
	local env_api="${STRAKE_APISERVER_PORT:-}" env_bin="${STRAKE_CLUSTER_BIN:-}"
	local env_addr="${STRAKE_APISERVER_ADDRESS:-}" env_svc="${STRAKE_SERVICE_CIDR:-}"
	ETCD_PORT="" ETCD_PEER_PORT="" APISERVER_PORT="" BIN="" APISERVER_ADDRESS="" SERVICE_CIDR=""
	if [[ -f "$CONF" ]]; then
		# shellcheck source=/dev/null
		source "$CONF"
	fi
	if [[ "$prefer_env" == 1 ]]; then
		ETCD_PORT="${env_etcd:-$ETCD_PORT}"
		ETCD_PEER_PORT="${env_peer:-$ETCD_PEER_PORT}"
		APISERVER_PORT="${env_api:-$APISERVER_PORT}"
		APISERVER_ADDRESS="${env_addr:-$APISERVER_ADDRESS}"
		SERVICE_CIDR="${env_svc:-$SERVICE_CIDR}"
		# Not the recorded BIN: after a pin bump, up.sh must use the new build.
		BIN="$env_bin"
	fi
	ETCD_PORT="${ETCD_PORT:-${env_etcd:-23790}}"
	ETCD_PEER_PORT="${ETCD_PEER_PORT:-${env_peer:-23800}}"
	APISERVER_PORT="${APISERVER_PORT:-${env_api:-16443}}"
	APISERVER_ADDRESS="${APISERVER_ADDRESS:-${env_addr:-127.0.0.1}}"
	SERVICE_CIDR="${SERVICE_CIDR:-${env_svc:-10.96.0.0/16}}"
	BIN="${BIN:-$env_bin}"
	if [[ -z "$BIN" || ! -x "$BIN/kube-apiserver" ]]; then
		BIN="$("$here/build.sh" | tail -n1)"
	fi
	ETCD_URL="http://127.0.0.1:$ETCD_PORT"
	APISERVER_URL="https://$APISERVER_ADDRESS:$APISERVER_PORT"
}

# The first address of the Service range: the ClusterIP of "kubernetes".
service_ip() {
	local net="${SERVICE_CIDR%/*}"
	echo "${net%.*}.$((${net##*.} + 1))"
}

config_save() {
	{
		echo "# Written by up.sh; sourced by the cluster scripts. KUBECONFIG and PATH"
		echo "# make it usable from a shell too: source DIR/cluster.env"
		printf 'ETCD_PORT=%q\nETCD_PEER_PORT=%q\nAPISERVER_PORT=%q\nBIN=%q\n' \
			"$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$BIN"
		printf 'APISERVER_ADDRESS=%q\nSERVICE_CIDR=%q\n' "$APISERVER_ADDRESS" "$SERVICE_CIDR"
		printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_ADMIN"
		# shellcheck disable=SC2016 # $PATH expands when the file is sourced.
		printf 'export PATH=%q:"$PATH"\n' "$BIN"
	} >"$CONF.tmp"
	mv "$CONF.tmp" "$CONF"
}

# --- certificates -----------------------------------------------------------

# One CA signs everything; EC P-256 keys because they are generated instantly.
# Existing files are kept so clients of a persisted DIR stay valid.
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# sign NAME SUBJECT EXTENSIONS: key + certificate NAME.{key,crt} from the CA.
sign() {
	local name="$1" subj="$2" ext="$3"
	[[ -f "$PKI/$name.crt" ]] && return 0
	newkey "$PKI/$name.key"
	printf '%s\n' "$ext" >"$PKI/$name.ext"
	openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
	openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
		-CAcreateserial -days 3650 -sha256 -extfile "$PKI/$name.ext" \
		-out "$PKI/$name.crt.tmp" 2>/dev/null
	rm -f "$PKI/$name.csr" "$PKI/$name.ext"
	mv "$PKI/$name.crt.tmp" "$PKI/$name.crt"
}

pki_ensure() {
	mkdir -p "$PKI"
	chmod 700 "$PKI"
	if [[ ! -f "$PKI/ca.crt" ]]; then
		newkey "$PKI/ca.key"
		openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=strake-e2e-ca" -days 3650 \
			-sha256 -addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign" \
			-out "$PKI/ca.crt.tmp" 2>/dev/null
		mv "$PKI/ca.crt.tmp" "$PKI/ca.crt"
	fi
	local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
	sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$APISERVER_ADDRESS,IP:$(service_ip),DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	sign admin "/O=system:masters/CN=strake-admin" "$client"
	sign kube-controller-manager "/CN=system:kube-controller-manager" "$client"
	# kubectl logs/exec: the apiserver calls the kubelet as a cluster admin.
	sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
	# Service-account token signing pair (apiserver signs and verifies, the
	# controller manager signs the legacy token Secrets).
	if [[ ! -f "$PKI/sa.pub" ]]; then
		newkey "$PKI/sa.key"
		openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub.tmp" 2>/dev/null
		mv "$PKI/sa.pub.tmp" "$PKI/sa.pub"
	fi
}

# kubeconfig FILE USER CERTNAME: credentials embedded so the file can be
# copied anywhere and read by any client library.
kubeconfig() {
	local file="$1" user="$2" cert="$3"
	cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: strake-e2e
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$cert.crt")
    client-key-data: $(base64 -w0 <"$PKI/$cert.key")
contexts:
- name: strake-e2e
  context:
    cluster: strake-e2e
    user: $user
current-context: strake-e2e
EOF
	chmod 600 "$file.tmp"
	mv "$file.tmp" "$file"
}

# --- processes --------------------------------------------------------------

# pid_of NAME: prints the pid if NAME's pid file points at a live process that
# still runs that binary (guards against a recycled pid).
pid_of() {
	local pid exe
	[[ -f "$RUN/$1.pid" ]] || return 1
	pid="$(<"$RUN/$1.pid")"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	exe="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n1)" || return 1
	[[ "$(basename -- "$exe")" == "$1" ]] || return 1
	# A zombie still has an entry but is not serving.
	[[ "$(awk '/^State:/{print $2}' "/proc/$pid/status" 2>/dev/null)" != Z ]] || return 1
	echo "$pid"
}

# port_busy PORT [ADDRESS]: something accepts connections there.
port_busy() { (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

# ports_free NAME "PORTS": unless NAME already runs from DIR, its PORTS (space
# separated) must be free: a clear error beats a server that dies on bind.
ports_free() {
	local port addr=127.0.0.1
	[[ "$1" == kube-apiserver ]] && addr="$APISERVER_ADDRESS"
	pid_of "$1" >/dev/null && return 0
	for port in $2; do
		if port_busy "$port" "$addr"; then
			die "$addr:$port (for $1) is in use by another process; set STRAKE_*_PORT (see README)"
		fi
	done
}

# Checked before anything starts, so a conflict leaves nothing half-started.
preflight() {
	ports_free etcd "$ETCD_PORT $ETCD_PEER_PORT"
	ports_free kube-apiserver "$APISERVER_PORT"
}

# The binary a process runs: containerd is the system's, the rest are built.
binary_of() {
	case "$1" in
	containerd) command -v containerd ;;
	*) echo "$BIN/$1" ;;
	esac
}

# launch NAME "PORTS" ARGS...: detached from this shell's session (setsid) so
# it survives the caller, output appended to DIR/logs/NAME.log.
launch() {
	local name="$1"
	ports_free "$name" "$2"
	shift 2
	if pid_of "$name" >/dev/null; then
		return 0
	fi
	printf '\n=== %s starting %s\n' "$(date -u +%FT%TZ)" "$name" >>"$LOGS/$name.log"
	# Without job control a background child is not a process-group leader, so
	# setsid execs in place and $! is the server's own pid.
	# 8>&-: the server must not inherit (and so keep holding) the cluster lock.
	setsid "$(binary_of "$name")" "$@" </dev/null >>"$LOGS/$name.log" 2>&1 8>&- &
	echo $! >"$RUN/$name.pid"
	log "started $name (pid $!), log: $LOGS/$name.log"
}

start_etcd() {
	local peer="http://127.0.0.1:$ETCD_PEER_PORT"
	# --unsafe-no-fsync: a throwaway test cluster needs speed, not crash
	# durability; a clean stop still leaves the data on disk for the next up.
	launch etcd "$ETCD_PORT $ETCD_PEER_PORT" \
		--name=strake-e2e \
		--data-dir="$DIR/etcd" \
		--listen-client-urls="$ETCD_URL" \
		--advertise-client-urls="$ETCD_URL" \
		--listen-peer-urls="$peer" \
		--initial-advertise-peer-urls="$peer" \
		--initial-cluster="strake-e2e=$peer" \
		--listen-metrics-urls="" \
		--unsafe-no-fsync \
		--log-level=warn
}

start_apiserver() {
	# --endpoint-reconciler-type=none: on loopback the apiserver would publish
	# 127.0.0.1 as the endpoint of the "kubernetes" Service, which endpoint
	# validation rejects, and log that error forever. On a node's bridge
	# address up.sh publishes a fixed EndpointSlice instead: the reconciler
	# would withdraw it on every stop, kube-proxy would reject connections to
	# the Service, and pods would stay cut off until its watches back off and
	# resync (about 50 s here) -- as behind a load balancer, the endpoint of
	# this single apiserver stays put.
	# --shutdown-send-retry-after: on SIGTERM, answer new requests with 429 +
	# Retry-After, drain, then GOAWAY long-running watches within 2 s; by
	# default the HTTP server waits up to 60 s for watches that never end.
	launch kube-apiserver "$APISERVER_PORT" \
		--bind-address="$APISERVER_ADDRESS" \
		--advertise-address="$APISERVER_ADDRESS" \
		--secure-port="$APISERVER_PORT" \
		--etcd-servers="$ETCD_URL" \
		--tls-cert-file="$PKI/apiserver.crt" \
		--tls-private-key-file="$PKI/apiserver.key" \
		--client-ca-file="$PKI/ca.crt" \
		--authorization-mode=Node,RBAC \
		--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultTolerationSeconds,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,ResourceQuota,NodeRestriction \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$PKI/sa.pub" \
		--service-account-signing-key-file="$PKI/sa.key" \
		--service-cluster-ip-range="$SERVICE_CIDR" \
		--endpoint-reconciler-type=none \
		--kubelet-preferred-address-types=InternalIP \
		--kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
		--kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
		--shutdown-send-retry-after=true \
		--cert-dir="$DIR/kube-apiserver/certs"
}

start_controller_manager() {
	# --secure-port=0: nothing needs its metrics/health endpoint, and not
	# serving saves a port and a self-signed certificate.
	# --flex-volume-plugin-dir: the default is created under /usr/libexec.
	launch kube-controller-manager "" \
		--kubeconfig="$KUBECONFIG_KCM" \
		--controllers='*' \
		--use-service-account-credentials=true \
		--service-account-private-key-file="$PKI/sa.key" \
		--root-ca-file="$PKI/ca.crt" \
		--leader-elect=false \
		--secure-port=0 \
		--cert-dir="$DIR/kube-controller-manager/certs" \
		--flex-volume-plugin-dir="$DIR/kube-controller-manager/flexvolume"
}

# stop NAME [SIGNAL]: SIGTERM (or SIGNAL), then SIGKILL after
# STRAKE_STOP_TIMEOUT seconds (default 20).
stop() {
	local name="$1" sig="${2:-TERM}" pid i
	local limit=$((${STRAKE_STOP_TIMEOUT:-20} * 10))
	if ! pid="$(pid_of "$name")"; then
		rm -f "$RUN/$name.pid"
		return 0
	fi
	kill "-$sig" "$pid" 2>/dev/null || true
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

# --- readiness --------------------------------------------------------------

# api PATH [CURL ARGS...]: a request as cluster admin; fails on HTTP errors.
api() {
	local path="$1"
	shift
	curl -fsS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
		"$@" "$APISERVER_URL$path"
}

# api_status PATH: just the HTTP status code of a GET.
api_status() { api "$1" -o /dev/null -w '%{http_code}' 2>/dev/null || true; }

# Processes that wait_for expects to stay alive; set by the caller.
expect_running=()

# wait_for DESCRIPTION COMMAND...: polls every 100 ms, fails after
# STRAKE_START_TIMEOUT seconds (default 120) or as soon as one of
# expect_running died (printing the end of its log).
wait_for() {
	local what="$1" i proc
	shift
	local limit=$((${STRAKE_START_TIMEOUT:-120} * 10))
	for ((i = 0; i < limit; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		for proc in "${expect_running[@]}"; do
			if ! pid_of "$proc" >/dev/null; then
				tail -n 30 "$LOGS/$proc.log" >&2 || true
				die "$proc exited while waiting for $what (log: $LOGS/$proc.log)"
			fi
		done
		sleep 0.1
	done
	die "timed out waiting for $what"
}

apiserver_ready() { [[ "$(api /readyz)" == ok ]]; }

# The "kubernetes" Service's endpoint, for pods, when the apiserver listens
# on a non-loopback address (see start_apiserver).
publish_endpoint() {
	[[ "$APISERVER_ADDRESS" != 127.0.0.1 ]] || return 0
	api /apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes >/dev/null 2>&1 && return 0
	api /apis/discovery.k8s.io/v1/namespaces/default/endpointslices -X POST \
		-H 'Content-Type: application/json' -d '{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
  "metadata":{"name":"kubernetes","namespace":"default","labels":{"kubernetes.io/service-name":"kubernetes"}},
  "addressType":"IPv4","endpoints":[{"addresses":["'"$APISERVER_ADDRESS"'"],"conditions":{"ready":true}}],
  "ports":[{"name":"https","port":'"$APISERVER_PORT"',"protocol":"TCP"}]}' >/dev/null
}
