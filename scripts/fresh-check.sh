#!/usr/bin/env bash
# fresh-check.sh: prove that the README's two commands work on a fresh machine. Makes a
# clean Debian bookworm root filesystem with debootstrap (variant minbase: no package beyond
# the base system), puts the files of the commit HEAD into it (git archive: what a clone
# has, without .git), and inside it, as root in a chroot:
#
#   1. scripts/setup.sh                       everything else must come from here
#   2. cargo build --workspace --bins         cold: a new CARGO_HOME and the default
#                                             CARGO_TARGET_DIR (/var/tmp/serval-target)
#                                             inside the root filesystem, so no build-script
#                                             output of an earlier build hides a missing
#                                             header or tool
#   3. scripts/lab.sh                         the lab up, with every check of its report
#                                             (its build reuses step 2's)
#   4. serval lab down
#
# What stands for "what a fresh machine of this kind has": the machines serval is developed
# and tested on come with Go in /usr/local/go and Rust by rustup (~/.rustup, ~/.cargo/bin,
# stable toolchain with rustfmt and clippy) but no Debian package beyond the base image, and
# they cannot download a toolchain or component from rustup's servers. So the check
# bind-mounts the host's stable toolchain and /usr/local/go read-only into the root
# filesystem, copies the rustup binary and its proxies into /root/.cargo/bin, and gives the
# chroot its own writable CARGO_HOME, RUSTUP_HOME settings and GOPATH. The machine's own CA
# certificates (/usr/local/share/ca-certificates) and its certificate and proxy environment
# variables come along, as the registries are reached through them. Nothing else of the
# host is visible: no nightly toolchain, no cargo-fuzz, no crate or Go module cache, no
# Debian package. apt's sources are the host's deb.debian.org ones.
#
# Isolation: the chroot runs in its own mount and PID namespaces (unshare) with /proc,
# /sys, /dev (with /dev/pts), a tmpfs /run and its own /run/netns. The lab's namespaces
# have fixed names (`svlab-…`, src/lab/topology.rs), but those names live in the chroot's
# own /run/netns and everything the lab makes is inside its namespaces, so a lab or a test
# run on the host at the same time neither sees nor disturbs it. Every mount, process and
# file of the check goes on exit, also on failure or interruption: after a failed step a
# trap inside brings the lab down and unmounts; the end of the namespaces (the outer trap
# kills them when the check is interrupted) takes every process and mount that is left;
# the outer trap then removes the root filesystem copy. One check at a time runs on a
# machine (a lock).
#
# Cache: the debootstrap result is kept as a pristine tarball under $FRESH_CACHE (default
# /var/tmp/serval-fresh); each check starts from a new copy of it. FRESH_REFRESH=1 makes the
# tarball anew; FRESH_KEEP=1 keeps the root filesystem of the last check for inspection.
#
# When CI runs it: scripts/test.sh runs `fresh-check.sh --if-changed`. Its inputs are
# scripts/, Cargo.lock, every build.rs and the Go test bed integration/k8s/ (go.mod, go.sum
# and the build.sh that setup.sh runs). A pass writes the git object id of each input, as
# of the commit it proved, into .ci/fresh-proven; --if-changed compares HEAD's inputs with
# that record and runs the check only when one differs (naming it), else says on which
# commit they were proven.
# This is a record of what was proven, not a comparison with a previous commit, so it
# holds in a fresh clone with no history, for a submission of many commits whose change to
# setup.sh was in an earlier one, and after a failed CI run (nothing was recorded, so the
# next run checks again); a change undone later needs no check, as the inputs are those
# proven. The workflow: commit the change, run scripts/fresh-check.sh, commit the
# rewritten .ci/fresh-proven; whoever does not, has CI run it. The check proves a commit
# rather than the working tree so that the record names exactly what was built;
# --worktree proves the working tree as it is (uncommitted changes too) and records
# nothing.
#
# Time on the development machine (2 cores shared with other builds, load 8-14), with the
# tarball cached: about 42 minutes to the end of the build — setup.sh 25 (the Debian
# packages 1.5, cargo-fuzz 1, the Kubernetes test bed's Go build 21), the cold workspace
# build 17 — then the lab, under a minute once built; debootstrap adds 1.5 minutes when
# the tarball is made. Each step's time is printed at the end and kept in .ci/fresh-proven.
#
#   scripts/fresh-check.sh                 prove HEAD; on success rewrite .ci/fresh-proven
#   scripts/fresh-check.sh --if-changed    the same, only when an input differs from the record
#   scripts/fresh-check.sh --status        say which inputs differ from the record
#   scripts/fresh-check.sh --worktree      prove the working tree; record nothing
#   scripts/fresh-check.sh --inputs        print HEAD's inputs as the record has them
#   scripts/fresh-check.sh --pristine      only make (or reuse) the cached tarball
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE=${FRESH_CACHE:-/var/tmp/serval-fresh}
SUITE=bookworm
MIRROR=${FRESH_MIRROR:-http://deb.debian.org/debian}
PRISTINE=$CACHE/debian-$SUITE-minbase.tar.gz
RECORD=$ROOT/.ci/fresh-proven
TOOLCHAIN_HOST=${RUSTUP_HOME:-$HOME/.rustup}/toolchains
# The inputs whose change asks for a new check: scripts/, Cargo.lock, every build.rs and
# the Go test bed (its module files and the build.sh that setup.sh runs).
is_input='$2 ~ /^scripts\// || $2 == "Cargo.lock" || $2 ~ /(^|\/)build\.rs$/ ||
    $2 ~ /^integration\/k8s\//'

say() { printf 'fresh-check: %s\n' "$*"; }
die() {
    printf 'fresh-check: %s\n' "$*" >&2
    exit 1
}

# One "mode object-id path" line per input of commit $1, sorted by path.
manifest() {
    git -C "$ROOT" ls-tree -r --full-tree "$1" |
        awk -F '\t' "$is_input"' { split($1, m, " "); print m[1], m[3], $2 }' |
        LC_ALL=C sort -k3
}

recorded() {
    [ -f "$RECORD" ] && grep -v '^#' "$RECORD" | grep -v '^$' || true
}

# The input paths that differ between the record and HEAD.
changed_inputs() {
    LC_ALL=C comm -3 <(recorded | LC_ALL=C sort) <(manifest HEAD | LC_ALL=C sort) |
        awk '{print $NF}' | LC_ALL=C sort -u
}

# Every mount point at or below $1 in this mount namespace.
mounts_under() {
    awk -v p="$1" '$5 == p || index($5, p "/") == 1 {print $5}' /proc/self/mountinfo
}

# Remove a check's directory: nothing may be mounted below it (a read-only toolchain or
# the host's /dev); --one-file-system is the last guard.
remove_run_dir() {
    local d=$1 m
    [ -d "$d" ] || return 0
    for m in $(mounts_under "$d" | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    if [ -n "$(mounts_under "$d")" ]; then
        say "still mounted below $d, left in place:" >&2
        mounts_under "$d" >&2
        return 1
    fi
    rm -rf --one-file-system "$d"
}

make_pristine() {
    mkdir -p "$CACHE"
    if [ -f "$PRISTINE" ] && [ "${FRESH_REFRESH:-0}" != 1 ]; then
        say "pristine root filesystem: $PRISTINE (cached)"
        return 0
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null 2>&1 || {
            apt-get update -q >/dev/null &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
        } || die "debootstrap is needed and apt-get could not install it"
    fi
    local t0 tmp
    t0=$(date +%s)
    tmp=$CACHE/debootstrap.$$
    remove_run_dir "$tmp"
    say "debootstrap --variant=minbase $SUITE from $MIRROR"
    if ! debootstrap --variant=minbase "$SUITE" "$tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
        tail -30 "$CACHE/debootstrap.log" >&2
        remove_run_dir "$tmp" || true
        die "debootstrap failed (log: $CACHE/debootstrap.log)"
    fi
    tar -C "$tmp" --numeric-owner -czf "$PRISTINE.tmp" .
    mv "$PRISTINE.tmp" "$PRISTINE"
    remove_run_dir "$tmp"
    say "pristine root filesystem made in $(($(date +%s) - t0)) s: $PRISTINE ($(du -h "$PRISTINE" | cut -f1))"
}

# The root filesystem of one check: a copy of the pristine one, with what a fresh machine
# of this kind has beyond Debian's base, and the working tree.
prepare_rootfs() {
    local r=$1 f copied=no
    mkdir -p "$r"
    tar -C "$r" --numeric-owner -xzf "$PRISTINE"
    # apt: the host's Debian sources (deb.debian.org) replace debootstrap's.
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && grep -q 'deb\.debian\.org' "$f" || continue
        if [ "$copied" = no ]; then
            rm -f "$r/etc/apt/sources.list" "$r"/etc/apt/sources.list.d/*
            copied=yes
        fi
        cp "$f" "$r$f"
    done
    if [ ! -f "$r/usr/share/keyrings/debian-archive-keyring.gpg" ] &&
        [ -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
        cp /usr/share/keyrings/debian-archive-keyring.gpg "$r/usr/share/keyrings/"
    fi
    cp /etc/resolv.conf "$r/etc/resolv.conf"
    # The machine's own CA certificates: ca-certificates (from setup.sh) adds them to the
    # bundle, as on the machine, for the registries reached through TLS.
    if [ -d /usr/local/share/ca-certificates ]; then
        mkdir -p "$r/usr/local/share/ca-certificates"
        cp -a /usr/local/share/ca-certificates/. "$r/usr/local/share/ca-certificates/"
    fi
    # Rust by rustup: the binary and its proxies, settings naming the stable toolchain as
    # default; the toolchain itself is bind-mounted read-only (inner). No cargo-fuzz, no
    # registry cache: CARGO_HOME is new.
    local stable=$TOOLCHAIN_HOST/stable-x86_64-unknown-linux-gnu
    [ -x "$stable/bin/cargo" ] || die "no stable rustup toolchain at $stable to stand for the fresh machine's"
    local rustup_bin
    rustup_bin=$(command -v rustup) || die "rustup not found on this machine"
    mkdir -p "$r/root/.cargo/bin" "$r/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu" \
        "$r/root/.rustup/tmp" "$r/root/.rustup/downloads"
    cp "$rustup_bin" "$r/root/.cargo/bin/rustup"
    for f in cargo cargo-clippy cargo-fmt cargo-miri clippy-driver rls rust-analyzer rust-gdb \
        rust-gdbgui rust-lldb rustc rustdoc rustfmt; do
        ln -s rustup "$r/root/.cargo/bin/$f"
    done
    printf 'version = "12"\ndefault_toolchain = "stable-x86_64-unknown-linux-gnu"\nprofile = "default"\nauto_self_update = "disable"\n\n[overrides]\n' \
        >"$r/root/.rustup/settings.toml"
    [ -f "$HOME/.cargo/env" ] && cp "$HOME/.cargo/env" "$r/root/.cargo/env"
    # Go: /usr/local/go (bind-mounted, inner) and its environment file.
    [ -x /usr/local/go/bin/go ] || die "no Go in /usr/local/go to stand for the fresh machine's"
    mkdir -p "$r/usr/local/go"
    if [ -f "$HOME/.config/go/env" ]; then
        mkdir -p "$r/root/.config/go"
        cp "$HOME/.config/go/env" "$r/root/.config/go/env"
    fi
    # The source: the commit as a clone has it, or the working tree (tracked and new files,
    # nothing ignored).
    mkdir -p "$r/root/serval"
    if [ "$SOURCE" = worktree ]; then
        git -C "$ROOT" ls-files -co --exclude-standard -z |
            (cd "$ROOT" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) |
            tar -C "$ROOT" --null -T - -cf - | tar -C "$r/root/serval" -xf -
    else
        git -C "$ROOT" archive "$SOURCE" | tar -C "$r/root/serval" -xf -
    fi
}

# Inside `unshare --mount --pid --fork`: this process is the namespace's PID 1, so every
# process the check starts ends with it, and so does every mount made here.
inner() {
    R=$1
    local -a env=(HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb LANG=C.UTF-8
        PATH=/usr/local/go/bin:/root/go/bin:/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        RUSTUP_AUTO_INSTALL=0 RUST_BACKTRACE=1 CARGO_TERM_COLOR=never "CI=${CI:-}")
    # The machine's environment for certificates and proxies, where it has one.
    local v
    for v in SSL_CERT_FILE SSL_CERT_DIR CURL_CA_BUNDLE GIT_SSL_CAINFO REQUESTS_CA_BUNDLE \
        PIP_CERT NODE_EXTRA_CA_CERTS http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        [ -n "${!v:-}" ] && env+=("$v=${!v}")
    done
    in_root() {
        chroot "$R" /usr/bin/env -i "${env[@]}" /bin/bash -c "cd /root/serval && $1"
    }
    cleanup_inner() {
        local rc=$?
        trap - EXIT INT TERM
        if [ -x "$R/var/tmp/serval-target/debug/serval" ] && [ -d "$R/proc/1" ]; then
            timeout 120 chroot "$R" /var/tmp/serval-target/debug/serval lab down >/dev/null 2>&1 || true
        fi
        umount -R "$R" 2>/dev/null || umount -R -l "$R" 2>/dev/null || true
        exit "$rc"
    }
    trap cleanup_inner EXIT
    trap 'exit 130' INT TERM

    mount --make-rprivate /
    # The root must be a mount point: `ip netns exec` makes / a slave mount.
    mount --bind "$R" "$R"
    mount -t proc proc "$R/proc"
    mount -t sysfs sysfs "$R/sys"
    mount --rbind /dev "$R/dev"
    mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$R/run"
    mkdir -p "$R/run/netns" "$R/run/lock"
    local stable=$TOOLCHAIN_HOST/stable-x86_64-unknown-linux-gnu
    local dst=$R/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu
    mount --bind "$stable" "$dst"
    mount -o remount,bind,ro "$dst"
    mount --bind /usr/local/go "$R/usr/local/go"
    mount -o remount,bind,ro "$R/usr/local/go"
    # The Kubernetes test bed's binaries, when this machine has built the same pinned
    # versions: lent read-only, so setup.sh's integration/k8s/build.sh finds them. Their
    # Go build needs nothing from Debian (CGO off, Go from the machine, modules from the
    # Go proxy), so lending them hides no missing package; FRESH_COLD_GO=1 builds them in
    # the root filesystem too (about 20 minutes more on a busy 2-core machine).
    local k8s
    if [ "${FRESH_COLD_GO:-0}" != 1 ] && k8s=$(sh "$ROOT/integration/k8s/build.sh" --where 2>/dev/null); then
        say "lending the Kubernetes test bed built at $k8s (FRESH_COLD_GO=1 builds it anew)"
        mkdir -p "$R$k8s"
        mount --bind "$k8s" "$R$k8s"
        mount -o remount,bind,ro "$R$k8s"
    fi
    if [ -d /lib/modules ]; then
        mkdir -p "$R/lib/modules"
        mount --bind /lib/modules "$R/lib/modules"
        mount -o remount,bind,ro "$R/lib/modules"
    fi

    local timings="" t0 rc
    run_step() {
        local name=$1
        say "==> $name: $2"
        t0=$(date +%s)
        rc=0
        in_root "$2" || rc=$?
        timings="$timings $name=$(($(date +%s) - t0))s"
        if [ "$rc" -ne 0 ]; then
            say "step $name FAILED (exit $rc) after $(($(date +%s) - t0)) s on a fresh $SUITE:$timings" >&2
            exit "$rc"
        fi
        say "==> $name: ok ($(($(date +%s) - t0)) s)"
    }
    run_step setup 'sh scripts/setup.sh'
    # The scripts' own target directory (inside the root filesystem, new), so that
    # scripts/lab.sh finds this build.
    run_step build 'CARGO_TARGET_DIR=/var/tmp/serval-target cargo build --workspace --bins'
    run_step lab 'sh scripts/lab.sh'
    run_step down '/var/tmp/serval-target/debug/serval lab down'
    say "steps:$timings"
    printf '%s\n' "$timings" >"$R/.fresh-timings"
}

run_check() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot, mounts, network namespaces)"
    command -v unshare >/dev/null || die "unshare (util-linux) is needed"
    command -v git >/dev/null || die "git is needed to list the working tree's files"
    mkdir -p "$CACHE"
    exec 9>"$CACHE/lock"
    if ! flock -n 9; then
        say "another fresh check is running on this machine: waiting for it"
        flock 9
    fi
    # Under the lock, any earlier check's directory is a leftover.
    local d
    for d in "$CACHE"/run.*; do
        [ -e "$d" ] || continue
        say "removing a leftover check: $d"
        remove_run_dir "$d" || die "could not remove $d"
    done

    local start manifest_now=""
    start=$(date +%s)
    if [ "$SOURCE" = worktree ]; then
        say "proving the working tree of $ROOT (nothing is recorded)"
    else
        SOURCE=$(git -C "$ROOT" rev-parse --verify "HEAD^{commit}") || die "no commit to prove"
        manifest_now=$(manifest "$SOURCE")
        say "proving commit $SOURCE"
        if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- scripts Cargo.lock integration/k8s)" ]; then
            say "(the working tree's uncommitted changes to the inputs are not part of it; --worktree takes them)"
        fi
    fi
    make_pristine
    WORK=$CACHE/run.$$
    CHILD=""
    cleanup_outer() {
        local rc=$?
        trap - EXIT INT TERM
        if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
            # unshare passes no SIGTERM on; SIGKILL makes it kill the namespace's PID 1,
            # and with it every process and mount of the check.
            kill -KILL "$CHILD" 2>/dev/null || true
            wait "$CHILD" 2>/dev/null || true
        fi
        if [ "${FRESH_KEEP:-0}" = 1 ]; then
            say "root filesystem kept: $WORK/rootfs (FRESH_KEEP=1); remove it with rm -rf --one-file-system"
        else
            remove_run_dir "$WORK" || rc=1
        fi
        exit "$rc"
    }
    trap cleanup_outer EXIT
    trap 'exit 130' INT TERM
    say "preparing $WORK/rootfs"
    prepare_rootfs "$WORK/rootfs"
    local t_prepared rc=0
    t_prepared=$(date +%s)
    # The lock stays with this process only (fd 9 closed for the check's processes).
    unshare --mount --pid --fork --kill-child --propagation private -- \
        bash "$ROOT/scripts/fresh-check.sh" --inner "$WORK/rootfs" 9>&- &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=""
    local end steps
    end=$(date +%s)
    steps=$(cat "$WORK/rootfs/.fresh-timings" 2>/dev/null || true)
    if [ "$rc" -ne 0 ]; then
        say "FAILED after $((end - start)) s (root filesystem ready in $((t_prepared - start)) s)" >&2
        exit "$rc"
    fi
    if [ "$SOURCE" = worktree ]; then
        say "passed in $((end - start)) s (root filesystem $((t_prepared - start)) s,$steps); the working tree: nothing recorded"
        return 0
    fi
    {
        echo "# The inputs of scripts/fresh-check.sh (scripts/, Cargo.lock, every build.rs, the Go"
        echo "# test bed integration/k8s/) as of its last pass on a fresh Debian $SUITE root"
        echo "# filesystem: mode, git object id, path. scripts/test.sh runs the check again whenever"
        echo "# one of them differs; a pass rewrites this file, to be committed."
        echo "# proven on commit $SOURCE, $(date -u +%Y-%m-%dT%H:%MZ), in $((end - start)) s: rootfs=$((t_prepared - start))s$steps"
        printf '%s\n' "$manifest_now"
    } >"$RECORD"
    say "passed in $((end - start)) s (root filesystem $((t_prepared - start)) s,$steps); recorded in ${RECORD#"$ROOT"/}: commit it"
}

SOURCE=HEAD
case "${1:-}" in
    --inner)
        [ "$$" = 1 ] || die "--inner runs only as PID 1 of its own namespace"
        inner "$2"
        ;;
    --pristine)
        [ "$(id -u)" -eq 0 ] || die "must run as root"
        mkdir -p "$CACHE"
        exec 9>"$CACHE/lock"
        flock 9
        make_pristine
        ;;
    --status | --if-changed)
        changed=$(changed_inputs)
        if [ -z "$changed" ]; then
            say "inputs unchanged since the last fresh check ($(grep -m1 '^# proven' "$RECORD" | sed 's/^# //'))"
            [ "$1" = --status ] && [ -n "$(git status --porcelain -- scripts Cargo.lock integration/k8s)" ] &&
                say "(the working tree has uncommitted changes to inputs; the record is about HEAD)"
            exit 0
        fi
        if [ ! -f "$RECORD" ]; then
            say "no record of a fresh check (${RECORD#"$ROOT"/})"
        else
            say "inputs changed since the last fresh check:"
            sed 's/^/  /' <<<"$changed"
        fi
        [ "$1" = --status ] && exit 1
        run_check
        ;;
    "")
        run_check
        ;;
    --inputs)
        manifest HEAD
        ;;
    --worktree)
        SOURCE=worktree
        run_check
        ;;
    *)
        die "usage: fresh-check.sh [--if-changed | --status | --worktree | --inputs | --pristine]"
        ;;
esac
