#!/bin/sh
# bench_zo.sh — the zeroth-order figures of docs/BENCHMARKS.md:
#   fidelity  cosine of the MeZO / P-RGE estimate to the exact gradient
#             against the query budget n (`ftbench fidelity`);
#   speed     wall time per step and per query: P-RGE's n batched queries
#             (one forward of 2n slices) against MeZO's n sequential
#             queries (samples=n: 2n forwards), cells run alternately.
# Usage: tests/bench/bench_zo.sh [fidelity|speed|all]   (make bench-zo)
# Environment: BIN, METHODS, OUT, MODEL, SEQ, NS, SEEDS, REPS, THREADS.
set -eu
BIN=${BIN:-build/ftbench}
METHODS=${METHODS:-build/methods}
OUT=${OUT:-results/bench-zo}
MODEL=${MODEL:-smollm2-135m}
SEQ=${SEQ:-64}
NS=${NS:-1 2 4 8 16}
SEEDS=${SEEDS:-1 2 3}
REPS=${REPS:-3}
THREADS=${THREADS:-1}
WHAT=${1:-all}
export FTBENCH_BLAS_AUTO=${FTBENCH_BLAS_AUTO:-0}
mkdir -p "$OUT"

fidelity() {
    # --after-steps 0: the estimate at the starting point (LoRA's B = 0, as
    # fine-tuning starts); the same batch and seed for every n.
    for seed in $SEEDS; do
        for n in $NS; do
            for m in "prge --opt queries=$n" "mezo --opt params=lora --opt samples=$n" \
                     "mezo --opt params=full --opt samples=$n"; do
                # shellcheck disable=SC2086
                "$BIN" fidelity --methods-dir "$METHODS" --model "$MODEL" --seq "$SEQ" --seed "$seed" \
                    --after-steps 0 --threads "$THREADS" --out "$OUT/fidelity" --method $m > /dev/null
            done
        done
    done
    python3 - "$OUT/fidelity/fidelity.jsonl" <<'EOF'
import json, sys, math, statistics as st
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    m = r["method"]; o = m["options"]
    kind = m["label"] + (" " + o.get("params", "full") if m["label"] == "mezo" else "")
    n = int(o.get("queries", o.get("samples", 1)))
    rows.setdefault((kind, n), []).append((r["exact"]["cosine"], r["exact"]["params"], r["seconds_method"]))
print("| method | d (parameters) | n | runs | mean cos(estimate, exact) | min | max | 1/sqrt(1+(d+1)/n) | seconds per estimate (median) |")
print("|---|---|---|---|---|---|---|---|---|")
for (kind, n) in sorted(rows):
    v = rows[(kind, n)]; c = [x[0] for x in v]; d = v[0][1]
    print(f"| {kind} | {d:,} | {n} | {len(c)} | {st.mean(c):.5f} | {min(c):.5f} | {max(c):.5f} | "
          f"{1/math.sqrt(1+(d+1)/n):.5f} | {st.median(x[2] for x in v):.1f} |")
EOF
}

speed() {
    # Alternate the methods within each repetition so that the load of a
    # shared machine falls on all alike; medians over repetitions.  MeZO runs
    # both ways of forming θ ± εz (perturb=read, the default, and the
    # paper's in-place seed trick).
    rep=1
    while [ "$rep" -le "$REPS" ]; do
        for n in $NS; do
            for m in "prge --opt queries=$n" \
                     "mezo --opt params=lora --opt targets=all --opt samples=$n --opt perturb=read" \
                     "mezo --opt params=lora --opt targets=all --opt samples=$n --opt perturb=inplace"; do
                # shellcheck disable=SC2086
                "$BIN" run --methods-dir "$METHODS" --model "$MODEL" --seq "$SEQ" --steps 2 --warmup 1 \
                    --threads "$THREADS" --no-timeline --quiet --force --out "$OUT/speed" --run-id "rep$rep" \
                    --method $m > /dev/null || true
            done
        done
        rep=$((rep + 1))
    done
    cat "$OUT"/speed/*/rep*/results.jsonl | python3 -c '
import json, sys, statistics as st
rows = {}
for line in sys.stdin:
    r = json.loads(line)
    if r.get("outcome") != "ok": continue
    m = r["method"]; o = m["options"]; lab = m["label"]
    if lab == "mezo": lab += " " + o.get("perturb", "read")
    n = int(o.get("queries", o.get("samples", 1)))
    t = r["timing"]
    ph = t["method_phase_seconds"]
    rows.setdefault((n, lab), []).append((t["step_seconds"]["median"], ph["forward"]["median"], ph["optim"]["median"]))
labs = ["prge", "mezo read", "mezo inplace"]
med = lambda n, l, i: st.median([x[i] for x in rows.get((n, l), [])] or [float("nan")])
print("| n | " + " | ".join(l + " s/step" for l in labs) + " | " + " | ".join(l + " s/query" for l in labs) +
      " | mezo read / prge | mezo inplace / prge | reps |")
print("|---|" + "---|" * (2 * len(labs) + 3))
for n in sorted({k[0] for k in rows}):
    s = [med(n, l, 0) for l in labs]
    k = min(len(rows.get((n, l), [])) for l in labs)
    print(f"| {n} | " + " | ".join(f"{x:.3f}" for x in s) + " | " + " | ".join(f"{x/n:.3f}" for x in s) +
          f" | {s[1]/s[0]:.2f} | {s[2]/s[0]:.2f} | {k} |")
print()
print("| n | " + " | ".join(l + " forward s/query" for l in labs) + " | " + " | ".join(l + " noise+update s/query" for l in labs) + " |")
print("|---|" + "---|" * (2 * len(labs)))
for n in sorted({k[0] for k in rows}):
    print(f"| {n} | " + " | ".join(f"{med(n, l, 1)/n:.3f}" for l in labs) + " | " + " | ".join(f"{med(n, l, 2)/n:.3f}" for l in labs) + " |")
'
}

case "$WHAT" in
fidelity) fidelity ;;
speed) speed ;;
all) fidelity; speed ;;
*) echo "bench_zo.sh: unknown part '$WHAT' (fidelity, speed or all)" >&2; exit 2 ;;
esac
