/*
 * test_checkpoint.c — Hugging Face checkpoint loading and saving.
 *
 * Suite "checkpoint": round trips (mapped and copied), BF16 and F16, shards,
 * tied embeddings, config.json parsing, the fp16 converter on every bit
 * pattern.  Suite "malformed": every broken file must give a clean NULL and a
 * one-line error naming the file and, where there is one, the tensor.
 *
 * All files are generated here in a fresh temporary directory.
 */
#include <criterion/criterion.h>

#include "ftbench.h"
#include "safetensors.h"
#include "test_helpers_ckpt.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define SINGLE "model.safetensors"

static ftb_model *tiny_model(int tied, uint64_t seed)
{
    ftb_config cfg;
    cr_assert_eq(ftb_zoo_get("tiny", &cfg), 0, "zoo has no 'tiny' shape");
    cfg.tie_embeddings = tied;
    char err[FTB_ERR_LEN] = "";
    ftb_model *m = ftb_model_create(&cfg, seed, err, sizeof err);
    cr_assert_not_null(m, "ftb_model_create(tiny) failed: %s", err);
    return m;
}

static void save_or_die(const ftb_model *m, const char *dir)
{
    char err[FTB_ERR_LEN] = "";
    cr_assert_eq(ftb_model_save(m, dir, err, sizeof err), 0, "ftb_model_save(%s) failed: %s", dir, err);
}

static ftb_model *load_or_die(const char *dir, int map)
{
    char err[FTB_ERR_LEN] = "";
    ftb_model *m = ftb_model_load(dir, map, err, sizeof err);
    cr_assert_not_null(m, "ftb_model_load(%s, map=%d) failed: %s", dir, map, err);
    return m;
}

static void assert_same_config(const ftb_config *a, const ftb_config *b)
{
    cr_assert_eq(a->vocab_size, b->vocab_size, "vocab_size %d != %d", a->vocab_size, b->vocab_size);
    cr_assert_eq(a->dim, b->dim, "dim %d != %d", a->dim, b->dim);
    cr_assert_eq(a->n_layers, b->n_layers, "n_layers");
    cr_assert_eq(a->n_heads, b->n_heads, "n_heads");
    cr_assert_eq(a->n_kv_heads, b->n_kv_heads, "n_kv_heads");
    cr_assert_eq(a->head_dim, b->head_dim, "head_dim");
    cr_assert_eq(a->ffn_dim, b->ffn_dim, "ffn_dim");
    cr_assert_eq(a->max_seq, b->max_seq, "max_seq");
    cr_assert_eq(a->rope_theta, b->rope_theta, "rope_theta %g != %g", (double)a->rope_theta, (double)b->rope_theta);
    cr_assert_eq(a->norm_eps, b->norm_eps, "norm_eps %g != %g", (double)a->norm_eps, (double)b->norm_eps);
    cr_assert_eq(a->qkv_bias, b->qkv_bias, "qkv_bias");
    cr_assert_eq(a->tie_embeddings, b->tie_embeddings, "tie_embeddings");
}

/* Every parameter bit-identical, and mapped exactly when expected. */
static void assert_same_weights(const ftb_model *want, const ftb_model *got, int expect_mapped)
{
    cr_assert_eq(want->n_params, got->n_params, "param count %d != %d", want->n_params, got->n_params);
    for (int k = 0; k < want->n_params; k++) {
        const ftb_tensor *a = want->params[k], *b = got->params[k];
        cr_assert_str_eq(a->name, b->name, "param %d: name", k);
        cr_assert_eq(a->numel, b->numel, "%s: numel", a->name);
        cr_assert_not_null(b->data, "%s: no data after load", b->name);
        cr_assert_eq(memcmp(a->data, b->data, (size_t)a->numel * 4), 0, "%s: data differs", a->name);
        cr_assert_eq(b->mapped, expect_mapped, "%s: mapped=%d, expected %d", b->name, b->mapped, expect_mapped);
    }
}

/* err must be one line and contain every needle (NULL-terminated list). */
static void assert_error_mentions(const char *err, ...)
{
    cr_assert(err[0] != '\0', "error message is empty");
    cr_assert_null(strchr(err, '\n'), "error is not one line: %s", err);
    va_list ap;
    va_start(ap, err);
    for (const char *needle; (needle = va_arg(ap, const char *));)
        cr_assert_not_null(strstr(err, needle), "error does not mention '%s': %s", needle, err);
    va_end(ap);
}

/* Loading dir must fail (map on and off) with an error naming the needles. */
#define assert_load_fails(dir, ...)                                                     \
    do {                                                                                \
        for (int map_ = 0; map_ <= 1; map_++) {                                         \
            char err_[FTB_ERR_LEN] = "";                                                \
            ftb_model *m_ = ftb_model_load((dir), map_, err_, sizeof err_);             \
            cr_assert_null(m_, "loading a broken checkpoint succeeded (map=%d)", map_); \
            assert_error_mentions(err_, __VA_ARGS__, NULL);                             \
        }                                                                               \
    } while (0)

/* ------------------------------------------------------------------------ */
/* checkpoint: what must work                                                */
/* ------------------------------------------------------------------------ */

Test(checkpoint, roundtrip_copied_and_mapped)
{
    char *dir = ckpt_tmpdir();
    ftb_model *orig = tiny_model(0, 1234);
    save_or_die(orig, dir);

    ftb_model *copied = load_or_die(dir, 0);
    assert_same_config(&orig->cfg, &copied->cfg);
    assert_same_weights(orig, copied, 0);
    cr_assert_eq(memcmp(orig->lm_head.data, copied->lm_head.data, (size_t)orig->lm_head.numel * 4), 0,
                 "lm_head differs");

    ftb_model *mapped = load_or_die(dir, 1);
    assert_same_weights(orig, mapped, 1);

    ftb_model_free(copied);
    ftb_model_free(mapped);
    ftb_model_free(orig);
    ckpt_rm_rf(dir);
}

Test(checkpoint, save_leaves_no_temporary_and_overwrites)
{
    char *dir = ckpt_tmpdir();
    char path[4096];
    ftb_model *a = tiny_model(0, 1), *b = tiny_model(0, 2);
    save_or_die(a, dir);
    save_or_die(b, dir); /* over an existing checkpoint */
    cr_assert_neq(access(ckpt_path(path, sizeof path, dir, SINGLE ".tmp"), F_OK), 0,
                  "model.safetensors.tmp left behind");
    cr_assert_neq(access(ckpt_path(path, sizeof path, dir, "config.json.tmp"), F_OK), 0, "config.json.tmp left behind");
    ftb_model *loaded = load_or_die(dir, 0);
    assert_same_weights(b, loaded, 0);
    ftb_model_free(loaded);
    ftb_model_free(a);
    ftb_model_free(b);
    ckpt_rm_rf(dir);
}

/* Saving a mapped model over the file it is mapped from: the rename leaves
 * the old inode (and so the mapping) intact; truncating in place would not. */
Test(checkpoint, save_over_own_mapped_checkpoint)
{
    char *dir = ckpt_tmpdir();
    ftb_model *orig = tiny_model(0, 31);
    save_or_die(orig, dir);
    ftb_model *mapped = load_or_die(dir, 1);
    save_or_die(mapped, dir);
    assert_same_weights(orig, mapped, 1); /* still readable after the save */
    ftb_model *again = load_or_die(dir, 0);
    assert_same_weights(orig, again, 0);
    ftb_model_free(again);
    ftb_model_free(mapped);
    ftb_model_free(orig);
    ckpt_rm_rf(dir);
}

Test(checkpoint, save_creates_nested_directories)
{
    char *dir = ckpt_tmpdir();
    char nested[4096];
    snprintf(nested, sizeof nested, "%s/a/b/c", dir);
    ftb_model *m = tiny_model(0, 5);
    save_or_die(m, nested);
    ftb_model *loaded = load_or_die(nested, 1);
    assert_same_weights(m, loaded, 1);
    ftb_model_free(loaded);
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}

Test(checkpoint, saved_file_is_aligned_and_has_format_metadata)
{
    char *dir = ckpt_tmpdir();
    char path[4096], err[FTB_ERR_LEN] = "";
    ftb_model *m = tiny_model(0, 9);
    save_or_die(m, dir);
    ftb_st_file f;
    cr_assert_eq(ftb_st_open(ckpt_path(path, sizeof path, dir, SINGLE), &f, err, sizeof err), 0, "%s", err);
    cr_assert_eq((uintptr_t)f.data % 8, 0, "data section not 8-byte aligned");
    cr_assert_eq(f.n_tensors, m->n_params, "tensor count %d != %d", f.n_tensors, m->n_params);
    for (int k = 0; k < m->n_params; k++) {
        cr_assert_str_eq(f.tensors[k].name, m->params[k]->name, "tensor %d out of order", k);
        cr_assert_eq(f.tensors[k].dtype, FTB_ST_F32, "dtype");
    }
    ftb_st_close(&f);
    /* Transformers needs {"__metadata__": {"format": "pt"}}. */
    FILE *fp = fopen(path, "rb");
    char head[512] = { 0 };
    cr_assert_gt(fread(head, 1, sizeof head - 1, fp), 8, "short file");
    fclose(fp);
    cr_assert_not_null(strstr(head + 8, "\"__metadata__\":{\"format\":\"pt\"}"), "no format metadata: %s", head + 8);
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}

Test(checkpoint, mapping_is_accounted_and_released)
{
    char *dir = ckpt_tmpdir();
    char path[4096];
    ftb_model *m = tiny_model(0, 3);
    save_or_die(m, dir);
    long file_size = ckpt_file_size(ckpt_path(path, sizeof path, dir, SINGLE));
    ftb_model_free(m);

    ftb_mem_stats before, loaded, after;
    ftb_mem_get_stats(&before);
    ftb_model *mapped = load_or_die(dir, 1);
    ftb_mem_get_stats(&loaded);
    cr_assert_eq(loaded.live[FTB_MEM_WEIGHTS] - before.live[FTB_MEM_WEIGHTS], file_size,
                 "mapped weights counted as %lld bytes, file is %ld",
                 (long long)(loaded.live[FTB_MEM_WEIGHTS] - before.live[FTB_MEM_WEIGHTS]), file_size);
    ftb_model_free(mapped);
    ftb_mem_get_stats(&after);
    cr_assert_eq(after.live[FTB_MEM_WEIGHTS], before.live[FTB_MEM_WEIGHTS], "weights not released");
    ckpt_rm_rf(dir);
}

Test(checkpoint, misaligned_f32_is_copied_even_when_mapping)
{
    char *dir = ckpt_tmpdir();
    char path[4096];
    ftb_model *m = tiny_model(0, 4);
    save_or_die(m, dir);
    st_builder b;
    stb_init(&b);
    stb_add_model(&b, m, "F32", NULL);
    cr_assert_eq(stb_write(&b, ckpt_path(path, sizeof path, dir, SINGLE), 1), 0, "write failed");
    stb_free(&b);
    ftb_model *loaded = load_or_die(dir, 1);
    assert_same_weights(m, loaded, 0);
    ftb_model_free(loaded);
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}

Test(checkpoint, bf16_loads_exact_values)
{
    char *dir = ckpt_tmpdir();
    char path[4096];
    ftb_model *m = tiny_model(0, 77);
    save_or_die(m, dir);
    st_builder b;
    stb_init(&b);
    stb_add_model(&b, m, "BF16", NULL);
    cr_assert_eq(stb_write(&b, ckpt_path(path, sizeof path, dir, SINGLE), 0), 0, "write failed");
    stb_free(&b);
    for (int map = 0; map <= 1; map++) {
        ftb_model *loaded = load_or_die(dir, map);
        for (int k = 0; k < m->n_params; k++) {
            const ftb_tensor *want = m->params[k], *got = loaded->params[k];
            cr_assert_eq(got->mapped, 0, "%s: a converted tensor cannot be mapped", got->name);
            for (int64_t i = 0; i < want->numel; i++) {
                float expect = ckpt_bf16_value(ckpt_bf16_bits(want->data[i]));
                cr_assert_eq(memcmp(&expect, &got->data[i], 4), 0, "%s[%lld]: %g, expected %g", got->name, (long long)i,
                             (double)got->data[i], (double)expect);
            }
        }
        ftb_model_free(loaded);
    }
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}

Test(checkpoint, f16_loads_exact_values_including_specials)
{
    char *dir = ckpt_tmpdir();
    char path[4096];
    ftb_model *m = tiny_model(0, 78);
    save_or_die(m, dir);
    st_builder b;
    stb_init(&b);
    stb_add_model(&b, m, "F16", NULL);
    cr_assert_eq(stb_write(&b, ckpt_path(path, sizeof path, dir, SINGLE), 0), 0, "write failed");
    stb_free(&b);
    ftb_model *loaded = load_or_die(dir, 1);
    int seen_subnormal = 0, seen_inf = 0, seen_nan = 0;
    for (int k = 0; k < loaded->n_params; k++) {
        const ftb_tensor *t = loaded->params[k];
        for (int64_t i = 0; i < t->numel; i++) {
            uint16_t h = ckpt_f16_pattern(k, i);
            float expect = ckpt_f16_value(h);
            if (isnan(expect)) {
                cr_assert(isnan(t->data[i]), "%s[%lld]: f16 0x%04x should be NaN", t->name, (long long)i, h);
                seen_nan = 1;
                continue;
            }
            seen_inf |= isinf(expect);
            seen_subnormal |= ((h >> 10) & 31) == 0 && (h & 1023) != 0;
            cr_assert_eq(memcmp(&expect, &t->data[i], 4), 0, "%s[%lld]: f16 0x%04x gave %g, expected %g", t->name,
                         (long long)i, h, (double)t->data[i], (double)expect);
        }
    }
    cr_assert(seen_subnormal && seen_nan, "pattern missed subnormals or NaN (inf: %d)", seen_inf);
    ftb_model_free(loaded);
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}

Test(checkpoint, f16_converter_every_bit_pattern)
{
    for (uint32_t h = 0; h <= 0xffff; h++) {
        float got = ftb_f16_to_f32((uint16_t)h), want = ckpt_f16_value((uint16_t)h);
        if (isnan(want)) {
            cr_assert(isnan(got), "0x%04x should be NaN", h);
            continue;
        }
        cr_assert_eq(memcmp(&got, &want, 4), 0, "f16 0x%04x: %a, expected %a", h, (double)got, (double)want);
    }
    cr_assert_eq(ftb_f16_to_f32(0x0001), ldexpf(1.0f, -24), "smallest subnormal");
    cr_assert_eq(ftb_f16_to_f32(0x03ff), 1023.0f * ldexpf(1.0f, -24), "largest subnormal");
    cr_assert_eq(ftb_f16_to_f32(0x7bff), 65504.0f, "largest normal");
    cr_assert(signbit(ftb_f16_to_f32(0x8000)) && ftb_f16_to_f32(0x8000) == 0.0f, "-0");
    cr_assert(isinf(ftb_f16_to_f32(0xfc00)) && ftb_f16_to_f32(0xfc00) < 0, "-inf");
    cr_assert_eq(ftb_bf16_to_f32(0x3f80), 1.0f, "bf16 1.0");
    cr_assert(isnan(ftb_bf16_to_f32(0x7fc0)), "bf16 NaN");
}

/* Two shards, one of them with unaligned data, plus extra tensors the model
 * does not use (ignored). */
Test(checkpoint, sharded_index)
{
    char *dir = ckpt_tmpdir();
    char path[4096];
    ftb_model *m = tiny_model(0, 55);
    save_or_die(m, dir);
    cr_assert_eq(unlink(ckpt_path(path, sizeof path, dir, SINGLE)), 0, "unlink");

    st_builder first, second;
    stb_init(&first);
    stb_init(&second);
    json_t *weight_map = json_object();
    int half = m->n_params / 2;
    for (int k = 0; k < m->n_params; k++) {
        stb_add_tensor(k < half ? &first : &second, m->params[k], "F32", k);
        json_object_set_new(
            weight_map, m->params[k]->name,
            json_string(k < half ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors"));
    }
    float extra[3] = { 1, 2, 3 };
    int64_t extra_shape[1] = { 3 };
    stb_add_bytes(&second, "model.rotary_emb.inv_freq", "F32", 1, extra_shape, extra, sizeof extra);
    json_object_set_new(weight_map, "model.rotary_emb.inv_freq", json_string("model-00002-of-00002.safetensors"));
    cr_assert_eq(stb_write(&first, ckpt_path(path, sizeof path, dir, "model-00001-of-00002.safetensors"), 0), 0, "w1");
    cr_assert_eq(stb_write(&second, ckpt_path(path, sizeof path, dir, "model-00002-of-00002.safetensors"), 2), 0, "w2");
    stb_free(&first);
    stb_free(&second);
    json_t *index = json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)0, "weight_map", weight_map);
    cr_assert_eq(json_dump_file(index, ckpt_path(path, sizeof path, dir, "model.safetensors.index.json"), 0), 0,
                 "index write");
    json_decref(index);

    for (int map = 0; map <= 1; map++) {
        ftb_model *loaded = load_or_die(dir, map);
        for (int k = 0; k < m->n_params; k++) {
            const ftb_tensor *a = m->params[k], *b = loaded->params[k];
            cr_assert_eq(memcmp(a->data, b->data, (size_t)a->numel * 4), 0, "%s differs (map=%d)", a->name, map);
            /* first shard aligned → mapped; second misaligned → copied */
            int expect_mapped = map && k < half;
            cr_assert_eq(b->mapped, expect_mapped, "%s: mapped=%d, expected %d", b->name, b->mapped, expect_mapped);
        }
        ftb_model_free(loaded);
    }
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}

Test(checkpoint, tied_embeddings_omit_lm_head)
{
    char *dir = ckpt_tmpdir();
    char path[4096], err[FTB_ERR_LEN] = "";
    ftb_model *m = tiny_model(1, 66);
    save_or_die(m, dir);
    ftb_st_file f;
    cr_assert_eq(ftb_st_open(ckpt_path(path, sizeof path, dir, SINGLE), &f, err, sizeof err), 0, "%s", err);
    cr_assert_null(ftb_st_find(&f, "lm_head.weight"), "tied checkpoint should not store lm_head.weight");
    cr_assert_not_null(ftb_st_find(&f, "model.embed_tokens.weight"), "embedding missing");
    ftb_st_close(&f);
    for (int map = 0; map <= 1; map++) {
        ftb_model *loaded = load_or_die(dir, map);
        cr_assert(loaded->cfg.tie_embeddings, "tie_word_embeddings lost");
        cr_assert_eq(loaded->lm_head.data, loaded->embed.data, "lm_head not tied to the embedding (map=%d)", map);
        assert_same_weights(m, loaded, map);
        ftb_model_free(loaded);
    }
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}

/* A mapped tensor made trainable is copied out of the read-only mapping. */
Test(checkpoint, mapped_tensors_become_writable_when_trained)
{
    char *dir = ckpt_tmpdir();
    char err[FTB_ERR_LEN] = "";
    ftb_model *m = tiny_model(1, 68);
    save_or_die(m, dir);
    ftb_model *loaded = load_or_die(dir, 1);
    ftb_model_set_trainable(loaded, 1);
    cr_assert_eq(ftb_model_alloc_grads(loaded, err, sizeof err), 0, "alloc_grads: %s", err);
    assert_same_weights(m, loaded, 0);
    for (int k = 0; k < loaded->n_params; k++) loaded->params[k]->data[0] += 1.0f; /* must not fault */
    cr_assert_eq(loaded->lm_head.data, loaded->embed.data, "tying lost by the copy");
    ftb_model_free(loaded);
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}

Test(checkpoint, tied_checkpoint_with_lm_head_present_loads)
{
    /* Some exporters store the tied head anyway; it is an extra tensor. */
    char *dir = ckpt_tmpdir();
    char path[4096];
    ftb_model *m = tiny_model(1, 67);
    save_or_die(m, dir);
    st_builder b;
    stb_init(&b);
    stb_add_model(&b, m, "F32", NULL);
    stb_add_bytes(&b, "lm_head.weight", "F32", m->embed.ndim, m->embed.shape, m->embed.data,
                  (size_t)m->embed.numel * 4);
    cr_assert_eq(stb_write(&b, ckpt_path(path, sizeof path, dir, SINGLE), 0), 0, "write");
    stb_free(&b);
    ftb_model *loaded = load_or_die(dir, 1);
    cr_assert_eq(loaded->lm_head.data, loaded->embed.data, "lm_head not tied");
    ftb_model_free(loaded);
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}

Test(checkpoint, config_defaults_and_qwen2_bias)
{
    char *dir = ckpt_tmpdir();
    char path[4096], err[FTB_ERR_LEN] = "";
    ckpt_path(path, sizeof path, dir, "config.json");
    ckpt_write_text(path, "{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_hidden_layers\": 2,"
                          " \"num_attention_heads\": 4, \"intermediate_size\": 128, \"vocab_size\": 100,"
                          " \"max_position_embeddings\": 256, \"head_dim\": null}");
    ftb_config c;
    cr_assert_eq(ftb_config_load_json(path, &c, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.n_kv_heads, 4, "num_key_value_heads default");
    cr_assert_eq(c.head_dim, 16, "head_dim default");
    cr_assert_eq(c.rope_theta, 10000.0f, "rope_theta default");
    cr_assert_eq(c.norm_eps, 1e-6f, "rms_norm_eps default");
    cr_assert_eq(c.tie_embeddings, 0, "tie default");
    cr_assert_eq(c.qkv_bias, 0, "llama has no qkv bias");
    cr_assert_str_eq(c.name, "llama", "name from model_type");

    ckpt_write_text(path, "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"num_hidden_layers\": 2,"
                          " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"intermediate_size\": 128,"
                          " \"vocab_size\": 100, \"max_position_embeddings\": 256, \"rope_theta\": 1000000,"
                          " \"rms_norm_eps\": 1e-5, \"tie_word_embeddings\": true}");
    cr_assert_eq(ftb_config_load_json(path, &c, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.qkv_bias, 1, "qwen2 has qkv bias");
    cr_assert_eq(c.n_kv_heads, 2, "kv heads");
    cr_assert_eq(c.rope_theta, 1e6f, "integer rope_theta");
    cr_assert_eq(c.norm_eps, 1e-5f, "eps");
    cr_assert_eq(c.tie_embeddings, 1, "tied");

    ckpt_write_text(path, "{\"_name_or_path\": \"my/llama\", \"attention_bias\": true, \"hidden_size\": 64,"
                          " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"intermediate_size\": 128,"
                          " \"vocab_size\": 100, \"max_position_embeddings\": 256}");
    cr_assert_eq(ftb_config_load_json(path, &c, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.qkv_bias, 1, "attention_bias true");
    cr_assert_str_eq(c.name, "my/llama", "name from _name_or_path");
    ckpt_rm_rf(dir);
}

Test(checkpoint, config_roundtrip_through_save)
{
    char *dir = ckpt_tmpdir();
    char path[4096], err[FTB_ERR_LEN] = "";
    const char *names[] = { "tiny", "tiny-tied" };
    for (int i = 0; i < 2; i++) {
        ftb_config cfg, back;
        cr_assert_eq(ftb_zoo_get(names[i], &cfg), 0, "zoo %s", names[i]);
        ftb_model *m = ftb_model_create(&cfg, 1, err, sizeof err);
        cr_assert_not_null(m, "%s", err);
        save_or_die(m, dir);
        cr_assert_eq(ftb_config_load_json(ckpt_path(path, sizeof path, dir, "config.json"), &back, err, sizeof err), 0,
                     "%s", err);
        assert_same_config(&cfg, &back);
        ftb_model_free(m);
    }
    ckpt_rm_rf(dir);
}

/* ------------------------------------------------------------------------ */
/* malformed: what must fail cleanly                                        */
/* ------------------------------------------------------------------------ */

/* A valid tiny checkpoint in a new directory; the test then breaks it. */
static char *good_checkpoint(ftb_model **model_out)
{
    char *dir = ckpt_tmpdir();
    ftb_model *m = tiny_model(0, 2024);
    save_or_die(m, dir);
    if (model_out)
        *model_out = m;
    else
        ftb_model_free(m);
    return dir;
}

/* Rewrites dir/model.safetensors from the model with one change applied. */
typedef void (*header_edit)(st_builder *b, const ftb_model *m);

static void rewrite_weights(const char *dir, const ftb_model *m, const char *skip, header_edit edit)
{
    char path[4096];
    st_builder b;
    stb_init(&b);
    stb_add_model(&b, m, "F32", skip);
    if (edit) edit(&b, m);
    cr_assert_eq(stb_write(&b, ckpt_path(path, sizeof path, dir, SINGLE), 0), 0, "write failed");
    stb_free(&b);
}

Test(malformed, file_shorter_than_length_field)
{
    char path[4096];
    char *dir = good_checkpoint(NULL);
    ckpt_write_text(ckpt_path(path, sizeof path, dir, SINGLE), "\x10\x01\x02");
    assert_load_fails(dir, SINGLE, "truncated");
    ckpt_write_text(path, "");
    assert_load_fails(dir, SINGLE, "truncated");
    ckpt_rm_rf(dir);
}

Test(malformed, truncated_data_section)
{
    char path[4096];
    char *dir = good_checkpoint(NULL);
    ckpt_path(path, sizeof path, dir, SINGLE);
    cr_assert_eq(truncate(path, ckpt_file_size(path) - 100), 0, "truncate");
    /* the last tensor, lm_head, runs past the end now */
    assert_load_fails(dir, SINGLE, "tensor 'lm_head.weight'", "out of range");
    ckpt_rm_rf(dir);
}

Test(malformed, header_length_past_end)
{
    char path[4096];
    char *dir = good_checkpoint(NULL);
    ckpt_path(path, sizeof path, dir, SINGLE);
    const char header[] = "{\"__metadata__\":{}}     ";
    ckpt_write_raw(path, sizeof header, header, sizeof header - 1, NULL, 0); /* one byte short */
    assert_load_fails(dir, SINGLE, "header length", "past the end");
    ckpt_write_raw(path, (uint64_t)1 << 62, header, sizeof header - 1, NULL, 0);
    assert_load_fails(dir, SINGLE, "header length");
    ckpt_write_raw(path, UINT64_MAX, header, sizeof header - 1, NULL, 0);
    assert_load_fails(dir, SINGLE, "header length");
    ckpt_rm_rf(dir);
}

Test(malformed, header_invalid_json)
{
    char path[4096];
    char *dir = good_checkpoint(NULL);
    ckpt_path(path, sizeof path, dir, SINGLE);
    const char header[] = "{\"model.norm.weight\": {\"dtype\": \"F32\",\n \"shape\": [32 }";
    ckpt_write_raw(path, sizeof header - 1, header, sizeof header - 1, NULL, 0);
    assert_load_fails(dir, SINGLE, "JSON", "line 2");
    const char list[] = "[1, 2, 3]";
    ckpt_write_raw(path, sizeof list - 1, list, sizeof list - 1, NULL, 0);
    assert_load_fails(dir, SINGLE, "not a JSON object");
    ckpt_rm_rf(dir);
}

static void edit_entry_not_object(st_builder *b, const ftb_model *m)
{
    (void)m;
    json_object_set_new(b->header, "model.norm.weight", json_string("F32"));
}

static void edit_unknown_dtype(st_builder *b, const ftb_model *m)
{
    (void)m;
    json_object_set_new(stb_entry(b, "model.layers.0.mlp.up_proj.weight"), "dtype", json_string("F64"));
}

static void edit_offsets_out_of_range(st_builder *b, const ftb_model *m)
{
    (void)m;
    json_int_t n = (json_int_t)b->len;
    json_object_set_new(stb_entry(b, "model.norm.weight"), "data_offsets", json_pack("[I,I]", n - 64, n + 64));
}

static void edit_offsets_overlap(st_builder *b, const ftb_model *m)
{
    /* the final norm (128 bytes) claims the first bytes of the embedding */
    (void)m;
    json_object_set_new(stb_entry(b, "model.norm.weight"), "data_offsets", json_pack("[I,I]", 64, 64 + 128));
}

static void edit_offsets_reversed(st_builder *b, const ftb_model *m)
{
    (void)m;
    json_object_set_new(stb_entry(b, "model.norm.weight"), "data_offsets", json_pack("[I,I]", 128, 0));
}

static void edit_offsets_not_pair(st_builder *b, const ftb_model *m)
{
    (void)m;
    json_object_set_new(stb_entry(b, "model.norm.weight"), "data_offsets", json_pack("[I]", 0));
}

static void edit_size_mismatch(st_builder *b, const ftb_model *m)
{
    /* claims [16] but the offsets hold 32 floats */
    (void)m;
    json_object_set_new(stb_entry(b, "model.norm.weight"), "shape", json_pack("[I]", (json_int_t)16));
}

static void edit_shape_negative(st_builder *b, const ftb_model *m)
{
    (void)m;
    json_object_set_new(stb_entry(b, "model.norm.weight"), "shape", json_pack("[I]", (json_int_t)-32));
}

static void edit_shape_not_ints(st_builder *b, const ftb_model *m)
{
    (void)m;
    json_object_set_new(stb_entry(b, "model.norm.weight"), "shape", json_pack("[s]", "32"));
}

static void edit_shape_overflow(st_builder *b, const ftb_model *m)
{
    /* 2^32 · 2^32 elements wraps to 0 in 64 bits */
    (void)m;
    json_object_set_new(stb_entry(b, "model.norm.weight"), "shape",
                        json_pack("[I,I]", (json_int_t)1 << 32, (json_int_t)1 << 32));
}

static void edit_transposed_gate(st_builder *b, const ftb_model *m)
{
    (void)m;
    json_object_set_new(stb_entry(b, "model.layers.1.mlp.gate_proj.weight"), "shape",
                        json_pack("[I,I]", (json_int_t)32, (json_int_t)64));
}

static void edit_metadata(st_builder *b, const ftb_model *m)
{
    (void)m;
    json_object_set_new(b->header, "__metadata__", json_pack("{s:s}", "format", "pt"));
}

#define MALFORMED_HEADER(test_name, edit, ...)       \
    Test(malformed, test_name)                       \
    {                                                \
        ftb_model *m;                                \
        char *dir = good_checkpoint(&m);             \
        rewrite_weights(dir, m, NULL, edit);         \
        assert_load_fails(dir, SINGLE, __VA_ARGS__); \
        ftb_model_free(m);                           \
        ckpt_rm_rf(dir);                             \
    }

MALFORMED_HEADER(entry_not_object, edit_entry_not_object, "tensor 'model.norm.weight'", "not an object")
MALFORMED_HEADER(unknown_dtype, edit_unknown_dtype, "tensor 'model.layers.0.mlp.up_proj.weight'", "F64")
MALFORMED_HEADER(offsets_out_of_range, edit_offsets_out_of_range, "tensor 'model.norm.weight'", "out of range")
MALFORMED_HEADER(offsets_overlap, edit_offsets_overlap, "model.norm.weight", "model.embed_tokens.weight", "overlap")
MALFORMED_HEADER(offsets_reversed, edit_offsets_reversed, "tensor 'model.norm.weight'", "begin <= end")
MALFORMED_HEADER(offsets_not_a_pair, edit_offsets_not_pair, "tensor 'model.norm.weight'", "data_offsets")
MALFORMED_HEADER(byte_size_disagrees_with_shape, edit_size_mismatch, "tensor 'model.norm.weight'", "bytes")
MALFORMED_HEADER(shape_negative, edit_shape_negative, "tensor 'model.norm.weight'", "shape")
MALFORMED_HEADER(shape_not_integers, edit_shape_not_ints, "tensor 'model.norm.weight'", "shape")
MALFORMED_HEADER(shape_overflow, edit_shape_overflow, "tensor 'model.norm.weight'", "overflow")
MALFORMED_HEADER(shape_disagrees_with_config, edit_transposed_gate, "tensor 'model.layers.1.mlp.gate_proj.weight'",
                 "[32, 64]", "[64, 32]")

Test(malformed, metadata_is_skipped_not_rejected)
{
    ftb_model *m;
    char *dir = good_checkpoint(&m);
    rewrite_weights(dir, m, NULL, edit_metadata);
    ftb_model *loaded = load_or_die(dir, 1);
    ftb_model_free(loaded);
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}

Test(malformed, missing_tensor)
{
    ftb_model *m;
    char *dir = good_checkpoint(&m);
    rewrite_weights(dir, m, "model.layers.1.post_attention_layernorm.weight", NULL);
    assert_load_fails(dir, SINGLE, "tensor 'model.layers.1.post_attention_layernorm.weight'", "missing");
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}

Test(malformed, untied_lm_head_missing)
{
    ftb_model *m;
    char *dir = good_checkpoint(&m);
    rewrite_weights(dir, m, "lm_head.weight", NULL);
    assert_load_fails(dir, SINGLE, "tensor 'lm_head.weight'", "missing");
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}

Test(malformed, no_weights_file)
{
    char path[4096];
    char *dir = good_checkpoint(NULL);
    unlink(ckpt_path(path, sizeof path, dir, SINGLE));
    assert_load_fails(dir, SINGLE, "model.safetensors.index.json");
    ckpt_rm_rf(dir);
}

Test(malformed, config_invalid_json)
{
    char path[4096];
    char *dir = good_checkpoint(NULL);
    ckpt_write_text(ckpt_path(path, sizeof path, dir, "config.json"), "{\n  \"hidden_size\": 32,\n  oops\n}");
    assert_load_fails(dir, "config.json", "line 3", "column");
    ckpt_rm_rf(dir);
}

Test(malformed, config_missing_or_wrong_keys)
{
    char path[4096], err[FTB_ERR_LEN];
    char *dir = ckpt_tmpdir();
    ckpt_path(path, sizeof path, dir, "config.json");
    ftb_config c;

    ckpt_write_text(path, "{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                          " \"intermediate_size\": 128, \"max_position_embeddings\": 256}");
    cr_assert_eq(ftb_config_load_json(path, &c, err, sizeof err), -1, "missing vocab_size accepted");
    assert_error_mentions(err, "config.json", "vocab_size", "missing", NULL);

    ckpt_write_text(path, "{\"hidden_size\": \"64\", \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                          " \"intermediate_size\": 128, \"vocab_size\": 100, \"max_position_embeddings\": 256}");
    cr_assert_eq(ftb_config_load_json(path, &c, err, sizeof err), -1, "string hidden_size accepted");
    assert_error_mentions(err, "config.json", "hidden_size", "integer", NULL);

    ckpt_write_text(path, "{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                          " \"intermediate_size\": 128, \"vocab_size\": 100, \"max_position_embeddings\": 256,"
                          " \"tie_word_embeddings\": 1}");
    cr_assert_eq(ftb_config_load_json(path, &c, err, sizeof err), -1, "integer tie_word_embeddings accepted");
    assert_error_mentions(err, "config.json", "tie_word_embeddings", NULL);

    ckpt_write_text(path, "{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                          " \"intermediate_size\": 128, \"vocab_size\": 100, \"max_position_embeddings\": 256,"
                          " \"rope_theta\": \"big\"}");
    cr_assert_eq(ftb_config_load_json(path, &c, err, sizeof err), -1, "string rope_theta accepted");
    assert_error_mentions(err, "config.json", "rope_theta", NULL);

    /* Positive and finite as JSON, but not as a float: inf, and 0. */
    ckpt_write_text(path, "{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                          " \"intermediate_size\": 128, \"vocab_size\": 100, \"max_position_embeddings\": 256,"
                          " \"rope_theta\": 1e39}");
    cr_assert_eq(ftb_config_load_json(path, &c, err, sizeof err), -1, "rope_theta 1e39 (inf as a float) accepted");
    assert_error_mentions(err, "config.json", "rope_theta", "32-bit float", NULL);
    ckpt_write_text(path, "{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                          " \"intermediate_size\": 128, \"vocab_size\": 100, \"max_position_embeddings\": 256,"
                          " \"rms_norm_eps\": 1e-50}");
    cr_assert_eq(ftb_config_load_json(path, &c, err, sizeof err), -1, "rms_norm_eps 1e-50 (0 as a float) accepted");
    assert_error_mentions(err, "config.json", "rms_norm_eps", NULL);

    /* parses, but ftb_config_validate refuses it: 4 heads over 3 kv heads */
    ckpt_write_text(path, "{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                          " \"num_key_value_heads\": 3, \"intermediate_size\": 128, \"vocab_size\": 100,"
                          " \"max_position_embeddings\": 256}");
    cr_assert_eq(ftb_config_load_json(path, &c, err, sizeof err), -1, "inconsistent heads accepted");
    assert_error_mentions(err, "config.json", "num_key_value_heads", NULL);

    ckpt_write_text(path, "{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                          " \"intermediate_size\": 128, \"vocab_size\": 100, \"max_position_embeddings\": 256,"
                          " \"hidden_act\": \"gelu\"}");
    cr_assert_eq(ftb_config_load_json(path, &c, err, sizeof err), -1, "gelu accepted");
    assert_error_mentions(err, "config.json", "hidden_act", NULL);

    ckpt_write_text(path, "[]");
    cr_assert_eq(ftb_config_load_json(path, &c, err, sizeof err), -1, "a list accepted");
    assert_error_mentions(err, "config.json", "object", NULL);

    unlink(path);
    cr_assert_eq(ftb_config_load_json(path, &c, err, sizeof err), -1, "absent file accepted");
    assert_error_mentions(err, "config.json", "cannot open", NULL);
    ckpt_rm_rf(dir);
}

/* A two-shard checkpoint of m in dir (no model.safetensors). */
static void write_sharded(const char *dir, const ftb_model *m, const char *index_text)
{
    char path[4096];
    unlink(ckpt_path(path, sizeof path, dir, SINGLE));
    st_builder b;
    stb_init(&b);
    stb_add_model(&b, m, "F32", NULL);
    cr_assert_eq(stb_write(&b, ckpt_path(path, sizeof path, dir, "model-00001-of-00002.safetensors"), 0), 0, "w");
    stb_free(&b);
    ckpt_write_text(ckpt_path(path, sizeof path, dir, "model.safetensors.index.json"), index_text);
}

Test(malformed, index_names_missing_shard)
{
    ftb_model *m;
    char *dir = good_checkpoint(&m);
    write_sharded(dir, m,
                  "{\"weight_map\": {\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\","
                  " \"model.layers.0.input_layernorm.weight\": \"model-00002-of-00002.safetensors\"}}");
    assert_load_fails(dir, "model-00002-of-00002.safetensors", "tensor 'model.layers.0.input_layernorm.weight'");
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}

Test(malformed, index_lacks_tensor)
{
    ftb_model *m;
    char *dir = good_checkpoint(&m);
    write_sharded(dir, m, "{\"weight_map\": {\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\"}}");
    assert_load_fails(dir, "model.safetensors.index.json", "tensor 'model.layers.0.input_layernorm.weight'",
                      "weight_map");
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}

Test(malformed, index_shard_lacks_tensor)
{
    /* the index places a tensor in a shard that does not hold it */
    ftb_model *m;
    char *dir = good_checkpoint(&m);
    char path[4096];
    st_builder b;
    stb_init(&b);
    stb_add_tensor(&b, m->params[0], "F32", 0);
    stb_write(&b, ckpt_path(path, sizeof path, dir, "other.safetensors"), 0);
    stb_free(&b);
    json_t *wm = json_object();
    for (int k = 0; k < m->n_params; k++)
        json_object_set_new(wm, m->params[k]->name,
                            json_string(k == 1 ? "other.safetensors" : "model-00001-of-00002.safetensors"));
    json_t *index = json_pack("{s:o}", "weight_map", wm);
    char *text = json_dumps(index, 0);
    json_decref(index);
    write_sharded(dir, m, text);
    free(text);
    char needle[160];
    snprintf(needle, sizeof needle, "tensor '%s'", m->params[1]->name);
    assert_load_fails(dir, "other.safetensors", needle, "missing");
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}

Test(malformed, index_invalid)
{
    ftb_model *m;
    char *dir = good_checkpoint(&m);
    write_sharded(dir, m, "{\"weight_map\": {\"a\": }");
    assert_load_fails(dir, "model.safetensors.index.json", "JSON", "line 1");
    write_sharded(dir, m, "{\"metadata\": {}}");
    assert_load_fails(dir, "model.safetensors.index.json", "weight_map");
    write_sharded(dir, m, "{\"weight_map\": {\"model.embed_tokens.weight\": \"../escape.safetensors\"}}");
    assert_load_fails(dir, "model.safetensors.index.json", "tensor 'model.embed_tokens.weight'");
    write_sharded(dir, m, "{\"weight_map\": {\"model.embed_tokens.weight\": 7}}");
    assert_load_fails(dir, "model.safetensors.index.json", "tensor 'model.embed_tokens.weight'");
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}

Test(malformed, writer_rejects_bad_tensor_lists)
{
    char *dir = ckpt_tmpdir();
    char path[4096], err[FTB_ERR_LEN] = "";
    ftb_model *m = tiny_model(0, 8);
    ckpt_path(path, sizeof path, dir, "out.safetensors");
    ftb_tensor *twice[2] = { &m->embed, &m->embed };
    cr_assert_eq(ftb_safetensors_write(path, twice, 2, err, sizeof err), -1, "duplicate accepted");
    assert_error_mentions(err, "out.safetensors", "model.embed_tokens.weight", NULL);
    cr_assert_neq(access(path, F_OK), 0, "a failed write left a file");
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cr_assert_neq(access(tmp, F_OK), 0, "a failed write left a temporary");
    snprintf(path, sizeof path, "%s/no/such/dir/out.safetensors", dir);
    ftb_tensor *one[1] = { &m->embed };
    cr_assert_eq(ftb_safetensors_write(path, one, 1, err, sizeof err), -1, "missing directory accepted");
    assert_error_mentions(err, "out.safetensors", NULL);
    ftb_model_free(m);
    ckpt_rm_rf(dir);
}
