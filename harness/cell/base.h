/*
 * base.h — the frozen base weights a cell computes with: their storage
 * format (--base-dtype, --group, --embed-dtype), their residency
 * (--residency) and the prepared checkpoint the cell maps.
 *
 * A zoo model in a chosen format is never built in fp32 inside the
 * measured cell: its seeded weights are created and quantized once, in a
 * child of its own before any cell runs, and saved to a cache directory
 * (docs/HARNESS.md "Base weights"); cells then map that file, so that
 * lazy residency can drop its pages.  A checkpoint given with --base-dtype
 * is quantized at load (ftb_model_load_quantized, never a full fp32 copy)
 * into the cache the same way.
 */
#ifndef FTB_HARNESS_BASE_H
#define FTB_HARNESS_BASE_H

#include "ftbench.h"
#include <jansson.h>
#include <stdint.h>

#define FTB_BASE_INFO_FILE "ftbench-base.json"
/* 2: the saved config.json carries rope_scaling (a version-1 entry of a
 * llama-3.2 zoo model was saved without it, so it is rebuilt). */
#define FTB_BASE_FORMAT_VERSION 2

typedef struct {
    int dtype_given;     /* bit 0: --base-dtype given, bit 1: --embed-dtype */
    int residency_given; /* --residency given                            */
    int group_given;
    ftb_dtype dtype;       /* block linears                                */
    ftb_dtype embed_dtype; /* token embedding and (untied) LM head         */
    int group;             /* int4: elements per group                     */
    ftb_residency residency;
} ftb_base_spec;

void ftb_base_spec_default(ftb_base_spec *b);

/* Parses one option's value into b (opt: "--base-dtype", "--embed-dtype",
 * "--group", "--residency"); 0 or -1 with err naming the option. */
int ftb_base_parse_option(ftb_base_spec *b, const char *opt, const char *val, char *err, size_t errlen);

/* Checks the spec against the model: --group is for int4 formats, even,
 * and divides every row it applies to.  0 or -1 with err. */
int ftb_base_check(const ftb_base_spec *b, const ftb_config *cfg, const char *model, char *err, size_t errlen);

/* Whether the cell needs a prepared checkpoint: a zoo model with any base
 * option, or a checkpoint with --base-dtype/--embed-dtype. */
int ftb_base_needs_prepare(const ftb_base_spec *b, const char *checkpoint);

/* The cell key's part for the base: "" (nothing given), else
 * "<dtype>[-g<G>][-emb-<dtype>]" then ".lazy" when lazy. */
void ftb_base_key_part(const ftb_base_spec *b, char *out, size_t n);

/* Root of the prepared checkpoints: $FTBENCH_MODEL_CACHE, else
 * $XDG_CACHE_HOME/ftbench/models, else ~/.cache/ftbench/models. */
void ftb_base_cache_root(char *out, size_t n);

/* Makes (or finds, already made) the checkpoint the cells map, in a child
 * process: `dir` receives its path and *info (owned by the caller) the
 * contents of its ftbench-base.json.  0, or -1 with err. */
int ftb_base_prepare(const ftb_base_spec *b, const ftb_config *cfg, const char *model, const char *checkpoint,
                     uint64_t seed, int threads, int quiet, char *dir, size_t dirn, json_t **info, char *err,
                     size_t errlen);

/* What goes into a record's "base" from the prepared info (everything but
 * the per-tensor error list); a new reference. */
/* A checkpoint directory's identity: its real path and each file's name,
 * size and modification time, hashed (the cache key; resume compares it). */
uint64_t ftb_base_checkpoint_hash(const char *dir);
json_t *ftb_base_record_json(const ftb_base_spec *b, const char *dir, json_t *info);

#endif
