#!/usr/bin/env bash
# build.sh OUT: builds the release binaries with images/release.sh (the
# build the benchmarks use, for glibc) and writes strake-operator and
# strake-proxy as OCI image tarballs with oci.sh, without a container engine:
#   OUT/strake-operator.oci.tar, OUT/strake-proxy.oci.tar
#   OUT/images.env   STRAKE_<NAME>_IMAGE (repository), _TAG, _DIGEST, _TAR
# One layer: images/rootfs (passwd and group naming user 65532), the shared
# libraries the binary loads (what ldd resolves it to here: libc, libm,
# libgcc_s and the loader, from Debian's libc6 and libgcc-s1) at the paths
# the loader looks for them, and the binary at /<name>; user 65532:65532;
# the binary is the entrypoint. SOURCE_DATE_EPOCH defaults to the last
# commit's time; the same binaries and libraries give the same digest, and
# the tag is derived from the digest.
#
# build.sh --check OUT: writes every image twice, the second time from
# copies with other mtimes and under another umask, fails unless the digests
# match, fails if the clone's path or cargo's home is in a binary, and fails
# unless the Dockerfiles describe the same image (scratch, images/rootfs,
# the same libraries copied from a build stage on this machine's Debian
# release, the binary, the user and the entrypoint).
#
# Env: CARGO_TARGET_DIR (default target/), STRAKE_BUILD_PROFILE (see
# release.sh), SOURCE_DATE_EPOCH,
# STRAKE_IMAGE_REGISTRY (see oci.sh).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
names=(strake-operator strake-proxy)
user="65532:65532"

log() { printf 'images: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

check=0
if [[ "${1:-}" == --check ]]; then
	check=1
	shift
fi
[[ -n "${1:-}" ]] || die "usage: build.sh [--check] OUT"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
epoch="${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}"

# runtime_libs BINARY: the absolute paths of the shared objects the binary
# loads, the loader included, one a line, sorted.
runtime_libs() {
	local binary="$1" interp resolved
	interp="$(readelf -l "$binary" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
	[[ -n "$interp" ]] || die "$binary names no program interpreter"
	resolved="$(ldd "$binary")"
	if grep -q 'not found' <<<"$resolved"; then
		die "$binary needs a library this machine does not have: $(grep 'not found' <<<"$resolved")"
	fi
	{
		echo "$interp"
		awk '$2 == "=>" && $3 ~ /^\// {print $3}' <<<"$resolved"
	} | sort -u
}

# dockerfile_matches NAME LIBS...: the Dockerfile builds on this machine's
# Debian release, and its runtime stage is the image write_image makes:
# from scratch, images/rootfs, the same libraries (one COPY per directory)
# and the binary copied in, the same user and entrypoint.
dockerfile_matches() {
	local name="$1" file codename
	shift
	file="$root/${name#strake-}/Dockerfile"
	codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
	grep -qx "FROM rust:1-$codename AS build" "$file" ||
		die "${file#"$root/"}: the build stage must be FROM rust:1-$codename AS build, the Debian release whose libraries the images carry"
	local runtime
	runtime="$(awk '/^FROM /{stage=""} {stage = stage $0 "\n"} END{printf "%s", stage}' "$file")"
	local want copies
	copies="$(printf '%s\n' "$@" | awk '
		{ dir = $0; sub(/\/[^\/]*$/, "", dir); files[dir] = files[dir] " " $0; if (!(dir in seen)) { seen[dir] = 1; order[++n] = dir } }
		END { for (i = 1; i <= n; i++) printf "COPY --from=build%s %s/\n", files[order[i]], order[i] }')"
	want="FROM scratch
COPY images/rootfs/ /
$copies
COPY --from=build /$name /$name
USER $user
ENTRYPOINT [\"/$name\"]"
	[[ "$runtime" == "$want" ]] ||
		die "${file#"$root/"}: the runtime stage differs from what images/build.sh writes; expected:
$want
found:
$runtime"
}

# no_build_paths BINARY: neither the clone's path nor cargo's home is in
# the binary, so where it was built does not change it.
no_build_paths() {
	local binary="$1" path
	for path in "$root/" "${CARGO_HOME:-$HOME/.cargo}/"; do
		if grep -qaF "$path" "$binary"; then
			die "$binary contains the build path $path; images/release.sh must remap it"
		fi
	done
}

# packages LIBS...: the Debian packages and versions the libraries come from.
packages() {
	local lib pkg
	for lib in "$@"; do
		# dpkg knows a file by the path its package ships it at, which on a
		# merged-/usr system may be the symlinked one.
		pkg="$({ dpkg -S "$lib" || dpkg -S "$(readlink -f "$lib")"; } 2>/dev/null | head -n1 | cut -d: -f1)" || true
		if [[ -n "$pkg" ]]; then
			echo "$pkg=$(dpkg-query -W -f '${Version}' "$pkg")"
		fi
	done | sort -u | paste -sd' '
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "images/release.sh (the benchmarks' build, profile ${STRAKE_BUILD_PROFILE:-release})"
"$here/release.sh" -q
env_file="$out/images.env"
: >"$env_file.tmp"
for name in "${names[@]}"; do
	binary="${CARGO_TARGET_DIR:-$root/target}/${STRAKE_BUILD_PROFILE:-release}/$name"
	mapfile -t libs < <(runtime_libs "$binary")
	((${#libs[@]})) || die "$name: could not list the libraries $binary loads"
	read -r ref digest < <(SOURCE_DATE_EPOCH="$epoch" "$here/oci.sh" "$name" "$binary" "$user" "$out/$name.oci.tar" "${libs[@]}")
	if ((check)); then
		dockerfile_matches "$name" "${libs[@]}"
		no_build_paths "$binary"
		# The same contents from a copy with another mtime, under another umask.
		cp "$binary" "$work/$name"
		touch -d '2001-02-03 04:05:06' "$work/$name"
		read -r _ again < <(umask 077 && SOURCE_DATE_EPOCH="$epoch" "$here/oci.sh" "$name" "$work/$name" "$user" "$work/$name.oci.tar" "${libs[@]}")
		[[ "$again" == "$digest" ]] || die "$name is not reproducible: $digest, then $again"
		log "$name: $digest twice; its Dockerfile describes the same image"
	fi
	var="$(tr 'a-z-' 'A-Z_' <<<"${name#strake-}")"
	{
		printf 'STRAKE_%s_IMAGE=%s\n' "$var" "${ref%:*}"
		printf 'STRAKE_%s_TAG=%s\n' "$var" "${ref##*:}"
		printf 'STRAKE_%s_DIGEST=%s\n' "$var" "$digest"
		printf 'STRAKE_%s_TAR=%s\n' "$var" "$out/$name.oci.tar"
	} >>"$env_file.tmp"
	log "$name: $ref ($digest, $(($(stat -c %s "$out/$name.oci.tar") / 1024 / 1024)) MiB; ${libs[*]} from $(packages "${libs[@]}"))"
done
mv "$env_file.tmp" "$env_file"
echo "$env_file"
