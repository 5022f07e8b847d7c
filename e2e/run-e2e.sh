#!/usr/bin/env bash
# run-e2e.sh [DIR]: Strake's end-to-end suite against the stack that
# e2e/dev/up.sh DIR started (default target/dev; make e2e starts it first).
# The tests that share nothing run concurrently; those that restart the
# operator, a proxy or the kube-apiserver run after them, one at a time;
# the log scan for leaked tokens and keys runs last. Each test binary's
# output is kept in DIR/e2e/NAME.log (and scanned too).
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

# suite NAME [TEST ARGS...]: one test binary, its output teed to NAME.log.
suite() {
	local name="$1"
	shift
	echo "=== $name"
	if ! cargo test -q -p strake-e2e --test "$name" -- --show-output "$@" 2>&1 | tee "$out/$name.log"; then
		failed+=("$name")
	fi
}

echo "=== harness unit tests"
cargo test -q -p strake-e2e --lib 2>&1 | tail -n 2
suite tokens --test-threads=6
suite upstream_keys
suite kubectl
suite plugin
suite helm
suite sdks
suite disruption --test-threads=1
suite usage --test-threads=1
suite no_leaks

echo
if ((${#failed[@]})); then
	echo "e2e: FAILED: ${failed[*]} (logs in $out, stack logs in $dir/logs and $dir/cluster/logs) after $((SECONDS - began)) s"
	exit 1
fi
echo "e2e: all suites passed in $((SECONDS - began)) s"
