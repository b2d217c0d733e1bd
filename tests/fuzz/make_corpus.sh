#!/bin/sh
# Regenerates the seed corpora of the fuzz targets in tests/fuzz/corpus/
# (`make fuzz-corpus`).  Every seed is a valid input its parser accepts; the
# replay test (tests/test_fuzz_regressions.c) checks that on every `make test`.
#   safetensors checkpoint config dataset_bin dataset_jsonl
#                  gen_corpus (C, the project's own writers; $1 is its path)
#   profile        the profiles/ of the source tree
#   cli            command lines of the README and docs, NUL-separated
#   report         lines of the committed results fixture (tests/fixtures/results)
set -eu
cd "$(dirname "$0")/../.."
gen=${1:-build-fuzz/gen_corpus}
out=tests/fuzz/corpus
for t in safetensors checkpoint config dataset_bin dataset_jsonl profile cli report; do
    rm -rf "$out/$t"
done
mkdir -p "$out"
"$gen" "$out"

mkdir -p "$out/profile"
cp profiles/*.profile "$out/profile/"

# cli: one file per command line; words end with NUL.
mkdir -p "$out/cli"
cli() { name=$1; shift; printf '%s\0' "$@" > "$out/cli/$name"; }
cli run-lora     run --model qwen2.5-0.5b --method lora --opt rank=16 --seq 1024 --device rpi5-8gb
cli run-eq       run --model=tiny --method=lars --opt=lars.rank=4 --opt alpha=8 --seq=64 --batch=2 --steps 2 --warmup 0 --lr 3e-4 --seed 7 --attention eager --loss full --threads 2 --budget 512M --enforce watch --timeout 30.5 --no-timeline --force --quiet
cli run-ckpt     run --checkpoint /nonexistent/ckpt --method full --seq 128 --dataset synthetic-lang:64 --out results --run-id my-run.1
cli sweep        sweep --device rpi5 --sweep paper --methods full,lora,lars --seqs 128..4096 --batches 1,2,4 --no-skip --dataset uniform
cli sweep-list   sweep --model smollm2-135m --seqs 64,128,256,512 --batches 1 --profiles-dir profiles
cli fit          fit --device rpi5-4gb --model smollm2-135m --method lora --seq-min 512 --seq-max 4096 --granularity 512
cli list         list --device host
cli help         run --help

# report: records of the committed fixture, a few lines each; the one
# carrying a timeline points at the timeline part (fuzz_report.c).
mkdir -p "$out/report"
fx=tests/fixtures/results
host=$fx/host/default-035401b0b1dde7c1
sed -n '1,4p' "$host/results.jsonl" > "$out/report/host-s64"
sed -n '13,16p' "$host/results.jsonl" > "$out/report/host-reruns-and-torn-line"
sed -n '1,3p;10,12p' "$fx/rpi4-4gb/default-20423e4bb3a4185f/results.jsonl" > "$out/report/rpi4-over-budget"
sed -n '1,3p' "$fx/rpi4-4gb/fit-lora-875ba00244e1ece0/results.jsonl" > "$out/report/rpi4-fit"
{
    grep '"timeline_file"' "$host/results.jsonl" | head -n 1 |
        sed 's/"timeline_file":"[^"]*"/"timeline_file":"cell.timeline.tsv"/'
    printf '\n==ftb-timeline==\n'
    head -n 40 "$host/lora.smollm2-135m.s256.b1.timeline.tsv"
} > "$out/report/lora-s256-with-timeline"
du -sh "$out"
