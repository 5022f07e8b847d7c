#!/usr/bin/env bash
# oci.sh NAME BINARY USER OUT [FILE...]: writes an OCI image tarball OUT
# holding one layer -- the files under images/rootfs (passwd and group),
# each FILE (an absolute path: the binary's shared libraries and loader) at
# its own path, its contents rather than a symlink, and BINARY at /NAME --
# with USER (uid:gid) and /NAME as the entrypoint, named
# REGISTRY/NAME:sha-<first 12 hex digits of the manifest digest>. Prints the
# name and the digest. Tar entries have fixed owners (0:0), modes and mtimes
# (SOURCE_DATE_EPOCH, default 0), so the same files give the same digest,
# whatever its mtime, the checkout's modes or the umask. Needs tar, jq and
# sha256sum, no container engine.
#
# Env: SOURCE_DATE_EPOCH, STRAKE_IMAGE_REGISTRY (default strake.local: a
# name no registry answers, so such an image can only come from an import).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ $# -ge 4 ]] || { echo "usage: oci.sh NAME BINARY USER OUT [FILE...]" >&2; exit 2; }
name="$1" binary="$2" user="$3" out="$4"
shift 4
files=("$@")
registry="${STRAKE_IMAGE_REGISTRY:-strake.local}"
epoch="${SOURCE_DATE_EPOCH:-0}"
created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# blob FILE DIR: moves FILE into the layout DIR under its digest; prints it.
blob() {
	local digest
	digest="$(sha "$1")"
	mv "$1" "$2/blobs/sha256/$digest"
	echo "$digest"
}

# tar_fixed DIR ARCHIVE ENTRIES...: a tar whose bytes depend only on the
# entries' names, contents and modes.
tar_fixed() {
	local dir="$1" archive="$2"
	shift 2
	tar --format=gnu --sort=name --owner=0 --group=0 --numeric-owner \
		--mtime="@$epoch" -C "$dir" -cf "$archive" "$@"
}

write_image() {
	local stage="$work/rootfs" layout="$work/layout"
	mkdir -p "$layout/blobs/sha256"
	cp -r "$here/rootfs" "$stage"
	cp "$binary" "$stage/$name"
	local file
	for file in "${files[@]}"; do
		[[ "$file" == /* ]] || { echo "oci.sh: $file is not an absolute path" >&2; exit 2; }
		mkdir -p "$stage$(dirname "$file")"
		cp -L "$file" "$stage$file"
	done
	# Modes from here, not from the checkout or the umask; shared objects
	# and the loader are mapped executable, like the binary.
	find "$stage" -type d -exec chmod 0755 {} +
	find "$stage" -type f -exec chmod 0644 {} +
	chmod 0755 "$stage/$name"
	for file in "${files[@]}"; do
		chmod 0755 "$stage$file"
	done
	local entries
	mapfile -t entries < <(cd "$stage" && LC_ALL=C ls -A)
	tar_fixed "$stage" "$layout/layer.tar" "${entries[@]}"
	local layer layer_size config config_size manifest manifest_size
	layer_size="$(size "$layout/layer.tar")"
	layer="$(blob "$layout/layer.tar" "$layout")"
	jq -nc --arg created "$created" --arg user "$user" --arg entry "/$name" \
		--arg diff "sha256:$layer" \
		'{created: $created, architecture: "amd64", os: "linux",
		  config: {User: $user, Entrypoint: [$entry]},
		  rootfs: {type: "layers", diff_ids: [$diff]},
		  history: [{created: $created, created_by: "images/oci.sh"}]}' \
		| tr -d '\n' >"$layout/config.json"
	config_size="$(size "$layout/config.json")"
	config="$(blob "$layout/config.json" "$layout")"
	jq -nc --arg config "sha256:$config" --argjson config_size "$config_size" \
		--arg layer "sha256:$layer" --argjson layer_size "$layer_size" \
		'{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
		  config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $config, size: $config_size},
		  layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $layer, size: $layer_size}]}' \
		| tr -d '\n' >"$layout/manifest.json"
	manifest_size="$(size "$layout/manifest.json")"
	manifest="$(blob "$layout/manifest.json" "$layout")"
	local tag="sha-${manifest:0:12}"
	# containerd names the imported image after io.containerd.image.name.
	jq -nc --arg manifest "sha256:$manifest" --argjson size "$manifest_size" \
		--arg ref "$registry/$name:$tag" --arg tag "$tag" \
		'{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
		  manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json",
		    digest: $manifest, size: $size, platform: {architecture: "amd64", os: "linux"},
		    annotations: {"io.containerd.image.name": $ref, "org.opencontainers.image.ref.name": $tag}}]}' \
		| tr -d '\n' >"$layout/index.json"
	printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
	find "$layout" -type d -exec chmod 0755 {} +
	find "$layout" -type f -exec chmod 0644 {} +
	tar_fixed "$layout" "$out.tmp" oci-layout index.json blobs
	mv "$out.tmp" "$out"
	echo "$registry/$name:$tag sha256:$manifest"
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
write_image
