#!/usr/bin/env bash
# up.sh DIR: a local Strake stack, started or completed idempotently:
#   - the control plane (etcd, kube-apiserver, kube-controller-manager) in DIR/cluster;
#   - the CRDs, namespace strake-system and the Helm chart (ServiceAccounts, RBAC);
#   - the mock upstream, two proxy replicas (kube mode) and the operator as
#     local processes, the last two authenticated as the chart's ServiceAccounts.
# Writes DIR/env (source it for kubectl, helm and the URLs). Processes that
# already run the current build are left alone; older builds are restarted.
#
# With STRAKE_NODE=1 (make dev-up NODE=1, as root): the control plane gets a
# kubelet node (e2e/cluster/node.sh), the images from STRAKE_IMAGES_ENV
# (make images) are imported into it, and the chart runs as pods: 2 operator
# and 2 proxy replicas, the proxy's Service at a fixed ClusterIP. Only the
# mock upstream runs as a process, on the node's address. DIR remembers the
# mode.
#
# Env: CARGO_TARGET_DIR (binaries from $CARGO_TARGET_DIR/debug, default
# target/), STRAKE_START_TIMEOUT (60 s per process), the ports
# STRAKE_MOCK_PORT (18080), STRAKE_PROXY_PORT (18081), STRAKE_PROXY_ADMIN_PORT
# (18091), a second proxy replica's STRAKE_PROXY2_PORT (18082) and
# STRAKE_PROXY2_ADMIN_PORT (18093), STRAKE_OPERATOR_ADMIN_PORT (18092), and
# the cluster's own (see e2e/cluster/up.sh); STRAKE_USAGE_INTERVAL (1s), how
# often the operator collects usage from the proxy replicas.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "${STRAKE_NODE:-}" == 1 ]]; then
	mkdir -p "${1:?usage: up.sh DIR}"
	touch "$1/node"
fi
dev_init "${1:-}"
# A new stack runs the debug build unless told otherwise, whatever the last one ran.
BINDIR="${STRAKE_DEV_BINDIR:-$(default_bindir)}"
ports_save
began=$(date +%s%N)

if node_mode; then
	node_stack_up
	write_env
	log "up in $((($(date +%s%N) - began) / 1000000)) ms: proxy $ENDPOINT (Service $RELEASE-proxy), mock $MOCK_URL, logs in $LOGS and kubectl logs"
	log "use it with: source $ENV_FILE"
	exit 0
fi

"$CLUSTER_SCRIPTS/up.sh" "$CLUSTER" >/dev/null
cluster_env

# --force-conflicts: Helm may have created the CRDs first (from the chart's
# crds/); the generated files in crds/ are the source of truth.
kubectl apply --server-side --force-conflicts -f "$ROOT/crds/" >/dev/null
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# No nodes run here, so the chart's Deployments get no replicas: the chart
# provides the ServiceAccounts and RBAC, and the processes below use them.
helm upgrade --install "$RELEASE" "$ROOT/charts/strake" -n "$NAMESPACE" \
	--set "endpoint=$ENDPOINT" --set operator.replicas=0 --set proxy.replicas=0 >/dev/null
log "CRDs applied, chart installed in $NAMESPACE"

# A fresh stack keeps real time, whatever a test left behind.
rm -f "$CLOCK_OFFSET_FILE"
issuer_ca_ensure
for name in mock proxy proxy2 operator; do start "$name"; done
wait_ready mock proxy proxy2 operator
replica_slice

write_env

log "up in $((($(date +%s%N) - began) / 1000000)) ms: proxy $ENDPOINT and http://127.0.0.1:$PROXY2_PORT, mock $MOCK_URL, logs in $LOGS"
log "use it with: source $ENV_FILE"
