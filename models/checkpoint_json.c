/*
 * checkpoint_json.c — a checkpoint's JSON files: config.json read into an
 * ftb_config and written from one, and the JSON objects of the index
 * (model.safetensors.index.json).
 *
 * Every error is one line, "path: problem".
 */
#include "checkpoint_internal.h"
#include "ftbench.h"
#include "input_file.h"

#include <float.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* Reads a whole (small) file: config.json and the index.  No config or
 * index is anywhere near 64 MiB; a larger file is not one. */
static char *read_text_file(const char *path, size_t *len, char *err, size_t errlen)
{
    return ftb_input_read(path, "config or index", (size_t)64 << 20, len, err, errlen);
}

/* Parses a JSON file that must hold an object. */
json_t *ftb_ckpt_json_object(const char *path, char *err, size_t errlen)
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

const char *ftb_ckpt_json_kind(const json_t *v)
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
        ck_error(err, errlen, "%s: key '%s' must be an integer, found %s", path, key, ftb_ckpt_json_kind(v));
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
        ck_error(err, errlen, "%s: key '%s' must be a number, found %s", path, key, ftb_ckpt_json_kind(v));
        return -1;
    }
    double x = json_number_value(v);
    if (!isfinite(x) || x <= 0.0) {
        ck_error(err, errlen, "%s: key '%s' = %g must be positive", path, key, x);
        return -1;
    }
    /* The core computes in 32-bit floats: 1e39 would become inf (and the
     * conversion of a double beyond a float's range is undefined), 1e-50
     * zero. */
    if (x > FLT_MAX || x < FLT_MIN) {
        ck_error(err, errlen, "%s: key '%s' = %g is beyond a 32-bit float's range [%g, %g]", path, key, x,
                 (double)FLT_MIN, (double)FLT_MAX);
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
        ck_error(err, errlen, "%s: key '%s' must be true or false, found %s", path, key, ftb_ckpt_json_kind(v));
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
        ck_error(err, errlen, "%s: key '%s' must be a string, found %s", path, key, ftb_ckpt_json_kind(v));
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
        ck_error(err, errlen, "%s: rope_scaling.%s must be a number, found %s", path, key, ftb_ckpt_json_kind(v));
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
        ck_error(err, errlen, "%s: key 'rope_scaling' must be an object or null, found %s", path,
                 ftb_ckpt_json_kind(scaling));
        return -1;
    }
    json_t *t = json_object_get(scaling, "rope_type");
    if (!t || json_is_null(t)) t = json_object_get(scaling, "type");
    if (!t || json_is_null(t)) {
        ck_error(err, errlen, "%s: rope_scaling has no 'rope_type' (or 'type')", path);
        return -1;
    }
    if (!json_is_string(t)) {
        ck_error(err, errlen, "%s: rope_scaling.rope_type must be a string, found %s", path, ftb_ckpt_json_kind(t));
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
    json_t *root = ftb_ckpt_json_object(path, err, errlen);
    if (!root) return -1;
    ftb_config parsed;
    int rc = parse_config(path, root, &parsed, err, errlen);
    json_decref(root);
    if (rc == 0) *cfg = parsed;
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

json_t *ftb_ckpt_config_to_json(const ftb_config *c)
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
