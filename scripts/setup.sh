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
build-essential pkg-config protobuf-compiler libprotobuf-dev git curl ca-certificates openssl
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
  # shellcheck disable=SC2086 # word splitting of the package list is intended
  {
    apt-get update -q &&
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

# Rust, by rustup. The machines serval is built on come with a stable toolchain (with
# rustfmt and clippy) and cannot reach rustup's servers, so nothing here downloads a
# toolchain or component that is present, and what is missing is said in words rather
# than waited for. Only a machine without cargo at all tries rustup's installer, bounded
# in time.
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH" && export PATH
RUSTUP_WAIT=${RUSTUP_WAIT:-300}
missing_rust=""
if command -v cargo >/dev/null 2>&1; then
  say "rust present: $(cargo --version)"
else
  say "cargo missing: installing Rust with rustup (needs rustup's servers; at most ${RUSTUP_WAIT}s)"
  rc=0
  if ! command -v rustup >/dev/null 2>&1; then
    if apt-cache show rustup >/dev/null 2>&1; then
      apt-get install -y -q --no-install-recommends rustup || rc=$?
    else
      { curl --proto '=https' --tlsv1.2 -sSf --connect-timeout 20 --max-time "$RUSTUP_WAIT" https://sh.rustup.rs |
        timeout "$RUSTUP_WAIT" sh -s -- -y --profile minimal --default-toolchain none; } || rc=$?
      PATH="$HOME/.cargo/bin:$PATH"
      export PATH
    fi
  fi
  if [ "$rc" -eq 0 ]; then
    timeout "$RUSTUP_WAIT" rustup toolchain install stable --profile minimal --component rustfmt,clippy &&
      rustup default stable || rc=$?
  fi
  if [ "$rc" -ne 0 ] || ! command -v cargo >/dev/null 2>&1; then
    say "cargo is missing and Rust could not be installed (rustup's servers out of reach?):" \
      "install a stable Rust toolchain with rustfmt and clippy, then run this again" >&2
    exit 1
  fi
  say "installed $(cargo --version)"
fi
if command -v rustup >/dev/null 2>&1; then
  active=$(rustup show active-toolchain 2>/dev/null | cut -d' ' -f1)
else
  active="$(rustc --version) (no rustup)"
fi
# CARGO_SUBCOMMAND COMPONENT WHAT-NEEDS-IT
need_component() {
  if cargo "$1" --version >/dev/null 2>&1; then
    say "$2 present: $(cargo "$1" --version)"
  else
    say "MISSING: the $2 component of toolchain $active ($3 fails without it);" \
      "no download is tried: add it with \`rustup component add $2\` where rustup's servers are reachable" >&2
    missing_rust="$missing_rust $2"
  fi
}
need_component fmt rustfmt "scripts/test.sh's fmt step"
need_component clippy clippy "scripts/test.sh's clippy step"
# The speaker's fuzz run (bgp/fuzz/run.sh) takes the nightly toolchain when one is
# installed, else the stable one with RUSTC_BOOTSTRAP=1; it needs cargo-fuzz (crates.io).
REPO=$(cd "$(dirname "$0")/.." && pwd)
if [ -d "$REPO/bgp/fuzz" ]; then
  if command -v rustup >/dev/null 2>&1 && rustup toolchain list | grep -q '^nightly'; then
    say "fuzzing: nightly toolchain present"
  else
    say "fuzzing: no nightly toolchain (none is downloaded): bgp/fuzz/run.sh uses $active with RUSTC_BOOTSTRAP=1"
  fi
  if command -v cargo-fuzz >/dev/null 2>&1; then
    say "cargo-fuzz present"
  else
    say "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
  fi
fi
# The Kubernetes test bed: kube-apiserver, kubectl and etcd built from the Go modules
# pinned in integration/k8s/go.mod (Go 1.26 comes with the machine, /usr/local/go); the
# binaries are cached under /var/tmp/serval-k8s, so this is quick once built.
if [ -f "$REPO/integration/k8s/build.sh" ]; then
  say "Kubernetes test bed: $(sh "$REPO/integration/k8s/build.sh")"
fi
if [ -n "$missing_rust" ]; then
  say "done, but missing:$missing_rust (see above)" >&2
  exit 0
fi
say "done"
