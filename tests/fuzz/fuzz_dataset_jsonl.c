/*
 * fuzz_dataset_jsonl.c — pre-tokenized JSON Lines datasets
 * (datasets/dataset.c: {"input_ids": [...]} with optional "labels" or
 * "loss_mask", one example per line).
 *
 * Input: the file's text, opened as data.jsonl with a 50000-token
 * vocabulary and then cut into batches (fuzz_dataset_common.h).
 *
 * Seeds: tests/fuzz/corpus/dataset_jsonl/ (gen_corpus.c).
 */
#include "fuzz_dataset_common.h"

int fuzz_dataset_jsonl_one(const uint8_t *data, size_t size) { return fz_ds_run("data.jsonl", data, size); }

FTB_FUZZ_ENTRY(fuzz_dataset_jsonl_one)
