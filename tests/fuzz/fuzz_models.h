/*
 * fuzz_models.h — the "micro" model the checkpoint fuzz targets load: small
 * enough that a whole checkpoint is a 2 KB fuzz input, with every kind of
 * tensor the loader handles (q/k/v biases, an untied LM head, grouped-query
 * attention).  gen_corpus.c writes the seed checkpoints of this config; the
 * safetensors target loads each input against FZ_MICRO_CONFIG_JSON.
 */
#ifndef FTB_FUZZ_MODELS_H
#define FTB_FUZZ_MODELS_H

#include "ftbench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The same figures as fz_micro_config(c, 0), as Hugging Face writes them. */
#define FZ_MICRO_CONFIG_JSON                         \
    "{\n"                                            \
    "  \"architectures\": [\"Qwen2ForCausalLM\"],\n" \
    "  \"model_type\": \"qwen2\",\n"                 \
    "  \"hidden_act\": \"silu\",\n"                  \
    "  \"hidden_size\": 8,\n"                        \
    "  \"intermediate_size\": 8,\n"                  \
    "  \"num_hidden_layers\": 1,\n"                  \
    "  \"num_attention_heads\": 2,\n"                \
    "  \"num_key_value_heads\": 1,\n"                \
    "  \"head_dim\": 4,\n"                           \
    "  \"vocab_size\": 16,\n"                        \
    "  \"max_position_embeddings\": 64,\n"           \
    "  \"rope_theta\": 10000.0,\n"                   \
    "  \"rms_norm_eps\": 1e-06,\n"                   \
    "  \"tie_word_embeddings\": false,\n"            \
    "  \"torch_dtype\": \"float32\"\n"               \
    "}\n"

/* variant 0: Qwen2-like (q/k/v biases, untied head) — FZ_MICRO_CONFIG_JSON;
 * variant 1: Llama-like (no biases, tied embeddings). */
static inline void fz_micro_config(ftb_config *c, int variant)
{
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", variant ? "micro-tied" : "micro");
    c->vocab_size = 16;
    c->dim = 8;
    c->n_layers = 1;
    c->n_heads = 2;
    c->n_kv_heads = 1;
    c->head_dim = 4;
    c->ffn_dim = 8;
    c->max_seq = 64;
    c->rope_theta = 10000.0f;
    c->norm_eps = 1e-6f;
    c->qkv_bias = !variant;
    c->tie_embeddings = variant;
}

/* Reads every value of every parameter of a loaded model, whatever its
 * storage (fp32 data directly, so that ASan sees an owned buffer that is
 * too short and a mapping that is faults; other formats through
 * ftb_tensor_read_rows, which dequantizes), and checks the shapes the
 * loader promised. */
static inline double fz_touch_model(const ftb_model *m)
{
    double sum = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ftb_tensor *t = m->params[i];
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
        int f32 = t->dtype == FTB_DTYPE_F32;
        if (numel != t->numel || t->ndim < 1 || t->ndim > 2 || (t->numel > 0 && f32 && !t->data) ||
            (!f32 && (t->data || !t->quant || ftb_tensor_storage_bytes(t) <= 0))) {
            fprintf(stderr, "fuzz: loaded tensor '%s' (%s): numel %lld for its shape, data %p, quant %p\n", t->name,
                    ftb_dtype_name(t->dtype), (long long)t->numel, (void *)t->data, t->quant);
            abort();
        }
        if (f32) {
            for (int64_t k = 0; k < t->numel; k++) sum += t->data[k];
            continue;
        }
        int64_t rows = t->ndim == 2 ? t->shape[0] : 1, cols = t->numel / (rows ? rows : 1);
        float *row = malloc(((size_t)cols + 1) * sizeof *row);
        if (!row) abort();
        for (int64_t r = 0; r < rows; r++) {
            ftb_tensor_read_rows(t, r, 1, row);
            for (int64_t k = 0; k < cols; k++) sum += row[k];
        }
        free(row);
    }
    return sum;
}

#endif
