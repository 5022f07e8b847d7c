#!/usr/bin/env bash
# npm.sh: makes (or reuses) the benchmark's Node.js gateways,
# $STRAKE_CACHE/bench-npm, from bench/gateways/package-lock.json (npm ci, no
# install scripts). Rebuilt only when the lock file changes. Prints the
# directory's path as its last line; fails (without a partial tree left
# behind) when npm cannot provide the packages.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${STRAKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strake}"
dir="$cache/bench-npm"
lock="$here/gateways/package-lock.json"
stamp="$dir/.lock.sha256"
want="$(sha256sum "$lock" | cut -d' ' -f1)"

command -v npm >/dev/null || {
	echo "bench: npm is not installed" >&2
	exit 1
}
if [[ ! -d "$dir/node_modules" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
	echo "bench: installing the Node.js gateways into $dir" >&2
	rm -rf "$dir"
	mkdir -p "$dir"
	cp "$here/gateways/package.json" "$lock" "$dir/"
	if ! timeout 600 npm ci --prefix "$dir" --ignore-scripts --no-audit --no-fund --loglevel=error >&2; then
		rm -rf "$dir"
		echo "bench: npm could not install $lock" >&2
		exit 1
	fi
	echo "$want" >"$stamp"
fi
echo "$dir"
