#!/bin/sh
# Regenerates the seed corpora of the fuzz targets in tests/fuzz/corpus/
# (`make fuzz-corpus`).  Every seed is a valid input its parser accepts; the
# replay test (tests/test_fuzz_regressions.c) checks that on every `make test`.
#   safetensors checkpoint config dataset_bin dataset_jsonl
#                  gen_corpus (C, the project's own writers; $1 is its path)
#   profile        the profiles/ of the source tree
#   cli            command lines of the README and docs, NUL-separated
#   report         lines of the committed results fixture (tests/fixtures/results)
#   tokenizer      tests/fixtures/bpe/tokenizer.json whole and cut down (python3)
#   instr_jsonl    instruction JSON Lines, text and pre-tokenized
set -eu
cd "$(dirname "$0")/../.."
gen=${1:-build-fuzz/gen_corpus}
out=tests/fuzz/corpus
for t in safetensors checkpoint config dataset_bin dataset_jsonl profile cli report tokenizer instr_jsonl; do
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

# tokenizer: the BPE fixture, and cut-down variants (few merges, each
# pre-tokenizer kind, added tokens, ignore_merges), some with text to encode.
mkdir -p "$out/tokenizer"
cp tests/fixtures/bpe/tokenizer.json "$out/tokenizer/qwen3-cut.json"
/usr/bin/python3 - "$out/tokenizer" <<'PY'
import json, sys
out = sys.argv[1]
full = json.load(open("tests/fixtures/bpe/tokenizer.json"))
vocab = {k: v for k, v in full["model"]["vocab"].items() if v < 400}
merges = []
for m in full["model"]["merges"]:
    a, b = m.split(" ") if isinstance(m, str) else m
    if a in vocab and b in vocab and a + b in vocab:
        merges.append([a, b])
def write(name, pre, added=(), ignore=False, text=None, merges_as_pairs=False):
    t = {"added_tokens": [{"id": 400 + i, "content": c, "special": True} for i, c in enumerate(added)],
         "normalizer": None, "pre_tokenizer": pre,
         "model": {"type": "BPE", "vocab": dict(vocab, **{c: 400 + i for i, c in enumerate(added)}),
                   "merges": merges if merges_as_pairs else [a + " " + b for a, b in merges],
                   "ignore_merges": ignore}}
    data = json.dumps(t, ensure_ascii=False)
    if text is not None:
        data += "\n==ftb-text==\n" + text
    open("%s/%s" % (out, name), "w").write(data)
split = {"type": "Split", "pattern": {"Regex": full["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]},
         "behavior": "Isolated", "invert": False} if full["pre_tokenizer"]["type"] == "Sequence" else full["pre_tokenizer"]
byte = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
write("bytelevel.json", byte, text="Hello world, it's 2024!\n")
write("prefix-space.json", dict(byte, add_prefix_space=True), text="no leading space")
write("split-seq.json", {"type": "Sequence", "pretokenizers": [split, dict(byte, use_regex=False)]},
      added=["<|endoftext|>", "<|im_start|>", "<|im"], text="<|im_start|>user\nhi<|endoftext|><|im")
write("ignore-merges-pairs.json", byte, ignore=True, merges_as_pairs=True, text="the cat sat")
PY

# instr_jsonl: text and pre-tokenized instruction lines.
mkdir -p "$out/instr_jsonl"
printf '%s\n' '{"prompt": "Translate: chat", "answer": " cat"}' '{"prompt": "2+2=", "answer": "4"}' > "$out/instr_jsonl/text.jsonl"
printf '%s\n' '{"input_ids": [12, 7, 99, 4], "loss_mask": [0, 0, 1, 1]}' \
    '{"input_ids": [1, 2, 3, 4, 5], "loss_mask": [0, 1, 1, 0, 0]}' > "$out/instr_jsonl/pretokenized.jsonl"
printf '%s\r\n\r\n%s\r\n' '{"prompt": "caf\u00e9 \u2603", "answer": "\n"}' \
    '{"input_ids": [300, 5], "loss_mask": [0, 1]}' > "$out/instr_jsonl/mixed-crlf-blank.jsonl"
du -sh "$out"
