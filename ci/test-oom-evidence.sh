#!/bin/sh
# A real kernel OOM kill of a cell is recorded as "oom", with the kernel
# log's line as the evidence; the same cell killed with SIGKILL by hand is
# "killed" (tests/test_harness.c: outside_sigkill_is_killed_not_oom).
# The limit is a cgroup v1 memory group the harness knows nothing about
# (this is how a shared host's own limit looks to it), so the only
# evidence it can find is the kernel log.  Needs root and a cgroup v1
# memory hierarchy (hybrid hosts like the CI VM); skips otherwise.
set -eu
t0=$(date +%s)
build=${BUILD:-build}
v1=/sys/fs/cgroup/memory
if [ "$(id -u)" != 0 ] || [ ! -w "$v1/cgroup.procs" ]; then
    echo "oom evidence test: skipped (needs root and a cgroup v1 memory hierarchy at $v1)"
    exit 0
fi
make -s "$build/ftbench" "$build/tests/plugins/hog.so" >/dev/null
out=$(mktemp -d)
group="$v1/ftbench-oomtest-$$"
cleanup() {
    rmdir "$group" 2>/dev/null || true
    rm -rf "$out"
}
trap cleanup EXIT
mkdir "$group"
echo $((256 << 20)) > "$group/memory.limit_in_bytes"
[ -e "$group/memory.memsw.limit_in_bytes" ] && echo $((256 << 20)) > "$group/memory.memsw.limit_in_bytes"
# The cell allocates 1 GiB under an 8 GiB budget it checks itself: only the
# group's 256 MiB limit stops it, by the kernel's OOM killer.
set +e
sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' sh "$group" \
    "$build/ftbench" run --method "$build/tests/plugins/hog.so" --opt mb=1024 --model tiny --seq 16 \
    --steps 1 --warmup 0 --budget 8G --enforce check --out "$out" --run-id oom --quiet > "$out/stdout" 2>&1
set -e
rec=$(cat "$out"/host/oom/results.jsonl 2>/dev/null || true)
if ! printf '%s' "$rec" | grep -q '"outcome":"oom"' || ! printf '%s' "$rec" | grep -q 'kernel log says: .*Killed process'; then
    cat "$out/stdout"
    printf '%s\n' "$rec"
    echo "oom evidence test: FAILED, the kernel's OOM kill was not recorded as oom with its log line" >&2
    exit 1
fi
detail=$(printf '%s' "$rec" | grep -o '"outcome_detail":"[^"]*' | cut -d'"' -f4)
echo "oom evidence test: ok, $detail ($(($(date +%s) - t0)) s)"
