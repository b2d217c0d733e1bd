#!/bin/sh
# CI: every libFuzzer target of tests/fuzz/ for about 30 s each, two at a time
# (`make fuzz-ci`: the build and the runs fit in about 5 minutes).  Fails
# when a target finds a crash, a leak, a hang or an out-of-memory input; the
# input is in build-fuzz/artifacts/<target>/ and docs/RELIABILITY.md says
# what to do with it.  FUZZ_CI_SECONDS=N changes the time per target.
#
# Needs clang with the libFuzzer runtime and OpenMP (Debian: clang,
# libclang-rt-14-dev, libomp-14-dev); as root it installs what is missing,
# like ci/install-deps.sh.
set -eu
cd "$(dirname "$0")/.."
sh ci/install-deps.sh
PKGS="clang libclang-rt-14-dev libomp-14-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "ci/fuzz.sh: installing missing Debian packages:$missing" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends $missing >&2
    else
        echo "ci/fuzz.sh: missing Debian packages; run as root: apt-get install$missing" >&2
        exit 1
    fi
fi
make -j"$(nproc)" fuzz-build
make fuzz-ci
