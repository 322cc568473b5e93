#!/bin/sh
# build.sh: builds the real Kubernetes parts serval's tests run against — kube-apiserver
# and kubectl from the Go module k8s.io/kubernetes, and the etcd server of the same
# release's dependency graph (go.etcd.io/etcd/server/v3) — at the versions pinned in
# go.mod beside this file. Go is only the test bed's: serval itself is Rust.
#
#   integration/k8s/build.sh          build what is missing, print the directory
#   integration/k8s/build.sh --force  rebuild
#   integration/k8s/build.sh --where  print the directory; exit 1 if it is not built
#
# The binaries go to $SERVAL_K8S_DIR (default /var/tmp/serval-k8s/<kubernetes version>-<go.sum
# digest>), outside the clone, so warm runs reuse them; the test bed finds them through
# `serval_integration::kube` (same default, or $SERVAL_K8S_DIR). A cold build takes a few
# minutes on 2 cores (the module download is fast through the Go module proxy).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
[ -d /usr/local/go/bin ] && PATH="/usr/local/go/bin:$PATH" && export PATH
say() { printf 'k8s-build: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "the Go toolchain (go >= 1.26) is missing: it builds the test bed's kube-apiserver"
need=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$HERE/go.mod")
have=$(go env GOVERSION | sed 's/^go//')
# sort -V puts the older first: the installed Go must not be older than go.mod's.
[ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" = "$need" ] \
  || die "go $have is older than the go $need that $HERE/go.mod needs"

version=$(sed -n 's/^\(require\)\{0,1\}[[:space:]]*k8s.io\/kubernetes \(v[0-9.]*\).*/\2/p' "$HERE/go.mod" | head -n1)
[ -n "$version" ] || die "no 'require k8s.io/kubernetes vX.Y.Z' line in $HERE/go.mod"
digest=$(cat "$HERE/go.mod" "$HERE/go.sum" | sha256sum | cut -c1-12)
OUT="${SERVAL_K8S_DIR:-/var/tmp/serval-k8s/$version-$digest}"

built() { [ -x "$OUT/kube-apiserver" ] && [ -x "$OUT/kubectl" ] && [ -x "$OUT/etcd" ]; }
if [ "${1:-}" = --where ]; then
  echo "$OUT"
  built || die "not built: run $0"
  exit 0
fi
if [ "${1:-}" != --force ] && built; then
  echo "$OUT"
  exit 0
fi
mkdir -p "$OUT.tmp"
cd "$HERE"
export GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=readonly" CGO_ENABLED=0
t0=$(date +%s)
say "building kube-apiserver and kubectl $version, etcd $(sed -n 's/^[[:space:]]*go.etcd.io\/etcd\/server\/v3 \(v[0-9.]*\).*/\1/p' go.mod | head -n1) into $OUT"
go build -trimpath -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=$(echo "$version" | cut -d. -f1 | tr -d v) -X k8s.io/component-base/version.gitMinor=$(echo "$version" | cut -d. -f2)" \
  -o "$OUT.tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl \
  || die "go build of kube-apiserver/kubectl"
go build -trimpath -ldflags="-s -w" -o "$OUT.tmp/etcd" go.etcd.io/etcd/server/v3 \
  || die "go build of etcd"
"$OUT.tmp/kube-apiserver" --version >/dev/null || die "the built kube-apiserver does not run"
"$OUT.tmp/etcd" --version >/dev/null || die "the built etcd does not run"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
say "built in $(( $(date +%s) - t0 ))s"
echo "$OUT"
