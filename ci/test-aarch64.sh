#!/bin/sh
# test-aarch64.sh — the arm64 stage of .ci/run (docs/DEVICES.md): cross-builds
# ftbench for a Raspberry Pi 5 (make CROSS=aarch64-linux-gnu-, a Debian 12
# arm64 sysroot from ci/cross.sh) and runs the Criterion suites below under
# qemu-aarch64 emulating a Cortex-A76.  Outside the Criterion suite, so the
# sanitizer rerun does not repeat it; prints its own elapsed time.
#
# How the emulated binaries run: binfmt_misc hands every arm64 ELF to
# qemu-aarch64 (Criterion re-executes the test binary for each test, and
# ftbench re-executes itself for its BLAS self-tests and cells), and
# QEMU_LD_PREFIX points qemu's file lookups at the sysroot, so the dynamic
# loader and every library come from the same Debian arm64 packages.  No
# `-L` to the cross toolchain's /usr/aarch64-linux-gnu: mixing that loader
# with the sysroot's libraries hangs in thread setup (issue 18).
#   SUITES   Criterion suites to run (default below)
set -eu
cd "$(dirname "$0")/.."
t0=$(date +%s)
SUITES=${SUITES:-"core methods harness memory_model devices blas profiles"}
unset OPENBLAS_CORETYPE

sh ci/cross.sh build-aarch64/sysroot

# binfmt_misc: mounted and an aarch64 entry registered (the F flag opens
# qemu now, so it works for any process, whatever its root or namespace).
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "test-aarch64: binfmt_misc is not mounted; run as root" >&2
        exit 1
    fi
    mount -t binfmt_misc binfmt_misc "$binfmt"
fi
if [ ! -e "$binfmt/qemu-aarch64" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "test-aarch64: no binfmt_misc entry for aarch64; run as root" >&2
        exit 1
    fi
    printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64:F' >"$binfmt/register"
fi
grep -q '^enabled' "$binfmt/qemu-aarch64" || {
    echo "test-aarch64: the binfmt_misc entry for aarch64 is disabled" >&2
    exit 1
}

export QEMU_CPU=cortex-a76
QEMU_LD_PREFIX=$(pwd)/build-aarch64/sysroot
export QEMU_LD_PREFIX
make -s CROSS=aarch64-linux-gnu- -j"$(nproc)" all
echo "test-aarch64: sysroot and cross build ready in $(($(date +%s) - t0)) s"
filter="@($(echo $SUITES | tr ' ' '|'))/*"
status=0
make CROSS=aarch64-linux-gnu- test TEST_ARGS="--filter '$filter'" || status=$?
echo "test-aarch64: suites $SUITES under qemu-aarch64 (cortex-a76): $([ $status = 0 ] && echo passed || echo FAILED) in $(($(date +%s) - t0)) s"
exit $status
