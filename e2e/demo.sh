#!/usr/bin/env bash
# demo.sh DIR: Strake's story on the local stack that e2e/dev/up.sh DIR
# started (make demo does both). A team stores its real keys once, gives
# alice and a CI runner one token each, and revokes alice's with kubectl
# delete while the CI runner keeps working. The mock upstream stands in for
# OpenAI and Anthropic. Re-runnable: alice is simply issued a new token.
set -euo pipefail

dir="${1:-}"
[[ -f "$dir/env" ]] || { echo "demo.sh: no stack in '$dir' (run: make dev-up)" >&2; exit 1; }
# shellcheck source=/dev/null
source "$dir/env"

ns=team-a
began=$(date +%s%N)

if [[ -t 1 ]]; then bold=$'\e[1m' dim=$'\e[2m' off=$'\e[0m'; else bold="" dim="" off=""; fi
step() { printf '\n%s%s%s\n' "$bold" "$*" "$off"; }
# show CMD...: prints the command as a user would type it, then runs it.
show() { printf '%s$ %s%s\n' "$dim" "$*" "$off"; "$@"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# secret_value SECRET KEY: one data key of a Secret in the team namespace.
secret_value() { kubectl get secret "$1" -n "$ns" -o "jsonpath={.data.$2}" | base64 -d; }

# chat TOKEN: an OpenAI chat completion through the proxy; prints "STATUS BODY".
chat() {
	curl -sS --max-time 5 -o "$tmp/body" -w '%{http_code}' "$STRAKE_PROXY_URL/v1/chat/completions" \
		-H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
		-d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello (strake demo)"}]}' || echo 000
}

# answer JQ: after a request line, the start of the answer; fails unless it was a 200.
answer() {
	if ! jq -e 'has("error") | not' "$tmp/body" >/dev/null 2>&1; then
		echo
		echo "demo.sh: the request failed: $(cat "$tmp/body")" >&2
		exit 1
	fi
	jq -r "$1 | .[0:50] + \"…\"" "$tmp/body"
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "${bold}Strake: one revocable token per identity instead of a shared LLM API key.${off}"
echo "Control plane, operator and proxy run locally; KUBECONFIG=$KUBECONFIG"

step "1. The real keys are stored once, in namespace $ns"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
for provider in openai anthropic; do
	key_var="MOCK_${provider^^}_KEY"
	kubectl create secret generic "$provider-upstream" -n "$ns" \
		--from-literal=api-key="${!key_var}" --dry-run=client -o yaml |
		kubectl label --local -f - strake.sh/upstream-key=true -o yaml | kubectl apply -f - >/dev/null
done
echo "${dim}\$ kubectl create secret generic openai-upstream --from-literal=api-key=sk-… (and anthropic-upstream)${off}"
echo "${dim}\$ kubectl label secret openai-upstream strake.sh/upstream-key=true   # opts it in for UpstreamKeys${off}"
cat >"$tmp/upstreams.yaml" <<YAML
apiVersion: strake.sh/v1alpha1
kind: UpstreamKey
metadata: {name: openai, namespace: $ns}
spec:
  provider: openai
  baseUrl: $MOCK_UPSTREAM_URL      # the mock; by default https://api.openai.com
  secretRef: {name: openai-upstream, key: api-key}
---
apiVersion: strake.sh/v1alpha1
kind: UpstreamKey
metadata: {name: anthropic, namespace: $ns}
spec:
  provider: anthropic
  baseUrl: $MOCK_UPSTREAM_URL
  secretRef: {name: anthropic-upstream, key: api-key}
YAML
show kubectl apply -f "$tmp/upstreams.yaml"

step "2. One StrakeToken per identity: an engineer and a CI runner"
# A previous run's alice may still be finishing her deletion.
kubectl wait --for=delete straketoken/alice -n "$ns" --timeout=60s >/dev/null 2>&1 || true
cat >"$tmp/tokens.yaml" <<YAML
apiVersion: strake.sh/v1alpha1
kind: StrakeToken
metadata: {name: alice, namespace: $ns}
spec:
  identity: alice@example.com
  upstreams: [openai, anthropic]
---
apiVersion: strake.sh/v1alpha1
kind: StrakeToken
metadata: {name: ci-runner, namespace: $ns}
spec:
  identity: ci/payments
  upstreams: [openai]
YAML
sed 's/^/    /' "$tmp/tokens.yaml"
show kubectl apply -f "$tmp/tokens.yaml"
show kubectl wait --for=condition=Ready -n "$ns" straketoken/alice straketoken/ci-runner --timeout=60s
show kubectl get straketokens -n "$ns"

step "3. Alice's .env, from her Secret alice-strake (ANTHROPIC_* too, for Claude Code)"
alice="$(secret_value alice-strake token)"
ci="$(secret_value ci-runner-strake token)"
echo "OPENAI_BASE_URL=$(secret_value alice-strake OPENAI_BASE_URL)"
echo "OPENAI_API_KEY=$alice"

step "4. Requests through the proxy"
printf '%-9s %-30s -> %s  ' alice "POST /v1/chat/completions" "$(chat "$alice")"
answer '.choices[0].message.content'
status="$(curl -sS --max-time 5 -o "$tmp/body" -w '%{http_code}' \
	"$(secret_value alice-strake ANTHROPIC_BASE_URL)/v1/messages" \
	-H "Authorization: Bearer $(secret_value alice-strake ANTHROPIC_AUTH_TOKEN)" \
	-H 'anthropic-version: 2023-06-01' -H 'Content-Type: application/json' \
	-d '{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{"role":"user","content":"Say hello (strake demo)"}]}' || echo 000)"
printf '%-9s %-30s -> %s  ' alice "POST /v1/messages (Anthropic)" "$status"
answer '.content[0].text'
printf '%-9s %-30s -> %s  ' ci-runner "POST /v1/chat/completions" "$(chat "$ci")"
answer '.choices[0].message.content'
# What reached the provider: the real keys, never a Strake token.
curl -fsS "$MOCK_UPSTREAM_URL/__mock/requests" >"$tmp/requests"
if jq -e --arg o "Bearer $MOCK_OPENAI_KEY" --arg a "$MOCK_ANTHROPIC_KEY" '
	[.[] | select(.body | contains("strake demo"))] as $mine
	| ($mine | length) > 0
	  and all($mine[]; any(.headers[]; .[1] == $o or .[1] == $a))
	  and all($mine[]; all(.headers[]; .[1] | contains("sk-strk-") | not))' "$tmp/requests" >/dev/null; then
	echo "The upstream received the real keys and never a sk-strk- token."
else
	echo "demo.sh: the upstream did not receive what it should (see $MOCK_UPSTREAM_URL/__mock/requests)" >&2
	exit 1
fi

step "5. Usage per identity, summed over both proxy replicas, in the StrakeToken status"
# One more of alice's requests through the second replica: status.usage sums both.
alice_url="$(secret_value alice-strake OPENAI_BASE_URL)"
curl -sS --max-time 5 -o /dev/null "${alice_url/$STRAKE_PROXY_URL/$STRAKE_PROXY2_URL}/chat/completions" \
	-H "Authorization: Bearer $alice" -H 'Content-Type: application/json' \
	-d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello (strake demo)"}]}' || true
used() { kubectl get straketoken "$1" -n "$ns" -o jsonpath='{.status.usage.lifetime.requests}' 2>/dev/null; }
t0=$(now_ms)
until [[ "$(used alice)" == 3 && "$(used ci-runner)" -ge 1 ]]; do
	(($(now_ms) - t0 < 30000)) || { echo "demo.sh: usage did not reach the status within 30 s" >&2; exit 1; }
	sleep 0.2
done
show kubectl get straketokens -n "$ns"
echo "alice's lifetime usage: $(kubectl get straketoken alice -n "$ns" -o jsonpath='{.status.usage.lifetime}')"

step "6. Alice leaves: revoke her token, nothing else changes"
t0=$(now_ms)
show kubectl delete straketoken alice -n "$ns" --wait=false
until [[ "$(chat "$alice")" == 401 ]]; do
	(($(now_ms) - t0 < 30000)) || { echo "demo.sh: alice's token still works after 30 s" >&2; exit 1; }
	sleep 0.01
done
revoked_ms=$(($(now_ms) - t0))
printf '%-9s %-30s -> 401  %s\n' alice "POST /v1/chat/completions" "$(jq -c . "$tmp/body")"
printf '%-9s %-30s -> %s  ' ci-runner "POST /v1/chat/completions" "$(chat "$ci")"
answer '.choices[0].message.content'


step "7. Chargeback: usage and spend per identity, alice's kept past her revocation"
# The finalizer holds alice until every replica's last counters for her are
# in status, then the Revoked event records her lifetime usage.
kubectl wait --for=delete straketoken/alice -n "$ns" --timeout=60s >/dev/null 2>&1 || true
show kubectl get straketokens -n "$ns"
echo "alice (revoked): $(kubectl get events -n "$ns" --field-selector reason=Revoked,involvedObject.name=alice \
	-o jsonpath='{.items[-1:].note}{.items[-1:].message}' | sed 's/.*lifetime usage: /lifetime usage: /')"

echo
echo "${bold}Revocation took ${revoked_ms} ms${off} from kubectl delete to the first 401 at the proxy."
echo "No shared key was rotated; the CI runner never noticed. (demo ran in $((($(date +%s%N) - began) / 1000000000)) s)"
