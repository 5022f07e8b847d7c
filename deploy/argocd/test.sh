#!/usr/bin/env bash
# Runs every Argo CD health check fixture (resource_customizations/*/*/
# health_test.yaml) through its health.lua with a stock Lua interpreter, and
# checks that argocd-cm-health.yaml carries the same Lua. Installs lua5.4 and
# python3-yaml with apt-get when they are missing. Prints "N passed, M failed".
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

apt_install() {
	command -v apt-get >/dev/null || { echo "test.sh: need $*, and there is no apt-get" >&2; exit 1; }
	local sudo=()
	[[ "$(id -u)" == 0 ]] || sudo=(sudo)
	echo "test.sh: installing $*" >&2
	"${sudo[@]}" apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@" >&2
}

lua=""
for candidate in lua5.4 lua5.3 lua; do
	if command -v "$candidate" >/dev/null; then
		lua="$candidate"
		break
	fi
done
if [[ -z "$lua" ]]; then
	apt_install lua5.4
	lua=lua5.4
fi

# PyYAML from whichever python3 has it; Debian's python3-yaml otherwise.
python=""
for candidate in python3 /usr/bin/python3; do
	if "$candidate" -c 'import yaml' 2>/dev/null; then
		python="$candidate"
		break
	fi
done
if [[ -z "$python" ]]; then
	apt_install python3 python3-yaml
	python=/usr/bin/python3
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" "$here/cases_to_lua.py" "$here" "$tmp/cases.lua"
"$lua" "$here/harness.lua" "$tmp/cases.lua"
