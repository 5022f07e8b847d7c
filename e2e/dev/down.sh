#!/usr/bin/env bash
# down.sh DIR: stops what up.sh DIR started: the operator, the proxies and the
# mock upstream, then the control plane. Keeps DIR (data, logs), so a later
# up.sh DIR resumes the same cluster; remove DIR for a fresh one. Idempotent.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -d "${1:-}" ]] || { log "nothing to stop in '${1:-}'"; exit 0; }
dev_init "$1"

if node_mode; then
	node_stack_down
	exit 0
fi
# The operator first, so that it does not react to the others going away.
for name in operator proxy2 proxy mock; do stop "$name"; done
"$CLUSTER_SCRIPTS/down.sh" "$CLUSTER"
