#!/usr/bin/env bash
# venv.sh: makes (or reuses) the benchmark's Python environment,
# $STRAKE_CACHE/bench-venv, with LiteLLM and matplotlib from
# bench/requirements.txt. Rebuilt only when that file changes. Prints the
# venv's path as its last line; fails (without a partial venv left behind)
# when PyPI cannot provide the packages.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${STRAKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strake}"
venv="$cache/bench-venv"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
	echo "bench: creating the Python environment in $venv (LiteLLM, matplotlib)" >&2
	rm -rf "$venv"
	mkdir -p "$cache"
	python3 -m venv "$venv"
	if ! timeout 1200 "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2; then
		rm -rf "$venv"
		echo "bench: pip could not install $req" >&2
		exit 1
	fi
	echo "$want" >"$stamp"
fi
echo "$venv"
