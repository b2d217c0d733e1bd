#!/bin/sh
# valgrind memcheck (make memcheck; docs/RELIABILITY.md).  Two parts:
#   1. one tiny training step of every method in build/methods, in one
#      process that frees everything (tests/memcheck/memcheck_step.c):
#      any memory error or any leak (definite, indirect or possible) fails;
#   2. one cell through the real `ftbench run` (fork, sampler thread,
#      record writing): any memory error fails.  Its leaks are not checked:
#      the cell child leaves its teardown to _exit on purpose.
# One thread everywhere (OpenMP and OpenBLAS), OMP_WAIT_POLICY set so that
# ftbench does not re-execute itself (valgrind cannot follow that exec of
# /proc/self/exe), FTBENCH_BLAS_AUTO=0 (no kernel self-test children).
# tests/valgrind.supp holds suppressions of library-internal frames only.
# Usage: sh ci/memcheck.sh [BUILD_DIR]   (default build-memcheck)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build-memcheck}
if ! command -v valgrind >/dev/null 2>&1; then
    echo "memcheck: valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
fi
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive FTBENCH_BLAS_AUTO=0
vg="valgrind --tool=memcheck --error-exitcode=99 --track-origins=yes --num-callers=40
    --suppressions=tests/valgrind.supp --gen-suppressions=all"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
start=$(date +%s)
status=0

echo "memcheck: one step of every method ($build/methods)"
if ! $vg --leak-check=full --show-leak-kinds=definite,indirect,possible \
        --errors-for-leak-kinds=definite,indirect,possible \
        "$build/tests/memcheck/memcheck_step" "$build/methods" >"$logs/step.log" 2>&1; then
    cat "$logs/step.log" >&2
    echo "memcheck: errors in the method steps (above)" >&2
    status=1
else
    grep -E "^(full|[a-z0-9_]+ +loss)|methods stepped|ERROR SUMMARY" "$logs/step.log"
fi

echo "memcheck: one cell through ftbench run (lora, tiny, 16 tokens)"
if ! $vg --leak-check=no --trace-children=no "$build/ftbench" run --methods-dir "$build/methods" \
        --method lora --model tiny --seq 16 --steps 1 --warmup 0 --threads 1 --timeout 900 \
        --out "$logs/results" --run-id memcheck --quiet >"$logs/run.log" 2>&1; then
    cat "$logs/run.log" >&2
    echo "memcheck: errors in ftbench run, or the cell failed (above)" >&2
    status=1
else
    grep -E "^(cell|outcome) |ERROR SUMMARY" "$logs/run.log"
fi
echo "memcheck: $(($(date +%s) - start)) s"
exit $status
