/*
 * checkpoint.c — Hugging Face checkpoints: config.json, model.safetensors or
 * model.safetensors.index.json + shards, in and out.
 *
 * Loading: every tensor the config implies is looked up by its HF name,
 * its shape checked against the config, and its data either pointed into the
 * file mapping (F32, aligned, map != 0) or copied/converted into owned fp32
 * memory.  Saving writes fp32 only, through a temporary file that is fsync'd
 * and renamed, so an interrupted save never leaves a torn checkpoint.
 *
 * Every error is one line, "path: tensor 'name': problem" (or "path: problem"
 * when no tensor is involved).
 */
#include "ftbench.h"
#include "input_file.h"
#include "model_internal.h"
#include "quant.h"
#include "safetensors.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* fp32 data is written and mapped as the host stores it. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoint.c assumes a little-endian host (safetensors is little-endian)"
#endif

#define INDEX_FILE  "model.safetensors.index.json"
#define SINGLE_FILE "model.safetensors"
/* Metadata of quantized tensors (docs/QUANT.md). */
#define QUANT_META_PREFIX      "ftbench.quant."
#define QUANT_META_VERSION_KEY "ftbench_quant_version"

static void ck_error(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    for (char *c = err; *c; c++)
        if ((unsigned char)*c < 0x20) *c = '?';
}

/* Reads a whole (small) file: config.json and the index.  No config or
 * index is anywhere near 64 MiB; a larger file is not one. */
static char *read_text_file(const char *path, size_t *len, char *err, size_t errlen)
{
    return ftb_input_read(path, "config or index", (size_t)64 << 20, len, err, errlen);
}

/* Parses a JSON file that must hold an object. */
static json_t *load_json_object(const char *path, char *err, size_t errlen)
{
    size_t len = 0;
    char *text = read_text_file(path, &len, err, errlen);
    if (!text) return NULL;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root) {
        ck_error(err, errlen, "%s: invalid JSON at line %d, column %d: %s", path, jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        ck_error(err, errlen, "%s: top level is not a JSON object", path);
        json_decref(root);
        return NULL;
    }
    return root;
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

/* ------------------------------------------------------------------------ */
/* config.json                                                               */
/* ------------------------------------------------------------------------ */

/* A key that is absent or null takes its default (HF writes null for "use
 * the default", e.g. "head_dim": null); required keys have none. */
static int get_int(const char *path, json_t *root, const char *key, int required, int def, int *out, char *err,
                   size_t errlen)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) {
            ck_error(err, errlen, "%s: missing required key '%s'", path, key);
            return -1;
        }
        *out = def;
        return 0;
    }
    if (!json_is_integer(v)) {
        ck_error(err, errlen, "%s: key '%s' must be an integer, found %s", path, key, json_kind(v));
        return -1;
    }
    json_int_t x = json_integer_value(v);
    if (x <= 0 || x > INT_MAX) {
        ck_error(err, errlen, "%s: key '%s' = %lld must be a positive integer below 2^31", path, key, (long long)x);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int get_float(const char *path, json_t *root, const char *key, float def, float *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v)) {
        ck_error(err, errlen, "%s: key '%s' must be a number, found %s", path, key, json_kind(v));
        return -1;
    }
    double x = json_number_value(v);
    if (!isfinite(x) || x <= 0.0) {
        ck_error(err, errlen, "%s: key '%s' = %g must be positive", path, key, x);
        return -1;
    }
    *out = (float)x;
    return 0;
}

static int get_bool(const char *path, json_t *root, const char *key, int def, int *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v)) {
        ck_error(err, errlen, "%s: key '%s' must be true or false, found %s", path, key, json_kind(v));
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

/* Optional string key: *out is NULL when absent or null. */
static int get_string(const char *path, json_t *root, const char *key, const char **out, char *err, size_t errlen)
{
    json_t *v = json_object_get(root, key);
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) {
        ck_error(err, errlen, "%s: key '%s' must be a string, found %s", path, key, json_kind(v));
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

/* A number of the "rope_scaling" object: required, finite and positive. */
static int rope_number(const char *path, json_t *scaling, const char *type, const char *key, double *out, char *err,
                       size_t errlen)
{
    json_t *v = json_object_get(scaling, key);
    if (!v || json_is_null(v)) {
        ck_error(err, errlen, "%s: rope_scaling of rope_type '%s' needs '%s'", path, type, key);
        return -1;
    }
    if (!json_is_number(v)) {
        ck_error(err, errlen, "%s: rope_scaling.%s must be a number, found %s", path, key, json_kind(v));
        return -1;
    }
    *out = json_number_value(v);
    if (!isfinite(*out) || *out <= 0.0 || *out > 1e30) {
        ck_error(err, errlen, "%s: rope_scaling.%s = %g must be positive", path, key, *out);
        return -1;
    }
    return 0;
}

/* Appends a reason this config can only be used for its shapes. */
static void add_shape_only(ftb_config *cfg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_shape_only(ftb_config *cfg, const char *fmt, ...)
{
    size_t used = strlen(cfg->shape_only);
    if (used && used + 2 < sizeof cfg->shape_only) {
        memcpy(cfg->shape_only + used, "; ", 3);
        used += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cfg->shape_only + used, sizeof cfg->shape_only - used, fmt, ap);
    va_end(ap);
    for (char *c = cfg->shape_only; *c; c++)
        if ((unsigned char)*c < 0x20) *c = '?';
}

/* "rope_scaling" as transformers reads it: "rope_type" (or the older
 * "type") selects the formula.  linear and llama3 are computed; any other
 * type is a valid config whose frequencies the core does not compute, so it
 * is marked shape-only rather than refused here. */
static int parse_rope_scaling(const char *path, json_t *root, ftb_config *cfg, char *err, size_t errlen)
{
    json_t *scaling = json_object_get(root, "rope_scaling");
    cfg->rope_scaling = (ftb_rope_scaling){ FTB_ROPE_DEFAULT, 0.f, 0.f, 0.f, 0 };
    if (!scaling || json_is_null(scaling)) return 0;
    if (!json_is_object(scaling)) {
        ck_error(err, errlen, "%s: key 'rope_scaling' must be an object or null, found %s", path, json_kind(scaling));
        return -1;
    }
    json_t *t = json_object_get(scaling, "rope_type");
    if (!t || json_is_null(t)) t = json_object_get(scaling, "type");
    if (!t || json_is_null(t)) {
        ck_error(err, errlen, "%s: rope_scaling has no 'rope_type' (or 'type')", path);
        return -1;
    }
    if (!json_is_string(t)) {
        ck_error(err, errlen, "%s: rope_scaling.rope_type must be a string, found %s", path, json_kind(t));
        return -1;
    }
    const char *type = json_string_value(t);
    ftb_rope_scaling *r = &cfg->rope_scaling;
    double factor, low, high, original;
    if (!strcmp(type, "default")) return 0;
    if (!strcmp(type, "linear")) {
        if (rope_number(path, scaling, type, "factor", &factor, err, errlen)) return -1;
        *r = (ftb_rope_scaling){ FTB_ROPE_LINEAR, (float)factor, 0.f, 0.f, 0 };
        return 0;
    }
    if (!strcmp(type, "llama3")) {
        if (rope_number(path, scaling, type, "factor", &factor, err, errlen) ||
            rope_number(path, scaling, type, "low_freq_factor", &low, err, errlen) ||
            rope_number(path, scaling, type, "high_freq_factor", &high, err, errlen) ||
            rope_number(path, scaling, type, "original_max_position_embeddings", &original, err, errlen))
            return -1;
        if (original != floor(original) || original > INT_MAX) {
            ck_error(err, errlen, "%s: rope_scaling.original_max_position_embeddings = %g must be an integer", path,
                     original);
            return -1;
        }
        if (high <= low) {
            ck_error(err, errlen, "%s: rope_scaling.high_freq_factor %g must be greater than low_freq_factor %g", path,
                     high, low);
            return -1;
        }
        *r = (ftb_rope_scaling){ FTB_ROPE_LLAMA3, (float)factor, (float)low, (float)high, (int)original };
        return 0;
    }
    add_shape_only(
        cfg, "rope_scaling rope_type '%.40s' is not supported (the core computes default, linear and llama3)", type);
    return 0;
}

static int parse_config(const char *path, json_t *root, ftb_config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    const char *model_type, *name_or_path, *hidden_act;
    int attention_bias, mlp_bias, sliding_window;
    if (get_string(path, root, "model_type", &model_type, err, errlen) ||
        get_string(path, root, "_name_or_path", &name_or_path, err, errlen) ||
        get_string(path, root, "hidden_act", &hidden_act, err, errlen) ||
        get_int(path, root, "hidden_size", 1, 0, &cfg->dim, err, errlen) ||
        get_int(path, root, "num_hidden_layers", 1, 0, &cfg->n_layers, err, errlen) ||
        get_int(path, root, "num_attention_heads", 1, 0, &cfg->n_heads, err, errlen) ||
        get_int(path, root, "num_key_value_heads", 0, cfg->n_heads, &cfg->n_kv_heads, err, errlen) ||
        get_int(path, root, "head_dim", 0, cfg->dim / cfg->n_heads, &cfg->head_dim, err, errlen) ||
        get_int(path, root, "intermediate_size", 1, 0, &cfg->ffn_dim, err, errlen) ||
        get_int(path, root, "vocab_size", 1, 0, &cfg->vocab_size, err, errlen) ||
        get_int(path, root, "max_position_embeddings", 1, 0, &cfg->max_seq, err, errlen) ||
        get_float(path, root, "rope_theta", 10000.0f, &cfg->rope_theta, err, errlen) ||
        get_float(path, root, "rms_norm_eps", 1e-6f, &cfg->norm_eps, err, errlen) ||
        get_bool(path, root, "tie_word_embeddings", 0, &cfg->tie_embeddings, err, errlen) ||
        get_bool(path, root, "attention_bias", 0, &attention_bias, err, errlen) ||
        get_bool(path, root, "mlp_bias", 0, &mlp_bias, err, errlen) ||
        get_bool(path, root, "use_sliding_window", 0, &sliding_window, err, errlen) ||
        parse_rope_scaling(path, root, cfg, err, errlen))
        return -1;
    /* Qwen2's sliding-window attention: the core attends to every earlier
     * position, so the numbers would differ (memory would not). */
    if (sliding_window)
        add_shape_only(cfg, "use_sliding_window true is not supported (the core computes full causal attention)");

    /* The core's MLP is SwiGLU with SiLU and has no MLP biases: a model that
     * differs would load and silently compute something else. */
    if (hidden_act && strcmp(hidden_act, "silu") != 0 && strcmp(hidden_act, "swish") != 0) {
        ck_error(err, errlen, "%s: hidden_act '%s' is not supported (the core's MLP is SwiGLU with silu)", path,
                 hidden_act);
        return -1;
    }
    if (mlp_bias) {
        ck_error(err, errlen, "%s: mlp_bias true is not supported (the core's MLP has no biases)", path);
        return -1;
    }
    cfg->qkv_bias = attention_bias || (model_type && !strcmp(model_type, "qwen2"));

    const char *name = model_type && *model_type       ? model_type
                       : name_or_path && *name_or_path ? name_or_path
                                                       : "hf-model";
    snprintf(cfg->name, sizeof cfg->name, "%s", name);

    char why[FTB_ERR_LEN];
    why[0] = '\0';
    if (ftb_config_validate(cfg, why, sizeof why) != 0) {
        ck_error(err, errlen, "%s: %s", path, why);
        return -1;
    }
    return 0;
}

int ftb_config_load_json(const char *path, ftb_config *cfg, char *err, size_t errlen)
{
    json_t *root = load_json_object(path, err, errlen);
    if (!root) return -1;
    ftb_config parsed;
    int rc = parse_config(path, root, &parsed, err, errlen);
    json_decref(root);
    if (rc == 0) *cfg = parsed;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */
/* ------------------------------------------------------------------------ */

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

static void source_close(checkpoint_source *src)
{
    for (int i = 0; i < src->n_shards; i++) {
        ftb_st_close(&src->shards[i].file);
        free(src->shards[i].file_name);
        free(src->shards[i].path);
    }
    free(src->shards);
    free(src->index_path);
    if (src->index_root) json_decref(src->index_root);
    memset(src, 0, sizeof *src);
}

/* The shard called file_name, opened on first use.  tensor names the tensor
 * that needed it, for the error message. */
static shard *source_shard(checkpoint_source *src, const char *file_name, const char *tensor, char *err, size_t errlen)
{
    for (int i = 0; i < src->n_shards; i++)
        if (!strcmp(src->shards[i].file_name, file_name)) return &src->shards[i];
    if (src->n_shards == src->cap_shards) {
        int cap = src->cap_shards ? 2 * src->cap_shards : 4;
        shard *grown = realloc(src->shards, (size_t)cap * sizeof *grown);
        if (!grown) {
            ck_error(err, errlen, "%s: out of memory", src->dir);
            return NULL;
        }
        src->shards = grown;
        src->cap_shards = cap;
    }
    shard *s = &src->shards[src->n_shards];
    memset(s, 0, sizeof *s);
    s->file_name = strdup(file_name);
    s->path = ftb_path_join(src->dir, file_name);
    if (!s->file_name || !s->path) {
        free(s->file_name);
        free(s->path);
        ck_error(err, errlen, "%s: out of memory", src->dir);
        return NULL;
    }
    src->n_shards++;
    char why[FTB_ERR_LEN];
    if (ftb_st_open(s->path, &s->file, why, sizeof why) != 0) {
        if (src->index_path && access(s->path, F_OK) != 0)
            ck_error(err, errlen, "%s: tensor '%s': shard named in %s cannot be opened: %s", s->path, tensor,
                     INDEX_FILE, strerror(errno));
        else
            ck_error(err, errlen, "%s", why);
        return NULL;
    }
    s->open = 1;
    return s;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* A shard name must stay inside the checkpoint directory. */
static int shard_name_ok(const char *name)
{
    return *name && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static int source_open(checkpoint_source *src, const char *dir, char *err, size_t errlen)
{
    memset(src, 0, sizeof *src);
    src->dir = dir;
    char *single = ftb_path_join(dir, SINGLE_FILE);
    char *index = ftb_path_join(dir, INDEX_FILE);
    if (!single || !index) {
        free(single);
        free(index);
        ck_error(err, errlen, "%s: out of memory", dir);
        return -1;
    }
    int has_single = file_exists(single), has_index = file_exists(index);
    free(single);
    if (has_single || !has_index) {
        free(index);
        if (!has_single) {
            ck_error(err, errlen, "%s: neither %s nor %s found", dir, SINGLE_FILE, INDEX_FILE);
            return -1;
        }
        return 0;
    }

    src->index_path = index;
    src->index_root = load_json_object(index, err, errlen);
    if (!src->index_root) return -1;
    src->weight_map = json_object_get(src->index_root, "weight_map");
    if (!src->weight_map) {
        ck_error(err, errlen, "%s: no \"weight_map\" object", index);
        return -1;
    }
    if (!json_is_object(src->weight_map)) {
        ck_error(err, errlen, "%s: \"weight_map\" is %s, not an object", index, json_kind(src->weight_map));
        return -1;
    }
    const char *tensor;
    json_t *file;
    json_object_foreach(src->weight_map, tensor, file)
    {
        if (!json_is_string(file) || !shard_name_ok(json_string_value(file))) {
            ck_error(err, errlen, "%s: tensor '%s': weight_map entry is not a file name in this directory", index,
                     tensor);
            return -1;
        }
    }
    return 0;
}

/* Finds where tensor name lives; *where is the file to blame if it is not
 * there.  Returns the shard (opened) and sets *found, or NULL on error. */
static shard *source_locate(checkpoint_source *src, const char *name, const ftb_st_tensor **found, char *err,
                            size_t errlen)
{
    *found = NULL;
    const char *file_name = SINGLE_FILE;
    if (src->index_path) {
        json_t *entry = json_object_get(src->weight_map, name);
        if (!entry) {
            ck_error(err, errlen, "%s: tensor '%s': missing from weight_map", src->index_path, name);
            return NULL;
        }
        file_name = json_string_value(entry);
    }
    shard *s = source_shard(src, file_name, name, err, errlen);
    if (!s) return NULL;
    *found = ftb_st_find(&s->file, name);
    if (!*found) {
        if (src->index_path)
            ck_error(err, errlen, "%s: tensor '%s': missing (%s places it in this shard)", s->path, name, INDEX_FILE);
        else
            ck_error(err, errlen, "%s: tensor '%s': missing", s->path, name);
        return NULL;
    }
    return s;
}

static int shapes_equal(const ftb_tensor *t, const ftb_st_tensor *st)
{
    if (t->ndim != st->ndim) return 0;
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] != st->shape[i]) return 0;
    return 1;
}

/* The model takes over the shard's mapping (once): from here on an error
 * path must not unmap this file again. */
static void give_mapping(ftb_model *m, shard *s)
{
    if (s->mapping_given) return;
    ftb_model_add_mapping(m, s->file.map, s->file.map_len);
    ftb_st_release_mapping(&s->file);
    s->mapping_given = 1;
}

/* Storage of a bf16/f16 tensor kept in its own format: the file's bytes
 * (map) or an owned copy. */
static int keep_half(ftb_model *m, ftb_tensor *t, shard *s, const ftb_st_tensor *st, int map, char *err, size_t errlen)
{
    ftb_dtype d = st->dtype == FTB_ST_BF16 ? FTB_DTYPE_BF16 : FTB_DTYPE_F16;
    const uint8_t *bytes = ftb_st_tensor_data(&s->file, st);
    ftb_qstore *q;
    if (map && (uintptr_t)bytes % 2 == 0) {
        q = calloc(1, sizeof *q);
        if (q) {
            give_mapping(m, s);
            q->dtype = d;
            q->rows = t->shape[0];
            q->cols = t->shape[1];
            q->q = bytes;
            q->mapped = 1;
        }
    } else {
        q = ftb_qstore_alloc(d, 0, t->shape[0], t->shape[1]);
        if (q) memcpy(q->owned[QPART_Q], bytes, (size_t)t->numel * 2);
    }
    if (!q) {
        ck_error(err, errlen, "%s: tensor '%s': out of memory", s->path, t->name);
        return -1;
    }
    ftb_model_track_qstore(m, q);
    t->data = NULL;
    t->dtype = d;
    t->group = 0;
    t->quant = q;
    t->mapped = q->mapped;
    return 0;
}

/* Points t at the file's bytes or copies/converts them into owned memory.
 * keep_as: a bf16/f16 tensor wanted in that same format is kept so (no
 * conversion); FTB_DTYPE_F32 converts everything to fp32 as before. */
static int load_tensor(ftb_model *m, ftb_tensor *t, shard *s, const ftb_st_tensor *st, int map, ftb_dtype keep_as,
                       char *err, size_t errlen)
{
    if (!shapes_equal(t, st)) {
        char want[160], got[160];
        ftb_st_format_shape(want, sizeof want, t->ndim, t->shape);
        ftb_st_format_shape(got, sizeof got, st->ndim, st->shape);
        ck_error(err, errlen, "%s: tensor '%s': shape %s does not match the config's %s", s->path, t->name, got, want);
        return -1;
    }
    if (st->dtype == FTB_ST_I8 || st->dtype == FTB_ST_U8) {
        ck_error(err, errlen,
                 "%s: tensor '%s': dtype %s is read only for quantized weights the file's metadata describes "
                 "(no '" QUANT_META_PREFIX "%s' entry)",
                 s->path, t->name, ftb_st_dtype_name(st->dtype), t->name);
        return -1;
    }
    if (t->ndim == 2 && ((st->dtype == FTB_ST_BF16 && keep_as == FTB_DTYPE_BF16) ||
                         (st->dtype == FTB_ST_F16 && keep_as == FTB_DTYPE_F16)))
        return keep_half(m, t, s, st, map, err, errlen);
    const uint8_t *bytes = ftb_st_tensor_data(&s->file, st);
    if (st->dtype == FTB_ST_F32 && map && ((uintptr_t)bytes % _Alignof(float)) == 0) {
        give_mapping(m, s);
        t->data = (float *)(uintptr_t)bytes; /* read-only pages: t->mapped says so */
        t->mapped = 1;
        return 0;
    }
    float *data = ftb_alloc(FTB_MEM_WEIGHTS, (size_t)t->numel * sizeof(float));
    if (!data) {
        ck_error(err, errlen, "%s: tensor '%s': out of memory for %" PRId64 " floats", s->path, t->name, t->numel);
        return -1;
    }
    ftb_model_own(m, data);
    switch (st->dtype) {
    case FTB_ST_F32: memcpy(data, bytes, (size_t)t->numel * sizeof(float)); break;
    case FTB_ST_BF16: ftb_bf16_to_f32_array(bytes, data, t->numel); break;
    case FTB_ST_F16: ftb_f16_to_f32_array(bytes, data, t->numel); break;
    default: break;
    }
    t->data = data;
    t->mapped = 0;
    return 0;
}

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
static int load_quantized_tensor(ftb_model *m, ftb_tensor *t, shard *s, const ftb_st_tensor *st, const char *desc,
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
            give_mapping(m, s);
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
static int check_quant_metadata(ftb_model *m, const shard *s, char *err, size_t errlen)
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

typedef struct {
    const char *linears, *embeddings;
    int group;
} load_plan;

static int is_block_linear(const ftb_model *m, const ftb_tensor *t)
{
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++)
            if (ftb_layer_weight(&m->layers[l], (ftb_linear_kind)k) == t) return 1;
    return 0;
}

static ftb_model *load_model(const char *dir, int map, const load_plan *plan, char *err, size_t errlen)
{
    char *config_path = ftb_path_join(dir, "config.json");
    if (!config_path) {
        ck_error(err, errlen, "%s: out of memory", dir);
        return NULL;
    }
    ftb_config cfg;
    int rc = ftb_config_load_json(config_path, &cfg, err, errlen);
    /* Loading is for computing: a model the core would compute differently
     * (cfg.shape_only says why) is refused here. */
    if (rc == 0 && cfg.shape_only[0]) {
        ck_error(err, errlen, "%s: %s", config_path, cfg.shape_only);
        rc = -1;
    }
    free(config_path);
    if (rc != 0) return NULL;

    ftb_model *m = ftb_model_new_empty(&cfg, err, errlen);
    if (!m) return NULL;

    checkpoint_source src;
    if (source_open(&src, dir, err, errlen) != 0) goto fail;
    for (int i = 0; i < m->n_params; i++) {
        ftb_tensor *t = m->params[i];
        if (t->numel == 0) continue; /* nothing to read (absent bias) */
        const ftb_st_tensor *st;
        shard *s = source_locate(&src, t->name, &st, err, errlen);
        if (!s) goto fail;
        const char *want = NULL;
        if (plan && is_block_linear(m, t))
            want = plan->linears;
        else if (plan && (t == &m->embed || t == &m->lm_head))
            want = plan->embeddings;
        int want_d = want ? ftb_dtype_parse(want) : FTB_DTYPE_F32;
        char key[160];
        snprintf(key, sizeof key, "%s%s", QUANT_META_PREFIX, t->name);
        const char *desc = ftb_st_meta(&s->file, key);
        if (desc ? load_quantized_tensor(m, t, s, st, desc, map, err, errlen)
                 : load_tensor(m, t, s, st, map, want_d < 0 ? FTB_DTYPE_F32 : (ftb_dtype)want_d, err, errlen))
            goto fail;
        if (want && want_d != FTB_DTYPE_F32) {
            /* Quantized as it is read: at most one tensor exists in fp32. */
            char why[FTB_ERR_LEN];
            if (ftb_tensor_quantize(m, t, want, plan->group, why, sizeof why) != 0) {
                ck_error(err, errlen, "%s: %s", s->path, why);
                goto fail;
            }
        }
    }
    for (int i = 0; i < src.n_shards; i++)
        if (src.shards[i].open && check_quant_metadata(m, &src.shards[i], err, errlen) != 0) goto fail;
    /* Files the model did not take a mapping of (all of them when map == 0)
     * are unmapped here; their data has been copied. */
    source_close(&src);
    if (ftb_model_alloc_missing(m, err, errlen) != 0) {
        ftb_model_free(m);
        return NULL;
    }
    return m;

fail:
    source_close(&src);
    ftb_model_free(m);
    return NULL;
}

ftb_model *ftb_model_load(const char *dir, int map, char *err, size_t errlen)
{
    return load_model(dir, map, NULL, err, errlen);
}

ftb_model *ftb_model_load_quantized(const char *dir, int map, const char *format, int group, const char *embed_format,
                                    char *err, size_t errlen)
{
    const char *formats[2] = { format, embed_format };
    for (int i = 0; i < 2; i++)
        if (formats[i] && ftb_dtype_parse(formats[i]) < 0) {
            ck_error(err, errlen, "%s: unknown storage format '%s' (f32, bf16, f16, int8, int4, int4-asym)", dir,
                     formats[i]);
            return NULL;
        }
    load_plan plan = { format, embed_format, group };
    return load_model(dir, map, &plan, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* Saving                                                                    */
/* ------------------------------------------------------------------------ */

static int write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        /* Linux writes at most ~2 GB per call; chunking keeps it portable. */
        size_t chunk = len > ((size_t)1 << 30) ? ((size_t)1 << 30) : len;
        ssize_t n = write(fd, p, chunk);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Writing goes to path.tmp; atomic_commit fsyncs it, renames it over path
 * and fsyncs the directory, so readers see the old file or the whole new
 * one, never a torn one — even after a crash. */
typedef struct {
    const char *path;
    char *tmp_path;
    int fd;
} atomic_file;

static int atomic_begin(atomic_file *af, const char *path, char *err, size_t errlen)
{
    af->path = path;
    af->fd = -1;
    size_t len = strlen(path);
    af->tmp_path = malloc(len + 5);
    if (!af->tmp_path) {
        ck_error(err, errlen, "%s: out of memory", path);
        return -1;
    }
    memcpy(af->tmp_path, path, len);
    memcpy(af->tmp_path + len, ".tmp", 5);
    /* A new file, never through a link planted at the temporary name; a
     * stale one (a crashed save) is removed first: unlink removes a link
     * itself, not what it points to. */
    af->fd = open(af->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (af->fd < 0 && errno == EEXIST && unlink(af->tmp_path) == 0)
        af->fd = open(af->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (af->fd < 0) {
        ck_error(err, errlen, "%s: cannot create: %s", af->tmp_path, strerror(errno));
        free(af->tmp_path);
        af->tmp_path = NULL;
        return -1;
    }
    return 0;
}

static void atomic_abort(atomic_file *af)
{
    if (af->fd >= 0) close(af->fd);
    if (af->tmp_path) {
        unlink(af->tmp_path);
        free(af->tmp_path);
    }
    af->fd = -1;
    af->tmp_path = NULL;
}

static int atomic_write(atomic_file *af, const void *buf, size_t len, char *err, size_t errlen)
{
    if (write_all(af->fd, buf, len) != 0) {
        ck_error(err, errlen, "%s: write failed: %s", af->tmp_path, strerror(errno));
        return -1;
    }
    return 0;
}

static void fsync_parent_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy) return;
    char *slash = strrchr(copy, '/');
    const char *dir = ".";
    if (slash == copy)
        dir = "/";
    else if (slash) {
        *slash = '\0';
        dir = copy;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd); /* best effort: some filesystems refuse a directory fsync */
        close(fd);
    }
    free(copy);
}

static int atomic_commit(atomic_file *af, char *err, size_t errlen)
{
    if (fsync(af->fd) != 0) {
        ck_error(err, errlen, "%s: fsync failed: %s", af->tmp_path, strerror(errno));
        atomic_abort(af);
        return -1;
    }
    int fd = af->fd;
    af->fd = -1;
    if (close(fd) != 0) {
        ck_error(err, errlen, "%s: close failed: %s", af->tmp_path, strerror(errno));
        atomic_abort(af);
        return -1;
    }
    if (rename(af->tmp_path, af->path) != 0) {
        ck_error(err, errlen, "%s: cannot rename %s over it: %s", af->path, af->tmp_path, strerror(errno));
        atomic_abort(af);
        return -1;
    }
    free(af->tmp_path);
    af->tmp_path = NULL;
    fsync_parent_dir(af->path);
    return 0;
}

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
} st_item;

/* Builds the safetensors header: {"__metadata__": {"format": "pt", ...},
 * name: {...}} in items' order.  Transformers refuses a file without format
 * metadata.  meta (may be NULL) adds string entries; it is borrowed. */
static json_t *build_header(const char *path, const st_item *items, int n, json_t *meta_extra, char *err, size_t errlen)
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
        const st_item *it = &items[i];
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
static int write_dequantized(atomic_file *af, const ftb_tensor *t, char *err, size_t errlen)
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
        rc = atomic_write(af, buf, sizeof(float) * (size_t)(n * cols), err, errlen);
    }
    free(buf);
    return rc;
}

static int write_items(const char *path, st_item *items, int n, json_t *meta_extra, char *err, size_t errlen)
{
    /* Stable order by alignment (4-byte dtypes, then 2, then 1): with the
     * header padded to 8, every tensor then starts on a multiple of its
     * element size, so a reader can map it; safetensors allows no holes. */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && items[j - 1].align < items[j].align; j--) {
            st_item tmp = items[j];
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

    atomic_file af;
    int rc = atomic_begin(&af, path, err, errlen);
    if (rc == 0) rc = atomic_write(&af, padded, 8 + header_len, err, errlen);
    for (int i = 0; rc == 0 && i < n; i++) {
        if (!items[i].nbytes) continue;
        if (items[i].deq)
            rc = write_dequantized(&af, items[i].deq, err, errlen);
        else
            rc = atomic_write(&af, items[i].bytes, (size_t)items[i].nbytes, err, errlen);
    }
    free(padded);
    if (rc != 0) {
        atomic_abort(&af);
        return -1;
    }
    return atomic_commit(&af, err, errlen);
}

int ftb_safetensors_write(const char *path, ftb_tensor *const *tensors, int n, char *err, size_t errlen)
{
    if (n < 0 || (n > 0 && !tensors)) {
        ck_error(err, errlen, "%s: bad tensor list", path);
        return -1;
    }
    st_item *items = calloc((size_t)(n ? n : 1), sizeof *items);
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
        st_item *it = &items[i];
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
    int rc = write_items(path, items, n, NULL, err, errlen);
    free(items);
    return rc;
}

/* The shortest decimal that reads back as the same float, so config.json
 * says 1e-06 rather than 9.9999999747524271e-07. */
static json_t *json_float(float x)
{
    char buf[32];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)x);
        if (strtof(buf, NULL) == x) break;
    }
    return json_real(strtod(buf, NULL));
}

static json_t *config_to_json(const ftb_config *c)
{
    const char *model_type = c->qkv_bias ? "qwen2" : "llama";
    const char *arch = c->qkv_bias ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
    json_t *o = json_object();
    if (!o) return NULL;
    int bad = 0;
    bad |= json_object_set_new(o, "_name_or_path", json_string(c->name));
    bad |= json_object_set_new(o, "architectures", json_pack("[s]", arch));
    bad |= json_object_set_new(o, "model_type", json_string(model_type));
    bad |= json_object_set_new(o, "hidden_act", json_string("silu"));
    bad |= json_object_set_new(o, "hidden_size", json_integer(c->dim));
    bad |= json_object_set_new(o, "intermediate_size", json_integer(c->ffn_dim));
    bad |= json_object_set_new(o, "num_hidden_layers", json_integer(c->n_layers));
    bad |= json_object_set_new(o, "num_attention_heads", json_integer(c->n_heads));
    bad |= json_object_set_new(o, "num_key_value_heads", json_integer(c->n_kv_heads));
    bad |= json_object_set_new(o, "head_dim", json_integer(c->head_dim));
    bad |= json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    bad |= json_object_set_new(o, "max_position_embeddings", json_integer(c->max_seq));
    bad |= json_object_set_new(o, "rope_theta", json_float(c->rope_theta));
    bad |= json_object_set_new(o, "rms_norm_eps", json_float(c->norm_eps));
    const ftb_rope_scaling *r = &c->rope_scaling;
    if (r->kind == FTB_ROPE_LINEAR)
        bad |= json_object_set_new(o, "rope_scaling",
                                   json_pack("{s:s,s:o}", "rope_type", "linear", "factor", json_float(r->factor)));
    else if (r->kind == FTB_ROPE_LLAMA3)
        bad |= json_object_set_new(o, "rope_scaling",
                                   json_pack("{s:o,s:o,s:o,s:i,s:s}", "factor", json_float(r->factor),
                                             "low_freq_factor", json_float(r->low_freq_factor), "high_freq_factor",
                                             json_float(r->high_freq_factor), "original_max_position_embeddings",
                                             r->original_max_seq, "rope_type", "llama3"));
    bad |= json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tie_embeddings));
    bad |= json_object_set_new(o, "attention_bias", json_boolean(c->qkv_bias));
    bad |= json_object_set_new(o, "torch_dtype", json_string("float32"));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Tensors stored in another format are written as they are stored, under
 * their own name, with their scales ("<name>.scales") and zeros
 * ("<name>.zeros"), and a metadata entry QUANT_META_PREFIX<name> =
 * "<format>[/<group>]" that tells the loader how to read them. */
static int save_weights(const ftb_model *m, const char *path, char *err, size_t errlen)
{
    st_item *items = calloc((size_t)(3 * m->n_params + 1), sizeof *items);
    json_t *meta = json_object();
    if (!items || !meta) {
        free(items);
        json_decref(meta);
        ck_error(err, errlen, "%s: out of memory", path);
        return -1;
    }
    int n = 0, nq = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ftb_tensor *t = m->params[i];
        /* A tied lm_head is the embedding; HF omits it and re-ties on load. */
        if (m->cfg.tie_embeddings && !strcmp(t->name, "lm_head.weight")) continue;
        if (t->numel == 0) continue; /* absent bias */
        if (strlen(t->name) + 8 >= sizeof items[0].name) {
            ck_error(err, errlen, "%s: tensor '%s': name too long", path, t->name);
            goto fail;
        }
        st_item *it = &items[n++];
        snprintf(it->name, sizeof it->name, "%s", t->name);
        it->ndim = t->ndim;
        it->shape[0] = t->shape[0];
        it->shape[1] = t->shape[1];
        if (t->dtype == FTB_DTYPE_F32 || !t->quant) {
            if (!t->data) {
                ck_error(err, errlen, "%s: tensor '%s': no data", path, t->name);
                goto fail;
            }
            it->dtype = "F32";
            it->bytes = t->data;
            it->nbytes = (uint64_t)t->numel * 4;
            it->align = 4;
            continue;
        }
        const ftb_qstore *q = t->quant;
        static const char *main_dtype[FTB_DTYPE_COUNT] = { "F32", "BF16", "F16", "I8", "U8", "U8" };
        it->dtype = main_dtype[q->dtype];
        it->bytes = q->q;
        it->nbytes = ftb_qstore_part_bytes(q->dtype, q->rows, q->cols, q->group, QPART_Q);
        it->align = q->dtype == FTB_DTYPE_BF16 || q->dtype == FTB_DTYPE_F16 ? 2 : 1;
        if (q->dtype == FTB_DTYPE_INT4 || q->dtype == FTB_DTYPE_INT4_ASYM) it->shape[1] = q->cols / 2;
        for (int part = QPART_SCALES; part <= QPART_ZEROS; part++) {
            uint64_t b = ftb_qstore_part_bytes(q->dtype, q->rows, q->cols, q->group, part);
            if (!b) continue;
            st_item *c = &items[n++];
            snprintf(c->name, sizeof c->name, "%s%s", t->name, part == QPART_SCALES ? ".scales" : ".zeros");
            c->bytes = part == QPART_SCALES ? q->scales : q->zeros;
            c->nbytes = b;
            if (q->dtype == FTB_DTYPE_INT8) {
                c->dtype = "F32";
                c->ndim = 1;
                c->shape[0] = q->rows;
                c->align = 4;
            } else {
                c->dtype = "F16";
                c->ndim = 2;
                c->shape[0] = q->rows;
                c->shape[1] = q->cols / q->group;
                c->align = 2;
            }
        }
        char desc[64];
        if (q->group)
            snprintf(desc, sizeof desc, "%s/%d", ftb_dtype_name(q->dtype), q->group);
        else
            snprintf(desc, sizeof desc, "%s", ftb_dtype_name(q->dtype));
        char key[160];
        snprintf(key, sizeof key, "%s%s", QUANT_META_PREFIX, t->name);
        json_object_set_new(meta, key, json_string(desc));
        nq++;
    }
    if (nq) json_object_set_new(meta, QUANT_META_VERSION_KEY, json_string("1"));
    int rc = write_items(path, items, n, meta, err, errlen);
    free(items);
    json_decref(meta);
    return rc;
fail:
    free(items);
    json_decref(meta);
    return -1;
}

int ftb_model_save(const ftb_model *m, const char *dir, char *err, size_t errlen)
{
    if (ftb_mkdirs(dir, err, errlen) != 0) return -1;
    char *config_path = ftb_path_join(dir, "config.json");
    char *weights_path = ftb_path_join(dir, SINGLE_FILE);
    json_t *config = config_to_json(&m->cfg);
    /* Nine significant digits round-trip any float. */
    char *text = config ? json_dumps(config, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(config);
    int rc = -1;
    if (!config_path || !weights_path || !text) {
        ck_error(err, errlen, "%s: out of memory", dir);
        goto done;
    }

    /* Weights first: a config.json next to a missing model.safetensors would
     * be a checkpoint that looks complete but is not. */
    rc = save_weights(m, weights_path, err, errlen);
    if (rc != 0) goto done;

    atomic_file af;
    size_t len = strlen(text);
    rc = atomic_begin(&af, config_path, err, errlen);
    if (rc == 0) rc = atomic_write(&af, text, len, err, errlen);
    if (rc == 0) rc = atomic_write(&af, "\n", 1, err, errlen);
    if (rc == 0)
        rc = atomic_commit(&af, err, errlen);
    else if (af.tmp_path)
        atomic_abort(&af);

done:
    free(text);
    free(config_path);
    free(weights_path);
    return rc;
}
