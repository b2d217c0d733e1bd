/* zoo.c — the published shapes of the models ftbench measures, so that
 * every experiment runs at a real model's size with seeded weights and no
 * download.  Figures are those of each model's Hugging Face config.json. */
#include "ftbench.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Llama 3.1/3.2's published "rope_scaling" (config.json of meta-llama/
 * Llama-3.2-1B and -3B): factor 32, low_freq_factor 1, high_freq_factor 4,
 * original_max_position_embeddings 8192. */
/* clang-format off */
#define NO_SCALING     { FTB_ROPE_DEFAULT, 0.f, 0.f, 0.f, 0 }
#define LLAMA3_SCALING { FTB_ROPE_LLAMA3, 32.f, 1.f, 4.f, 8192 }
/* clang-format on */

/*  name            vocab    dim   L  heads kv  hd   ffn    maxseq  theta     eps   bias tied rope_scaling shape_only */
static const ftb_config zoo[] = {
    { "qwen2.5-0.5b", 151936, 896, 24, 14, 2, 64, 4864, 32768, 1000000.f, 1e-6f, 1, 1, NO_SCALING, "" },
    { "qwen2.5-1.5b", 151936, 1536, 28, 12, 2, 128, 8960, 32768, 1000000.f, 1e-6f, 1, 1, NO_SCALING, "" },
    { "qwen2.5-3b", 151936, 2048, 36, 16, 2, 128, 11008, 32768, 1000000.f, 1e-6f, 1, 1, NO_SCALING, "" },
    { "llama-3.2-1b", 128256, 2048, 16, 32, 8, 64, 8192, 131072, 500000.f, 1e-5f, 0, 1, LLAMA3_SCALING, "" },
    { "llama-3.2-3b", 128256, 3072, 28, 24, 8, 128, 8192, 131072, 500000.f, 1e-5f, 0, 1, LLAMA3_SCALING, "" },
    { "smollm2-135m", 49152, 576, 30, 9, 3, 64, 1536, 8192, 100000.f, 1e-5f, 0, 1, NO_SCALING, "" },
    { "smollm2-360m", 49152, 960, 32, 15, 5, 64, 2560, 8192, 100000.f, 1e-5f, 0, 1, NO_SCALING, "" },
    { "tinyllama-1.1b", 32000, 2048, 22, 32, 4, 64, 5632, 2048, 10000.f, 1e-5f, 0, 0, NO_SCALING, "" },
    /* Test and development shapes. */
    { "tiny", 64, 32, 2, 4, 2, 8, 64, 512, 10000.f, 1e-6f, 1, 0, NO_SCALING, "" },
    { "tiny-tied", 64, 24, 2, 3, 3, 8, 48, 512, 500000.f, 1e-5f, 0, 1, NO_SCALING, "" },
    { "small-20m", 4096, 384, 8, 6, 2, 64, 1024, 4096, 10000.f, 1e-6f, 1, 1, NO_SCALING, "" },
    /* Byte-level task models (docs/TASKS.md): vocab 512 = 256 bytes + room
     * for the synthetic language's ids.  starter-4m is what `ftbench
     * pretrain` trains by default (make starting-model): minutes on 2 cores. */
    { "tiny-byte", 320, 32, 2, 4, 2, 8, 64, 2048, 10000.f, 1e-6f, 0, 1, NO_SCALING, "" },
    { "starter-4m", 512, 256, 4, 4, 2, 64, 768, 8192, 10000.f, 1e-6f, 0, 1, NO_SCALING, "" },
};

int ftb_zoo_count(void) { return (int)(sizeof zoo / sizeof zoo[0]); }
const ftb_config *ftb_zoo_at(int i) { return i >= 0 && i < ftb_zoo_count() ? &zoo[i] : NULL; }

int ftb_zoo_get(const char *name, ftb_config *out)
{
    for (int i = 0; i < ftb_zoo_count(); i++)
        if (strcmp(zoo[i].name, name) == 0) {
            *out = zoo[i];
            return 0;
        }
    return -1;
}

int ftb_config_validate(const ftb_config *c, char *err, size_t errlen)
{
#define CHECK(cond, ...)                        \
    do {                                        \
        if (!(cond)) {                          \
            snprintf(err, errlen, __VA_ARGS__); \
            return -1;                          \
        }                                       \
    } while (0)
    CHECK(c->vocab_size > 0 && c->vocab_size <= (1 << 24), "vocab_size %d out of range", c->vocab_size);
    CHECK(c->dim > 0 && c->dim <= 65536, "hidden_size %d out of range", c->dim);
    CHECK(c->n_layers > 0 && c->n_layers <= 1024, "num_hidden_layers %d out of range", c->n_layers);
    CHECK(c->n_heads > 0 && c->n_heads <= 1024, "num_attention_heads %d out of range", c->n_heads);
    CHECK(c->n_kv_heads > 0 && c->n_kv_heads <= c->n_heads, "num_key_value_heads %d must be in 1..%d", c->n_kv_heads,
          c->n_heads);
    CHECK(c->n_heads % c->n_kv_heads == 0, "num_attention_heads %d is not a multiple of num_key_value_heads %d",
          c->n_heads, c->n_kv_heads);
    CHECK(c->head_dim > 0 && c->head_dim % 2 == 0 && c->head_dim <= 1024, "head_dim %d must be even and in 2..1024",
          c->head_dim);
    CHECK(c->ffn_dim > 0 && c->ffn_dim <= 1 << 20, "intermediate_size %d out of range", c->ffn_dim);
    CHECK(c->max_seq > 0, "max_position_embeddings %d out of range", c->max_seq);
    CHECK(c->rope_theta > 1.0f, "rope_theta %g must be > 1", (double)c->rope_theta);
    CHECK(c->norm_eps > 0.0f && c->norm_eps < 1.0f, "rms_norm_eps %g out of range", (double)c->norm_eps);
    CHECK(memchr(c->shape_only, 0, sizeof c->shape_only) != NULL, "shape_only is not a string");
    const ftb_rope_scaling *r = &c->rope_scaling;
    CHECK(r->kind == FTB_ROPE_DEFAULT || r->kind == FTB_ROPE_LINEAR || r->kind == FTB_ROPE_LLAMA3,
          "rope_scaling kind %d unknown", r->kind);
    if (r->kind != FTB_ROPE_DEFAULT)
        CHECK(isfinite(r->factor) && r->factor > 0.0f, "rope_scaling factor %g must be positive", (double)r->factor);
    if (r->kind == FTB_ROPE_LLAMA3) {
        CHECK(isfinite(r->low_freq_factor) && r->low_freq_factor > 0.0f,
              "rope_scaling low_freq_factor %g must be positive", (double)r->low_freq_factor);
        /* Equal factors would make the interpolation 0/0. */
        CHECK(isfinite(r->high_freq_factor) && r->high_freq_factor > r->low_freq_factor,
              "rope_scaling high_freq_factor %g must be greater than low_freq_factor %g", (double)r->high_freq_factor,
              (double)r->low_freq_factor);
        CHECK(r->original_max_seq > 0, "rope_scaling original_max_position_embeddings %d must be positive",
              r->original_max_seq);
    }
#undef CHECK
    return 0;
}

int ftb_config_check_computable(const ftb_config *c, char *err, size_t errlen)
{
    if (!c->shape_only[0]) return 0;
    snprintf(err, errlen, "%s", c->shape_only);
    return -1;
}

int64_t ftb_config_param_count(const ftb_config *c)
{
    int64_t D = c->dim, Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t per_layer = 2 * D + D * Q + 2 * D * KV + Q * D + 3 * D * c->ffn_dim;
    if (c->qkv_bias) per_layer += Q + 2 * KV;
    int64_t n = (int64_t)c->vocab_size * D * (c->tie_embeddings ? 1 : 2) + D;
    return n + per_layer * c->n_layers;
}
