#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian machine, and
# nothing when it is all there already: Debian packages (Lua for the Argo CD
# health check test, nginx, wrk and npm (the Node.js gateways) for the
# benchmarks; containerd, runc, the CNI plugins, iptables, nftables, iproute2
# and procps for the node; jq and readelf for the images, whose glibc comes
# from the machine's own libc6 and libgcc-s1), and a Python virtualenv with
# the official SDKs, keyed by the requirements file so it is rebuilt only
# when that changes. The node's Go binaries are built and cached with the
# control plane's (e2e/cluster/build.sh). None of the packages starts a daemon here (no init system); the
# node starts its own containerd.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${STRAKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strake}"
mkdir -p "$cache"

need=()
command -v lua5.4 >/dev/null || need+=(lua5.4)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || [[ -x /usr/sbin/runc ]] || need+=(runc)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || [[ -x /usr/sbin/iptables ]] || need+=(iptables)
command -v nft >/dev/null || [[ -x /usr/sbin/nft ]] || need+=(nftables)
command -v ip >/dev/null || [[ -x /usr/sbin/ip ]] || need+=(iproute2)
command -v sysctl >/dev/null || [[ -x /usr/sbin/sysctl ]] || need+=(procps)
command -v readelf >/dev/null || need+=(binutils)
command -v npm >/dev/null || need+=(npm)
if ((${#need[@]})); then
  echo "deps: installing ${need[*]}" >&2
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

req="$root/e2e/requirements.txt"
stamp="$cache/venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ ! -x "$cache/venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "deps: creating the Python environment in $cache/venv" >&2
  rm -rf "$cache/venv"
  python3 -m venv "$cache/venv"
  "$cache/venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
  echo "$want" >"$stamp"
fi
