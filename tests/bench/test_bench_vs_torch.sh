#!/bin/sh
# test_bench_vs_torch.sh — checks `make bench-vs-torch` on the tiny model
# (seconds, not the real cells).  Not part of `make test` nor of CI: it
# needs python3-torch.  Run from the repository root after `make`:
#   sh tests/bench/test_bench_vs_torch.sh
# Checks: the table's rows and ratios against the summary file, the loss
# check (ftbench and PyTorch on the same checkpoint and tokens), the kernel
# ftbench ran being the one PyTorch gets, the check failing when the two
# sides see different tokens, bad options (one line, exit 2), and the
# python3-torch install path as root and not (apt-get and id stubbed).
set -u
BIN=${BIN:-build/ftbench}
METHODS_DIR=${METHODS_DIR:-build/methods}
T=$(mktemp -d /tmp/test-vs-torch.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   $1"; }
bad() {
    echo "FAIL $1"
    fails=$((fails + 1))
}
expect() { # name condition...
    name=$1
    shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}
[ -x "$BIN" ] || {
    echo "test_bench_vs_torch.sh: $BIN missing: run make first" >&2
    exit 2
}
/usr/bin/python3 -c 'import torch' 2>/dev/null || {
    echo "test_bench_vs_torch.sh: needs python3-torch (apt-get install python3-torch)" >&2
    exit 2
}
DRIVER="sh tests/bench/bench_vs_torch.sh --bin $BIN --methods-dir $METHODS_DIR"

# 1. Every method on the tiny model through make, with the options.
make -s bench-vs-torch MODELS=tiny SEQ=32 STEPS=2 WARMUP=1 CHECK_MODELS="tiny tiny-tied" OUT="$T/a" \
    >"$T/a.out" 2>"$T/a.err"
rc=$?
expect "make bench-vs-torch MODELS=tiny exits 0 (rc $rc)" [ "$rc" -eq 0 ]
for m in full lora gc mezo; do
    expect "row tiny/$m/32" grep -q "^tiny/$m/32 " "$T/a.out"
    expect "loss check $m: both models within tolerance" \
        sh -c "grep -Eq '^check tiny +$m +losses ftbench .* ok$' '$T/a.out' && grep -Eq '^check tiny-tied +$m +losses .* ok$' '$T/a.out'"
done
expect "gc = lora on both sides" [ "$(grep -c 'gc = lora bit for bit: ftbench yes, PyTorch yes' "$T/a.out")" -eq 2 ]
expect "same kernel line" grep -Eq '^OpenBLAS kernel: ftbench ([A-Za-z0-9]+) \([a-z]+\), PyTorch \1;' "$T/a.out"
expect "load average before and after" grep -q '^Load Average: .* (before), .* (after' "$T/a.out"
expect "markdown rows" [ "$(grep -c '^| tiny ' "$T/a.out")" -eq 4 ]
expect "speed goal line over the 4 cells" grep -Eq '^speed goal .*: met in [0-4] of 4 cells' "$T/a.out"
# The ratio printed is PyTorch's median over ftbench's, from the records.
/usr/bin/python3 - "$T/a" "$T/a.out" <<'EOF' >"$T/ratio.out" 2>&1
import glob, json, re, statistics, sys
s = json.load(open(glob.glob(sys.argv[1] + "/vs-torch-*.json")[0]))
out = open(sys.argv[2]).read()
assert len(s["rows"]) == 4, s["rows"]
for r in s["rows"]:
    rec = json.load(open(r["ftbench_record"]))
    fb = statistics.median(rec["step_seconds_all"][rec["warmup_steps"]:])
    assert abs(fb - r["ftbench"]["median"]) < 1e-12, (fb, r["ftbench"])
    tt = r["torch_run"]
    th = statistics.median(tt["step_seconds_all"][tt["warmup"]:])
    assert len(tt["step_seconds_all"]) == 3 and len(rec["step_seconds_all"]) == 3
    assert tt["trainable_params"] == rec["trainable_params"], (tt["trainable_params"], rec["trainable_params"])
    assert tt["blas"]["openblas_threads"] == rec["threads"] == tt["blas"]["torch_threads"]
    m = re.search(r"^%s .* ([0-9.]+)x " % re.escape(r["name"]), out, re.M)
    assert m and abs(float(m.group(1)) - th / fb) <= 0.005 + 1e-9 * th / fb, (m and m.group(1), th / fb)
met = sum(r["torch_run"] and statistics.median(r["torch_run"]["step_seconds_all"][r["torch_run"]["warmup"]:])
          / r["ftbench"]["median"] >= 1.5 for r in s["rows"])
assert re.search(r"met in %d of 4 cells" % met, out), met
print("ok")
EOF
expect "ratios and counts match the records ($(tail -1 "$T/ratio.out"))" grep -qx ok "$T/ratio.out"

# 2. The kernel ftbench ran is the one PyTorch gets: a wrapper makes ftbench
# run Haswell's (OPENBLAS_CORETYPE: selection "user").
cat >"$T/ftb-haswell" <<EOF
#!/bin/sh
OPENBLAS_CORETYPE=Haswell exec $(realpath "$BIN") "\$@"
EOF
chmod +x "$T/ftb-haswell"
sh tests/bench/bench_vs_torch.sh --bin "$T/ftb-haswell" --methods-dir "$METHODS_DIR" --models tiny --methods lora \
    --seq 16 --steps 1 --check-models "" --out "$T/b" >"$T/b.out" 2>"$T/b.err"
rc=$?
expect "PyTorch follows ftbench's kernel (rc $rc)" \
    sh -c "[ $rc -eq 0 ] && grep -q '^OpenBLAS kernel: ftbench Haswell (user), PyTorch Haswell;' '$T/b.out'"

# 3. The loss check fails when the two sides do not see the same tokens.
cat >"$T/ftb-uniform" <<EOF
#!/bin/sh
# every --dataset replaced by uniform ids
bin=$(realpath "$BIN"); n=\$#; i=0; prev=
for a in "\$@"; do
    i=\$((i + 1))
    if [ "\$prev" = --dataset ]; then a=uniform; fi
    set -- "\$@" "\$a"; prev=\$a
done
shift \$n
exec "\$bin" "\$@"
EOF
chmod +x "$T/ftb-uniform"
sh tests/bench/bench_vs_torch.sh --bin "$T/ftb-uniform" --methods-dir "$METHODS_DIR" --models tiny --methods full \
    --seq 16 --steps 1 --check-models tiny --out "$T/c" >"$T/c.out" 2>"$T/c.err"
rc=$?
expect "other tokens: check DIFFERS, exit 1 (rc $rc)" \
    sh -c "[ $rc -eq 1 ] && grep -q '^check tiny .* DIFFERS' '$T/c.out' && grep -q 'LOSS CHECK FAILED' '$T/c.out'"

# 4. Bad options: one line, exit 2.
for case in "--methods ia3|no PyTorch implementation of 'ia3'" "--models nosuch|unknown model 'nosuch'" \
    "--seq 0|SEQ='0': a whole number >= 1" "--steps x|STEPS='x'" "--check-models nosuch|unknown model 'nosuch'"; do
    opt=${case%%|*}
    msg=${case#*|}
    # shellcheck disable=SC2086
    $DRIVER $opt --out "$T/d" >"$T/d.out" 2>"$T/d.err"
    rc=$?
    expect "bad $opt: exit 2, one line naming it (rc $rc)" \
        sh -c "[ $rc -eq 2 ] && [ \$(wc -l <'$T/d.err') -eq 1 ] && grep -qF \"$msg\" '$T/d.err'"
done

# 5. Without torch (PYTHON cannot import it): as non-root the package is
# named and nothing installed; as root apt-get installs python3-torch.
# stub/: apt-get logging its arguments; user/: the same and an id saying uid 1000.
mkdir -p "$T/stub" "$T/user"
# shellcheck disable=SC2016 # $@ and APT_RC expand when the stub runs
printf '#!/bin/sh\necho "$@" >>%s/apt.log\nexit ${APT_RC:-0}\n' "$T" >"$T/stub/apt-get"
printf '#!/bin/sh\necho 1000\n' >"$T/user/id"
cp "$T/stub/apt-get" "$T/user/apt-get"
chmod +x "$T/stub/apt-get" "$T/user/apt-get" "$T/user/id"
PATH="$T/user:$PATH" PYTHON=/bin/false sh tests/bench/bench_vs_torch.sh --bin "$BIN" >"$T/e.out" 2>"$T/e.err"
rc=$?
expect "non-root without torch: exit 2, names python3-torch, installs nothing (rc $rc)" \
    sh -c "[ $rc -eq 2 ] && grep -q 'run as root: apt-get install python3-torch' '$T/e.err' && [ ! -e '$T/apt.log' ]"
if [ "$(id -u)" = 0 ]; then
    PATH="$T/stub:$PATH" PYTHON=/bin/false sh tests/bench/bench_vs_torch.sh --bin "$BIN" >"$T/f.out" 2>"$T/f.err"
    rc=$?
    expect "root without torch: apt-get install python3-torch, then exit 2 as still missing (rc $rc)" \
        sh -c "[ $rc -eq 2 ] && grep -q 'install .*python3-torch' '$T/apt.log' && grep -q 'still cannot import torch' '$T/f.err'"
    rm -f "$T/apt.log"
    PATH="$T/stub:$PATH" APT_RC=100 PYTHON=/bin/false sh tests/bench/bench_vs_torch.sh --bin "$BIN" >"$T/g.out" 2>"$T/g.err"
    rc=$?
    expect "root, apt-get failing: exit 2 with the command (rc $rc)" \
        sh -c "[ $rc -eq 2 ] && grep -q 'apt-get failed; run: apt-get install python3-torch' '$T/g.err'"
fi

if [ "$fails" -gt 0 ]; then
    echo "test_bench_vs_torch.sh: $fails failed (outputs in $T kept)"
    trap - EXIT
    exit 1
fi
echo "test_bench_vs_torch.sh: all passed"
