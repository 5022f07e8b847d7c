#!/usr/bin/env bash
# service.sh DIR start|stop|restart|crash|status mock|proxy|proxy2|operator:
# controls one process of the stack that up.sh DIR started, e.g. to test that
# a restart loses nothing. start and restart wait until the process is ready;
# crash kills it with SIGKILL (no draining, no goodbye).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dev_init "${1:-}"
name="${3:-}"
binary "$name" >/dev/null

case "${2:-}" in
start)
	cluster_env
	start "$name"
	wait_ready "$name"
	replica_slice
	;;
stop)
	stop "$name"
	cluster_env
	replica_slice
	;;
crash) crash "$name" ;;
restart)
	cluster_env
	stop "$name"
	start "$name"
	wait_ready "$name"
	replica_slice
	;;
status)
	if pid_of "$name" >/dev/null && ready "$name"; then
		echo ready
	elif pid_of "$name" >/dev/null; then
		echo running
	else
		echo stopped
		exit 3
	fi
	;;
*) die "usage: $(basename "$0") DIR start|stop|restart|crash|status mock|proxy|proxy2|operator" ;;
esac
