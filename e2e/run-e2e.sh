#!/usr/bin/env bash
# run-e2e.sh [DIR]: Strake's end-to-end suite against the stack that
# e2e/dev/up.sh DIR started (default target/dev; make e2e starts it first).
# The tests that share nothing run concurrently; those that restart the
# operator, a proxy or the kube-apiserver run after them, one at a time;
# the log scan for leaked tokens and keys runs last. Each test binary's
# output is kept in DIR/e2e/NAME.log (and scanned too).
#
# On a stack with a node (make dev-up NODE=1) the chart runs as pods: the
# token story and the SDKs through the proxy's Service, then the node suite
# (install, security context, failover, rollout, outage) alone; before the
# scan, every container's log is fetched with kubectl logs (also the
# previous run of a restarted container) into DIR/e2e/pod-*.log.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$(cd "${1:-$root/target/dev}" 2>/dev/null && pwd)" ||
	{ echo "run-e2e.sh: no stack in '${1:-$root/target/dev}' (run: make dev-up)" >&2; exit 1; }
[[ -f "$dir/env" ]] || { echo "run-e2e.sh: no $dir/env (run: make dev-up)" >&2; exit 1; }
# shellcheck source=/dev/null
source "$dir/env"
export STRAKE_DEV_DIR="$dir"
cd "$root"

out="$dir/e2e"
mkdir -p "$out"
rm -f "$out"/*.log
# The secrets this run handles, for the final scan.
install -m 600 /dev/null "$out/secrets"
# Namespaces of an interrupted earlier run.
kubectl delete namespace -l strake.sh/e2e --wait=false >/dev/null

cargo build -q -p strake-e2e --tests
# The kubectl plugin the plugin suite drives.
cargo build -q -p kubectl-strake
began=$SECONDS
failed=()

# suite NAME[:PART] [TEST ARGS...]: one test binary (or the PART of it the
# arguments select), its output teed to NAME.log (NAME-PART.log).
suite() {
	local name="${1%%:*}" log="${1/:/-}"
	shift
	echo "=== $log"
	if ! cargo test -q -p strake-e2e --test "$name" -- --show-output "$@" 2>&1 | tee "$out/$log.log"; then
		failed+=("$log")
	fi
}

# pod_logs: kubectl logs of every container of every pod, for the scan.
pod_logs() {
	local ns pod containers c
	kubectl get pods -A -o jsonpath='{range .items[*]}{.metadata.namespace} {.metadata.name} {range .spec.containers[*]}{.name},{end}{"\n"}{end}' |
		while read -r ns pod containers; do
			for c in ${containers//,/ }; do
				kubectl logs -n "$ns" "$pod" -c "$c" >"$out/pod-$ns-$pod-$c.log" 2>&1 || true
				kubectl logs -n "$ns" "$pod" -c "$c" --previous >>"$out/pod-$ns-$pod-$c.log" 2>/dev/null || true
			done
		done
}

echo "=== harness unit tests"
cargo test -q -p strake-e2e --lib 2>&1 | tail -n 2
if [[ "${STRAKE_NODE:-0}" == 1 ]]; then
	suite tokens --test-threads=6
	suite sdks
	# The outage last: after it the kubelet's watches back off (up to about
	# 30 s) before it sees a deleted pod again, which the failover and
	# rollout tests would measure instead of Strake.
	suite node --test-threads=1 --skip apiserver_outage
	suite node:outage --test-threads=1 apiserver_outage
	pod_logs
else
	suite tokens --test-threads=6
	suite upstream_keys
	suite kubectl
	suite plugin
	suite helm
	suite sdks
	suite federated
	suite fleet --test-threads=1
	suite disruption --test-threads=1
	suite usage --test-threads=1
	# Shifts the stack's clock (budget periods roll over): alone, last.
	suite budgets --test-threads=1
fi
suite no_leaks

echo
if ((${#failed[@]})); then
	echo "e2e: FAILED: ${failed[*]} (logs in $out, stack logs in $dir/logs and $dir/cluster/logs) after $((SECONDS - began)) s"
	exit 1
fi
echo "e2e: all suites passed in $((SECONDS - began)) s"
