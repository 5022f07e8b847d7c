#!/usr/bin/env bash
# smoke.sh DIR: checks that the cluster started by up.sh DIR does what the
# end-to-end tests rely on: real version, RBAC, ownerReference garbage
# collection, namespace deletion, helm install. Leaves nothing behind.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cluster_init "${1:-}"
[[ -f "$CONF" ]] || die "no cluster in $DIR (run up.sh first)"
config_load 0
export KUBECONFIG="$KUBECONFIG_ADMIN"
k() { "$BIN/kubectl" "$@"; }

passed=0 failed=0
check() {
	local what="$1"
	shift
	if "$@"; then
		passed=$((passed + 1))
		log "ok: $what"
	else
		failed=$((failed + 1))
		log "FAILED: $what"
	fi
}

# eventually SECONDS COMMAND...: polls until COMMAND succeeds.
eventually() {
	local limit=$(($1 * 10)) i
	shift
	for ((i = 0; i < limit; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}
absent() { ! k get "$@" >/dev/null 2>&1; }

ns="smoke-$(date +%s%N)"
chart="$(mktemp -d)"
trap 'rm -rf "$chart"; k delete ns "$ns" --ignore-not-found --wait=false >/dev/null 2>&1 || true' EXIT

version_matches() {
	local client server
	client="$(k version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | head -n1)"
	server="$(k get --raw /version | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p')"
	[[ -n "$server" && "$server" == "$client" ]] || return 1
	log "server $server"
}
check "server reports the pinned version" version_matches

# RBAC is on: a plain ServiceAccount may not read Secrets, the admin may.
rbac() {
	[[ "$(k auth can-i list secrets --as=system:serviceaccount:default:default || true)" == no ]] &&
		[[ "$(k auth can-i list secrets)" == yes ]]
}
check "RBAC denies a ServiceAccount, allows the admin" rbac

gc() {
	local uid
	k create ns "$ns" >/dev/null
	k -n "$ns" create configmap owner >/dev/null
	uid="$(k -n "$ns" get configmap owner -o jsonpath='{.metadata.uid}')"
	k -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: dependent
  ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: owner, uid: "$uid"}]
---
apiVersion: v1
kind: Secret
metadata:
  name: dependent
  ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: owner, uid: "$uid"}]
stringData: {key: value}
EOF
	k -n "$ns" delete configmap owner >/dev/null
	eventually 30 absent -n "$ns" configmap/dependent secret/dependent
}
check "garbage collector removes dependents of a deleted owner" gc

helm_install() {
	mkdir -p "$chart/templates"
	printf 'apiVersion: v2\nname: smoke\nversion: 0.1.0\n' >"$chart/Chart.yaml"
	printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  v: {{ .Values.v | quote }}\n' \
		>"$chart/templates/cm.yaml"
	"$BIN/helm" install smoke "$chart" -n "$ns" --set v=hi --wait >/dev/null &&
		[[ "$(k -n "$ns" get configmap smoke -o jsonpath='{.data.v}')" == hi ]] &&
		"$BIN/helm" uninstall smoke -n "$ns" >/dev/null
}
check "helm installs and uninstalls a chart" helm_install

ns_delete() {
	k delete ns "$ns" --wait=false >/dev/null && eventually 60 absent ns "$ns"
}
check "namespace deletion completes" ns_delete

echo "smoke: $passed passed, $failed failed"
[[ "$failed" == 0 ]]
