#!/usr/bin/env bash
# up.sh DIR: starts (or completes, or leaves alone if already healthy) a local
# control plane -- etcd, kube-apiserver, kube-controller-manager -- whose
# certificates, data, logs and pid files live under DIR. Waits until the
# apiserver is ready and the default ServiceAccount exists, then prints the
# admin kubeconfig path as the last line of stdout.
#
# Env: STRAKE_APISERVER_PORT (16443), STRAKE_ETCD_PORT (23790),
# STRAKE_ETCD_PEER_PORT (23800), STRAKE_CLUSTER_BIN (binaries; default: the
# output of build.sh), STRAKE_START_TIMEOUT (120 s).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cluster_init "${1:-}"
config_load 1
cluster_lock
start=$(date +%s%N)

healthy() {
	pid_of etcd >/dev/null && pid_of kube-apiserver >/dev/null &&
		pid_of kube-controller-manager >/dev/null && [[ -f "$KUBECONFIG_ADMIN" ]] &&
		apiserver_ready
}

if healthy; then
	log "already up ($APISERVER_URL)"
	echo "$KUBECONFIG_ADMIN"
	exit 0
fi

preflight
pki_ensure
kubeconfig "$KUBECONFIG_ADMIN" strake-admin admin
kubeconfig "$KUBECONFIG_KCM" system:kube-controller-manager kube-controller-manager
config_save

# All three start at once: the apiserver retries etcd and the controller
# manager waits for the apiserver by itself, so nobody idles in sequence.
start_etcd
start_apiserver
start_controller_manager
expect_running=(etcd kube-apiserver kube-controller-manager)

wait_for "kube-apiserver /readyz" apiserver_ready
publish_endpoint
# The controller manager's serviceaccount controller creates it.
wait_for "the default ServiceAccount" api /api/v1/namespaces/default/serviceaccounts/default
# On a restart the ServiceAccount already exists, so also prove that the
# controllers run: a ConfigMap whose owner does not exist is removed by the
# garbage collector once it has synced (the namespace controller starts with
# it). Without this, a test right after up.sh could race the controllers.
probe="/api/v1/namespaces/kube-system/configmaps"
probe_name="strake-up-probe-$(date +%s%N)"
api "$probe" -X POST -H 'Content-Type: application/json' -d '{"apiVersion":"v1","kind":"ConfigMap",
  "metadata":{"name":"'"$probe_name"'","ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap",
  "name":"strake-up-probe-missing-owner","uid":"00000000-0000-0000-0000-000000000000"}]}}' >/dev/null
gone() { [[ "$(api_status "$probe/$probe_name")" == 404 ]]; }
wait_for "the garbage collector" gone

log "ready in $((($(date +%s%N) - start) / 1000000)) ms: $APISERVER_URL (source $CONF for KUBECONFIG and PATH)"
echo "$KUBECONFIG_ADMIN"
