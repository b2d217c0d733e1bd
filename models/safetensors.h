/*
 * safetensors.h — a bounds-checked reader of the safetensors format, plus the
 * half-precision converters the checkpoint loader needs.
 *
 * File layout: an 8-byte little-endian header length N, N bytes of JSON
 * ({"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
 * "__metadata__": {...}}), then the data section; offsets are relative to
 * the start of the data section.
 *
 * Everything a header claims is checked before it is believed, so a tensor
 * in the table can be read without further checks: its bytes lie inside the
 * data section, its byte size equals numel times the dtype size, and it does
 * not overlap another tensor.
 */
#ifndef FTB_SAFETENSORS_H
#define FTB_SAFETENSORS_H

#include "ftbench.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The spec's own cap on the header (100 MB); anything larger is corrupt. */
#define FTB_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
#define FTB_ST_MAX_DIMS   8

/* I8 and U8 hold quantized weights (docs/QUANT.md); the loader reads them
 * only where the file's metadata describes a quantized tensor. */
typedef enum { FTB_ST_F32 = 0, FTB_ST_BF16, FTB_ST_F16, FTB_ST_I8, FTB_ST_U8 } ftb_st_dtype;

typedef struct {
    char *name;
    ftb_st_dtype dtype;
    int ndim;
    int64_t shape[FTB_ST_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end; /* byte range inside the data section */
} ftb_st_tensor;

typedef struct {
    char *path;
    void *map; /* whole-file mapping, NULL once released     */
    size_t map_len;
    const uint8_t *data; /* start of the data section inside map       */
    uint64_t data_len;
    ftb_st_tensor *tensors; /* in header order                           */
    int n_tensors;
    char **meta_keys, **meta_values; /* "__metadata__" string entries    */
    int n_meta;
} ftb_st_file;

/* Maps and validates path.  0, or -1 with err "path: ..." (f left closed). */
int ftb_st_open(const char *path, ftb_st_file *f, char *err, size_t errlen);
/* Unmaps (unless released) and frees the table.  Safe on a zeroed file. */
void ftb_st_close(ftb_st_file *f);
/* Hands the mapping to someone else: ftb_st_close will no longer unmap it,
 * and the data pointers stay valid until the new owner unmaps. */
void ftb_st_release_mapping(ftb_st_file *f);

const ftb_st_tensor *ftb_st_find(const ftb_st_file *f, const char *name);
/* A "__metadata__" string value, or NULL. */
const char *ftb_st_meta(const ftb_st_file *f, const char *key);
static inline const uint8_t *ftb_st_tensor_data(const ftb_st_file *f, const ftb_st_tensor *t)
{
    return f->data + t->begin;
}

size_t ftb_st_dtype_size(ftb_st_dtype d);
const char *ftb_st_dtype_name(ftb_st_dtype d);
/* "F32", "BF16", "F16", "I8", "U8" → dtype; -1 for anything else. */
int ftb_st_dtype_parse(const char *s);

/* Formats a shape as "[a, b]" into buf (always NUL-terminated). */
void ftb_st_format_shape(char *buf, size_t len, int ndim, const int64_t *shape);

/* Half-precision → fp32.  src may be unaligned (it points into a file). */
float ftb_bf16_to_f32(uint16_t bits);
float ftb_f16_to_f32(uint16_t bits); /* subnormals, ±inf, NaN exact */
void ftb_bf16_to_f32_array(const void *src, float *dst, int64_t n);
void ftb_f16_to_f32_array(const void *src, float *dst, int64_t n);

/* ---- Writing (safetensors_write.c) ---------------------------------------- */

/* One entry of a file being written: bytes as they are, or (deq) a tensor
 * stored in another format written as its fp32 values. */
typedef struct {
    char name[112];
    const char *dtype; /* "F32", "BF16", "F16", "I8", "U8"          */
    int ndim;
    int64_t shape[2];
    const void *bytes;
    uint64_t nbytes;
    const ftb_tensor *deq;
    int align; /* 4, 2 or 1: the data section is ordered by it */
} ftb_st_item;

/* Writes items (reordered by alignment) to path through an atomic file;
 * meta_extra (may be NULL, borrowed) adds string metadata entries. */
int ftb_st_write_items(const char *path, ftb_st_item *items, int n, json_t *meta_extra, char *err, size_t errlen);

#endif
