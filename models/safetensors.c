/*
 * safetensors.c — bounds-checked safetensors reader and fp16/bf16 → fp32.
 *
 * The file is mapped read-only (MAP_PRIVATE) and every number of the header
 * is validated against the real file size before anything uses it: a
 * truncated or hostile file yields a one-line error, never an out-of-bounds
 * read.
 */
#include "safetensors.h"
#include "input_file.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* One-line error: control characters (a hostile tensor name could hold a
 * newline) are replaced so the message stays on one line. */
static void st_error(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    for (char *c = err; *c; c++)
        if ((unsigned char)*c < 0x20) *c = '?';
}

size_t ftb_st_dtype_size(ftb_st_dtype d)
{
    switch (d) {
    case FTB_ST_F32: return 4;
    case FTB_ST_BF16:
    case FTB_ST_F16: return 2;
    case FTB_ST_I8:
    case FTB_ST_U8: return 1;
    }
    return 1;
}

const char *ftb_st_dtype_name(ftb_st_dtype d)
{
    switch (d) {
    case FTB_ST_F32: return "F32";
    case FTB_ST_BF16: return "BF16";
    case FTB_ST_F16: return "F16";
    case FTB_ST_I8: return "I8";
    case FTB_ST_U8: return "U8";
    }
    return "?";
}

int ftb_st_dtype_parse(const char *s)
{
    if (!strcmp(s, "F32")) return FTB_ST_F32;
    if (!strcmp(s, "BF16")) return FTB_ST_BF16;
    if (!strcmp(s, "F16")) return FTB_ST_F16;
    if (!strcmp(s, "I8")) return FTB_ST_I8;
    if (!strcmp(s, "U8")) return FTB_ST_U8;
    return -1;
}

void ftb_st_format_shape(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t used = 0;
    if (len == 0) return;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (used < len) snprintf(buf + used, len - used, "]");
}

float ftb_bf16_to_f32(uint16_t bits)
{
    uint32_t u = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float ftb_f16_to_f32(uint16_t bits)
{
    uint32_t sign = (uint32_t)(bits >> 15) << 31;
    uint32_t exponent = (bits >> 10) & 0x1f;
    uint32_t mantissa = bits & 0x3ff;
    uint32_t u;
    if (exponent == 0x1f) {
        /* inf or NaN: keep the payload (and so the quiet bit) */
        u = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {
        u = sign | ((exponent - 15 + 127) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        u = sign;
    } else {
        /* subnormal: mantissa·2^-24; every one is a normal fp32 number */
        int e = -14;
        while (!(mantissa & 0x400)) {
            mantissa <<= 1;
            e--;
        }
        u = sign | ((uint32_t)(e + 127) << 23) | ((mantissa & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The file is little-endian whatever the host is; bytes are assembled so an
 * odd (unaligned) address is fine. */
void ftb_bf16_to_f32_array(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) dst[i] = ftb_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
}

void ftb_f16_to_f32_array(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) dst[i] = ftb_f16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
}

const ftb_st_tensor *ftb_st_find(const ftb_st_file *f, const char *name)
{
    for (int i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

const char *ftb_st_meta(const ftb_st_file *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_values[i];
    return NULL;
}

void ftb_st_release_mapping(ftb_st_file *f)
{
    f->map = NULL;
    f->map_len = 0;
}

void ftb_st_close(ftb_st_file *f)
{
    if (!f) return;
    if (f->map) munmap(f->map, f->map_len);
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* Fills t from one header entry.  0, or -1 with err filled. */
static int parse_entry(const char *path, const char *name, json_t *entry, uint64_t data_len, ftb_st_tensor *t,
                       char *err, size_t errlen)
{
    if (!json_is_object(entry)) {
        st_error(err, errlen, "%s: tensor '%s': entry is %s, not an object", path, name, json_kind(entry));
        return -1;
    }

    json_t *dtype = json_object_get(entry, "dtype");
    if (!json_is_string(dtype)) {
        st_error(err, errlen, "%s: tensor '%s': \"dtype\" is %s, not a string", path, name,
                 dtype ? json_kind(dtype) : "missing");
        return -1;
    }
    int d = ftb_st_dtype_parse(json_string_value(dtype));
    if (d < 0) {
        st_error(
            err, errlen,
            "%s: tensor '%s': unsupported dtype '%s' (F32, BF16 and F16 are read; I8 and U8 for quantized weights)",
            path, name, json_string_value(dtype));
        return -1;
    }
    t->dtype = (ftb_st_dtype)d;

    json_t *shape = json_object_get(entry, "shape");
    if (!json_is_array(shape)) {
        st_error(err, errlen, "%s: tensor '%s': \"shape\" is %s, not a list", path, name,
                 shape ? json_kind(shape) : "missing");
        return -1;
    }
    if (json_array_size(shape) > FTB_ST_MAX_DIMS) {
        st_error(err, errlen, "%s: tensor '%s': shape has %zu dimensions (at most %d are read)", path, name,
                 json_array_size(shape), FTB_ST_MAX_DIMS);
        return -1;
    }
    t->ndim = (int)json_array_size(shape);
    /* numel·size must fit in int64: checked on every factor so a huge shape
     * cannot wrap around to a small, plausible-looking byte count. */
    int64_t bytes = (int64_t)ftb_st_dtype_size(t->dtype);
    int64_t numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        json_t *dim = json_array_get(shape, (size_t)i);
        if (!json_is_integer(dim) || json_integer_value(dim) < 0) {
            st_error(err, errlen, "%s: tensor '%s': shape entry %d is not a non-negative integer", path, name, i);
            return -1;
        }
        t->shape[i] = (int64_t)json_integer_value(dim);
        if (__builtin_mul_overflow(numel, t->shape[i], &numel) || __builtin_mul_overflow(bytes, t->shape[i], &bytes)) {
            st_error(err, errlen, "%s: tensor '%s': shape's element count overflows", path, name);
            return -1;
        }
    }
    t->numel = numel;

    json_t *offsets = json_object_get(entry, "data_offsets");
    if (!json_is_array(offsets) || json_array_size(offsets) != 2 || !json_is_integer(json_array_get(offsets, 0)) ||
        !json_is_integer(json_array_get(offsets, 1))) {
        st_error(err, errlen, "%s: tensor '%s': \"data_offsets\" is not a list [begin, end] of integers", path, name);
        return -1;
    }
    json_int_t begin = json_integer_value(json_array_get(offsets, 0));
    json_int_t end = json_integer_value(json_array_get(offsets, 1));
    if (begin < 0 || end < begin) {
        st_error(err, errlen, "%s: tensor '%s': data_offsets [%lld, %lld] need 0 <= begin <= end", path, name,
                 (long long)begin, (long long)end);
        return -1;
    }
    if ((uint64_t)end > data_len) {
        st_error(err, errlen,
                 "%s: tensor '%s': data_offsets [%lld, %lld] out of range of the %" PRIu64 "-byte data section", path,
                 name, (long long)begin, (long long)end, data_len);
        return -1;
    }
    if (end - begin != bytes) {
        char shape_text[160];
        ftb_st_format_shape(shape_text, sizeof shape_text, t->ndim, t->shape);
        st_error(err, errlen, "%s: tensor '%s': data_offsets span %lld bytes but %s %s needs %" PRId64, path, name,
                 (long long)(end - begin), ftb_st_dtype_name(t->dtype), shape_text, bytes);
        return -1;
    }
    t->begin = (uint64_t)begin;
    t->end = (uint64_t)end;
    return 0;
}

typedef struct {
    uint64_t begin, end;
    int index;
} byte_range;

static int by_begin(const void *a, const void *b)
{
    const byte_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Two tensors sharing bytes would alias silently (and, for a writable copy,
 * corrupt each other); the spec forbids it.  Ranges are copied out and
 * sorted so no global state is needed (qsort has no context argument). */
static int check_overlaps(const ftb_st_file *f, char *err, size_t errlen)
{
    if (f->n_tensors < 2) return 0;
    byte_range *ranges = malloc((size_t)f->n_tensors * sizeof *ranges);
    if (!ranges) {
        st_error(err, errlen, "%s: out of memory", f->path);
        return -1;
    }
    int n = 0;
    for (int i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].begin != f->tensors[i].end) /* empty tensors occupy no bytes */
            ranges[n++] = (byte_range){ f->tensors[i].begin, f->tensors[i].end, i };
    qsort(ranges, (size_t)n, sizeof *ranges, by_begin);
    int rc = 0;
    for (int i = 1; i < n; i++) {
        if (ranges[i - 1].end > ranges[i].begin) {
            const ftb_st_tensor *prev = &f->tensors[ranges[i - 1].index], *t = &f->tensors[ranges[i].index];
            st_error(err, errlen,
                     "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] overlap tensor '%s' [%" PRIu64
                     ", %" PRIu64 "]",
                     f->path, t->name, t->begin, t->end, prev->name, prev->begin, prev->end);
            rc = -1;
            break;
        }
    }
    free(ranges);
    return rc;
}

static int parse_header(ftb_st_file *f, const char *text, size_t len, char *err, size_t errlen)
{
    json_error_t jerr;
    /* Duplicate names would make "which one is the tensor" ambiguous. */
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        st_error(err, errlen, "%s: header is not valid JSON (line %d, column %d): %s", f->path, jerr.line, jerr.column,
                 jerr.text);
        return -1;
    }
    if (!json_is_object(root)) {
        st_error(err, errlen, "%s: header is %s, not a JSON object", f->path, json_kind(root));
        json_decref(root);
        return -1;
    }
    size_t capacity = json_object_size(root);
    f->tensors = calloc(capacity ? capacity : 1, sizeof *f->tensors);
    if (!f->tensors) {
        st_error(err, errlen, "%s: out of memory", f->path);
        json_decref(root);
        return -1;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        if (!strcmp(key, "__metadata__")) {
            /* String entries are kept (the format allows nothing else; other
             * values are ignored, as before). */
            if (!json_is_object(value)) continue;
            size_t nm = json_object_size(value);
            f->meta_keys = calloc(nm ? nm : 1, sizeof *f->meta_keys);
            f->meta_values = calloc(nm ? nm : 1, sizeof *f->meta_values);
            if (!f->meta_keys || !f->meta_values) {
                st_error(err, errlen, "%s: out of memory", f->path);
                json_decref(root);
                return -1;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(value, mk, mv)
            {
                if (!json_is_string(mv)) continue;
                f->meta_keys[f->n_meta] = strdup(mk);
                f->meta_values[f->n_meta] = strdup(json_string_value(mv));
                if (!f->meta_keys[f->n_meta] || !f->meta_values[f->n_meta]) {
                    free(f->meta_keys[f->n_meta]);
                    free(f->meta_values[f->n_meta]);
                    st_error(err, errlen, "%s: out of memory", f->path);
                    json_decref(root);
                    return -1;
                }
                f->n_meta++;
            }
            continue;
        }
        ftb_st_tensor *t = &f->tensors[f->n_tensors];
        if (parse_entry(f->path, key, value, f->data_len, t, err, errlen) != 0) {
            json_decref(root);
            return -1;
        }
        t->name = strdup(key);
        if (!t->name) {
            st_error(err, errlen, "%s: out of memory", f->path);
            json_decref(root);
            return -1;
        }
        f->n_tensors++;
    }
    json_decref(root);
    return check_overlaps(f, err, errlen);
}

int ftb_st_open(const char *path, ftb_st_file *f, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) {
        st_error(err, errlen, "%s: out of memory", path);
        return -1;
    }
    /* A FIFO or a device is refused here, before it could block. */
    int fd = ftb_input_open(path, err, errlen);
    if (fd < 0) goto fail;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        st_error(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        st_error(err, errlen, "%s: not a regular file", path);
        close(fd);
        goto fail;
    }
    uint64_t file_size = (uint64_t)st.st_size;
    if (file_size < 8) {
        st_error(err, errlen, "%s: truncated: %" PRIu64 " bytes, shorter than the 8-byte header length", path,
                 file_size);
        close(fd);
        goto fail;
    }
    if (file_size > SIZE_MAX) {
        st_error(err, errlen, "%s: too large to map", path);
        close(fd);
        goto fail;
    }
    void *map = mmap(NULL, (size_t)file_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED) {
        st_error(err, errlen, "%s: cannot map: %s", path, strerror(errno));
        goto fail;
    }
    f->map = map;
    f->map_len = (size_t)file_size;

    const uint8_t *bytes = map;
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = (header_len << 8) | bytes[i];
    if (header_len > FTB_ST_MAX_HEADER) {
        st_error(err, errlen, "%s: header length %" PRIu64 " is absurd (the format's limit is 100 MB)", path,
                 header_len);
        goto fail;
    }
    if (header_len > file_size - 8) {
        st_error(err, errlen, "%s: truncated: header length %" PRIu64 " runs past the end of the %" PRIu64 "-byte file",
                 path, header_len, file_size);
        goto fail;
    }
    f->data = bytes + 8 + header_len;
    f->data_len = file_size - 8 - header_len;
    if (parse_header(f, (const char *)bytes + 8, (size_t)header_len, err, errlen) != 0) goto fail;
    return 0;

fail:
    ftb_st_close(f);
    return -1;
}
