/*
 * fuzz_safetensors.c — the safetensors reader (models/safetensors.c) and
 * the single-file checkpoint loader on top of it (models/checkpoint_load.c).
 *
 * Input: the bytes of one .safetensors file.  It is opened with
 * ftb_st_open, and every promise of safetensors.h is checked on what it
 * accepts: each tensor's bytes lie inside the data section, its byte size is
 * numel × dtype size, no two tensors overlap, names are unique.  Every
 * tensor's bytes are then read and converted (F32 copied, BF16/F16 through
 * the converters).  Finally the file is loaded as model.safetensors next to
 * the micro model's config.json (fuzz_models.h): mapped, copied, and
 * quantized while loading (ftb_model_load_quantized, the format picked by
 * the input: int4, int4-asym, int8 or f16 for the block linears, int8 or
 * bf16 for the embedding and LM head).  What loads is read back whole.
 *
 * Seeds: tests/fuzz/corpus/safetensors/ (gen_corpus.c).
 */
#include "ftbench.h"
#include "safetensors.h"

#include "fuzz_common.h"
#include "fuzz_models.h"

typedef struct {
    uint64_t begin, end;
} fz_st_range;

static int fz_st_by_begin(const void *a, const void *b)
{
    const fz_st_range *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Checks an accepted file against safetensors.h and reads every byte of
 * every tensor. */
static void fz_st_check(const ftb_st_file *f)
{
    FZ_CHECK(f->map != NULL && f->map_len >= 8, "accepted file has no mapping");
    const uint8_t *map = f->map;
    FZ_CHECK(f->data_len <= f->map_len - 8 && f->data == map + (f->map_len - f->data_len),
             "data section [%p, +%llu) is not the end of the %zu-byte mapping", (const void *)f->data,
             (unsigned long long)f->data_len, f->map_len);
    FZ_CHECK(f->n_tensors >= 0 && (f->n_tensors == 0 || f->tensors), "bad tensor table");
    fz_st_range *r = malloc(((size_t)f->n_tensors + 1) * sizeof *r);
    FZ_CHECK(r != NULL, "out of memory");
    int nr = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const ftb_st_tensor *t = &f->tensors[i];
        FZ_CHECK(t->name != NULL, "tensor %d has no name", i);
        FZ_CHECK(ftb_st_find(f, t->name) == t, "tensor '%s' is not found by its name (duplicate?)", t->name);
        FZ_CHECK(t->ndim >= 0 && t->ndim <= FTB_ST_MAX_DIMS, "tensor '%s': ndim %d", t->name, t->ndim);
        FZ_CHECK(strcmp(ftb_st_dtype_name(t->dtype), "?") != 0, "tensor '%s': dtype %d", t->name, (int)t->dtype);
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            FZ_CHECK(t->shape[d] >= 0, "tensor '%s': negative dimension", t->name);
            FZ_CHECK(!__builtin_mul_overflow(numel, t->shape[d], &numel), "tensor '%s': numel overflows", t->name);
        }
        FZ_CHECK(numel == t->numel, "tensor '%s': numel %lld, shape says %lld", t->name, (long long)t->numel,
                 (long long)numel);
        FZ_CHECK(t->begin <= t->end && t->end <= f->data_len,
                 "tensor '%s': [%llu, %llu) outside the %llu-byte data section", t->name, (unsigned long long)t->begin,
                 (unsigned long long)t->end, (unsigned long long)f->data_len);
        FZ_CHECK(t->end - t->begin == (uint64_t)numel * ftb_st_dtype_size(t->dtype),
                 "tensor '%s': %llu bytes for %lld elements of %s", t->name, (unsigned long long)(t->end - t->begin),
                 (long long)numel, ftb_st_dtype_name(t->dtype));
        if (t->end > t->begin) r[nr++] = (fz_st_range){ t->begin, t->end };

        /* Read it all, as the loader would: floats converted, any other
         * dtype (quantized weights) byte by byte. */
        float *out = malloc(((size_t)numel + 1) * sizeof *out);
        FZ_CHECK(out != NULL, "out of memory for %lld floats", (long long)numel);
        const uint8_t *bytes = ftb_st_tensor_data(f, t);
        volatile float sink = 0;
        if (t->dtype == FTB_ST_F32)
            memcpy(out, bytes, (size_t)numel * sizeof(float));
        else if (t->dtype == FTB_ST_BF16)
            ftb_bf16_to_f32_array(bytes, out, numel);
        else if (t->dtype == FTB_ST_F16)
            ftb_f16_to_f32_array(bytes, out, numel);
        else
            for (uint64_t k = t->begin; k < t->end; k++) sink += f->data[k];
        if (t->dtype == FTB_ST_F32 || t->dtype == FTB_ST_BF16 || t->dtype == FTB_ST_F16)
            for (int64_t k = 0; k < numel; k++) sink += out[k];
        (void)sink;
        free(out);

        char shape[160];
        ftb_st_format_shape(shape, sizeof shape, t->ndim, t->shape);
        FZ_CHECK(shape[0] == '[', "shape text '%s'", shape);
    }
    qsort(r, (size_t)nr, sizeof *r, fz_st_by_begin);
    for (int i = 1; i < nr; i++)
        FZ_CHECK(r[i - 1].end <= r[i].begin, "accepted overlapping tensors [%llu, %llu) and [%llu, %llu)",
                 (unsigned long long)r[i - 1].begin, (unsigned long long)r[i - 1].end, (unsigned long long)r[i].begin,
                 (unsigned long long)r[i].end);
    free(r);
}

int fuzz_safetensors_one(const uint8_t *data, size_t size)
{
    const char *dir = fz_scratch();
    char path[1024], err[FTB_ERR_LEN];
    fz_write("model.safetensors", data, size);
    fz_path(path, sizeof path, "model.safetensors");

    ftb_st_file f;
    err[0] = 0;
    int accepted = ftb_st_open(path, &f, err, sizeof err) == 0;
    if (accepted) {
        fz_st_check(&f);
        ftb_st_close(&f);
    } else {
        fz_check_error(err, sizeof err, 1);
    }

    /* The same file as the micro model's weights, mapped and copied. */
    fz_write("config.json", FZ_MICRO_CONFIG_JSON, strlen(FZ_MICRO_CONFIG_JSON));
    int loaded = 0;
    for (int map = 1; map >= 0; map--) {
        err[0] = 0;
        ftb_model *m = ftb_model_load(dir, map, err, sizeof err);
        if (m) {
            FZ_CHECK(accepted, "the loader took a file ftb_st_open refused");
            fz_touch_model(m);
            ftb_model_free(m);
            loaded++;
        } else {
            fz_check_error(err, sizeof err, 1);
        }
    }
    FZ_CHECK(loaded == 0 || loaded == 2, "loaded with map=1 but not map=0, or the reverse: %s", err);

    /* Quantized at load (the micro model's rows are 8 long: groups 2..8). */
    static const struct {
        const char *format;
        int group;
        const char *embed;
    } fz_quant[] = { { "int4", 8, "int8" }, { "int4-asym", 4, "bf16" }, { "int8", 8, "int4" }, { "f16", 2, NULL } };
    int q = size ? data[size / 2] % 4 : 0;
    err[0] = 0;
    ftb_model *m =
        ftb_model_load_quantized(dir, q & 1, fz_quant[q].format, fz_quant[q].group, fz_quant[q].embed, err, sizeof err);
    if (m) {
        fz_touch_model(m);
        ftb_model_free(m);
    } else {
        fz_check_error(err, sizeof err, 1);
    }
    return accepted;
}

FTB_FUZZ_ENTRY(fuzz_safetensors_one)
