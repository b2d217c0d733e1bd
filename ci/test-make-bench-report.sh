#!/bin/sh
# `make bench` reports the run it made and nothing else; `make report`
# reports that run again, or what RESULTS names (issue 20 item 1).  A real
# sweep of the tiny model (seconds), beside an older run that must stay out
# of the report.  Called from .ci/run; prints its elapsed time.
set -eu
cd "$(dirname "$0")/.."
t0=$(date +%s)
tmp=$(mktemp -d /tmp/ftb-make-bench-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test-make-bench-report: FAIL: $*" >&2; exit 1; }

mkdir -p "$tmp/results"
cp -r tests/fixtures/results/rpi4-4gb "$tmp/results/"        # an older run beside the new one
make -s bench DEVICE=host LAST_BENCH="$tmp/last" REPORT_ARGS="--formats png" \
    BENCH_ARGS="--model tiny --methods lora,full --seqs 32,64 --steps 2 --warmup 1 --threads 1 --out $tmp/results" \
    >"$tmp/bench.out" 2>&1 || { cat "$tmp/bench.out"; fail "make bench failed"; }
run=$(cat "$tmp/last")
case "$run" in "$tmp/results/host/"*) ;; *) fail "last run '$run' is not the sweep's directory" ;; esac
md="$run/report/report.md"
[ -s "$md" ] || fail "make bench wrote no $md"
grep -q "^- \`$run/cells/\`: 4 records (sweep default, run " "$md" || { cat "$md"; fail "the report's sources do not name the run"; }
[ "$(grep -c '^- `' "$md")" -ge 1 ] || fail "no sources listed"
if grep -q "rpi4-4gb" "$md"; then fail "the older run leaked into make bench's report"; fi

# make report without RESULTS: the last bench's run, said so.
make -s report LAST_BENCH="$tmp/last" REPORT_OUT="$tmp/again" REPORT_ARGS="--formats png" >"$tmp/r.out" 2>&1 ||
    { cat "$tmp/r.out"; fail "make report failed"; }
grep -q "the run of the last make bench ($run)" "$tmp/r.out" || { cat "$tmp/r.out"; fail "make report did not say which run"; }
if grep -q "rpi4-4gb" "$tmp/again/report.md"; then fail "make report merged the older run"; fi

# RESULTS names what goes in: here every run under results/.
make -s report RESULTS="$tmp/results" REPORT_OUT="$tmp/all" REPORT_ARGS="--formats png" >"$tmp/r2.out" 2>&1 ||
    { cat "$tmp/r2.out"; fail "make report RESULTS=... failed"; }
grep -q "Sources (\`ftbench report $tmp/results\`)" "$tmp/all/report.md" || fail "the header does not list RESULTS"
grep -q "rpi4-4gb" "$tmp/all/report.md" || fail "RESULTS=dir did not merge the runs under it"

# Without RESULTS and without a last bench: exit 2 naming the runs.
if make -s report LAST_BENCH="$tmp/none" >"$tmp/r3.out" 2>&1; then fail "make report with nothing named succeeded"; fi
grep -q 'make report RESULTS="dir ..."' "$tmp/r3.out" || { cat "$tmp/r3.out"; fail "no hint"; }
echo "test-make-bench-report: ok ($(($(date +%s) - t0)) s)"
