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
#define FZ_MICRO_CONFIG_JSON                                                    \
    "{\n"                                                                       \
    "  \"architectures\": [\"Qwen2ForCausalLM\"],\n"                            \
    "  \"model_type\": \"qwen2\",\n"                                            \
    "  \"hidden_act\": \"silu\",\n"                                             \
    "  \"hidden_size\": 8,\n"                                                   \
    "  \"intermediate_size\": 8,\n"                                             \
    "  \"num_hidden_layers\": 1,\n"                                             \
    "  \"num_attention_heads\": 2,\n"                                           \
    "  \"num_key_value_heads\": 1,\n"                                           \
    "  \"head_dim\": 4,\n"                                                      \
    "  \"vocab_size\": 16,\n"                                                   \
    "  \"max_position_embeddings\": 64,\n"                                      \
    "  \"rope_theta\": 10000.0,\n"                                              \
    "  \"rms_norm_eps\": 1e-06,\n"                                              \
    "  \"tie_word_embeddings\": false,\n"                                       \
    "  \"torch_dtype\": \"float32\"\n"                                          \
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

/* Reads every float of every parameter of a loaded model (ASan sees an
 * owned buffer that is too short; a mapping that is, faults), and checks
 * the shapes the loader promised. */
static inline double fz_touch_model(const ftb_model *m)
{
    double sum = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ftb_tensor *t = m->params[i];
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++)
            numel *= t->shape[d];
        if (numel != t->numel || (t->numel > 0 && !t->data)) {
            fprintf(stderr, "fuzz: loaded tensor '%s' has numel %lld for its shape, data %p\n", t->name,
                    (long long)t->numel, (void *)t->data);
            abort();
        }
        for (int64_t k = 0; k < t->numel; k++)
            sum += t->data[k];
    }
    return sum;
}

#endif
