#!/bin/sh
# The interactive allocation timeline in a real browser (issue 20 item 7):
# two real 4096-token cells (starter-4m, lora and full: a few seconds each
# on an idle machine), their report, and test-timeline-browser.py driving
# Debian's headless chromium over the DevTools protocol on the lora cell's
# page (size, draw time, drawn peaks and a hover against the record and
# its timeline, toggles, the step-normalised comparison with full).
# Called from .ci/run, outside the Criterion suite; installs chromium when
# root; prints its elapsed time.
set -eu
cd "$(dirname "$0")/.."
t0=$(date +%s)
BIN=${BIN:-build/ftbench}
if ! [ -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null ||
            { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null; }
    else
        echo "test-timeline-browser: chromium is missing: apt-get install chromium (as root)" >&2
        exit 1
    fi
fi
unset OPENBLAS_CORETYPE
tmp=$(mktemp -d /tmp/ftb-timeline-page-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
for m in lora full; do
    "$BIN" run --model starter-4m --method $m --seq 4096 --steps 2 --warmup 1 --threads 2 --run-id page \
        --out "$tmp/res" >"$tmp/run-$m.out" 2>&1 || { cat "$tmp/run-$m.out"; exit 1; }
done
run="$tmp/res/host/page"
"$BIN" report "$run" --out "$tmp/report" --formats png >"$tmp/report.out" 2>&1 || { cat "$tmp/report.out"; exit 1; }
page="$tmp/report/timelines/timeline_host_lora.starter-4m.s4096.b1.html"
[ -s "$page" ] || { echo "test-timeline-browser: no $page" >&2; ls "$tmp/report/timelines" >&2; exit 1; }
grep -q "timelines/timeline_host_lora.starter-4m.s4096.b1.html" "$tmp/report/report.html" ||
    { echo "test-timeline-browser: report.html does not link the page" >&2; exit 1; }
python3 ci/test-timeline-browser.py "$page" "$run/cells/lora.starter-4m.s4096.b1.json" \
    "$run/lora.starter-4m.s4096.b1.timeline.tsv"
echo "test-timeline-browser: ok ($(($(date +%s) - t0)) s)"
