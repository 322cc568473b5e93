#!/bin/sh
# setup.sh: prepare a fresh Debian bookworm or trixie machine, as root, to build serval
# and run every one of its tests. Idempotent: installs only what is missing and says
# what it did.
set -eu

# Build tools, the kernel plumbing the tests drive, the BGP daemons serval is tested
# against, etcd for the IPAM store, User-Mode Linux for the kernel features the host
# may lack, and the reference CNI plugins.
# npm (for fetching helm in the chart check) comes from scripts/chart-check.sh when the
# npm command is missing: a machine with Node.js from elsewhere has it already.
PACKAGES="
build-essential pkg-config protobuf-compiler git curl ca-certificates
iproute2 iputils-ping procps psmisc kmod nftables iptables tcpdump python3
bird2 frr gobgpd openbgpd exabgp
etcd-server etcd-client
user-mode-linux
containernetworking-plugins
unzip
"

say() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  say "must run as root (apt-get and network namespaces need it)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
  say "apt-get/dpkg-query not found: this script targets Debian bookworm or trixie" >&2
  exit 1
fi

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=""
for p in $PACKAGES; do
  installed "$p" || missing="$missing $p"
done

if [ -n "$missing" ]; then
  say "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  # Packages such as frr and bird2 start their system service on install; the tests
  # run their own instances in namespaces, so keep the services from starting.
  policy=/usr/sbin/policy-rc.d
  own_policy=no
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    own_policy=yes
  fi
  rc=0
  {
    apt-get update -q &&
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    apt-get install -y -q --no-install-recommends $missing
  } || rc=$?
  [ "$own_policy" = yes ] && rm -f "$policy"
  if [ "$rc" -ne 0 ]; then
    say "apt-get failed ($rc) installing:$missing" >&2
    exit "$rc"
  fi
else
  say "all system packages present"
fi

# Rust: rustup's cargo lives in ~/.cargo/bin, which a non-login shell may lack.
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH" && export PATH
if command -v cargo >/dev/null 2>&1; then
  say "rust present: $(cargo --version)"
else
  say "cargo missing: installing Rust with rustup"
  if ! command -v rustup >/dev/null 2>&1; then
    if apt-cache show rustup >/dev/null 2>&1; then
      apt-get install -y -q --no-install-recommends rustup
    else
      curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
      PATH="$HOME/.cargo/bin:$PATH"
      export PATH
    fi
  fi
  rustup toolchain install stable --profile minimal --component rustfmt,clippy
  rustup default stable
  say "installed $(cargo --version)"
fi
if ! cargo fmt --version >/dev/null 2>&1; then
  say "adding the rustfmt component"
  rustup component add rustfmt
fi
if ! cargo clippy --version >/dev/null 2>&1; then
  say "adding the clippy component"
  rustup component add clippy
fi
# The speaker's fuzz run (bgp/fuzz/run.sh) needs cargo-fuzz and a nightly toolchain.
REPO=$(cd "$(dirname "$0")/.." && pwd)
if [ -d "$REPO/bgp/fuzz" ]; then
  if rustup run nightly rustc --version >/dev/null 2>&1; then
    say "nightly toolchain present"
  else
    say "installing the nightly toolchain for fuzzing"
    rustup toolchain install nightly --profile minimal
  fi
  if command -v cargo-fuzz >/dev/null 2>&1; then
    say "cargo-fuzz present"
  else
    say "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
  fi
fi
say "done"
