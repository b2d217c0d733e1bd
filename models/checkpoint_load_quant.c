/*
 * checkpoint_load_quant.c — tensors a checkpoint stores quantized: the
 * file's metadata ("ftbench.quant.<name>" = "<format>[/<group>]") says how
 * each is stored, and every part (codes, scales, zeros) is checked against
 * it before it is mapped or copied (docs/QUANT.md).
 */
#include "checkpoint_internal.h"
#include "ftbench.h"
#include "model_internal.h"
#include "quant.h"
#include "safetensors.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "int4/64", "int8", "bf16", ... → dtype and group; -1 if malformed. */
static int parse_quant_desc(const char *desc, ftb_dtype *d, int *group)
{
    char name[32];
    const char *slash = strchr(desc, '/');
    size_t len = slash ? (size_t)(slash - desc) : strlen(desc);
    if (len == 0 || len >= sizeof name) return -1;
    memcpy(name, desc, len);
    name[len] = '\0';
    int parsed = ftb_dtype_parse(name);
    if (parsed < 0 || parsed == FTB_DTYPE_F32) return -1;
    *d = (ftb_dtype)parsed;
    *group = 0;
    if (slash) {
        char *end;
        long g = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end || g <= 0 || g > INT_MAX) return -1;
        *group = (int)g;
    }
    return 0;
}

/* One part of a quantized tensor as the file must hold it. */
static int check_part(const char *path, const char *tensor, const char *part_name, const char *role,
                      const ftb_st_tensor *st, ftb_st_dtype want_dtype, int ndim, int64_t d0, int64_t d1, char *err,
                      size_t errlen)
{
    if (!st) {
        ck_error(err, errlen, "%s: tensor '%s': missing (%s of quantized weight '%s')", path, part_name, role, tensor);
        return -1;
    }
    if (st->dtype != want_dtype) {
        ck_error(err, errlen, "%s: tensor '%s': dtype %s, but the %s of a quantized weight are %s", path, part_name,
                 ftb_st_dtype_name(st->dtype), role, ftb_st_dtype_name(want_dtype));
        return -1;
    }
    int64_t want[2] = { d0, d1 };
    int ok = st->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = st->shape[i] == want[i];
    if (!ok) {
        char w[160], g[160];
        ftb_st_format_shape(w, sizeof w, ndim, want);
        ftb_st_format_shape(g, sizeof g, st->ndim, st->shape);
        ck_error(err, errlen, "%s: tensor '%s': shape %s, but the %s must be %s", path, part_name, g, role, w);
        return -1;
    }
    return 0;
}

/* A tensor the file stores quantized (desc from its metadata). */
int ftb_ckpt_load_quantized_tensor(ftb_model *m, ftb_tensor *t, shard *s, const ftb_st_tensor *st, const char *desc,
                                   int map, char *err, size_t errlen)
{
    ftb_dtype d;
    int group;
    if (parse_quant_desc(desc, &d, &group) != 0) {
        ck_error(err, errlen,
                 "%s: tensor '%s': metadata format '%s' is not one of bf16, f16, int8, int4/<group>, "
                 "int4-asym/<group>",
                 s->path, t->name, desc);
        return -1;
    }
    const int int4 = d == FTB_DTYPE_INT4 || d == FTB_DTYPE_INT4_ASYM;
    if (t->ndim != 2) {
        ck_error(err, errlen, "%s: tensor '%s': metadata stores it as %s, but only 2-D weights can be", s->path,
                 t->name, ftb_dtype_name(d));
        return -1;
    }
    if (int4 && group == 0) {
        ck_error(err, errlen, "%s: tensor '%s': metadata format '%s' gives no group size", s->path, t->name, desc);
        return -1;
    }
    if (!int4) group = 0;
    const int64_t rows = t->shape[0], cols = t->shape[1];
    char why[256];
    if (ftb_qstore_check(d, group, rows, cols, why, sizeof why) != 0) {
        ck_error(err, errlen, "%s: tensor '%s': %s", s->path, t->name, why);
        return -1;
    }
    static const ftb_st_dtype main_dtype[FTB_DTYPE_COUNT] = { FTB_ST_F32, FTB_ST_BF16, FTB_ST_F16,
                                                              FTB_ST_I8,  FTB_ST_U8,   FTB_ST_U8 };
    const char *role = int4 ? "packed 4-bit codes (two per byte)" : "values";
    if (check_part(s->path, t->name, t->name, role, st, main_dtype[d], 2, rows, int4 ? cols / 2 : cols, err, errlen))
        return -1;
    char name[160];
    const ftb_st_tensor *parts[3] = { st, NULL, NULL };
    if (d == FTB_DTYPE_INT8 || int4) {
        snprintf(name, sizeof name, "%s.scales", t->name);
        parts[QPART_SCALES] = ftb_st_find(&s->file, name);
        if (check_part(s->path, t->name, name, "scales", parts[QPART_SCALES], int4 ? FTB_ST_F16 : FTB_ST_F32,
                       int4 ? 2 : 1, rows, int4 ? cols / group : 0, err, errlen))
            return -1;
    }
    if (d == FTB_DTYPE_INT4_ASYM) {
        snprintf(name, sizeof name, "%s.zeros", t->name);
        parts[QPART_ZEROS] = ftb_st_find(&s->file, name);
        if (check_part(s->path, t->name, name, "zeros", parts[QPART_ZEROS], FTB_ST_F16, 2, rows, cols / group, err,
                       errlen))
            return -1;
    }
    int aligned = 1;
    for (int p = 0; p < 3; p++)
        if (parts[p])
            aligned &= (uintptr_t)ftb_st_tensor_data(&s->file, parts[p]) % ftb_st_dtype_size(parts[p]->dtype) == 0;
    ftb_qstore *q;
    if (map && aligned) {
        q = calloc(1, sizeof *q);
        if (q) {
            ftb_ckpt_give_mapping(m, s);
            q->dtype = d;
            q->group = group;
            q->rows = rows;
            q->cols = cols;
            q->q = ftb_st_tensor_data(&s->file, parts[QPART_Q]);
            q->scales = parts[QPART_SCALES] ? ftb_st_tensor_data(&s->file, parts[QPART_SCALES]) : NULL;
            q->zeros = parts[QPART_ZEROS] ? ftb_st_tensor_data(&s->file, parts[QPART_ZEROS]) : NULL;
            q->mapped = 1;
        }
    } else {
        q = ftb_qstore_alloc(d, group, rows, cols);
        for (int p = 0; q && p < 3; p++)
            if (parts[p])
                memcpy(q->owned[p], ftb_st_tensor_data(&s->file, parts[p]),
                       ftb_qstore_part_bytes(d, rows, cols, group, p));
    }
    if (!q) {
        ck_error(err, errlen, "%s: tensor '%s': out of memory", s->path, t->name);
        return -1;
    }
    ftb_model_track_qstore(m, q);
    t->data = NULL;
    t->dtype = d;
    t->group = group;
    t->quant = q;
    t->mapped = q->mapped;
    return 0;
}

/* Every metadata entry about a quantized tensor must name one the model
 * has: a misspelt name would otherwise silently load nothing quantized. */
int ftb_ckpt_check_quant_metadata(ftb_model *m, const shard *s, char *err, size_t errlen)
{
    const size_t plen = strlen(QUANT_META_PREFIX);
    for (int i = 0; i < s->file.n_meta; i++) {
        const char *key = s->file.meta_keys[i];
        if (strncmp(key, QUANT_META_PREFIX, plen) != 0) continue;
        const ftb_tensor *t = ftb_model_find(m, key + plen);
        if (!t || t->numel == 0 || (m->cfg.tie_embeddings && t == &m->lm_head)) {
            ck_error(err, errlen, "%s: metadata '%s' describes tensor '%s', which the model does not have", s->path,
                     key, key + plen);
            return -1;
        }
    }
    return 0;
}
