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

# has [GREP ARGS] PATTERN: whether stdin holds a match, read to its end
# first. `producer | grep -q` races: grep exits at its first match, and a
# producer still writing dies of SIGPIPE, which pipefail reports as failure.
has() {
	local in
	in="$(cat)"
	grep -q "$@" <<<"$in"
}

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
operator_metrics_src="$chart/../../operator/src/metrics.rs"
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
		src="$metrics_src"
		if [[ "$base" == operator_* ]]; then
			# The operator registers its metrics under the strake_operator prefix.
			base="${base#operator_}"
			src="$operator_metrics_src"
		fi
		if ! grep -q "\"$base\"\|\"${base%_total}\"" "$src"; then
			echo "the alert rules use $name, which neither binary exports"
			return 1
		fi
	done
}
check "PrometheusRule names only metrics the proxy exports" rule_metrics_exist
no_rule_by_default() {
	! "$helm" template strake "$chart" --set endpoint=https://llm.example.com | has '^kind: PrometheusRule$'
}
check "no PrometheusRule by default" no_rule_by_default
# Prices: a ConfigMap read by both components with --prices, only when
# rows are set.
prices_reach_both_components() {
	local out
	out="$("$helm" template strake "$chart" --namespace strake -f "$chart/ci/all-features-values.yaml")" || return 1
	grep -q '^  name: strake-prices$' <<<"$out" || return 1
	[[ "$(grep -c -- '- --prices=/etc/strake/prices/prices.yaml$' <<<"$out")" == 2 ]] || return 1
	[[ "$(grep -c 'checksum/prices: ' <<<"$out")" == 2 ]] || return 1
	grep -q 'aboveInputTokens: 200000$' <<<"$out" || return 1
	out="$("$helm" template strake "$chart" --namespace strake --set endpoint=https://llm.example.com)" || return 1
	! grep -q -- '--prices\|strake-prices' <<<"$out"
}
check "prices reach the proxy and the operator" prices_reach_both_components

# The dashboard ships as the sidecar's ConfigMap, and names exactly the
# metrics of dashboards/strake.json, which proxy/tests/spend.rs checks
# against a proxy's /metrics after real traffic.
dashboard_ships_as_is() {
	local out
	out="$("$helm" template strake "$chart" --namespace strake -f "$chart/ci/all-features-values.yaml" \
		--show-only templates/grafana-dashboard.yaml)" || return 1
	grep -q '^    grafana_dashboard: "1"$' <<<"$out" || return 1
	diff <(grep -o 'strake_[a-z_]*' <<<"$out" | sort -u) \
		<(grep -o 'strake_[a-z_]*' "$chart/dashboards/strake.json" | sort -u) || return 1
	! "$helm" template strake "$chart" --set endpoint=https://llm.example.com | has 'grafana_dashboard'
}
check "dashboard ConfigMap carries dashboards/strake.json" dashboard_ships_as_is

usage_rules_render() {
	local out
	out="$("$helm" template strake "$chart" --namespace strake --set endpoint=https://llm.example.com \
		--set prometheusRule.enabled=true --set prometheusRule.usage.identityDailySpendUsd=250 \
		--show-only templates/prometheusrule.yaml)" || return 1
	grep -q -- '- name: strake-usage$' <<<"$out" || return 1
	grep -q 'record: strake:identity_spend_usd:increase1d$' <<<"$out" || return 1
	grep -q 'expr: strake:identity_spend_usd:increase1d{namespace="strake"} > 250$' <<<"$out" || return 1
	grep -q 'reason="no_price"' <<<"$out"
}
check "strake-usage rules render with the spend bound" usage_rules_render

# The expiry warning: one value for the operator's flag and the alert.
expiry_warning_renders() {
	local out
	out="$("$helm" template strake "$chart" --namespace strake --set endpoint=https://llm.example.com \
		--set prometheusRule.enabled=true --set operator.expiryWarningDays=3)" || return 1
	grep -q -- '- --expiry-warning=3d$' <<<"$out" || return 1
	grep -q 'alert: StrakeTokenExpiringSoon$' <<<"$out" || return 1
	grep -q 'strake_operator_token_expiry_timestamp_seconds{namespace="strake"}) - time()) < 259200 > 0$' <<<"$out" || return 1
	out="$("$helm" template strake "$chart" --namespace strake --set endpoint=https://llm.example.com)" || return 1
	grep -q -- '- --expiry-warning=7d$' <<<"$out"
}
check "the expiry warning reaches the operator and the alert" expiry_warning_renders

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
check "refuses a negative price" refuse --set endpoint=https://llm.example.com \
	--set-json 'prices=[{"provider":"openai","model":"x","input":-1,"output":1}]'
check "refuses an unknown provider in prices" refuse --set endpoint=https://llm.example.com \
	--set-json 'prices=[{"provider":"openia","model":"x","input":1,"output":1}]'
check "refuses a misspelled price field" refuse --set endpoint=https://llm.example.com \
	--set-json 'prices=[{"provider":"openai","model":"x","input":1,"ouput":1}]'
check "refuses a price row without output" refuse --set endpoint=https://llm.example.com \
	--set-json 'prices=[{"provider":"openai","model":"x","input":1}]'

check "refuses an allowed upstream host with a path" refuse --set endpoint=https://llm.example.com \
	--set 'operator.allowedUpstreamHosts={https://api.openai.com/v1}'
check "refuses an empty allowed upstream host list" refuse --set endpoint=https://llm.example.com \
	--set 'operator.allowedUpstreamHosts=null'

# What must render. show TEMPLATE ARGS...: that template alone, endpoint set.
show() {
	local template="$1"
	shift
	"$helm" template strake "$chart" --namespace strake --set endpoint=https://llm.example.com \
		--show-only "templates/$template" "$@"
}
# doc KIND NAME: the one document of that kind and name read from stdin.
doc() {
	awk -v kind="$1" -v name="$2" '
		/^---/ { if (k && n) printf "%s", body; body = ""; k = n = 0; next }
		{ body = body $0 "\n" }
		$0 == "kind: " kind { k = 1 }
		$0 == "  name: " name { n = 1 }
		END { if (k && n) printf "%s", body }'
}

traffic_service_has_only_the_api_port() {
	local out
	out="$(show proxy-service.yaml --set proxy.service.type=LoadBalancer | grep -v '^#')"
	grep -q '^  type: LoadBalancer$' <<<"$out" &&
		grep -q 'targetPort: http$' <<<"$out" &&
		! grep -Eq 'admin|metrics|9090' <<<"$out"
}
check "the traffic Service (type LoadBalancer) has no admin port" traffic_service_has_only_the_api_port

admin_service_is_cluster_ip() {
	local out
	out="$(show proxy-admin-service.yaml --set proxy.service.type=LoadBalancer)"
	grep -q '^  name: strake-proxy-admin$' <<<"$out" &&
		grep -q '^  type: ClusterIP$' <<<"$out" &&
		grep -q 'targetPort: admin$' <<<"$out"
}
check "the admin Service is ClusterIP whatever proxy.service.type is" admin_service_is_cluster_ip

service_monitors_select_admin_services() {
	local out
	out="$(show servicemonitor.yaml --set serviceMonitor.enabled=true)"
	[[ "$(grep -c '^      strake.sh/service: admin$' <<<"$out")" == 2 ]] &&
		[[ "$(show proxy-admin-service.yaml | grep -c '^    strake.sh/service: admin$')" == 1 ]] &&
		! show proxy-service.yaml | has 'strake.sh/service'
}
check "the ServiceMonitors select the admin Services only" service_monitors_select_admin_services

# By default (networkPolicy.enabled false) an ingress-only policy still
# keeps the proxy's admin port to the scrapers and the operator.
admin_port_admits_scrapers_and_operator() {
	local proxy
	proxy="$(show networkpolicy.yaml "$@" | doc NetworkPolicy strake-proxy)"
	[[ -n "$proxy" ]] &&
		grep -q '^    - from:$' <<<"$proxy" &&
		grep -A12 '^    - from:$' <<<"$proxy" | has 'kubernetes.io/metadata.name: monitoring' &&
		grep -A12 '^    - from:$' <<<"$proxy" | has 'app.kubernetes.io/component: operator' &&
		grep -A14 '^    - from:$' <<<"$proxy" | has 'port: 9090' &&
		[[ "$(grep -c 'port: 9090' <<<"$proxy")" == 1 ]]
}
check "NetworkPolicy by default: proxy admin port from scrapers and the operator only" \
	admin_port_admits_scrapers_and_operator
ingress_only_by_default() {
	local out
	out="$(show networkpolicy.yaml)"
	[[ "$(grep -c '^  policyTypes: \["Ingress"\]$' <<<"$out")" == 2 ]] && ! grep -q 'egress:' <<<"$out"
}
check "NetworkPolicy by default: ingress only" ingress_only_by_default
full_policies_when_enabled() {
	local out
	out="$(show networkpolicy.yaml --set networkPolicy.enabled=true)"
	[[ "$(grep -c '^  policyTypes: \["Ingress","Egress"\]$' <<<"$out")" == 2 ]] &&
		admin_port_admits_scrapers_and_operator --set networkPolicy.enabled=true
}
check "NetworkPolicy enabled: ingress and egress, same admin rule" full_policies_when_enabled
no_policy_when_off() {
	local out
	out="$("$helm" template strake "$chart" --namespace strake --set endpoint=https://llm.example.com \
		--set networkPolicy.restrictIngress=false)" &&
		grep -q '^kind: Deployment$' <<<"$out" && ! grep -q '^kind: NetworkPolicy$' <<<"$out"
}
check "no NetworkPolicy when both are off" no_policy_when_off

operator_gets_the_allowed_hosts() {
	show operator-deployment.yaml | has -F -- \
		'- "--allowed-upstream-hosts=api.openai.com,api.anthropic.com,generativelanguage.googleapis.com,*.openai.azure.com"' &&
		show operator-deployment.yaml --set 'operator.allowedUpstreamHosts={http://vllm.ai.svc:8000}' |
		grep -qF -- '- "--allowed-upstream-hosts=http://vllm.ai.svc:8000"'
}
check "the operator gets operator.allowedUpstreamHosts" operator_gets_the_allowed_hosts

operator_gets_its_concurrency() {
	show operator-deployment.yaml | has -F -- '- --token-concurrency=32' &&
		show operator-deployment.yaml | has -F -- '- --revocation-concurrency=8' &&
		show operator-deployment.yaml --set operator.tokenConcurrency=64 --set operator.revocationConcurrency=2 |
		grep -qF -- '- --token-concurrency=64'
}
check "the operator gets its reconcile and revocation concurrency" operator_gets_its_concurrency
check "refuses a token concurrency of 0" refuse --set endpoint=https://llm.example.com \
	--set operator.tokenConcurrency=0
check "refuses a revocation concurrency above 256" refuse --set endpoint=https://llm.example.com \
	--set operator.revocationConcurrency=257

# Keyless identities: one cluster issuer for both binaries, the proxy bound
# to the issuer-discovery role only when asked, the CA file only with a CA.
federated_settings_reach_both() {
	show operator-deployment.yaml --set federated.clusterIssuer=https://oidc.example.com |
		grep -qF -- '- --cluster-issuer=https://oidc.example.com' &&
		show proxy-deployment.yaml --set federated.clusterIssuer=https://oidc.example.com |
		grep -qF -- '- --cluster-issuer=https://oidc.example.com' &&
		show proxy-rbac.yaml | has -F 'name: system:service-account-issuer-discovery' &&
		! show proxy-rbac.yaml --set federated.issuerDiscovery=false | has 'issuer-discovery' &&
		! show proxy-deployment.yaml | has 'issuer-ca' &&
		show proxy-deployment.yaml --set federated.issuerCA=PEM | has -F -- '- --issuer-ca-file=/etc/strake/issuer-ca/ca.crt'
}
check "federated: cluster issuer, discovery binding and issuer CA" federated_settings_reach_both

# Traffic workers: the proxy's own default unless set; the proxy's bounds.
workers_reach_the_proxy() {
	! show proxy-deployment.yaml | has -- '--workers' &&
		show proxy-deployment.yaml --set proxy.workers=3 | has -F -- '- --workers=3'
}
check "proxy.workers becomes --workers only when set" workers_reach_the_proxy
check "refuses proxy.workers above 64" refuse --set endpoint=https://llm.example.com --set proxy.workers=65
check "refuses an http cluster issuer" refuse --set endpoint=https://llm.example.com \
	--set federated.clusterIssuer=http://kubernetes.default.svc

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
