#!/usr/bin/env bash
# release.sh [CARGO BUILD ARGS...]: the one release build, shared by the
# images (images/build.sh) and the benchmarks (bench/run.sh), so that the
# node suite runs the very binaries the benchmarks measure and cargo builds
# them once. Without arguments it builds every release binary either needs
# (strake-operator, strake-proxy, strake-mock-upstream, strake-bench) in one
# invocation: features are unified across the packages of one invocation,
# so building a subset would give other binaries and a second build of the
# dependencies. Arguments that pick packages (-p, --package, --workspace)
# replace that list: cargo build --locked ARGS with the same flags (the
# benchmarks' hyper floor: -p strake-proxy --example floor). Any other
# argument (-q, -v, --timings) is passed on with the default list.
#
# The only flag: cargo's home is remapped to /usr/local/cargo (where the
# Dockerfiles' rust image keeps it), so the user who builds does not change
# the binary. The clone's path needs no remap: cargo hands rustc the
# workspace's sources relative to the workspace root and the release
# profile writes no debuginfo (images/build.sh --check verifies that the
# path is not in the binary). Flags that vary with the clone's path would
# rebuild every dependency on every new clone.
#
# STRAKE_BUILD_PROFILE picks the cargo profile: release (the default) or
# quick (Cargo.toml says when); the binaries land in CARGO_TARGET_DIR/PROFILE.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
args=("$@")
picks=0
for arg in "$@"; do
	case "$arg" in
	-p* | --package | --package=* | --workspace | --all) picks=1 ;;
	esac
done
if ((!picks)); then
	args=(-p strake-operator -p strake-proxy -p strake-mock-upstream -p strake-bench "$@")
fi
RUSTFLAGS="--remap-path-prefix=$cargo_home=/usr/local/cargo" \
	exec cargo build --profile "${STRAKE_BUILD_PROFILE:-release}" --locked --manifest-path "$root/Cargo.toml" "${args[@]}"
