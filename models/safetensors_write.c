/*
 * safetensors_write.c — writing a safetensors file: the header (with
 * metadata), the data section ordered by alignment so a reader can map
 * every tensor, written through an atomic file.  Tensors stored in another
 * format are written as fp32, tile by tile (ftb_safetensors_write) or as
 * stored (ftb_model_save).
 */
#include "atomic_file.h"
#include "checkpoint_internal.h"
#include "ftbench.h"
#include "safetensors.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Builds the safetensors header: {"__metadata__": {"format": "pt", ...},
 * name: {...}} in items' order.  Transformers refuses a file without format
 * metadata.  meta (may be NULL) adds string entries; it is borrowed. */
static json_t *build_header(const char *path, const ftb_st_item *items, int n, json_t *meta_extra, char *err,
                            size_t errlen)
{
    json_t *header = json_object();
    json_t *meta = json_pack("{s:s}", "format", "pt");
    if (meta && meta_extra) json_object_update(meta, meta_extra);
    if (!header || !meta || json_object_set_new(header, "__metadata__", meta) != 0) {
        json_decref(header);
        ck_error(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const ftb_st_item *it = &items[i];
        if (json_object_get(header, it->name)) {
            ck_error(err, errlen, "%s: tensor '%s': given twice", path, it->name);
            goto fail;
        }
        json_t *shape = json_array();
        for (int d = 0; shape && d < it->ndim; d++) json_array_append_new(shape, json_integer(it->shape[d]));
        uint64_t end = offset + it->nbytes;
        json_t *entry = json_pack("{s:s,s:o,s:[I,I]}", "dtype", it->dtype, "shape", shape, "data_offsets",
                                  (json_int_t)offset, (json_int_t)end);
        if (!entry || json_object_set_new(header, it->name, entry) != 0) {
            ck_error(err, errlen, "%s: out of memory", path);
            goto fail;
        }
        offset = end;
    }
    return header;
fail:
    json_decref(header);
    return NULL;
}

/* A tensor's values as fp32, tile by tile (for tensors stored otherwise). */
static int write_dequantized(ftb_atomic_file *af, const ftb_tensor *t, char *err, size_t errlen)
{
    int64_t rows = t->ndim == 2 ? t->shape[0] : 1, cols = t->ndim == 2 ? t->shape[1] : t->numel;
    int64_t tile = rows < 256 ? rows : 256;
    float *buf = malloc(sizeof(float) * (size_t)(tile * cols));
    if (!buf) {
        ck_error(err, errlen, "%s: tensor '%s': out of memory", af->path, t->name);
        return -1;
    }
    int rc = 0;
    for (int64_t r0 = 0; rc == 0 && r0 < rows; r0 += tile) {
        int64_t n = rows - r0 < tile ? rows - r0 : tile;
        ftb_tensor_read_rows(t, r0, n, buf);
        rc = ftb_atomic_write(af, buf, sizeof(float) * (size_t)(n * cols), err, errlen);
    }
    free(buf);
    return rc;
}

int ftb_st_write_items(const char *path, ftb_st_item *items, int n, json_t *meta_extra, char *err, size_t errlen)
{
    /* Stable order by alignment (4-byte dtypes, then 2, then 1): with the
     * header padded to 8, every tensor then starts on a multiple of its
     * element size, so a reader can map it; safetensors allows no holes. */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && items[j - 1].align < items[j].align; j--) {
            ftb_st_item tmp = items[j];
            items[j] = items[j - 1];
            items[j - 1] = tmp;
        }
    json_t *header = build_header(path, items, n, meta_extra, err, errlen);
    if (!header) return -1;
    char *text = json_dumps(header, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(header);
    if (!text) {
        ck_error(err, errlen, "%s: out of memory", path);
        return -1;
    }
    /* Padding the header to a multiple of 8 puts the data section (and so
     * every fp32 tensor) on an 8-byte boundary, so a reader can map it. */
    size_t text_len = strlen(text);
    size_t header_len = (text_len + 7) & ~(size_t)7;
    char *padded = malloc(8 + header_len);
    if (!padded) {
        free(text);
        ck_error(err, errlen, "%s: out of memory", path);
        return -1;
    }
    for (int i = 0; i < 8; i++) padded[i] = (char)(((uint64_t)header_len >> (8 * i)) & 0xff);
    memcpy(padded + 8, text, text_len);
    memset(padded + 8 + text_len, ' ', header_len - text_len);
    free(text);

    ftb_atomic_file af;
    int rc = ftb_atomic_begin(&af, path, err, errlen);
    if (rc == 0) rc = ftb_atomic_write(&af, padded, 8 + header_len, err, errlen);
    for (int i = 0; rc == 0 && i < n; i++) {
        if (!items[i].nbytes) continue;
        if (items[i].deq)
            rc = write_dequantized(&af, items[i].deq, err, errlen);
        else
            rc = ftb_atomic_write(&af, items[i].bytes, (size_t)items[i].nbytes, err, errlen);
    }
    free(padded);
    if (rc != 0) {
        ftb_atomic_abort(&af);
        return -1;
    }
    return ftb_atomic_commit(&af, err, errlen);
}

int ftb_safetensors_write(const char *path, ftb_tensor *const *tensors, int n, char *err, size_t errlen)
{
    if (n < 0 || (n > 0 && !tensors)) {
        ck_error(err, errlen, "%s: bad tensor list", path);
        return -1;
    }
    ftb_st_item *items = calloc((size_t)(n ? n : 1), sizeof *items);
    if (!items) {
        ck_error(err, errlen, "%s: out of memory", path);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const ftb_tensor *t = tensors[i];
        if (!t) {
            ck_error(err, errlen, "%s: tensor #%d is NULL", path, i);
            free(items);
            return -1;
        }
        int64_t numel = 1;
        for (int d = 0; d < t->ndim && d < 2; d++) numel *= t->shape[d];
        /* Stored in another format: no fp32 data, core storage.  A tensor
         * with data is written from it whatever else it holds (a method's
         * own tensor need not have set the storage fields). */
        int quantized = !t->data && t->quant && t->dtype > FTB_DTYPE_F32 && t->dtype < FTB_DTYPE_COUNT;
        if (!t->name[0] || !strcmp(t->name, "__metadata__") || t->ndim < 0 || t->ndim > 2 || numel != t->numel ||
            t->numel < 0 || (t->numel > 0 && !t->data && !quantized) || strlen(t->name) >= sizeof items[i].name) {
            ck_error(err, errlen, "%s: tensor '%s': bad name, shape or data (ndim %d, numel %" PRId64 ")", path,
                     t->name, t->ndim, t->numel);
            free(items);
            return -1;
        }
        ftb_st_item *it = &items[i];
        snprintf(it->name, sizeof it->name, "%s", t->name);
        it->dtype = "F32";
        it->ndim = t->ndim;
        it->shape[0] = t->shape[0];
        it->shape[1] = t->shape[1];
        it->nbytes = (uint64_t)t->numel * sizeof(float);
        it->bytes = t->data;
        it->deq = quantized ? t : NULL;
        it->align = 4;
    }
    int rc = ftb_st_write_items(path, items, n, NULL, err, errlen);
    free(items);
    return rc;
}
