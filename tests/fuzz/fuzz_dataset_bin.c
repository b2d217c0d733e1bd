/*
 * fuzz_dataset_bin.c — pre-tokenized flat binary datasets
 * (datasets/dataset.c: little-endian int32 token ids, no header).
 *
 * Input: the file's bytes, opened with a 50000-token vocabulary and then
 * cut into batches (fuzz_dataset_common.h).
 *
 * Seeds: tests/fuzz/corpus/dataset_bin/ (gen_corpus.c).
 */
#include "fuzz_dataset_common.h"

int fuzz_dataset_bin_one(const uint8_t *data, size_t size) { return fz_ds_run("tokens.bin", data, size); }

FTB_FUZZ_ENTRY(fuzz_dataset_bin_one)
