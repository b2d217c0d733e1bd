#!/bin/sh
# bench_lars.sh — the measured sections of docs/methods/lars.md:
#   curves  peak RSS and saved activations against sequence length for lars
#           (pooled, gated), lora and lora with PEFT's dropout 0.05, every
#           model in MODELS, one step each (the peak is reached in the first);
#   speed   tokens/s of the same four on SPEED_MODEL, one warm-up + 2 steps;
#   tables  the markdown tables from what OUT holds (tests/bench/lars_tables.py).
# Cells already recorded under OUT are not run again (ftbench run resumes),
# so an interrupted run continues where it stopped.
# Usage: tests/bench/bench_lars.sh [curves|speed|tables|all]   (make bench-lars)
# Environment: BIN, METHODS, OUT, MODELS, SEQS, SPEED_MODEL, SPEED_SEQS, TIMEOUT,
# THREADS (compute threads per cell; default: ftbench's, all host cores).
set -eu
BIN=${BIN:-build/ftbench}
METHODS=${METHODS:-build/methods}
OUT=${OUT:-results/bench-lars}
MODELS=${MODELS:-smollm2-135m qwen2.5-0.5b llama-3.2-1b}
SEQS=${SEQS:-128 256 512 1024 2048 4096}
SPEED_MODEL=${SPEED_MODEL:-smollm2-135m}
SPEED_SEQS=${SPEED_SEQS:-$SEQS}
TIMEOUT=${TIMEOUT:-3600}
THREADS=${THREADS:-}
WHAT=${1:-all}
HERE=$(dirname "$0")

# The four ways of adapting all seven linears at rank 8.
each_method() {
    "$@" lars --opt targets=all
    "$@" lars --opt variant=gated --opt targets=all
    "$@" lora --opt targets=all
    "$@" lora --opt targets=all --opt dropout=0.05
}

cell() { # run-id model seq steps warmup -- method options...
    id=$1 model=$2 seq=$3 steps=$4 warmup=$5
    shift 5
    # shellcheck disable=SC2068
    "$BIN" run --methods-dir "$METHODS" --model "$model" --seq "$seq" --steps "$steps" --warmup "$warmup" \
        ${THREADS:+--threads "$THREADS"} --timeout "$TIMEOUT" --no-timeline --quiet --out "$OUT" --run-id "$id" \
        --method $@ > /dev/null || true
}

curves() {
    for model in $MODELS; do
        for seq in $SEQS; do each_method cell curves "$model" "$seq" 1 0; done
    done
}

speed() {
    for seq in $SPEED_SEQS; do each_method cell speed "$SPEED_MODEL" "$seq" 2 1; done
}

tables() {
    for part in curves speed; do
        f="$OUT/host/$part/results.jsonl"
        [ -f "$f" ] && python3 "$HERE/lars_tables.py" "$part" "$f"
    done
    return 0
}

case "$WHAT" in
curves) curves; tables ;;
speed) speed; tables ;;
tables) tables ;;
all) curves; speed; tables ;;
*) echo "bench_lars.sh: unknown part '$WHAT' (curves, speed, tables or all)" >&2; exit 2 ;;
esac
