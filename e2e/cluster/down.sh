#!/usr/bin/env bash
# down.sh DIR: stops the control plane started by up.sh DIR (SIGTERM, then
# SIGKILL after STRAKE_STOP_TIMEOUT seconds, default 20). Keeps DIR's data,
# so a later up.sh DIR resumes the same cluster; idempotent.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -d "${1:-}" ]] || { log "nothing to stop in '${1:-}'"; exit 0; }
cluster_init "$1"
cluster_lock

# Clients first, etcd last, so the apiserver can shut down cleanly.
stop kube-controller-manager &
stop kube-apiserver &
wait
stop etcd
