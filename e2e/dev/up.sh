#!/usr/bin/env bash
# up.sh DIR: a local Strake stack, started or completed idempotently:
#   - the control plane (etcd, kube-apiserver, kube-controller-manager) in DIR/cluster;
#   - the CRDs, namespace strake-system and the Helm chart (ServiceAccounts, RBAC);
#   - the mock upstream, two proxy replicas (kube mode) and the operator as
#     local processes, the last two authenticated as the chart's ServiceAccounts.
# Writes DIR/env (source it for kubectl, helm and the URLs). Processes that
# already run the current build are left alone; older builds are restarted.
#
# Env: CARGO_TARGET_DIR (binaries from $CARGO_TARGET_DIR/debug, default
# target/), STRAKE_START_TIMEOUT (60 s per process), the ports
# STRAKE_MOCK_PORT (18080), STRAKE_PROXY_PORT (18081), STRAKE_PROXY_ADMIN_PORT
# (18091), a second proxy replica's STRAKE_PROXY2_PORT (18082) and
# STRAKE_PROXY2_ADMIN_PORT (18093), STRAKE_OPERATOR_ADMIN_PORT (18092), and
# the cluster's own (see e2e/cluster/up.sh); STRAKE_USAGE_INTERVAL (2s), how
# often the operator collects usage from the proxy replicas.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dev_init "${1:-}"
ports_save
began=$(date +%s%N)

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

operator_sa="$(service_account operator)"
proxy_sa="$(service_account proxy)"
for name in mock proxy proxy2 operator; do start "$name"; done
wait_ready mock proxy proxy2 operator

# KUBECONFIG, BIN: from the cluster's cluster.env (cluster_env).
# shellcheck disable=SC2153
cat >"$ENV_FILE.tmp" <<ENV
# Written by e2e/dev/up.sh. Usage: source $ENV_FILE
export KUBECONFIG=$KUBECONFIG
export STRAKE_PROXY_URL=$ENDPOINT
export STRAKE_PROXY_ADMIN_URL=http://127.0.0.1:$PROXY_ADMIN_PORT
export STRAKE_PROXY2_URL=http://127.0.0.1:$PROXY2_PORT
export STRAKE_PROXY2_ADMIN_URL=http://127.0.0.1:$PROXY2_ADMIN_PORT
export STRAKE_OPERATOR_ADMIN_URL=http://127.0.0.1:$OPERATOR_ADMIN_PORT
export STRAKE_NAMESPACE=$NAMESPACE
export STRAKE_RELEASE=$RELEASE
export STRAKE_OPERATOR_SA=$operator_sa
export STRAKE_PROXY_SA=$proxy_sa
export MOCK_UPSTREAM_URL=http://127.0.0.1:$MOCK_PORT
export MOCK_OPENAI_KEY=$UPSTREAM_OPENAI_KEY
export MOCK_ANTHROPIC_KEY=$UPSTREAM_ANTHROPIC_KEY
export MOCK_AZURE_KEY=$UPSTREAM_AZURE_KEY
export MOCK_GEMINI_KEY=$UPSTREAM_GEMINI_KEY
export STRAKE_DEV_DIR=$DEV
export STRAKE_CLUSTER_DIR=$CLUSTER
export STRAKE_CLUSTER_BIN=$BIN
export PATH=$BIN:\$PATH
ENV
mv "$ENV_FILE.tmp" "$ENV_FILE"

log "up in $((($(date +%s%N) - began) / 1000000)) ms: proxy $ENDPOINT and http://127.0.0.1:$PROXY2_PORT, mock http://127.0.0.1:$MOCK_PORT, logs in $LOGS"
log "use it with: source $ENV_FILE"
