/*
 * test_helpers_ckpt.h — builds safetensors files for the checkpoint tests,
 * including ones the library itself would never write: any dtype, any
 * header (a jansson object the test can break at will), raw header bytes,
 * a misaligned data section.  Also temporary directories and a reference
 * fp16 decoder written independently of the one under test.
 */
#ifndef TEST_HELPERS_CKPT_H
#define TEST_HELPERS_CKPT_H

#include "ftbench.h"

#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- temporary directories ---------------------------------------------- */

/* A fresh directory; a test cannot go on without one, so failure aborts. */
static inline char *ckpt_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char *tmpl;
    if (asprintf(&tmpl, "%s/ftb_ckpt_XXXXXX", base && *base ? base : "/tmp") < 0) abort();
    if (!mkdtemp(tmpl)) {
        perror("mkdtemp");
        abort();
    }
    return tmpl;
}

static inline int ckpt_rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb, (void)type, (void)ftw;
    return remove(path);
}

static inline void ckpt_rm_rf(char *dir)
{
    if (!dir) return;
    nftw(dir, ckpt_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

/* dir/name into a static-size buffer owned by the caller. */
static inline const char *ckpt_path(char *buf, size_t len, const char *dir, const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
    return buf;
}

static inline int ckpt_write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, fp) == n;
    return fclose(fp) == 0 && ok ? 0 : -1;
}

static inline long ckpt_file_size(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fclose(fp);
    return n;
}

/* ---- raw safetensors ---------------------------------------------------- */

/* Writes exactly: 8-byte LE header_len_field, header bytes, data bytes.  The
 * length field need not match the header (that is the point). */
static inline int ckpt_write_raw(const char *path, uint64_t header_len_field, const void *header, size_t header_bytes,
                                 const void *data, size_t data_bytes)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(header_len_field >> (8 * i));
    int ok = fwrite(len, 1, 8, fp) == 8;
    if (header_bytes) ok &= fwrite(header, 1, header_bytes, fp) == header_bytes;
    if (data_bytes) ok &= fwrite(data, 1, data_bytes, fp) == data_bytes;
    return fclose(fp) == 0 && ok ? 0 : -1;
}

/* ---- builder: a header object plus a data section ----------------------- */

typedef struct {
    json_t *header;
    unsigned char *data;
    size_t len, cap;
} st_builder;

static inline void stb_init(st_builder *b)
{
    b->header = json_object();
    b->data = NULL;
    b->len = b->cap = 0;
}

static inline void stb_free(st_builder *b)
{
    json_decref(b->header);
    free(b->data);
    b->header = NULL;
    b->data = NULL;
}

/* Appends bytes to the data section and a matching header entry. */
static inline void stb_add_bytes(st_builder *b, const char *name, const char *dtype, int ndim, const int64_t *shape,
                                 const void *bytes, size_t nbytes)
{
    if (b->len + nbytes > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + nbytes) cap *= 2;
        b->data = realloc(b->data, cap);
        b->cap = cap;
    }
    if (nbytes) memcpy(b->data + b->len, bytes, nbytes);
    json_t *dims = json_array();
    for (int i = 0; i < ndim; i++) json_array_append_new(dims, json_integer(shape[i]));
    json_object_set_new(b->header, name,
                        json_pack("{s:s,s:o,s:[I,I]}", "dtype", dtype, "shape", dims, "data_offsets",
                                  (json_int_t)b->len, (json_int_t)(b->len + nbytes)));
    b->len += nbytes;
}

static inline json_t *stb_entry(st_builder *b, const char *name) { return json_object_get(b->header, name); }

/* fp32 → bf16 by truncation: the expected value after loading is then
 * exactly bits << 16. */
static inline uint16_t ckpt_bf16_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)(u >> 16);
}

static inline float ckpt_bf16_value(uint16_t bits)
{
    uint32_t u = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Reference fp16 decoder, by arithmetic rather than bit surgery. */
static inline float ckpt_f16_value(uint16_t h)
{
    int sign = h >> 15, exponent = (h >> 10) & 31, mantissa = h & 1023;
    double v;
    if (exponent == 0)
        v = ldexp(mantissa, -24);
    else if (exponent == 31)
        v = mantissa ? NAN : INFINITY;
    else
        v = ldexp(mantissa + 1024, exponent - 25);
    return (float)(sign ? -v : v);
}

/* A deterministic fp16 pattern for element i of tensor k that sweeps every
 * bit pattern (subnormals, inf, NaN included) across a model. */
static inline uint16_t ckpt_f16_pattern(int k, int64_t i)
{
    return (uint16_t)((uint64_t)(i * 40503 + k * 977 + 13) & 0xffff);
}

/* Adds tensor t in dtype "F32", "BF16" (truncated values) or "F16" (the
 * pattern above, which ignores t's values). */
static inline void stb_add_tensor(st_builder *b, const ftb_tensor *t, const char *dtype, int k)
{
    if (!strcmp(dtype, "F32")) {
        stb_add_bytes(b, t->name, dtype, t->ndim, t->shape, t->data, (size_t)t->numel * 4);
        return;
    }
    uint16_t *half = malloc((size_t)t->numel * 2 + 1);
    for (int64_t i = 0; i < t->numel; i++)
        half[i] = !strcmp(dtype, "BF16") ? ckpt_bf16_bits(t->data[i]) : ckpt_f16_pattern(k, i);
    stb_add_bytes(b, t->name, dtype, t->ndim, t->shape, half, (size_t)t->numel * 2);
    free(half);
}

/* Every parameter of m, in order, except the one named skip (may be NULL). */
static inline void stb_add_model(st_builder *b, const ftb_model *m, const char *dtype, const char *skip)
{
    for (int k = 0; k < m->n_params; k++)
        if (!skip || strcmp(m->params[k]->name, skip) != 0) stb_add_tensor(b, m->params[k], dtype, k);
}

/* Writes the builder's file; the header is space-padded to a multiple of 8,
 * plus `misalign` more spaces (1..3 leaves fp32 data unaligned). */
static inline int stb_write(st_builder *b, const char *path, int misalign)
{
    char *text = json_dumps(b->header, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) return -1;
    size_t n = strlen(text);
    size_t padded = ((n + 7) & ~(size_t)7) + (size_t)misalign;
    char *header = malloc(padded);
    memcpy(header, text, n);
    memset(header + n, ' ', padded - n);
    free(text);
    int rc = ckpt_write_raw(path, padded, header, padded, b->data, b->len);
    free(header);
    return rc;
}

#endif
