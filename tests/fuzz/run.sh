#!/usr/bin/env bash
# Runs fuzz targets: tests/fuzz/run.sh SECONDS JOBS TARGET...
# (`make fuzz` and `make fuzz-ci` call it with the binaries built.)
#
# Each target runs for SECONDS (libFuzzer -max_total_time), JOBS targets at a
# time, on its working corpus build-fuzz/corpus/<t>/ (kept between runs, so
# coverage accumulates) seeded from tests/fuzz/corpus/<t>/, with the
# dictionary tests/fuzz/dict/<t>.dict when there is one.  Logs go to
# build-fuzz/logs/<t>.log, crashing inputs to build-fuzz/artifacts/<t>/.
# Prints one line per target (executions, cov, ft, corpus) and exits 1 if
# any target found a crash, a leak, a timeout or an out-of-memory input.
set -u
cd "$(dirname "$0")/../.."
secs=$1
jobs=$2
shift 2
B=build-fuzz
mkdir -p "$B/logs"
# Known, reported bugs that are not fixed yet (tests/fuzz/regressions/
# KNOWN_OPEN names their inputs): suppressed so the targets can look for
# others.  Remove a line when its bug is fixed.
if [ -f tests/fuzz/known_open.ubsan ]; then
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$PWD/tests/fuzz/known_open.ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
    export UBSAN_OPTIONS
fi
if [ -f tests/fuzz/known_open.lsan ]; then
    LSAN_OPTIONS="suppressions=$PWD/tests/fuzz/known_open.lsan${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
    export LSAN_OPTIONS
fi

run_one() {
    t=$1
    mkdir -p "$B/corpus/$t" "$B/artifacts/$t"
    dict=
    [ -f "tests/fuzz/dict/$t.dict" ] && dict="-dict=tests/fuzz/dict/$t.dict"
    seeds=
    [ -d "tests/fuzz/corpus/$t" ] && seeds="tests/fuzz/corpus/$t"
    # -timeout: one input may take 10 s (a loaded machine), not more;
    # -rss_limit_mb: far above any valid input's needs.
    "./$B/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$B/artifacts/$t/" $dict "$B/corpus/$t" $seeds > "$B/logs/$t.log" 2>&1
    echo $? > "$B/logs/$t.rc"
}

summary() {
    t=$1
    log=$B/logs/$t.log
    rc=$(cat "$B/logs/$t.rc" 2>/dev/null || echo '?')
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(echo "$done_line" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$done_line" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    corp=$(echo "$done_line" | sed -n 's/.*corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p')
    if [ "$rc" = 0 ]; then
        status=ok
    else
        status="FAILED (exit $rc): $(grep -m1 -E 'ERROR: |SUMMARY: |check failed|runtime error' "$log" | cut -c1-160)"
    fi
    printf '%-14s %5ss  execs %-10s cov %-6s ft %-6s corpus %-12s %s\n' "$t" "$secs" "${execs:-?}" \
        "${cov:-?}" "${ft:-?}" "${corp:-?}" "$status"
    [ "$rc" = 0 ]
}

# First the saved inputs, once each, in the fuzz build (clang's UBSan checks
# more than gcc's -fsanitize=undefined of `make test SAN=1`, e.g.
# float-cast-overflow): every regression and every seed.
replay_fail=0
for t in "$@"; do
    files=$(find "tests/fuzz/regressions/$t" "tests/fuzz/corpus/$t" -type f 2>/dev/null | sort)
    [ -n "$files" ] || continue
    # shellcheck disable=SC2086
    if ! "./$B/fuzz_$t" $files > "$B/logs/$t.replay.log" 2>&1; then
        echo "replay $t: an input of tests/fuzz/{regressions,corpus}/$t fails: $B/logs/$t.replay.log" >&2
        grep -m3 -E 'Running: |ERROR: |runtime error|check failed' "$B/logs/$t.replay.log" >&2
        replay_fail=1
    fi
done
[ "$replay_fail" = 0 ] && echo "replay: every regression and seed input passes in the fuzz build"

# JOBS at a time: the next target starts as soon as one ends.
running=0
for t in "$@"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
    run_one "$t" &
    running=$((running + 1))
done
wait

fail=0
for t in "$@"; do
    summary "$t" || fail=1
done
if [ "$fail" != 0 ]; then
    echo "fuzz: a target failed; its log is in $B/logs/, the input in $B/artifacts/<target>/." >&2
    echo "fuzz: keep it as tests/fuzz/regressions/<target>/<name> (see docs/RELIABILITY.md)." >&2
fi
[ "$replay_fail" = 0 ] || fail=1
exit $fail
