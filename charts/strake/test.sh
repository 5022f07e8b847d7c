#!/usr/bin/env bash
# Lints and renders the chart with no values (lint only: helm lint tolerates
# the missing endpoint), and with each ci/*-values.yaml. When $KUBECONFIG and
# $KUBECTL are set, the API server also validates the all-features rendering
# (kubectl apply --dry-run=server), ServiceMonitors and the PrometheusRule
# left out: their CRDs are the Prometheus Operator's, not ours.
#
# Env: HELM (default helm), KUBECTL, KUBECONFIG, STRAKE_TEST_NAMESPACE
# (existing namespace for the server dry-run; default "default").
set -euo pipefail

chart="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
helm="${HELM:-helm}"
passed=0
failed=0

check() {
	local name="$1"
	shift
	local out
	if out="$("$@" 2>&1)"; then
		passed=$((passed + 1))
		printf 'ok    %s\n' "$name"
	else
		failed=$((failed + 1))
		printf 'FAIL  %s\n%s\n' "$name" "$out"
	fi
}

# Rendering must succeed and yield at least one object, each with a kind.
render() {
	local out
	out="$("$helm" template strake "$chart" --namespace strake "$@")"
	grep -q '^kind: ' <<<"$out"
}

check "lint (no values)" "$helm" lint --strict "$chart"
check "lint --set endpoint" "$helm" lint --strict "$chart" --set endpoint=https://llm.example.com
for values in "$chart"/ci/*-values.yaml; do
	name="$(basename "$values")"
	check "lint $name" "$helm" lint --strict "$chart" -f "$values"
	check "template $name" render -f "$values"
done

# The PrometheusRule: off by default; when on, every metric its alerts use
# is one the proxy registers (proxy/src/metrics.rs; counters gain _total).
metrics_src="$chart/../../proxy/src/metrics.rs"
rule_metrics_exist() {
	local out names name base
	# Called as a check's condition, where set -e does not apply: every
	# step returns on failure itself.
	out="$("$helm" template strake "$chart" --namespace strake --set endpoint=https://llm.example.com \
		--set prometheusRule.enabled=true --show-only templates/prometheusrule.yaml)" || return 1
	grep -q '^kind: PrometheusRule$' <<<"$out" || return 1
	grep -q 'alert: StrakeProxyConfigReloadFailing$' <<<"$out" || return 1
	grep -q 'namespace="strake"' <<<"$out" || return 1
	names="$(grep 'expr:' <<<"$out" | grep -o 'strake_[a-z_]*' | sort -u)"
	[[ -n "$names" ]] || return 1
	for name in $names; do
		base="${name#strake_}"
		if ! grep -q "\"$base\"\|\"${base%_total}\"" "$metrics_src"; then
			echo "the alert rules use $name, which the proxy does not export"
			return 1
		fi
	done
}
check "PrometheusRule names only metrics the proxy exports" rule_metrics_exist
no_rule_by_default() {
	! "$helm" template strake "$chart" --set endpoint=https://llm.example.com | grep -q '^kind: PrometheusRule$'
}
check "no PrometheusRule by default" no_rule_by_default

# What must not render.
refuse() {
	if "$helm" template strake "$chart" "$@" >/dev/null 2>&1; then
		return 1
	fi
}
check "refuses a missing endpoint" refuse
check "refuses a non-URL endpoint" refuse --set endpoint=llm.example.com
check "refuses two operators without leader election" refuse \
	--set endpoint=https://llm.example.com --set operator.leaderElection.enabled=false
check "refuses an unknown value" refuse --set endpoint=https://llm.example.com --set proxy.replica=3

if [[ -n "${KUBECONFIG:-}" && -n "${KUBECTL:-}" ]]; then
	ns="${STRAKE_TEST_NAMESPACE:-default}"
	server_dry_run() {
		"$helm" template strake "$chart" --namespace "$ns" --include-crds \
			-f "$chart/ci/all-features-values.yaml" --set serviceMonitor.enabled=false \
			--set prometheusRule.enabled=false |
			"$KUBECTL" apply --dry-run=server -f -
	}
	check "server dry-run all-features-values.yaml" server_dry_run
fi

echo "$passed passed, $failed failed"
[[ "$failed" == 0 ]]
