#!/bin/sh
# image.sh: serval's container image as an OCI image archive, built without a container
# engine or daemon: the root filesystem is assembled in a directory, packed into one
# layer with tar, and described by an OCI image layout (index.json, manifest, config),
# all packed into one tarball that skopeo, podman, containerd and kind can read.
#
# What the image holds:
#   /usr/local/bin/serval      the agent and CLI (the DaemonSet's `serval node run`)
#   /usr/local/bin/serval-cni  the CNI plugin, copied to the host by `serval install-cni`
#   /usr/sbin/nft              serval programs its NAT tables with `nft -j -f -`
#   the shared libraries these three load (found with ldd), the copyright files of the
#   Debian packages they come from, and /var/lib/dpkg/status.d/ entries naming those
#   packages and versions for vulnerability scanners. Nothing else: no shell.
#
# Reproducible: every file gets the mtime SOURCE_DATE_EPOCH (default: the last commit's
# time), owner 0:0 and mode 0755 or 0644, tar entries are sorted and gzip stores no
# name or time, so the same binaries and libraries give the same image digest.
#
# Usage: scripts/image.sh [OPTIONS]
#   --profile NAME   cargo profile of the binaries: release (default), dev, or another
#   --no-build       use the binaries already built for that profile
#   --bin-dir DIR    take serval and serval-cni from DIR (implies --no-build)
#   --output FILE    the archive [default: $CARGO_TARGET_DIR/image/serval-VERSION.oci.tar,
#                    with -PROFILE before .oci.tar for a profile other than release]
#   --name REPO      image repository [default: docker.io/serval/serval]; the tag is the
#                    version `serval --version` prints
#   --revision REV   the org.opencontainers.image.revision label [default: git HEAD]
#   --rootfs DIR     only assemble the root filesystem into DIR (emptied first), no
#                    archive: what the Containerfile copies into its final stage
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/serval-target}"
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH" && export PATH
# nft lives in sbin, which a non-login shell may lack.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C
umask 022

PROFILE=release
BUILD=yes
BIN_DIR=""
OUTPUT=""
NAME=docker.io/serval/serval
REVISION=""
ROOTFS_ONLY=""

say() { printf 'image: %s\n' "$*" >&2; }
die() {
  say "$*"
  exit 1
}
usage() {
  sed -n '2,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//' >&2
  exit "${1:-0}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --profile) [ $# -ge 2 ] || usage 2; PROFILE=$2; shift 2 ;;
    --profile=*) PROFILE=${1#*=}; shift ;;
    --no-build) BUILD=no; shift ;;
    --bin-dir) [ $# -ge 2 ] || usage 2; BIN_DIR=$2; BUILD=no; shift 2 ;;
    --bin-dir=*) BIN_DIR=${1#*=}; BUILD=no; shift ;;
    --output) [ $# -ge 2 ] || usage 2; OUTPUT=$2; shift 2 ;;
    --output=*) OUTPUT=${1#*=}; shift ;;
    --name) [ $# -ge 2 ] || usage 2; NAME=$2; shift 2 ;;
    --name=*) NAME=${1#*=}; shift ;;
    --revision) [ $# -ge 2 ] || usage 2; REVISION=$2; shift 2 ;;
    --revision=*) REVISION=${1#*=}; shift ;;
    --rootfs) [ $# -ge 2 ] || usage 2; ROOTFS_ONLY=$2; shift 2 ;;
    --rootfs=*) ROOTFS_ONLY=${1#*=}; shift ;;
    -h|--help) usage 0 ;;
    *) say "unknown argument: $1"; usage 2 ;;
  esac
done

# Strings that go into JSON unescaped: keep them to characters that need no escaping.
plain() {
  case "$2" in
    ''|*[!A-Za-z0-9._:/@+-]*) die "$1 ${2:+\"$2\" }must be made of letters, digits and ._:/@+-" ;;
  esac
}
plain --name "$NAME"
plain --profile "$PROFILE"
[ -z "$REVISION" ] || plain --revision "$REVISION"

# ---- tools ------------------------------------------------------------------------------

# need COMMAND PACKAGE: installs PACKAGE with apt-get when COMMAND is missing.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 ||
    die "$1 is missing and there is no apt-get to install $2 with: install $2"
  [ "$(id -u)" -eq 0 ] || die "$1 is missing: install $2 (apt-get needs root)"
  say "$1 is missing: installing $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >&2 || {
    apt-get update -q >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >&2
  } || die "apt-get could not install $2"
  command -v "$1" >/dev/null 2>&1 || die "$1 still missing after installing $2"
}

need ldd libc-bin
need dpkg-query dpkg
need nft nftables
need tar tar
need gzip gzip
need sha256sum coreutils
# GNU tar's --sort (1.28 and later) makes the entry order independent of the directory.
tar --sort=name -cf /dev/null --files-from /dev/null 2>/dev/null ||
  die "tar does not know --sort=name: GNU tar 1.28 or later is needed"

# ---- binaries ---------------------------------------------------------------------------

if [ -z "$BIN_DIR" ]; then
  case "$PROFILE" in
    dev) BIN_DIR="$CARGO_TARGET_DIR/debug" ;;
    *) BIN_DIR="$CARGO_TARGET_DIR/$PROFILE" ;;
  esac
fi
if [ "$BUILD" = yes ]; then
  need cargo cargo
  say "building serval and serval-cni (profile $PROFILE)"
  (cd "$ROOT" && cargo build --locked --profile "$PROFILE" -p serval -p cni --bins) >&2
fi
for b in serval serval-cni; do
  [ -x "$BIN_DIR/$b" ] ||
    die "no $BIN_DIR/$b: build it (cargo build --profile $PROFILE -p serval -p cni --bins) or drop --no-build"
done

VERSION=$("$BIN_DIR/serval" --version | awk '{print $2}')
plain "the version of $BIN_DIR/serval" "$VERSION"
NFT=$(command -v nft)

# ---- root filesystem --------------------------------------------------------------------

# The files ldd says EXE loads, one path a line (the loader included).
libraries_of() {
  out=$(ldd "$1") || die "ldd $1 failed: is it a dynamically linked executable of this machine?"
  if printf '%s\n' "$out" | grep -q 'not found'; then
    die "$1 needs libraries this machine lacks: $(printf '%s\n' "$out" | grep 'not found' | tr -s ' \t' ' ')"
  fi
  printf '%s\n' "$out" | awk '
    $2 == "=>" && $3 ~ /^\// { print $3; next }
    $1 ~ /^\// { print $1 }
  '
}

# copy_file PATH DEST: PATH into the tree DEST at the same place, with the symbolic links
# on the way (libgmp.so.10 -> libgmp.so.10.4.1, /lib64/ld-linux… -> /lib/…) kept as links
# and their targets copied too.
copy_file() {
  p=$1
  while :; do
    dir=$(realpath "$(dirname "$p")")
    at="$dir/$(basename "$p")"
    mkdir -p "$2$dir"
    if [ -L "$at" ]; then
      link=$(readlink "$at")
      rm -f "$2$at"
      ln -s "$link" "$2$at"
      case "$link" in
        /*) p=$link ;;
        *) p="$dir/$link" ;;
      esac
    else
      [ -f "$at" ] || die "$at is not a file"
      cp "$at" "$2$at"
      return 0
    fi
  done
}

# The Debian package owning PATH (dpkg records /lib/… on merged-/usr systems, where the
# file's real path is /usr/lib/…), or nothing.
package_of() {
  for q in "$1" "$(realpath "$1")"; do
    owner=$(dpkg-query -S "$q" 2>/dev/null | head -n 1) || true
    if [ -n "$owner" ]; then
      printf '%s\n' "${owner%%: *}"
      return 0
    fi
  done
}

assemble_rootfs() {
  dest=$1
  rm -rf "$dest"
  mkdir -p "$dest/usr/local/bin" "$dest/usr/sbin"
  # A merged-/usr host: /lib, /lib64, /bin, /sbin are links into /usr, and the paths
  # the binaries were linked with (/lib64/ld-linux-x86-64.so.2) go through them.
  for d in bin sbin lib lib32 lib64 libx32; do
    if [ -L "/$d" ]; then
      ln -s "$(readlink "/$d")" "$dest/$d"
    fi
  done
  cp "$BIN_DIR/serval" "$BIN_DIR/serval-cni" "$dest/usr/local/bin/"
  # serval looks for nft at /usr/sbin/nft first (Debian's place), then on PATH.
  cp "$(realpath "$NFT")" "$dest/usr/sbin/nft"

  libs=$(for exe in "$BIN_DIR/serval" "$BIN_DIR/serval-cni" "$NFT"; do libraries_of "$exe"; done | sort -u)
  for lib in $libs; do
    copy_file "$lib" "$dest"
  done

  # Where the libraries and nft come from: copyright files and a status entry per package.
  packages=$(for f in "$NFT" $libs; do package_of "$f"; done | sort -u)
  [ -n "$packages" ] || die "dpkg knows none of the packages of nft and its libraries"
  mkdir -p "$dest/var/lib/dpkg/status.d"
  for pkg in $packages; do
    base=${pkg%%:*}
    if [ -f "/usr/share/doc/$base/copyright" ]; then
      mkdir -p "$dest/usr/share/doc/$base"
      cp -L "/usr/share/doc/$base/copyright" "$dest/usr/share/doc/$base/copyright"
    fi
    dpkg-query -W -f='Package: ${Package}\nStatus: ${Status}\nArchitecture: ${Architecture}\n${source:Package}\nVersion: ${Version}\n' "$pkg" |
      sed 's/^\([^:]*\)$/Source: \1/' >"$dest/var/lib/dpkg/status.d/$base"
  done

  # Modes do not depend on the umask or copies of the machine that built it.
  find "$dest" -type d -exec chmod 0755 {} +
  find "$dest" -type f -perm /111 -exec chmod 0755 {} +
  find "$dest" -type f ! -perm /111 -exec chmod 0644 {} +
  say "root filesystem in $dest: serval $VERSION, serval-cni, nft, $(printf '%s\n' "$libs" | wc -l) libraries from: $(printf '%s\n' "$packages" | tr '\n' ' ')"
}

if [ -n "$ROOTFS_ONLY" ]; then
  assemble_rootfs "$ROOTFS_ONLY"
  exit 0
fi

# ---- OCI image layout -------------------------------------------------------------------

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)
fi
case "$SOURCE_DATE_EPOCH" in
  ''|*[!0-9]*) die "SOURCE_DATE_EPOCH must be seconds since 1970, not \"$SOURCE_DATE_EPOCH\"" ;;
esac
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
if [ -z "$REVISION" ]; then
  REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || true)
fi

case "$(dpkg --print-architecture)" in
  amd64) ARCH=amd64 ;;
  arm64) ARCH=arm64 ;;
  ppc64el) ARCH=ppc64le ;;
  s390x) ARCH=s390x ;;
  riscv64) ARCH=riscv64 ;;
  *) die "no OCI architecture name known for $(dpkg --print-architecture)" ;;
esac

REF="$NAME:$VERSION"
if [ -z "$OUTPUT" ]; then
  suffix=""
  [ "$PROFILE" = release ] || suffix="-$PROFILE"
  OUTPUT="$CARGO_TARGET_DIR/image/serval-$VERSION$suffix.oci.tar"
fi
mkdir -p "$(dirname "$OUTPUT")"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/serval-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM HUP

# tar_sorted DIR OUT: the entries of DIR, sorted, owned by 0:0, all with one mtime.
tar_sorted() {
  # shellcheck disable=SC2046,SC2012 # one argument per top-level entry (names made here)
  tar --create --file "$2" --directory "$1" \
    --sort=name --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    $(cd "$1" && ls -A | sort)
}

sha() { sha256sum "$1" | awk '{print $1}'; }
size() { wc -c <"$1" | tr -d ' '; }
blobs="$WORK/layout/blobs/sha256"
mkdir -p "$blobs"
# put FILE: moves FILE into the blobs and prints its digest.
put() {
  d=$(sha "$1")
  mv "$1" "$blobs/$d"
  echo "$d"
}

assemble_rootfs "$WORK/rootfs"
tar_sorted "$WORK/rootfs" "$WORK/layer.tar"
DIFF_ID=$(sha "$WORK/layer.tar")
gzip -n -6 <"$WORK/layer.tar" >"$WORK/layer.tar.gz"
rm -f "$WORK/layer.tar"
LAYER_SIZE=$(size "$WORK/layer.tar.gz")
LAYER=$(put "$WORK/layer.tar.gz")

labels="\"org.opencontainers.image.title\":\"serval\",\
\"org.opencontainers.image.description\":\"Kubernetes node networking agent: BGP speaker, block IPAM, CNI plugin\",\
\"org.opencontainers.image.version\":\"$VERSION\",\
\"org.opencontainers.image.licenses\":\"Apache-2.0\",\
\"org.opencontainers.image.created\":\"$CREATED\",\
${REVISION:+\"org.opencontainers.image.revision\":\"$REVISION\",}\
\"dev.serval.build-profile\":\"$PROFILE\""

printf '%s' "{\"created\":\"$CREATED\",\"architecture\":\"$ARCH\",\"os\":\"linux\",\
\"config\":{\"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"],\
\"Entrypoint\":[\"/usr/local/bin/serval\"],\"Cmd\":[\"node\",\"run\"],\"Labels\":{$labels}},\
\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$DIFF_ID\"]},\
\"history\":[{\"created\":\"$CREATED\",\"created_by\":\"scripts/image.sh --profile $PROFILE\"}]}" >"$WORK/config.json"
CONFIG_SIZE=$(size "$WORK/config.json")
CONFIG=$(put "$WORK/config.json")

printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$CONFIG\",\"size\":$CONFIG_SIZE},\
\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$LAYER\",\"size\":$LAYER_SIZE}],\
\"annotations\":{\"org.opencontainers.image.version\":\"$VERSION\",\"org.opencontainers.image.created\":\"$CREATED\"}}" >"$WORK/manifest.json"
MANIFEST_SIZE=$(size "$WORK/manifest.json")
MANIFEST=$(put "$WORK/manifest.json")

# ref.name is the full reference, as `podman save --format oci-archive` writes it, so that
# `podman load` names the image what the chart pulls; containerd (`ctr images import`,
# `kind load image-archive`) reads io.containerd.image.name.
printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\
\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$MANIFEST\",\"size\":$MANIFEST_SIZE,\
\"platform\":{\"architecture\":\"$ARCH\",\"os\":\"linux\"},\
\"annotations\":{\"org.opencontainers.image.ref.name\":\"$REF\",\"io.containerd.image.name\":\"$REF\"}}]}" >"$WORK/layout/index.json"
printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$WORK/layout/oci-layout"
find "$WORK/layout" -type d -exec chmod 0755 {} +
find "$WORK/layout" -type f -exec chmod 0644 {} +

tar_sorted "$WORK/layout" "$WORK/image.oci.tar"
mv "$WORK/image.oci.tar" "$OUTPUT"
say "$REF ($ARCH, profile $PROFILE): manifest sha256:$MANIFEST, layer $LAYER_SIZE bytes"
# The one line on stdout: the archive, for scripts.
echo "$OUTPUT"
