#!/usr/bin/env bash
# node.sh DIR net-up|up|down|net-down|verify|status: one kubelet node for the
# control plane in DIR, run as root on this machine, everything it changes on
# the host recorded first and restored by net-down.
#
#   net-up    the bridge (node address, pod and Service routes), sysctls,
#             the egress guard; records the host's state in DIR/node/host
#             (run before up.sh: the kube-apiserver listens on the bridge)
#   up        containerd, kubelet, kube-proxy, kube-scheduler; waits until
#             the node is Ready; imports the pause image
#   down      deletes every pod (so the CNI plugin tears their networks
#             down), stops the four processes, unmounts what they mounted
#   net-down  kube-proxy's and the guard's rules, the bridge, sysctls,
#             cgroups and the host directories that were not there before
#   verify    fails unless the host is as net-up found it
#   import TAR...  imports OCI image tarballs into the node's containerd
#   status    ready | running | stopped
#   guard     prints how many packets the egress guard dropped
#
# Network (all in 198.18.0.0/15, reserved for benchmarking): the bridge
# STRAKE_NODE_BRIDGE (strk0) holds the node address (198.18.0.1) and the pod
# range (198.18.0.0/24); Services get 198.18.1.0/24. Nothing listens on the
# machine's external interface, nothing is routed to it: the guard (chain
# STRAKE-NODE-EGRESS, mangle POSTROUTING) drops and counts any packet from a
# pod not bound for 198.18.0.0/15 (the node, a pod, a Service).
#
# Env: STRAKE_NODE_BRIDGE, STRAKE_NODE_NAME (strake-node), the node's ports
# STRAKE_KUBELET_PORT (10250), STRAKE_KUBELET_HEALTHZ_PORT (10248),
# STRAKE_KUBE_PROXY_HEALTHZ_PORT (10256), STRAKE_KUBE_PROXY_METRICS_PORT
# (10249), STRAKE_SCHEDULER_PORT (10259); containerd's socket lives in DIR.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cluster_init "${1:-}"
NODE="$DIR/node"
HOST="$NODE/host"
mkdir -p "$NODE"
node_load() {
	if [[ -f "$NODE/node.env" ]]; then
		# shellcheck source=/dev/null
		source "$NODE/node.env"
	fi
	BRIDGE="${BRIDGE:-${STRAKE_NODE_BRIDGE:-strk0}}"
	NODE_NAME="${NODE_NAME:-${STRAKE_NODE_NAME:-strake-node}}"
	KUBELET_PORT="${KUBELET_PORT:-${STRAKE_KUBELET_PORT:-10250}}"
	KUBELET_HEALTHZ_PORT="${KUBELET_HEALTHZ_PORT:-${STRAKE_KUBELET_HEALTHZ_PORT:-10248}}"
	PROXY_HEALTHZ_PORT="${PROXY_HEALTHZ_PORT:-${STRAKE_KUBE_PROXY_HEALTHZ_PORT:-10256}}"
	PROXY_METRICS_PORT="${PROXY_METRICS_PORT:-${STRAKE_KUBE_PROXY_METRICS_PORT:-10249}}"
	SCHEDULER_PORT="${SCHEDULER_PORT:-${STRAKE_SCHEDULER_PORT:-10259}}"
	# Fixed: the certificates, the kubeconfigs and the recorded sysctls
	# depend on them.
	NODE_IP=198.18.0.1
	POD_CIDR=198.18.0.0/24
	NODE_SERVICE_CIDR=198.18.1.0/24
	GUARD_RANGE=198.18.0.0/15
	GUARD=STRAKE-NODE-EGRESS
	SOCK="$NODE/containerd/containerd.sock"
	printf 'BRIDGE=%q\nNODE_NAME=%q\nKUBELET_PORT=%q\nKUBELET_HEALTHZ_PORT=%q\n' \
		"$BRIDGE" "$NODE_NAME" "$KUBELET_PORT" "$KUBELET_HEALTHZ_PORT" >"$NODE/node.env"
	printf 'PROXY_HEALTHZ_PORT=%q\nPROXY_METRICS_PORT=%q\nSCHEDULER_PORT=%q\n' \
		"$PROXY_HEALTHZ_PORT" "$PROXY_METRICS_PORT" "$SCHEDULER_PORT" >>"$NODE/node.env"
}
node_load

# What the node touches on the host, beyond its own DIR.
# The kubelet changes these at start, the bridge plugin turns on forwarding,
# kube-proxy may touch route_localnet and the conntrack table.
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables
	net.bridge.bridge-nf-call-ip6tables vm.overcommit_memory vm.panic_on_oom
	kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
	kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet
	net.netfilter.nf_conntrack_max)
# Written by the kubelet, containerd and the CNI plugins whatever their flags
# say; removed at net-down unless they were there before.
HOST_DIRS=(/var/log/pods /var/log/containers /var/lib/kubelet /var/lib/cni
	/run/containerd /run/netns /opt/containerd /etc/cni /opt/cni)
CGROUP_NAME=strake-node

need_root() { [[ $(id -u) == 0 ]] || die "the node needs root (network, mounts, cgroups)"; }

# The rules and chains of every iptables table, IPv4 and IPv6, without
# counters; a built-in chain with the default policy and no rules counts as
# absent, so an emptied table compares equal to one never created.
ipt_save() {
	{
		iptables-save | sed 's/^/4 /'
		ip6tables-save | sed 's/^/6 /'
	} 2>/dev/null | sed -E 's/ \[[0-9]+:[0-9]+\]$//' |
		awk '/^[46] \*/ {table = $0; next}
			/^[46] :(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ACCEPT$/ {next}
			/^[46] (-A |:)/ {print table " " $0}'
}

# --- host state -------------------------------------------------------------

host_record() {
	[[ -f "$HOST/recorded" ]] && return 0
	mkdir -p "$HOST"
	local key
	for key in "${SYSCTLS[@]}"; do
		printf '%s=%s\n' "$key" "$(sysctl -n "$key" 2>/dev/null || echo absent)"
	done >"$HOST/sysctls"
	local d
	for d in "${HOST_DIRS[@]}"; do
		[[ -e "$d" ]] && echo "$d"
	done >"$HOST/dirs" || true
	ipt_save >"$HOST/iptables"
	nft list tables 2>/dev/null >"$HOST/nft-tables" || true
	ls /run/netns 2>/dev/null >"$HOST/netns" || true
	touch "$HOST/recorded"
}

sysctl_restore() {
	local line key value
	while IFS= read -r line; do
		key="${line%%=*}" value="${line#*=}"
		[[ "$value" == absent ]] && continue
		if [[ "$(sysctl -n "$key" 2>/dev/null)" != "$value" ]]; then
			sysctl -qw "$key=$value" >/dev/null
		fi
	done <"$HOST/sysctls"
}

# --- network ------------------------------------------------------------------

net_up() {
	need_root
	host_record
	if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
		ip link add "$BRIDGE" type bridge
		# IPv4 only: nothing IPv6 leaves a pod.
		sysctl -qw "net.ipv6.conf.$BRIDGE.disable_ipv6=1"
		ip addr add "$NODE_IP/24" dev "$BRIDGE"
		ip link set "$BRIDGE" up
		# Services: from the host with the node address as source, so the
		# route never points at the external interface.
		ip route add "$NODE_SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
		log "bridge $BRIDGE with $NODE_IP/24"
	fi
	# Routed Service traffic between pods needs forwarding; bridged traffic
	# must pass iptables so kube-proxy's DNAT is undone on the way back.
	sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
	guard_up
}

guard_up() {
	if ! iptables -t mangle -S "$GUARD" >/dev/null 2>&1; then
		iptables -t mangle -N "$GUARD"
		# The node's own address is in the pod range but is not a pod.
		iptables -t mangle -A "$GUARD" -s "$NODE_IP" -j RETURN
		iptables -t mangle -A "$GUARD" -d "$GUARD_RANGE" -j RETURN
		# What was dropped, in the kernel log (dmesg), a few lines a minute.
		iptables -t mangle -A "$GUARD" -m limit --limit 6/min -j LOG --log-prefix "$GUARD: "
		iptables -t mangle -A "$GUARD" -j DROP
	fi
	iptables -t mangle -C POSTROUTING -s "$POD_CIDR" -j "$GUARD" 2>/dev/null ||
		iptables -t mangle -I POSTROUTING -s "$POD_CIDR" -j "$GUARD"
}

# What kube-proxy's --cleanup leaves: the kubelet's KUBE-FIREWALL (it makes
# it whatever makeIPTablesUtilChains says) and any other KUBE-* chain, with
# the rules that jump to them. Only when the host had none before net-up.
kube_chains_remove() {
	[[ -f "$HOST/iptables" ]] && ! grep -q KUBE- "$HOST/iptables" || return 0
	local ipt table rule chain
	for ipt in iptables ip6tables; do
		for table in filter nat mangle; do
			"$ipt" -t "$table" -S >/dev/null 2>&1 || continue
			"$ipt" -t "$table" -S | { grep -E '^-A [A-Z]+ .*-j KUBE-' || true; } | while read -r rule; do
				# shellcheck disable=SC2086 # the rule's words are its arguments
				"$ipt" -t "$table" ${rule/-A/-D} 2>/dev/null || true
			done
			for chain in $("$ipt" -t "$table" -S | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
				"$ipt" -t "$table" -F "$chain" 2>/dev/null || true
			done
			for chain in $("$ipt" -t "$table" -S | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
				"$ipt" -t "$table" -X "$chain" 2>/dev/null || true
			done
		done
	done
}

# Packets the guard dropped since net-up (dmesg shows the first of them).
guard_count() {
	iptables -t mangle -L "$GUARD" -v -x -n | awk '$3 == "DROP" {print $1}'
}

net_down() {
	need_root
	if [[ -x "${BIN:-}/kube-proxy" ]]; then
		"$BIN/kube-proxy" --cleanup --v=0 >>"$LOGS/kube-proxy.log" 2>&1 || true
	fi
	kube_chains_remove
	while iptables -t mangle -D POSTROUTING -s "$POD_CIDR" -j "$GUARD" 2>/dev/null; do :; done
	if iptables -t mangle -S "$GUARD" >/dev/null 2>&1; then
		iptables -t mangle -F "$GUARD"
		iptables -t mangle -X "$GUARD"
	fi
	# veths of pods the kubelet could not stop, then the bridge.
	local veth
	for veth in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
		ip link del "$veth" 2>/dev/null || true
	done
	if ip link show "$BRIDGE" >/dev/null 2>&1; then
		ip link del "$BRIDGE"
	fi
	[[ -f "$HOST/recorded" ]] || return 0
	# Tables kube-proxy created and emptied (nft, when installed, can drop them).
	if command -v nft >/dev/null; then
		nft list tables 2>/dev/null | while read -r _ family name; do
			grep -qxF "table $family $name" "$HOST/nft-tables" && continue
			if [[ -z "$(nft list table "$family" "$name" 2>/dev/null | grep -vE '^\s*(table|chain|type|policy|\}|$)')" ]]; then
				nft delete table "$family" "$name"
			fi
		done
	fi
	sysctl_restore
	cgroups_remove
	local d
	for d in "${HOST_DIRS[@]}"; do
		if [[ -e "$d" ]] && ! grep -qxF "$d" "$HOST/dirs"; then
			[[ -L "$d" ]] || rm -rf "$d"
		fi
	done
	verify && rm -rf "$HOST"
}

# --- processes ----------------------------------------------------------------

pki_node() {
	local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
	sign "node-$NODE_NAME" "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
	sign kube-proxy "/CN=system:kube-proxy" "$client"
	sign kube-scheduler "/CN=system:kube-scheduler" "$client"
	sign kubelet-serving "/CN=$NODE_NAME" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
	kubeconfig "$NODE/kubelet.kubeconfig" "system:node:$NODE_NAME" "node-$NODE_NAME"
	kubeconfig "$NODE/kube-proxy.kubeconfig" system:kube-proxy kube-proxy
	kubeconfig "$NODE/kube-scheduler.kubeconfig" system:kube-scheduler kube-scheduler
}

write_configs() {
	mkdir -p "$NODE/containerd/certs.d/_default" "$NODE/cni/net.d" "$NODE/kubelet" "$NODE/pod-logs"
	# Any pull goes to a port where nothing listens: images come only from
	# imports, never from a registry.
	cat >"$NODE/containerd/certs.d/_default/hosts.toml" <<'EOF'
server = "http://127.0.0.1:9"
[host."http://127.0.0.1:9"]
  capabilities = ["pull", "resolve"]
EOF
	cat >"$NODE/containerd/config.toml" <<EOF
version = 2
root = "$NODE/containerd/root"
state = "$NODE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Without it runc fails every sandbox: no process here may lower its
  # oom_score_adj (no CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$NODE/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$NODE/containerd/certs.d"
EOF
	cat >"$NODE/cni/net.d/10-strake.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "strake-node", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$NODE/cni/ipam",
            "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "198.18.0.10", "gateway": "$NODE_IP"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}}]}
EOF
	: >"$NODE/resolv.conf"
	cat >"$NODE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$SOCK
# cgroup v1 here, and containerd 1.x cannot report its driver.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_NAME
podLogsDir: $NODE/pod-logs
clusterDNS: []
resolvConf: $NODE/resolv.conf
# Local images only: never collected, never pulled.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# No eviction: on a shared disk that fills up the kubelet would evict every
# pod and delete the imported images (the pause image too), which can never
# be pulled back.
evictionHard: {nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%"}
# No KUBE-FIREWALL or canary chains in the host's iptables.
makeIPTablesUtilChains: false
maxPods: 40
EOF
	cat >"$NODE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $NODE/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $POD_CIDR
nodePortAddresses: ["$NODE_IP/32"]
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
# 0: leave the host's conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

cgroups_ensure() {
	local ctl
	for ctl in /sys/fs/cgroup/*/; do
		mkdir -p "$ctl$CGROUP_NAME"
	done
	# A new cpuset has no CPUs or memory nodes until given its parent's.
	local cs=/sys/fs/cgroup/cpuset
	if [[ -d "$cs/$CGROUP_NAME" ]]; then
		[[ -n "$(cat "$cs/$CGROUP_NAME/cpuset.cpus")" ]] || cat "$cs/cpuset.cpus" >"$cs/$CGROUP_NAME/cpuset.cpus"
		[[ -n "$(cat "$cs/$CGROUP_NAME/cpuset.mems")" ]] || cat "$cs/cpuset.mems" >"$cs/$CGROUP_NAME/cpuset.mems"
	fi
}

# Deepest first: a cgroup directory can only be removed once it is empty.
cgroups_remove() {
	local ctl
	for ctl in /sys/fs/cgroup/*/; do
		[[ -d "$ctl$CGROUP_NAME" ]] || continue
		find "$ctl$CGROUP_NAME" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
}

images_import() {
	local tar
	for tar in "$@"; do
		ctr images import "$tar" >/dev/null || die "cannot import $tar"
	done
}

node_running() { pid_of containerd >/dev/null && pid_of kubelet >/dev/null && pid_of kube-proxy >/dev/null && pid_of kube-scheduler >/dev/null; }
node_ready() {
	[[ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
ctr() { command ctr --address "$SOCK" -n k8s.io "$@"; }

node_up() {
	need_root
	[[ -f "$HOST/recorded" ]] || die "run node.sh $DIR net-up first"
	command -v containerd >/dev/null || die "containerd is not installed (e2e/deps.sh installs it)"
	apiserver_ready || die "the kube-apiserver of $DIR is not ready (run up.sh first)"
	# The sandbox image, from the pause command build.sh made.
	mkdir -p "$NODE/images"
	read -r PAUSE_IMAGE _ < <(SOURCE_DATE_EPOCH=0 "$here/../../images/oci.sh" \
		pause "$BIN/pause" 65535:65535 "$NODE/images/pause.oci.tar")
	pki_node
	write_configs
	cgroups_ensure
	launch containerd "" --config "$NODE/containerd/config.toml"
	expect_running=(containerd)
	wait_for "containerd" ctr version
	images_import "$NODE/images/pause.oci.tar"
	launch kubelet "$KUBELET_PORT $KUBELET_HEALTHZ_PORT" \
		--config="$NODE/kubelet/config.yaml" \
		--kubeconfig="$NODE/kubelet.kubeconfig" \
		--root-dir="$NODE/kubelet/root" \
		--cert-dir="$NODE/kubelet/pki" \
		--hostname-override="$NODE_NAME" \
		--node-ip="$NODE_IP" \
		--v=1
	launch kube-proxy "$PROXY_HEALTHZ_PORT $PROXY_METRICS_PORT" \
		--config="$NODE/kube-proxy.yaml" --v=1
	launch kube-scheduler "$SCHEDULER_PORT" \
		--kubeconfig="$NODE/kube-scheduler.kubeconfig" \
		--authentication-kubeconfig="$NODE/kube-scheduler.kubeconfig" \
		--authorization-kubeconfig="$NODE/kube-scheduler.kubeconfig" \
		--bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" \
		--leader-elect=false --cert-dir="$NODE/kube-scheduler"
	expect_running=(containerd kubelet kube-proxy kube-scheduler)
	wait_for "node $NODE_NAME Ready" node_ready
	log "node $NODE_NAME ready ($NODE_IP, pods $POD_CIDR, Services $NODE_SERVICE_CIDR)"
}

# Pods first, while the kubelet runs: it stops their sandboxes, which has the
# CNI plugin remove their veths, addresses and network namespaces.
pods_delete() {
	pid_of kubelet >/dev/null && apiserver_ready || return 0
	# No scheduler: the replacements the ReplicaSets create stay Pending.
	stop kube-scheduler
	kubectl delete pods --all -A --grace-period=1 --wait=false >/dev/null 2>&1 || true
	local i
	for ((i = 0; i < 600; i++)); do
		[[ -z "$(ctr tasks ls -q 2>/dev/null)" ]] && return 0
		sleep 0.1
	done
	log "containers still running after 60 s; stopping them with the runtime"
}

node_down() {
	need_root
	pods_delete
	stop kube-scheduler &
	stop kube-proxy &
	stop kubelet &
	wait
	# Whatever still runs (a crashed kubelet's pods): the shims of this
	# containerd only, found by its socket.
	local pid
	for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $SOCK( |$)" || true); do
		kill -KILL "$pid" 2>/dev/null || true
	done
	stop containerd
	# Deepest first: the kubelet's volumes, containerd's rootfs and shm.
	local mnt
	for mnt in $(awk -v p="$NODE/" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r); do
		umount "$mnt" 2>/dev/null || umount -l "$mnt"
	done
	# Network namespaces of sandboxes that were not stopped cleanly.
	local ns
	for ns in $(ls /run/netns 2>/dev/null); do
		[[ "$ns" == cni-* ]] && ! grep -qxF "$ns" "$HOST/netns" 2>/dev/null || continue
		umount "/run/netns/$ns" 2>/dev/null || true
		rm -f "/run/netns/$ns"
	done
}

# The host as net-up found it: sysctls, iptables (ignoring counters), no
# mount under DIR, no bridge, no cgroup, no new host directory.
verify() {
	local problems=() line key value now d
	while IFS= read -r line; do
		key="${line%%=*}" value="${line#*=}"
		now="$(sysctl -n "$key" 2>/dev/null || echo absent)"
		[[ "$now" == "$value" ]] || problems+=("sysctl $key is $now, was $value")
	done <"$HOST/sysctls"
	if ! diff <(sort "$HOST/iptables") <(ipt_save | sort) >"$HOST/iptables.diff"; then
		problems+=("iptables differ: $(cat "$HOST/iptables.diff")")
	fi
	grep -q " $NODE/" /proc/self/mounts && problems+=("mounts remain under $NODE")
	ip link show "$BRIDGE" >/dev/null 2>&1 && problems+=("bridge $BRIDGE remains")
	ls -d /sys/fs/cgroup/*/"$CGROUP_NAME" >/dev/null 2>&1 && problems+=("cgroups $CGROUP_NAME remain")
	for d in "${HOST_DIRS[@]}"; do
		[[ -e "$d" ]] && ! grep -qxF "$d" "$HOST/dirs" && problems+=("$d was created")
	done
	if ((${#problems[@]})); then
		printf 'node.sh: host not restored: %s\n' "${problems[@]}" >&2
		return 1
	fi
	log "host restored: sysctls, iptables, mounts, bridge, cgroups, directories"
}

case "${2:-}" in
net-up) cluster_lock && net_up ;;
up) config_load 0 && cluster_lock && node_up ;;
down) config_load 0 && cluster_lock && node_down ;;
net-down)
	config_load 0
	cluster_lock
	net_down
	;;
verify) [[ ! -f "$HOST/recorded" ]] || verify ;;
import)
	shift 2
	images_import "$@"
	;;
guard) guard_count ;;
status)
	if node_running && config_load 0 && node_ready; then
		echo ready
	elif node_running; then
		echo running
	else
		echo stopped
		exit 3
	fi
	;;
*) die "usage: $(basename "$0") DIR net-up|up|down|net-down|verify|guard|status" ;;
esac
