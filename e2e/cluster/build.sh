#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kubectl, helm and the
# node's kubelet, kube-proxy, kube-scheduler and pause from the Go modules
# pinned under tools/, into a cache directory keyed by a hash of
# those pins and of this script. Prints the bin directory as the last line of
# stdout; everything else goes to stderr. A cached build returns at once.
#
# Env: STRAKE_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/strake).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="$here/tools"
cache_root="${STRAKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strake}/cluster"

log() { printf 'build.sh: %s\n' "$*" >&2; }

# The key covers everything that decides what gets built: the pinned module
# graphs, the etcd shim, the pause command and this script (ldflags live here).
key="$(cd "$here" && cat build.sh tools/*/go.mod tools/*/go.sum tools/*/main.go |
	sha256sum | cut -c1-16)"
dir="$cache_root/$key"
bin="$dir/bin"
bins=(etcd kube-apiserver kube-controller-manager kubectl helm kubelet kube-proxy kube-scheduler pause)

cached() {
	[[ -f "$dir/complete" ]] || return 1
	local b
	for b in "${bins[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

if cached; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache_root"
# Serialise concurrent builds of the same key (e.g. parallel test jobs); the
# loser of the race finds the finished build once it gets the lock.
exec 9>"$cache_root/$key.lock"
flock 9
if cached; then
	echo "$bin"
	exit 0
fi

# The pins must be used exactly as committed: no go.work from a parent
# directory, no go.mod rewrites, static binaries that run anywhere.
export GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0

# Version and release time of a module as the proxy reports them. The release
# time stands in for the build date so that the binaries are reproducible.
modver() { go -C "$1" list -m -f '{{.Version}}' "$2"; }
modtime() {
	go -C "$1" list -m -f '{{with .Time}}{{.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' "$2"
}

tmp="$dir.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/bin"
trap 'rm -rf "$tmp"' EXIT

# Kubernetes: the same -X variables as hack/lib/version.sh sets, for both
# component-base (servers, /version) and client-go (kubectl's client version).
# The release commit is not known from the module proxy, so gitCommit stays
# empty rather than the "$Format:%H$" placeholder.
kver="$(modver "$tools/kube" k8s.io/kubernetes)"
kdate="$(modtime "$tools/kube" k8s.io/kubernetes)"
kmajor="${kver#v}"
kmajor="${kmajor%%.*}"
kminor="${kver#v*.}"
kminor="${kminor%%.*}"
kflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	kflags+=" -X '$pkg.gitVersion=$kver' -X '$pkg.gitMajor=$kmajor'"
	kflags+=" -X '$pkg.gitMinor=$kminor' -X '$pkg.gitCommit='"
	kflags+=" -X '$pkg.gitTreeState=clean' -X '$pkg.buildDate=$kdate'"
done

# Helm: the variables its Makefile sets, including the Kubernetes version it
# assumes for charts' kubeVersion checks (client-go v0.X.Y -> 1.X).
hver="$(modver "$tools/helm" helm.sh/helm/v3)"
cgo="$(modver "$tools/helm" k8s.io/client-go)"
cgo_minor="${cgo#v0.}"
cgo_minor="${cgo_minor%%.*}"
hflags="-s -w -X helm.sh/helm/v3/internal/version.version=$hver"
hflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
	hflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$cgo_minor"
done

start=$SECONDS
log "building into $bin (kubernetes $kver, helm $hver); a cold build takes a while"
log "etcd"
go -C "$tools/etcd" build -trimpath -ldflags "-s -w" -o "$tmp/bin/etcd" .
log "kube-apiserver, kube-controller-manager, kubectl, kubelet, kube-proxy, kube-scheduler"
# One invocation so they share the compilation of common packages.
go -C "$tools/kube" build -trimpath -ldflags "$kflags" -o "$tmp/bin/" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kubectl \
	k8s.io/kubernetes/cmd/kubelet \
	k8s.io/kubernetes/cmd/kube-proxy \
	k8s.io/kubernetes/cmd/kube-scheduler
log "pause"
go -C "$tools/pause" build -trimpath -ldflags "-s -w" -o "$tmp/bin/pause" .
log "helm"
go -C "$tools/helm" build -trimpath -ldflags "$hflags" -o "$tmp/bin/helm" helm.sh/helm/v3/cmd/helm

# Catch a wrong ldflag path early: the version must be the pinned one.
"$tmp/bin/kubectl" version --client | grep -q "$kver" ||
	{ log "kubectl does not report $kver"; exit 1; }
"$tmp/bin/helm" version --short | grep -q "^$hver" ||
	{ log "helm does not report $hver"; exit 1; }

touch "$tmp/complete"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
log "built in $((SECONDS - start))s"
echo "$bin"
