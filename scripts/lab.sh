#!/bin/sh
# lab.sh: the lab in one command, on a fresh Debian machine as root. Installs what is
# missing (scripts/setup.sh), builds serval and its CNI plugin, removes a lab left over
# from an earlier run, and runs `serval lab up`: nodes on two L2 subnets in network
# namespaces, one agent each on an embedded store, a real BIRD top-of-rack router, pods
# wired by the CNI plugin, then each node's peers and routes, the ToR's routes,
# pod-to-pod pings within and across subnets, and a pod's masqueraded egress.
#
# Arguments go to `serval lab up` (see `serval lab up --help`), e.g.
#   scripts/lab.sh --nodes 5 --subnets 2 --tor frr
# Afterwards: `$CARGO_TARGET_DIR/debug/serval lab status` / `... lab down`.
set -eu

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/serval-target}"
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH" && export PATH

sh scripts/setup.sh
cargo build --bins -p serval -p cni
SERVAL="$CARGO_TARGET_DIR/debug/serval"
"$SERVAL" lab down >/dev/null 2>&1 || true
"$SERVAL" lab up "$@"
echo
echo "the lab stays up: $SERVAL lab status | $SERVAL lab down"
