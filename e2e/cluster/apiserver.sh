#!/usr/bin/env bash
# apiserver.sh DIR stop|kill|start|restart|status: controls only the
# kube-apiserver of the cluster in DIR, to test clients through an apiserver
# outage. stop is graceful (SIGTERM), kill is abrupt (SIGKILL); start waits
# until /readyz is ok. etcd and the controller manager keep running.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cluster_init "${1:-}"
[[ -f "$CONF" ]] || die "no cluster in $DIR (run up.sh first)"
config_load 0

start() {
	pid_of etcd >/dev/null || die "etcd is not running in $DIR (run up.sh)"
	start_apiserver
	expect_running=(kube-apiserver)
	wait_for "kube-apiserver /readyz" apiserver_ready
	log "kube-apiserver ready at $APISERVER_URL"
}

case "${2:-}" in
stop) cluster_lock && stop kube-apiserver ;;
kill) cluster_lock && stop kube-apiserver KILL ;;
start) cluster_lock && start ;;
restart) cluster_lock && stop kube-apiserver && start ;;
status)
	if pid_of kube-apiserver >/dev/null && apiserver_ready; then
		echo ready
	elif pid_of kube-apiserver >/dev/null; then
		echo running
	else
		echo stopped
		exit 3
	fi
	;;
*) die "usage: $(basename "$0") DIR stop|kill|start|restart|status" ;;
esac
