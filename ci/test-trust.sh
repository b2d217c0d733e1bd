#!/bin/sh
# What ftbench writes can be trusted, with real filesystems and a second
# user (docs/RELIABILITY.md, "Run directories"); needs root, outside the
# Criterion suite:
#
#  1. links planted by `nobody` in a shared results directory: a root-owned
#     0600 file is never written through them (a run directory nobody made
#     is refused; links inside a world-writable one are refused or
#     replaced, never followed);
#  2. the BLAS choice cache with HOME unset goes to the user's own home,
#     never to /tmp/.cache;
#  3. a full disk (a small tmpfs): a timeline that fills it is removed and
#     the cell's measurements are kept with the cause (before: "exited with
#     status 0 without a result"); a disk with no room at all is one line
#     naming ENOSPC, nothing half-kept, and the cell runs on resume.
#
# FTBENCH=path runs another binary (e.g. an older build, to see the
# failures this guards against).  Prints its own time.
set -eu
t0=$(date +%s)
build=${BUILD:-build}
if [ "$(id -u)" != 0 ]; then
    echo "trust test: skipped (needs root: a second user, a tmpfs)"
    exit 0
fi
make -s "$build/ftbench" "$build/methods/lora.so" "$build/methods/ia3.so" >/dev/null
bin=${FTBENCH:-$build/ftbench}
methods=$(cd "$build/methods" && pwd)
work=$(mktemp -d /tmp/ftbench-trust-XXXXXX)
chmod 755 "$work"
disk="$work/disk"
cleanup() {
    mountpoint -q "$disk" 2>/dev/null && umount "$disk"
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "trust test: FAILED: $*" >&2
    exit 1
}
as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
cell() { # cell OUT RUN_ID METHOD SEQ [more options]
    out=$1 id=$2 m=$3 seq=$4
    shift 4
    env -u OPENBLAS_CORETYPE FTBENCH_BLAS_AUTO=0 "$bin" run --methods-dir "$methods" --method "$m" --model tiny \
        --seq "$seq" --steps 1 --warmup 0 --out "$out" --run-id "$id" --quiet "$@"
}

# ---- 1. links planted by another user ------------------------------------
victim="$work/secret"
echo "root's secret" > "$victim"
chmod 600 "$victim"
sum0=$(sha256sum < "$victim")
shared="$work/shared"
mkdir "$shared"
chmod 1777 "$shared" # like /tmp: anyone may create entries
unchanged() { [ "$(sha256sum < "$victim")" = "$sum0" ] || fail "$1: the root-owned file was written through a link"; }

# a) nobody makes the run directory a sweep will use, full of links
as_nobody sh -c '
    mkdir -p "$1/host/planted/cells" && cd "$1/host/planted" &&
    for n in results.jsonl .lock lora.tiny.s16.b1.timeline.tsv .lora.tiny.s16.b1.child.json; do ln -s "$2" "$n"; done
' sh "$shared" "$victim"
set +e
msg=$(cell "$shared" planted lora 16 2>&1 >/dev/null)
rc=$?
set -e
unchanged "a run directory made by nobody"
[ $rc -ne 0 ] || fail "a run directory owned by nobody was used"
case $msg in *"owned by uid"*"refusing to write there"*) ;; *) fail "no clear refusal: $msg" ;; esac
echo "trust test: nobody's run directory refused: $msg"

# b) root's own, world-writable run directory (made with umask 0): nobody
#    plants links at every name a cell writes
rm -rf "$shared/host" 2>/dev/null || as_nobody rm -rf "$shared/host"
mkdir -m 0777 "$shared/host" "$shared/host/ww"
plant() { as_nobody ln -sf "$victim" "$shared/host/ww/$1"; }
for n in .lock results.jsonl; do
    plant "$n"
    set +e
    msg=$(cell "$shared" ww lora 16 2>&1 >/dev/null)
    rc=$?
    set -e
    unchanged "a link at $n"
    [ $rc -ne 0 ] || fail "the link at $n was accepted"
    case $msg in *"$n: "*"refusing to "*) ;; *) fail "$n: $msg" ;; esac
    as_nobody rm -f "$shared/host/ww/$n"
done
as_nobody ln -s "$work" "$shared/host/ww/cells"
set +e
msg=$(cell "$shared" ww lora 16 2>&1 >/dev/null)
rc=$?
set -e
[ $rc -ne 0 ] || fail "a linked cells/ was accepted"
case $msg in *"cells: is a symbolic link"*) ;; *) fail "cells link: $msg" ;; esac
as_nobody rm -f "$shared/host/ww/cells"
[ -z "$(find "$work" -maxdepth 1 -name '*.json')" ] || fail "a record was written through the linked cells/"
for n in lora.tiny.s16.b1.timeline.tsv .lora.tiny.s16.b1.child.json; do plant "$n"; done
cell "$shared" ww lora 16 > /dev/null || fail "a cell beside planted links did not run"
unchanged "links at the timeline and the snapshot"
[ -f "$shared/host/ww/lora.tiny.s16.b1.timeline.tsv" ] && [ ! -L "$shared/host/ww/lora.tiny.s16.b1.timeline.tsv" ] ||
    fail "the timeline is not a regular file"
[ -f "$shared/host/ww/cells/lora.tiny.s16.b1.json" ] || fail "no record"
echo "trust test: links at .lock, results.jsonl and cells/ refused; at the timeline and the snapshot replaced; the 0600 file unchanged"

# ---- 2. the BLAS choice cache without HOME ----------------------------------
marker="$work/marker"
touch "$marker"
sleep 1
env -u HOME -u XDG_CACHE_HOME -u OPENBLAS_CORETYPE FTBENCH_BLAS_AUTO=1 "$bin" list > /dev/null 2>&1 || true
if [ -d /tmp/.cache/ftbench ] && [ -n "$(find /tmp/.cache/ftbench -newer "$marker" 2>/dev/null)" ]; then
    fail "the BLAS cache was written to /tmp/.cache with HOME unset"
fi
home=$(getent passwd root | cut -d: -f6)
echo "trust test: BLAS cache with HOME unset: in $home/.cache/ftbench ($(ls "$home/.cache/ftbench" 2>/dev/null | grep -c blas-coretype) file(s)), nothing new under /tmp/.cache"

# ---- 3. a full disk ------------------------------------------------------------
mkdir "$disk"
if ! mount -t tmpfs -o size=512k tmpfs "$disk" 2>/dev/null; then
    echo "trust test: tmpfs part skipped (cannot mount a tmpfs here)"
else
    cell "$disk" full ia3 16 --no-timeline > /dev/null || fail "a first cell on the tmpfs did not run"
    avail() { df -k --output=avail "$disk" | tail -1 | tr -d ' '; }
    # a) room for the records, not for the timeline of a 256-token cell
    #    (about 95 kB): the timeline fills the disk at the end of the cell
    dd if=/dev/zero of="$disk/filler" bs=1k count=$(($(avail) - 48)) status=none 2>/dev/null || true
    free_kb=$(avail)
    set +e
    env -u OPENBLAS_CORETYPE FTBENCH_BLAS_AUTO=0 "$bin" run --methods-dir "$methods" --method lora --model tiny \
        --seq 256 --steps 3 --warmup 1 --out "$disk" --run-id full --quiet > "$work/a.out" 2>&1
    rc=$?
    set -e
    rec="$disk/host/full/cells/lora.tiny.s256.b1.json"
    [ -f "$rec" ] || { cat "$work/a.out"; fail "the cell's record was lost ($free_kb kB free)"; }
    grep -q '"outcome":"ok"' "$rec" || { cat "$rec"; fail "a finished measurement was not kept"; }
    grep -q '"timeline_error":{[^}]*"name":"ENOSPC"' "$rec" || { cat "$rec"; fail "the timeline's ENOSPC was not recorded"; }
    [ ! -e "$disk/host/full/lora.tiny.s256.b1.timeline.tsv" ] || fail "a partial timeline was left"
    [ -z "$(find "$disk/host/full" -name '.tmp-*')" ] || fail "temporary files were left"
    [ $rc -eq 0 ] || fail "run exit $rc"
    echo "trust test: timeline filled the disk ($free_kb kB free): record ok, timeline_error ENOSPC, nothing partial left"
    # b) no room at all
    rm -f "$disk/filler"
    dd if=/dev/zero of="$disk/filler" bs=4k status=none 2>/dev/null || true
    before=$(cat "$disk/host/full/results.jsonl")
    set +e
    msg=$(cell "$disk" full lora 32 2>&1 >/dev/null)
    rc=$?
    set -e
    [ $rc -eq 1 ] || fail "full disk: exit $rc: $msg"
    [ "$(printf '%s\n' "$msg" | wc -l)" -eq 1 ] || fail "full disk: not one line: $msg"
    case $msg in *"No space left on device"*"the record was not kept"*) ;; *) fail "full disk: $msg" ;; esac
    [ ! -e "$disk/host/full/cells/lora.tiny.s32.b1.json" ] || fail "full disk: a record was half-kept"
    [ "$(cat "$disk/host/full/results.jsonl")" = "$before" ] || fail "full disk: results.jsonl changed"
    [ -z "$(find "$disk/host/full" -name '.tmp-*' -o -name '*.child.json')" ] || fail "full disk: files left behind"
    echo "trust test: no room at all: '$msg'"
    rm -f "$disk/filler"
    cell "$disk" full lora 32 > /dev/null || fail "the cell did not run once there was room"
    grep -q '"outcome":"ok"' "$disk/host/full/cells/lora.tiny.s32.b1.json" || fail "resume after the full disk"
    echo "trust test: with room again the cell runs and is recorded"
fi
echo "trust test: ok ($(($(date +%s) - t0)) s)"
