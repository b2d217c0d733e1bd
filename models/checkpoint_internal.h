/*
 * checkpoint_internal.h — what the checkpoint files share (core-private):
 * file names, the error line (paths are joined by lib/util), the shard source (checkpoint_source.c), the
 * JSON files (checkpoint_json.c) and quantized loading
 * (checkpoint_load_quant.c).
 */
#ifndef FTB_CHECKPOINT_INTERNAL_H
#define FTB_CHECKPOINT_INTERNAL_H

#include "ftbench.h"
#include "safetensors.h"
#include "util.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* fp32 data is written and mapped as the host stores it. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the checkpoint code assumes a little-endian host (safetensors is little-endian)"
#endif

#define INDEX_FILE  "model.safetensors.index.json"
#define SINGLE_FILE "model.safetensors"
/* Metadata of quantized tensors (docs/QUANT.md). */
#define QUANT_META_PREFIX      "ftbench.quant."
#define QUANT_META_VERSION_KEY "ftbench_quant_version"

/* The one-line error: control characters (from a file's names) become '?'. */
static inline void ck_error(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static inline void ck_error(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    for (char *c = err; *c; c++)
        if ((unsigned char)*c < 0x20) *c = '?';
}

/* ---- checkpoint_json.c ---------------------------------------------------- */

/* Parses a JSON file that must hold an object (NULL with err if not). */
json_t *ftb_ckpt_json_object(const char *path, char *err, size_t errlen);
/* "an object", "a list", ...: what v is, for messages. */
const char *ftb_ckpt_json_kind(const json_t *v);
/* The config as transformers writes config.json (NULL on out of memory). */
json_t *ftb_ckpt_config_to_json(const ftb_config *c);

/* ---- checkpoint_source.c -------------------------------------------------- */

typedef struct {
    char *file_name; /* as the index names it (relative to dir)    */
    char *path;
    ftb_st_file file;
    int open;
    int mapping_given; /* the model owns (and will unmap) the mapping */
} shard;

typedef struct {
    const char *dir;
    char *index_path;   /* NULL for a single-file checkpoint          */
    json_t *weight_map; /* borrowed from index_root                   */
    json_t *index_root;
    shard *shards;
    int n_shards, cap_shards;
} checkpoint_source;

/* The checkpoint in dir: model.safetensors, else the index (checked: every
 * entry a file name in dir).  0, or -1 with err. */
int ftb_ckpt_source_open(checkpoint_source *src, const char *dir, char *err, size_t errlen);
/* Closes the shards (unmapping those the model did not take) and the index. */
void ftb_ckpt_source_close(checkpoint_source *src);
/* The shard (opened) that holds tensor name, with *found set; NULL with err. */
shard *ftb_ckpt_source_locate(checkpoint_source *src, const char *name, const ftb_st_tensor **found, char *err,
                              size_t errlen);
/* The model takes over the shard's mapping (once). */
void ftb_ckpt_give_mapping(ftb_model *m, shard *s);

/* ---- checkpoint_load_quant.c ---------------------------------------------- */

/* Loads t, which the file stores quantized as desc (its metadata entry). */
int ftb_ckpt_load_quantized_tensor(ftb_model *m, ftb_tensor *t, shard *s, const ftb_st_tensor *st, const char *desc,
                                   int map, char *err, size_t errlen);
/* Every quantization metadata entry of s names a tensor m has. */
int ftb_ckpt_check_quant_metadata(ftb_model *m, const shard *s, char *err, size_t errlen);

#endif
