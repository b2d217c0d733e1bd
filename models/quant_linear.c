/* quant_linear.c — y = x·Wᵀ and dx = dy·W for a weight in any storage
 * format: fp32 weights go to sgemm directly; quantized ones (or fp32 ones
 * under a read perturbation, or mapped ones streamed) go through row tiles
 * dequantized into one kept workspace, so no product ever holds a whole
 * weight in fp32 (docs/QUANT.md). */
#include "ftbench.h"
#include "quant.h"

#include <cblas.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define DEFAULT_TILE ((int64_t)1 << 20)
static int64_t tile_floats = DEFAULT_TILE;

void ftb_set_dequant_tile(int64_t floats) { tile_floats = floats > 0 ? floats : DEFAULT_TILE; }
int64_t ftb_get_dequant_tile(void) { return tile_floats; }

int64_t ftb_quant_tile_rows(int64_t rows, int64_t cols)
{
    int64_t r = tile_floats / (cols > 0 ? cols : 1);
    /* By default at least 256 rows: backward's sgemm (dx += dy·W_tile) has
     * the tile's rows as its inner dimension.  A size set explicitly is
     * taken as given (tests use small ones to exercise many tiles). */
    if (tile_floats == DEFAULT_TILE && r < 256) r = 256;
    if (r < 1) r = 1;
    return r < rows ? r : rows;
}

/* One tile buffer, kept between products and released at the end of a
 * forward/backward (ftb_quant_workspace_release): allocating a 4 MiB tile per
 * product between the activations' allocations fragments the heap (measured:
 * +45 MiB of RSS for qwen2.5-0.5b at 256 tokens). */
static float *tile_buf;
static int64_t tile_cap;
static int tile_busy;

static float *tile_alloc(int64_t floats)
{
    if (tile_busy || floats > tile_cap) {
        if (!tile_busy) {
            ftb_free(tile_buf);
            tile_buf = NULL;
            tile_cap = 0;
        }
        float *t = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)floats);
        if (!t) return NULL;     /* the caller sees the failure flag (mem.c) */
        if (tile_busy) return t; /* nested use: a buffer of its own */
        tile_buf = t;
        tile_cap = floats;
    }
    tile_busy = 1;
    return tile_buf;
}

static void tile_done(float *t)
{
    if (t == tile_buf)
        tile_busy = 0;
    else
        ftb_free(t);
}

int ftb_quant_reserve_tile(int64_t floats)
{
    if (floats <= 0) return 0;
    float *t = tile_alloc(floats);
    if (!t) return -1;
    tile_done(t);
    return 0;
}

int64_t ftb_quant_largest_tile(const ftb_model *m, int include_f32)
{
    int64_t best = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ftb_tensor *t = m->params[i];
        if (t->ndim != 2 || (!include_f32 && (t->dtype == FTB_DTYPE_F32 || !t->quant))) continue;
        int64_t cols = t->shape[1], floats = ftb_quant_tile_rows(t->shape[0], cols) * cols;
        if (floats > best) best = floats;
    }
    return best;
}

void ftb_quant_workspace_release(void)
{
    ftb_free(tile_buf);
    tile_buf = NULL;
    tile_cap = 0;
    tile_busy = 0;
}

/* Drops the whole pages inside [p, p+n) from the resident set (a streamed
 * tile of a mapped weight, done with). */
static void drop_inner_pages(const void *p, size_t n)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1), hi = ((uintptr_t)p + n) & ~(page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* Rows [r0, r0+n) of a mapped W are done with. */
static void drop_rows(const ftb_tensor *W, int64_t r0, int64_t n)
{
    const int64_t C = ftb_tensor_cols(W);
    if (W->dtype == FTB_DTYPE_F32 || !W->quant) {
        drop_inner_pages(W->data + r0 * C, sizeof(float) * (size_t)(n * C));
        return;
    }
    const ftb_qstore *q = W->quant;
    const void *parts[3] = { q->q, q->scales, q->zeros };
    for (int p = 0; p < 3; p++) {
        size_t row_bytes = ftb_qstore_part_bytes(q->dtype, 1, q->cols, q->group, p);
        if (parts[p] && row_bytes) drop_inner_pages((const char *)parts[p] + r0 * row_bytes, row_bytes * (size_t)n);
    }
}

void ftb_linear_apply_ex(const ftb_tensor *W, int N, const float *x, float *y, float beta, int stream)
{
    const int64_t out = ftb_tensor_rows(W), in = ftb_tensor_cols(W);
    const int quantized = W->dtype != FTB_DTYPE_F32 && W->quant;
    const int perturbed = ftb_quant_read_perturbed(), copied = quantized || perturbed;
    stream = stream && ftb_tensor_is_mapped(W);
    if (!copied && !stream) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, (int)out, (int)in, 1.0f, x, (int)in, W->data, (int)in,
                    beta, y, (int)out);
        return;
    }
    const int64_t tr = ftb_quant_tile_rows(out, in);
    float *tile = copied ? tile_alloc(tr * in) : NULL;
    if (copied && !tile) return;
    /* A streamed tile's mapped rows count as weights from their first read
     * to their drop (docs/CORE.md, "Mapped weights count as resident"). */
    const int64_t row_bytes = stream ? ftb_tensor_row_bytes(W) : 0;
    for (int64_t r0 = 0; r0 < out; r0 += tr) {
        int64_t n = out - r0 < tr ? out - r0 : tr;
        const float *w = W->data + (quantized ? 0 : r0 * in);
        ftb_mem_account(FTB_MEM_WEIGHTS, n * row_bytes);
        if (quantized)
            ftb_qstore_dequant_rows(W->quant, r0, n, tile);
        else if (perturbed)
            memcpy(tile, w, sizeof(float) * (size_t)(n * in));
        if (copied) w = tile;
        if (perturbed) ftb_quant_perturb_tile(W, r0 * in, n * in, tile);
        if (stream && quantized) {
            drop_rows(W, r0, n);
            ftb_mem_account(FTB_MEM_WEIGHTS, -n * row_bytes);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, (int)n, (int)in, 1.0f, x, (int)in, w, (int)in, beta,
                    y + r0, (int)out);
        if (stream && !quantized) {
            drop_rows(W, r0, n);
            ftb_mem_account(FTB_MEM_WEIGHTS, -n * row_bytes);
        }
    }
    if (tile) tile_done(tile);
}

void ftb_linear_apply_t_ex(const ftb_tensor *W, int N, const float *dy, float *dx, float beta, int stream)
{
    const int64_t out = ftb_tensor_rows(W), in = ftb_tensor_cols(W);
    const int quantized = W->dtype != FTB_DTYPE_F32 && W->quant;
    stream = stream && ftb_tensor_is_mapped(W);
    if (!quantized && !stream) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, (int)in, (int)out, 1.0f, dy, (int)out, W->data,
                    (int)in, beta, dx, (int)in);
        return;
    }
    const int64_t tr = ftb_quant_tile_rows(out, in);
    float *tile = quantized ? tile_alloc(tr * in) : NULL;
    if (quantized && !tile) return;
    const int64_t row_bytes = stream ? ftb_tensor_row_bytes(W) : 0; /* counted as in ftb_linear_apply_ex */
    for (int64_t r0 = 0; r0 < out; r0 += tr) {
        int64_t n = out - r0 < tr ? out - r0 : tr;
        const float *w = W->data + (quantized ? 0 : r0 * in);
        ftb_mem_account(FTB_MEM_WEIGHTS, n * row_bytes);
        if (quantized) {
            ftb_qstore_dequant_rows(W->quant, r0, n, tile);
            w = tile;
        }
        if (stream && quantized) {
            drop_rows(W, r0, n);
            ftb_mem_account(FTB_MEM_WEIGHTS, -n * row_bytes);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, (int)in, (int)n, 1.0f, dy + r0, (int)out, w, (int)in,
                    r0 == 0 ? beta : 1.0f, dx, (int)in);
        if (stream && !quantized) {
            drop_rows(W, r0, n);
            ftb_mem_account(FTB_MEM_WEIGHTS, -n * row_bytes);
        }
    }
    if (tile) tile_done(tile);
}

void ftb_linear_apply(const ftb_tensor *W, int N, const float *x, float *y, float beta)
{
    ftb_linear_apply_ex(W, N, x, y, beta, 0);
}

void ftb_linear_apply_t(const ftb_tensor *W, int N, const float *dy, float *dx, float beta)
{
    ftb_linear_apply_t_ex(W, N, dy, dx, beta, 0);
}
