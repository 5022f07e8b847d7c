#!/bin/sh
# Prints a fresh OIDC token for Strake, for Claude Code's apiKeyHelper
# (settings.json: {"apiKeyHelper": "/path/to/strake-token-helper.sh"}) or
# any tool that runs a command for its key.
#
# In a pod with a projected serviceAccountToken volume it prints that file
# (STRAKE_TOKEN_FILE, default /var/run/secrets/strake/token); elsewhere it
# asks the API server for a 10-minute token of STRAKE_SERVICE_ACCOUNT
# (kubectl create token; needs create on serviceaccounts/token).
set -eu
file="${STRAKE_TOKEN_FILE:-/var/run/secrets/strake/token}"
if [ -r "$file" ]; then
	exec cat "$file"
fi
exec kubectl create token "${STRAKE_SERVICE_ACCOUNT:?set STRAKE_SERVICE_ACCOUNT or STRAKE_TOKEN_FILE}" \
	--audience "${STRAKE_AUDIENCE:-strake}" --duration 10m \
	${STRAKE_NAMESPACE:+--namespace "$STRAKE_NAMESPACE"}
