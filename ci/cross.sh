#!/bin/sh
# cross.sh — prepares an arm64 Debian 12 sysroot for `make CROSS=aarch64-linux-gnu-`
# (docs/DEVICES.md).  Usage: sh ci/cross.sh [SYSROOT]   (default build-aarch64/sysroot)
#
# The sysroot is made from Debian's own arm64 packages without touching the
# host's installed packages: a private apt state (its own lists, cache and an
# empty dpkg status, APT::Architecture=arm64) resolves the libraries ftbench
# links and their dependencies, `apt-get install --download-only` fetches
# them and `dpkg -x` unpacks each one.  Why not the host's /usr: Debian 12
# cannot install every -dev package for amd64 and arm64 side by side
# (libjemalloc-dev:arm64 removes the amd64 one; Criterion's is not
# co-installable), and a development machine must not lose its own.
# As root it installs the host tools it needs (the cross compiler and
# qemu-user), like ci/install-deps.sh; otherwise it prints the apt-get line.
# Idempotent: a finished sysroot carries a stamp naming its package list.
set -eu
cd "$(dirname "$0")/.."
SYSROOT=${1:-build-aarch64/sysroot}
ARCH=arm64
TRIPLE=aarch64-linux-gnu
# What ftbench links (Makefile LDLIBS, -lcriterion) and the C library to
# build against; apt adds their runtime dependencies.
PKGS="libc6-dev libgcc-12-dev libgomp1 libopenblas-dev libopenblas0-pthread libopenblas-pthread-dev
      libjemalloc-dev libpfm4-dev libcriterion-dev libjansson-dev libpcre2-dev linux-libc-dev"
HOST_PKGS="gcc-$TRIPLE qemu-user pkg-config"

missing=""
for p in $HOST_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "cross.sh: missing host packages; run as root: apt-get install$missing" >&2
        exit 1
    fi
    echo "cross.sh: installing host packages:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=900 update -qq >&2
    apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends $missing >&2
fi

stamp="$SYSROOT/.ftbench-sysroot"
want=$(echo $PKGS | tr ' ' '\n' | sort | tr '\n' ' ')
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

t0=$(date +%s)
state=$(dirname "$SYSROOT")/apt-$ARCH
mkdir -p "$state/lists/partial" "$state/archives/partial" "$state/etc"
: > "$state/status"
# The host's sources (deb.debian.org or its mirror) with arm64 lists only.
APT="apt-get -q -o APT::Architecture=$ARCH -o APT::Architectures=$ARCH
     -o Dir::State::Lists=$PWD/$state/lists -o Dir::State::Status=$PWD/$state/status
     -o Dir::Cache::Archives=$PWD/$state/archives -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
     -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=$PWD/$state/etc
     -o APT::Install-Recommends=false -o Debug::NoLocking=true"
echo "cross.sh: arm64 package lists" >&2
$APT update >&2
echo "cross.sh: downloading$PKGS and their dependencies" >&2
$APT install -y --download-only $PKGS >&2

rm -rf "$SYSROOT"
mkdir -p "$SYSROOT"
for deb in "$state"/archives/*.deb; do
    dpkg -x "$deb" "$SYSROOT"
done

# dpkg -x runs no maintainer scripts: make by hand the links that
# update-alternatives would (OpenBLAS's libblas/libopenblas and its .pc),
# and turn absolute symlinks relative so they resolve inside the sysroot
# from the host (the cross linker) and under qemu.
lib=$SYSROOT/usr/lib/$TRIPLE
for f in libopenblas.so libopenblas.so.0 libblas.so libblas.so.3 liblapack.so liblapack.so.3; do
    [ -e "$lib/openblas-pthread/$f" ] && ln -sfn "openblas-pthread/$f" "$lib/$f"
done
mkdir -p "$lib/pkgconfig"
[ -e "$lib/openblas-pthread/pkgconfig/openblas.pc" ] && ln -sfn ../openblas-pthread/pkgconfig/openblas.pc "$lib/pkgconfig/openblas.pc"
find "$SYSROOT" -type l | while read -r link; do
    target=$(readlink "$link")
    case $target in
    /*)
        dir=$(dirname "${link#"$SYSROOT"}")
        rel=$(realpath -m --relative-to="$dir" "$target")
        ln -sfn "$rel" "$link"
        ;;
    esac
done
echo "$want" > "$stamp"
echo "cross.sh: sysroot $SYSROOT ready ($(ls "$state"/archives/*.deb | wc -l) packages, $(($(date +%s) - t0)) s)" >&2
