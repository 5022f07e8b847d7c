#!/usr/bin/env bash
# build.sh OUT: builds strake-operator and strake-proxy for release (static,
# musl) and writes each as an OCI image tarball with oci.sh, without a
# container engine:
#   OUT/strake-operator.oci.tar, OUT/strake-proxy.oci.tar
#   OUT/images.env   STRAKE_<NAME>_IMAGE (repository), _TAG, _DIGEST, _TAR
# One layer: images/rootfs (passwd and group naming user 65532) and the
# binary at /<name>; user 65532:65532; the binary is the entrypoint.
# SOURCE_DATE_EPOCH defaults to the last commit's time; the same binaries
# give the same digest, and the tag is derived from the digest.
#
# build.sh --check OUT: writes every image twice, the second time from
# copies with other mtimes and under another umask, fails unless the digests
# match, and fails unless the Dockerfiles describe the same image (scratch,
# images/rootfs, the binary, the user and the entrypoint).
#
# Env: CARGO_TARGET_DIR (default target/), SOURCE_DATE_EPOCH,
# STRAKE_IMAGE_REGISTRY (see oci.sh).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
target="x86_64-unknown-linux-musl"
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

# The toolchain of the official rust:alpine image in the Dockerfiles targets
# musl natively; here the same target comes from rustup and ring's C from
# Debian's musl-gcc. Build paths are remapped to the Dockerfiles' (/src and
# /usr/local/cargo) so that where the clone lives does not change the binary.
build_binaries() {
	local cargo_home="${CARGO_HOME:-$HOME/.cargo}"
	log "cargo build --release --target $target (${names[*]})"
	# Without SOURCE_DATE_EPOCH: ring's build script (through cc) reruns
	# when it changes, and with it every crate above ring, on every commit.
	env -u SOURCE_DATE_EPOCH \
		CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}" \
		RUSTFLAGS="--remap-path-prefix=$root=/src --remap-path-prefix=$cargo_home=/usr/local/cargo" \
		cargo build -q --release --locked --target "$target" \
		--manifest-path "$root/Cargo.toml" -p strake-operator -p strake-proxy
}

# dockerfile_matches NAME: the Dockerfile's runtime stage is the image
# write_image makes: from scratch, images/rootfs and the binary copied in,
# the same user and entrypoint.
dockerfile_matches() {
	local name="$1" file
	file="$root/${name#strake-}/Dockerfile"
	local runtime
	runtime="$(awk '/^FROM /{stage=""} {stage = stage $0 "\n"} END{printf "%s", stage}' "$file")"
	local want
	want="FROM scratch
COPY images/rootfs/ /
COPY --from=build /$name /$name
USER $user
ENTRYPOINT [\"/$name\"]"
	[[ "$runtime" == "$want" ]] ||
		die "${file#"$root/"}: the runtime stage differs from what images/build.sh writes; expected:
$want
found:
$runtime"
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

build_binaries
env_file="$out/images.env"
: >"$env_file.tmp"
for name in "${names[@]}"; do
	binary="${CARGO_TARGET_DIR:-$root/target}/$target/release/$name"
	if readelf -d "$binary" 2>/dev/null | grep -q NEEDED; then
		die "$binary links shared libraries; the image has none"
	fi
	read -r ref digest < <(SOURCE_DATE_EPOCH="$epoch" "$here/oci.sh" "$name" "$binary" "$user" "$out/$name.oci.tar")
	if ((check)); then
		dockerfile_matches "$name"
		# The same contents from a copy with another mtime, under another umask.
		cp "$binary" "$work/$name"
		touch -d '2001-02-03 04:05:06' "$work/$name"
		read -r _ again < <(umask 077 && SOURCE_DATE_EPOCH="$epoch" "$here/oci.sh" "$name" "$work/$name" "$user" "$work/$name.oci.tar")
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
	log "$name: $ref ($digest, $(($(stat -c %s "$out/$name.oci.tar") / 1024 / 1024)) MiB)"
done
mv "$env_file.tmp" "$env_file"
echo "$env_file"
