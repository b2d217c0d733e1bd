/* model.c — a model's tensors: their names and shapes (Hugging Face's),
 * their storage (owned, or mapped from a checkpoint), seeded initialisation,
 * trainability and gradients. */
#include "ftbench.h"
#include "model_internal.h"
#include "quant.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
    void **owned;
    int n_owned, cap_owned;
    /* accounted: bytes of the mapping the model still uses (a mapped
     * tensor that was quantized or made trainable stops counting); counted
     * as weights whole when all resident, not at all under lazy residency
     * (there the units entered count their tensors: residency.c) */
    struct {
        void *addr;
        size_t len, accounted;
    } * maps;
    int n_maps, cap_maps;
    ftb_qstore **qs; /* storage of non-fp32 tensors          */
    int n_qs, cap_qs;
    ftb_quant_error *errs; /* measured when tensors were quantized */
    int n_errs, cap_errs;
    ftb_read_perturb_fn perturb; /* ftb_model_set_read_perturbation   */
    void *perturb_ctx;
} model_storage;

/* Grows an array of elements of size sz to hold one more; aborts when a few
 * bytes cannot be had (nothing sensible remains then). */
static void grow(void **arr, int *cap, int n, size_t sz, int first)
{
    if (n < *cap) return;
    int c = *cap ? 2 * *cap : first;
    void *g = realloc(*arr, sz * (size_t)c);
    if (!g) abort();
    *arr = g;
    *cap = c;
}

static const char *linear_names[FTB_LIN_COUNT] = { "q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                   "gate_proj", "up_proj", "down_proj" };

const char *ftb_linear_name(ftb_linear_kind k) { return (unsigned)k < FTB_LIN_COUNT ? linear_names[k] : "unknown"; }

int ftb_linear_parse(const char *s)
{
    for (int k = 0; k < FTB_LIN_COUNT; k++) {
        size_t n = strlen(linear_names[k]) - 5; /* without "_proj" */
        if (strcmp(s, linear_names[k]) == 0 || (strlen(s) == n && strncmp(s, linear_names[k], n) == 0)) return k;
    }
    return -1;
}

static void init_tensor(ftb_tensor *t, const char *name, int64_t d0, int64_t d1, int no_decay)
{
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->numel = d1 ? d0 * d1 : d0;
    t->data = t->grad = NULL;
    t->trainable = 0;
    t->no_decay = no_decay;
    t->mapped = 0;
    t->dtype = FTB_DTYPE_F32;
    t->group = 0;
    t->quant = NULL;
}

ftb_tensor *ftb_layer_weight(ftb_layer *L, ftb_linear_kind k)
{
    ftb_tensor *w[FTB_LIN_COUNT] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
    return (unsigned)k < FTB_LIN_COUNT ? w[k] : NULL;
}

ftb_tensor *ftb_layer_bias(ftb_layer *L, ftb_linear_kind k)
{
    static ftb_tensor none; /* numel 0: the linear has no bias */
    if (k == FTB_LIN_Q) return &L->bq;
    if (k == FTB_LIN_K) return &L->bk;
    if (k == FTB_LIN_V) return &L->bv;
    return &none;
}

ftb_model *ftb_model_new_empty(const ftb_config *cfg, char *err, size_t errlen)
{
    if (ftb_config_validate(cfg, err, errlen) || ftb_config_check_computable(cfg, err, errlen)) return NULL;
    ftb_model *m = calloc(1, sizeof *m);
    model_storage *st = calloc(1, sizeof *st);
    int L = cfg->n_layers;
    if (m) {
        m->layers = calloc((size_t)L, sizeof *m->layers);
        m->params = calloc((size_t)(3 + 12 * L), sizeof *m->params);
    }
    if (!m || !st || !m->layers || !m->params) {
        snprintf(err, errlen, "out of memory building the model's tensor table");
        if (m) {
            free(m->layers);
            free(m->params);
        }
        free(m);
        free(st);
        return NULL;
    }
    m->storage = st;
    m->cfg = *cfg;
    int64_t D = cfg->dim, Q = (int64_t)cfg->n_heads * cfg->head_dim, KV = (int64_t)cfg->n_kv_heads * cfg->head_dim,
            F = cfg->ffn_dim, V = cfg->vocab_size;
    char name[96];
    init_tensor(&m->embed, "model.embed_tokens.weight", V, D, 0);
    m->params[m->n_params++] = &m->embed;
    for (int l = 0; l < L; l++) {
        ftb_layer *ly = &m->layers[l];
#define T(field, suffix, d0, d1, nd)                              \
    snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix); \
    init_tensor(&ly->field, name, d0, d1, nd);                    \
    if ((d0) > 0) m->params[m->n_params++] = &ly->field;
        T(attn_norm, "input_layernorm.weight", D, 0, 1);
        T(wq, "self_attn.q_proj.weight", Q, D, 0);
        T(bq, "self_attn.q_proj.bias", cfg->qkv_bias ? Q : 0, 0, 1);
        T(wk, "self_attn.k_proj.weight", KV, D, 0);
        T(bk, "self_attn.k_proj.bias", cfg->qkv_bias ? KV : 0, 0, 1);
        T(wv, "self_attn.v_proj.weight", KV, D, 0);
        T(bv, "self_attn.v_proj.bias", cfg->qkv_bias ? KV : 0, 0, 1);
        T(wo, "self_attn.o_proj.weight", D, Q, 0);
        T(mlp_norm, "post_attention_layernorm.weight", D, 0, 1);
        T(w_gate, "mlp.gate_proj.weight", F, D, 0);
        T(w_up, "mlp.up_proj.weight", F, D, 0);
        T(w_down, "mlp.down_proj.weight", D, F, 0);
#undef T
    }
    init_tensor(&m->final_norm, "model.norm.weight", D, 0, 1);
    m->params[m->n_params++] = &m->final_norm;
    init_tensor(&m->lm_head, "lm_head.weight", V, D, 0);
    if (!cfg->tie_embeddings) m->params[m->n_params++] = &m->lm_head;
    return m;
}

void ftb_model_set_read_perturbation(ftb_model *m, ftb_read_perturb_fn fn, void *ctx)
{
    model_storage *st = m->storage;
    st->perturb = fn;
    st->perturb_ctx = fn ? ctx : NULL;
}

ftb_read_perturb_fn ftb_model_read_perturbation(const ftb_model *m, void **ctx)
{
    const model_storage *st = m->storage;
    if (ctx) *ctx = st->perturb_ctx;
    return st->perturb;
}

void ftb_model_own(ftb_model *m, void *buffer)
{
    model_storage *st = m->storage;
    if (st->n_owned == st->cap_owned) {
        int cap = st->cap_owned ? 2 * st->cap_owned : 64;
        void **grown = realloc(st->owned, sizeof(void *) * (size_t)cap);
        if (!grown) abort(); /* a few hundred bytes: nothing sensible remains */
        st->owned = grown;
        st->cap_owned = cap;
    }
    st->owned[st->n_owned++] = buffer;
}

void ftb_model_add_mapping(ftb_model *m, void *addr, size_t len)
{
    model_storage *st = m->storage;
    if (st->n_maps == st->cap_maps) {
        int cap = st->cap_maps ? 2 * st->cap_maps : 8;
        void *grown = realloc(st->maps, sizeof(*st->maps) * (size_t)cap);
        if (!grown) abort();
        st->maps = grown;
        st->cap_maps = cap;
    }
    st->maps[st->n_maps].addr = addr;
    st->maps[st->n_maps].len = len;
    st->maps[st->n_maps].accounted = len;
    st->n_maps++;
    if (m->residency != FTB_RESIDENT_LAZY_BLOCK) ftb_mem_account(FTB_MEM_WEIGHTS, (int64_t)len);
}

int64_t ftb_model_mapped_accounted(const ftb_model *m)
{
    const model_storage *st = m->storage;
    int64_t bytes = 0;
    for (int i = 0; st && i < st->n_maps; i++) bytes += (int64_t)st->maps[i].accounted;
    return bytes;
}

void ftb_model_disown(ftb_model *m, void *buffer)
{
    model_storage *st = m->storage;
    if (!buffer) return;
    for (int i = st->n_owned - 1; i >= 0; i--)
        if (st->owned[i] == buffer) {
            st->owned[i] = st->owned[--st->n_owned];
            ftb_free(buffer);
            return;
        }
}

void ftb_model_track_qstore(ftb_model *m, ftb_qstore *q)
{
    model_storage *st = m->storage;
    grow((void **)&st->qs, &st->cap_qs, st->n_qs, sizeof *st->qs, 64);
    st->qs[st->n_qs++] = q;
}

void ftb_model_forget_qstore(ftb_model *m, ftb_qstore *q)
{
    model_storage *st = m->storage;
    for (int i = 0; i < st->n_qs; i++)
        if (st->qs[i] == q) {
            st->qs[i] = st->qs[--st->n_qs];
            break;
        }
    if (q->mapped) {
        const void *parts[3] = { q->q, q->scales, q->zeros };
        for (int p = 0; p < 3; p++)
            ftb_model_release_mapped(m, parts[p], ftb_qstore_part_bytes(q->dtype, q->rows, q->cols, q->group, p));
    }
    ftb_qstore_free(q);
}

void ftb_model_record_error(ftb_model *m, const ftb_quant_error *e)
{
    model_storage *st = m->storage;
    for (int i = 0; i < st->n_errs; i++) /* re-quantized: the latest counts */
        if (!strcmp(st->errs[i].name, e->name)) {
            st->errs[i] = *e;
            return;
        }
    grow((void **)&st->errs, &st->cap_errs, st->n_errs, sizeof *st->errs, 64);
    st->errs[st->n_errs++] = *e;
}

int ftb_model_quant_errors(const ftb_model *m, ftb_quant_error *out, int cap)
{
    const model_storage *st = m->storage;
    for (int i = 0; i < st->n_errs && i < cap && out; i++) out[i] = st->errs[i];
    return st->n_errs;
}

void ftb_model_release_mapped(ftb_model *m, const void *p, size_t bytes)
{
    model_storage *st = m->storage;
    if (!p || !bytes) return;
    for (int i = 0; i < st->n_maps; i++) {
        const char *a = st->maps[i].addr;
        if ((const char *)p < a || (const char *)p + bytes > a + st->maps[i].len) continue;
        size_t drop = bytes < st->maps[i].accounted ? bytes : st->maps[i].accounted;
        st->maps[i].accounted -= drop;
        if (m->residency != FTB_RESIDENT_LAZY_BLOCK) ftb_mem_account(FTB_MEM_WEIGHTS, -(int64_t)drop);
        /* Whole pages only: the pages at either end may hold a neighbour. */
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1), hi = ((uintptr_t)p + bytes) & ~(page - 1);
        if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
        return;
    }
}

void ftb_model_retie(ftb_model *m)
{
    if (!m->cfg.tie_embeddings) return;
    m->lm_head.data = m->embed.data;
    m->lm_head.grad = m->embed.grad;
    m->lm_head.trainable = m->embed.trainable;
    m->lm_head.mapped = m->embed.mapped;
    m->lm_head.dtype = m->embed.dtype;
    m->lm_head.group = m->embed.group;
    m->lm_head.quant = m->embed.quant;
}

static void tie_head(ftb_model *m) { ftb_model_retie(m); }

int ftb_model_alloc_missing(ftb_model *m, char *err, size_t errlen)
{
    for (int i = 0; i < m->n_params; i++) {
        ftb_tensor *t = m->params[i];
        if (t->data || t->quant) continue;
        t->data = ftb_alloc(FTB_MEM_WEIGHTS, sizeof(float) * (size_t)t->numel);
        if (!t->data) {
            snprintf(err, errlen, "out of memory for tensor '%s' (%lld floats)", t->name, (long long)t->numel);
            return -1;
        }
        ftb_model_own(m, t->data);
    }
    tie_head(m);
    return 0;
}

static uint64_t hash_name(const char *s, uint64_t seed)
{
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

ftb_model *ftb_model_create(const ftb_config *cfg, uint64_t seed, char *err, size_t errlen)
{
    ftb_model *m = ftb_model_new_empty(cfg, err, errlen);
    if (!m) return NULL;
    if (ftb_model_alloc_missing(m, err, errlen)) {
        ftb_model_free(m);
        return NULL;
    }
    /* Each tensor is filled in chunks with seeds derived from (seed, name,
     * chunk), so the weights do not depend on the number of threads. */
    const int64_t chunk = 1 << 20;
    for (int i = 0; i < m->n_params; i++) {
        ftb_tensor *t = m->params[i];
        uint64_t base = hash_name(t->name, seed);
        int is_norm = strstr(t->name, "norm") != NULL;
        int64_t nchunks = (t->numel + chunk - 1) / chunk;
#pragma omp parallel for schedule(dynamic)
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t lo = c * chunk, n = t->numel - lo < chunk ? t->numel - lo : chunk;
            if (is_norm) {
                for (int64_t j = 0; j < n; j++) t->data[lo + j] = 1.0f;
            } else {
                /* Uniform with the same standard deviation as normal(0, 0.02):
                 * ten times cheaper than Box-Muller, and model creation is the
                 * largest fixed cost of every measurement cell. */
                ftb_rng r;
                ftb_rng_seed(&r, base + (uint64_t)c);
                const float half_width = 0.02f * 1.7320508f;
                for (int64_t j = 0; j < n; j++) t->data[lo + j] = half_width * (2.0f * ftb_rng_uniform(&r) - 1.0f);
            }
        }
    }
    return m;
}

void ftb_model_free(ftb_model *m)
{
    if (!m) return;
    model_storage *st = m->storage;
    for (int i = 0; i < m->n_params; i++) {
        ftb_free(m->params[i]->grad);
        m->params[i]->grad = NULL;
    }
    if (st) {
        for (int i = 0; i < st->n_owned; i++) ftb_free(st->owned[i]);
        for (int i = 0; i < st->n_qs; i++) ftb_qstore_free(st->qs[i]);
        for (int i = 0; i < st->n_maps; i++) {
            munmap(st->maps[i].addr, st->maps[i].len);
            if (m->residency != FTB_RESIDENT_LAZY_BLOCK)
                ftb_mem_account(FTB_MEM_WEIGHTS, -(int64_t)st->maps[i].accounted);
        }
        free(st->owned);
        free(st->maps);
        free(st->qs);
        free(st->errs);
        free(st);
    }
    free(m->layers);
    free(m->params);
    free(m);
}

ftb_tensor *ftb_model_find(ftb_model *m, const char *hf_name)
{
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i]->name, hf_name) == 0) return m->params[i];
    if (strcmp(hf_name, "lm_head.weight") == 0) return &m->lm_head;
    return NULL;
}

void ftb_model_set_trainable(ftb_model *m, int trainable)
{
    for (int i = 0; i < m->n_params; i++) m->params[i]->trainable = trainable;
    tie_head(m);
}

/* A trainable tensor must be writable and is counted as trainable: a mapped
 * one is copied out of the checkpoint, an owned one changes category, and
 * one stored in another format is dequantized into fp32 (its compressed
 * storage is released). */
static int make_writable(ftb_model *m, ftb_tensor *t, char *err, size_t errlen)
{
    size_t bytes = sizeof(float) * (size_t)t->numel;
    if (t->quant) {
        float *copy = ftb_alloc(FTB_MEM_TRAINABLE, bytes);
        if (!copy) {
            snprintf(err, errlen, "out of memory dequantizing '%s' to train it", t->name);
            return -1;
        }
        ftb_tensor_read_rows(t, 0, t->ndim == 2 ? t->shape[0] : 1, copy);
        ftb_model_forget_qstore(m, t->quant);
        ftb_model_own(m, copy);
        t->data = copy;
        t->quant = NULL;
        t->dtype = FTB_DTYPE_F32;
        t->group = 0;
        t->mapped = 0;
    } else if (t->mapped) {
        float *copy = ftb_alloc(FTB_MEM_TRAINABLE, bytes);
        if (!copy) {
            snprintf(err, errlen, "out of memory copying '%s' to train it", t->name);
            return -1;
        }
        memcpy(copy, t->data, bytes);
        t->data = copy;
        t->mapped = 0;
        ftb_model_own(m, copy);
    } else {
        ftb_mem_recategorize(t->data, FTB_MEM_TRAINABLE);
    }
    t->writable = 1;
    return 0;
}

int ftb_model_make_writable(ftb_model *m, char *err, size_t errlen)
{
    for (int i = 0; i < m->n_params; i++) {
        ftb_tensor *t = m->params[i];
        if (t->trainable && !t->writable && make_writable(m, t, err, errlen)) return -1;
    }
    tie_head(m);
    return 0;
}

int ftb_model_alloc_grads(ftb_model *m, char *err, size_t errlen)
{
    for (int i = 0; i < m->n_params; i++) {
        ftb_tensor *t = m->params[i];
        if (!t->trainable || t->grad) continue;
        if (!t->writable && make_writable(m, t, err, errlen)) return -1;
        t->grad = ftb_calloc(FTB_MEM_GRADS, sizeof(float) * (size_t)t->numel);
        if (!t->grad) {
            snprintf(err, errlen, "out of memory for the gradient of '%s'", t->name);
            return -1;
        }
    }
    tie_head(m);
    return 0;
}

void ftb_model_zero_grads(ftb_model *m)
{
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i]->grad) memset(m->params[i]->grad, 0, sizeof(float) * (size_t)m->params[i]->numel);
}

int64_t ftb_model_trainable_count(const ftb_model *m)
{
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i]->trainable) n += m->params[i]->numel;
    return n;
}

void ftb_attach_adapter(ftb_model *m, int layer, ftb_linear_kind k, ftb_adapter *a)
{
    if (layer >= 0 && layer < m->cfg.n_layers && (unsigned)k < FTB_LIN_COUNT) m->layers[layer].adapter[k] = a;
}

void ftb_run_opts_default(ftb_run_opts *o)
{
    memset(o, 0, sizeof *o);
    o->attention = FTB_ATTN_FLASH;
    o->loss = FTB_LOSS_CHUNKED;
    o->loss_chunk_rows = 128;
}
