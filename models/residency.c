/* residency.c — the residency of mapped weights (docs/CORE.md, "Mapped
 * weights count as resident"): all resident from load, or brought in unit by
 * unit (a block, the embedding's looked-up rows, the LM head's tiles) with
 * madvise and counted as weights only while in use. */
#include "ftbench.h"
#include "model_internal.h"
#include "quant.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>


/* Mapped weights count as resident (docs/CORE.md): all resident, a mapping
 * counts whole from load; lazy, it counts nothing between units and each
 * unit counts its tensors while entered.  Switching moves the difference. */
void ftb_model_set_residency(ftb_model *m, ftb_residency r)
{
    if ((int)r == m->residency) return;
    const int64_t mapped = ftb_model_mapped_accounted(m);
    ftb_mem_account(FTB_MEM_WEIGHTS, r == FTB_RESIDENT_LAZY_BLOCK ? -mapped : mapped);
    m->residency = (int)r;
}

static int populate_works = 1;

static void advise(const void *p, size_t n, int advice)
{
    if (!p || !n) return;
    static uintptr_t page;
    if (!page) page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p & ~(page - 1), e = ((uintptr_t)p + n + page - 1) & ~(page - 1);
    if (madvise((void *)a, e - a, advice) != 0 && errno == EINVAL && advice != MADV_DONTNEED) {
        populate_works = 0; /* an older kernel: read-ahead instead */
        madvise((void *)a, e - a, MADV_WILLNEED);
    }
}

static void advise_tensor(const ftb_tensor *t, int advice)
{
    if (t->numel == 0) return;
    if (t->dtype == FTB_DTYPE_F32 || !t->quant) {
        if (t->mapped && t->data) advise(t->data, sizeof(float) * (size_t)t->numel, advice);
        return;
    }
    const ftb_qstore *q = t->quant;
    if (!q->mapped) return;
    const void *parts[3] = { q->q, q->scales, q->zeros };
    for (int p = 0; p < 3; p++)
        advise(parts[p], ftb_qstore_part_bytes(q->dtype, q->rows, q->cols, q->group, p), advice);
}

/* The embedding and the LM head are not brought in whole: a lookup touches
 * only its tokens' rows, and the head streams its tiles (head.c drops each
 * tile's pages once used).  Leaving drops whatever is left. */
static void advise_unit(ftb_model *m, int unit, int advice)
{
    const int entering = advice != MADV_DONTNEED;
    if (unit == RES_EMBED) {
        if (!entering) advise_tensor(&m->embed, advice);
    } else if (unit == RES_HEAD) {
        advise_tensor(&m->final_norm, advice);
        if (!entering) advise_tensor(&m->lm_head, advice);
    } else if (unit >= 0 && unit < m->cfg.n_layers) {
        ftb_layer *L = &m->layers[unit];
        ftb_tensor *ts[] = { &L->attn_norm, &L->wq, &L->wk,       &L->wv,     &L->wo,   &L->bq,
                             &L->bk,        &L->bv, &L->mlp_norm, &L->w_gate, &L->w_up, &L->w_down };
        for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) advise_tensor(ts[i], advice);
    }
}

/* Bringing a unit in: MADV_POPULATE_READ (Linux 5.14+) maps every page in
 * one call, reading what the page cache lacks; older kernels refuse it and
 * get MADV_WILLNEED (read-ahead; the pages are then faulted in as used). */

void ftb_residency_enter(ftb_model *m, int unit)
{
    if (m->residency != FTB_RESIDENT_LAZY_BLOCK) return;
    ftb_mem_account(FTB_MEM_WEIGHTS, ftb_residency_unit_bytes(m, unit));
#ifdef MADV_POPULATE_READ
    if (populate_works) {
        advise_unit(m, unit, MADV_POPULATE_READ);
        return;
    }
#endif
    advise_unit(m, unit, MADV_WILLNEED);
}

void ftb_residency_leave(ftb_model *m, int unit)
{
    if (m->residency != FTB_RESIDENT_LAZY_BLOCK) return;
    advise_unit(m, unit, MADV_DONTNEED);
    ftb_mem_account(FTB_MEM_WEIGHTS, -ftb_residency_unit_bytes(m, unit));
}

static int64_t mapped_bytes(const ftb_tensor *t)
{
    return t->numel && ftb_tensor_is_mapped(t) ? ftb_tensor_storage_bytes(t) : 0;
}

int64_t ftb_residency_unit_bytes(const ftb_model *m, int unit)
{
    if (m->residency != FTB_RESIDENT_LAZY_BLOCK) return 0;
    if (unit == RES_HEAD) return mapped_bytes(&m->final_norm); /* the LM head counts its tiles as it streams */
    if (unit < 0 || unit >= m->cfg.n_layers) return 0;         /* RES_EMBED: the lookup counts its rows */
    const ftb_layer *L = &m->layers[unit];
    const ftb_tensor *ts[] = { &L->attn_norm, &L->wq, &L->wk,       &L->wv,     &L->wo,   &L->bq,
                               &L->bk,        &L->bv, &L->mlp_norm, &L->w_gate, &L->w_up, &L->w_down };
    int64_t bytes = 0;
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) bytes += mapped_bytes(ts[i]);
    return bytes;
}

static int compare_tokens(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int64_t ftb_residency_lookup_bytes(const ftb_model *m, const int32_t *tokens, int n, int32_t *scratch)
{
    if (m->residency != FTB_RESIDENT_LAZY_BLOCK || n <= 0 || !ftb_tensor_is_mapped(&m->embed)) return 0;
    /* A token repeated brings its row in once. */
    memcpy(scratch, tokens, sizeof(int32_t) * (size_t)n);
    qsort(scratch, (size_t)n, sizeof *scratch, compare_tokens);
    int64_t distinct = 1;
    for (int i = 1; i < n; i++) distinct += scratch[i] != scratch[i - 1];
    return distinct * ftb_tensor_row_bytes(&m->embed);
}

int64_t ftb_residency_lookup_bound(const ftb_model *m, int64_t n)
{
    if (m->residency != FTB_RESIDENT_LAZY_BLOCK || n <= 0 || !ftb_tensor_is_mapped(&m->embed)) return 0;
    const int64_t rows = ftb_tensor_rows(&m->embed);
    return (n < rows ? n : rows) * ftb_tensor_row_bytes(&m->embed);
}

int64_t ftb_residency_head_tile_bytes(const ftb_model *m)
{
    const ftb_tensor *W = &m->lm_head;
    if (m->residency != FTB_RESIDENT_LAZY_BLOCK || !W->numel || !ftb_tensor_is_mapped(W)) return 0;
    return ftb_quant_tile_rows(ftb_tensor_rows(W), ftb_tensor_cols(W)) * ftb_tensor_row_bytes(W);
}