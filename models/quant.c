/* quant.c — frozen base weights stored as bf16, f16, int8 or int4 and
 * computed in fp32: quantization (with its error measured), dequantization
 * of tiles into a bounded workspace for sgemm, and the residency of mapped
 * weights (docs/QUANT.md).
 *
 * Every bound the tests check is a property of how the codes are chosen:
 *   int8 (per row):   s = max(−min/128, max/127), q = round(w/s) ∈ [−128, 127]
 *   int4 (per group): s = f16 rounded up from max(−min/8, max/7),
 *                     q = round(w/s) ∈ [−8, 7], stored as q + 8
 *   int4-asym:        z = f16 rounded down from min,
 *                     s = f16 rounded up from (max − z)/15,
 *                     q = round((w − z)/s) ∈ [0, 15]
 * so the codes cover [min, max] and |w − ŵ| ≤ s/2 (up to fp32 rounding of
 * the dequantization itself). */
#include "ftbench.h"
#include "model_internal.h"
#include "quant.h"
#include "safetensors.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__FLT16_MAX__)
#define HAVE_FLOAT16 1
typedef _Float16 f16_t;
#else
#define HAVE_FLOAT16 0
#endif

/* ------------------------------------------------------------------------ */
/* Formats                                                                    */
/* ------------------------------------------------------------------------ */

static const char *dtype_names[FTB_DTYPE_COUNT] = { "f32", "bf16", "f16", "int8", "int4", "int4-asym" };

const char *ftb_dtype_name(ftb_dtype d) { return (unsigned)d < FTB_DTYPE_COUNT ? dtype_names[d] : "unknown"; }

int ftb_dtype_parse(const char *s)
{
    if (!s) return -1;
    for (int d = 0; d < FTB_DTYPE_COUNT; d++)
        if (!strcmp(s, dtype_names[d])) return d;
    static const struct {
        const char *alias;
        ftb_dtype d;
    } aliases[] = {
        { "fp32", FTB_DTYPE_F32 },
        { "float32", FTB_DTYPE_F32 },
        { "bfloat16", FTB_DTYPE_BF16 },
        { "fp16", FTB_DTYPE_F16 },
        { "float16", FTB_DTYPE_F16 },
        { "int4-sym", FTB_DTYPE_INT4 },
        { "int4_asym", FTB_DTYPE_INT4_ASYM },
    };
    for (size_t i = 0; i < sizeof aliases / sizeof *aliases; i++)
        if (!strcmp(s, aliases[i].alias)) return aliases[i].d;
    return -1;
}

static int is_int4(ftb_dtype d) { return d == FTB_DTYPE_INT4 || d == FTB_DTYPE_INT4_ASYM; }

size_t ftb_qstore_part_bytes(ftb_dtype d, int64_t rows, int64_t cols, int group, int part)
{
    size_t n = (size_t)rows * (size_t)cols;
    switch (d) {
    case FTB_DTYPE_F32: return part == QPART_Q ? 4 * n : 0;
    case FTB_DTYPE_BF16:
    case FTB_DTYPE_F16: return part == QPART_Q ? 2 * n : 0;
    case FTB_DTYPE_INT8: return part == QPART_Q ? n : part == QPART_SCALES ? 4 * (size_t)rows : 0;
    case FTB_DTYPE_INT4:
    case FTB_DTYPE_INT4_ASYM:
        if (part == QPART_Q) return n / 2;
        if (group <= 0) return 0;
        if (part == QPART_SCALES || d == FTB_DTYPE_INT4_ASYM) return 2 * (n / (size_t)group);
        return 0;
    default: return 0;
    }
}

int64_t ftb_dtype_bytes(ftb_dtype d, int64_t rows, int64_t cols, int group)
{
    if (is_int4(d) && group <= 0) group = FTB_QUANT_DEFAULT_GROUP;
    int64_t b = 0;
    for (int p = 0; p < 3; p++) b += (int64_t)ftb_qstore_part_bytes(d, rows, cols, group, p);
    return b;
}

int ftb_qstore_check(ftb_dtype d, int group, int64_t rows, int64_t cols, char *why, size_t len)
{
    if ((unsigned)d >= FTB_DTYPE_COUNT) {
        snprintf(why, len, "unknown storage format %d", (int)d);
        return -1;
    }
    if (rows <= 0 || cols <= 0) {
        snprintf(why, len, "empty shape [%lld, %lld]", (long long)rows, (long long)cols);
        return -1;
    }
    if (is_int4(d)) {
        if (group < 2 || group % 2) {
            snprintf(why, len, "group size %d must be a positive even number (32, 64 or 128)", group);
            return -1;
        }
        if (cols % group) {
            snprintf(why, len, "group size %d does not divide the row length %lld", group, (long long)cols);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Half formats                                                               */
/* ------------------------------------------------------------------------ */

uint16_t ftb_f32_to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    uint32_t r = u + 0x7fffu + ((u >> 16) & 1u);
    if ((u & 0x7f800000u) != 0x7f800000u && (r & 0x7f800000u) == 0x7f800000u) /* finite → inf: saturate */
        return (uint16_t)(((u >> 16) & 0x8000u) | 0x7f7fu);
    return (uint16_t)(r >> 16);
}

static inline float h2f(uint16_t h)
{
#if HAVE_FLOAT16
    f16_t v;
    memcpy(&v, &h, 2);
    return (float)v;
#else
    return ftb_f16_to_f32(h);
#endif
}

uint16_t ftb_f32_to_f16(float x)
{
    if (x > 65504.0f) x = 65504.0f;
    if (x < -65504.0f) x = -65504.0f;
#if HAVE_FLOAT16
    f16_t v = (f16_t)x;
    uint16_t h;
    memcpy(&h, &v, 2);
    return h;
#else
    /* Round to nearest even by hand (NaN kept quiet). */
    uint32_t u;
    memcpy(&u, &x, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;
    if (a >= 0x38800000u) { /* normal half */
        uint32_t r = a - 0x38000000u;
        r = r + 0xfffu + ((r >> 13) & 1u);
        return sign | (uint16_t)(r >> 13);
    }
    if (a < 0x33000000u) return sign; /* below half the smallest subnormal */
    /* subnormal half: q·2^-24 with q = m·2^(e−126), m the 24-bit mantissa */
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e; /* 14..24 */
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (q & 1))) q++;
    return sign | (uint16_t)q;
#endif
}

/* The smallest f16 ≥ x (x finite, |x| ≤ 65504). */
static uint16_t f16_up(float x)
{
    uint16_t h = ftb_f32_to_f16(x);
    if (h2f(h) < x) {
        if (h & 0x8000u)
            h = h == 0x8000u ? 0x0001u : (uint16_t)(h - 1);
        else if (h < 0x7bffu)
            h++;
    }
    return h;
}

static uint16_t f16_down(float x) { return (uint16_t)(f16_up(-x) ^ 0x8000u); }

/* ------------------------------------------------------------------------ */
/* Storage                                                                    */
/* ------------------------------------------------------------------------ */

ftb_qstore *ftb_qstore_alloc(ftb_dtype d, int group, int64_t rows, int64_t cols)
{
    ftb_qstore *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->dtype = d;
    q->group = is_int4(d) ? group : 0;
    q->rows = rows;
    q->cols = cols;
    for (int p = 0; p < 3; p++) {
        size_t b = ftb_qstore_part_bytes(d, rows, cols, q->group, p);
        if (!b) continue;
        q->owned[p] = ftb_alloc(FTB_MEM_WEIGHTS, b);
        if (!q->owned[p]) {
            ftb_qstore_free(q);
            return NULL;
        }
    }
    q->q = q->owned[QPART_Q];
    q->scales = q->owned[QPART_SCALES];
    q->zeros = q->owned[QPART_ZEROS];
    return q;
}

void ftb_qstore_free(ftb_qstore *q)
{
    if (!q) return;
    for (int p = 0; p < 3; p++) ftb_free(q->owned[p]);
    free(q);
}

/* ------------------------------------------------------------------------ */
/* Dequantization (the hot loops: contiguous, vectorizable)                  */
/* ------------------------------------------------------------------------ */

/* The loops run in blocks of 16 with a constant trip count: at -O2 GCC
 * vectorizes only loops whose count is a known multiple of the vector
 * width, so this is what turns them into AVX2/AVX-512 or NEON code. */
#define BLOCK 16

static void deq_bf16(const uint16_t *restrict src, float *restrict out, int64_t n)
{
    int64_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK)
        for (int j = 0; j < BLOCK; j++) {
            union {
                uint32_t u;
                float f;
            } v;
            v.u = (uint32_t)src[i + j] << 16;
            out[i + j] = v.f;
        }
    for (; i < n; i++) {
        union {
            uint32_t u;
            float f;
        } v;
        v.u = (uint32_t)src[i] << 16;
        out[i] = v.f;
    }
}

static void deq_f16(const uint16_t *restrict src, float *restrict out, int64_t n)
{
#if HAVE_FLOAT16
    const f16_t *h = (const f16_t *)src;
    int64_t i = 0;
    /* GCC 12 does not vectorize _Float16 → float by itself: F16C does it. */
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
#elif defined(__F16C__) && defined(__AVX__)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i + BLOCK <= n; i += BLOCK)
        for (int j = 0; j < BLOCK; j++) out[i + j] = (float)h[i + j];
    for (; i < n; i++) out[i] = (float)h[i];
#else
    for (int64_t i = 0; i < n; i++) out[i] = h2f(src[i]);
#endif
}

static void deq_int8(const int8_t *restrict src, float s, float *restrict out, int64_t n)
{
    int64_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK)
        for (int j = 0; j < BLOCK; j++) out[i + j] = s * (float)src[i + j];
    for (; i < n; i++) out[i] = s * (float)src[i];
}

/* One group: low nibbles are its first half, high nibbles its second. */
static inline void deq_int4_sym_group(const uint8_t *restrict b, float s, float *restrict o, int half)
{
    for (int j = 0; j < half; j++) {
        o[j] = s * (float)((int)(b[j] & 15) - 8);
        o[j + half] = s * (float)((int)(b[j] >> 4) - 8);
    }
}

static inline void deq_int4_asym_group(const uint8_t *restrict b, float s, float z, float *restrict o, int half)
{
    for (int j = 0; j < half; j++) {
        o[j] = s * (float)(b[j] & 15) + z;
        o[j + half] = s * (float)(b[j] >> 4) + z;
    }
}

static void deq_int4_row(const uint8_t *restrict b, const uint16_t *restrict sc, const uint16_t *restrict zp,
                         int64_t cols, int group, float *restrict out)
{
    const int half = group / 2;
    const int64_t ng = cols / group;
    /* Constant trip counts for the usual group sizes let the compiler unroll
     * each group into whole vectors. */
#define GROUPS(H)                                                                             \
    for (int64_t g = 0; g < ng; g++) {                                                        \
        if (zp)                                                                               \
            deq_int4_asym_group(b + g * (H), h2f(sc[g]), h2f(zp[g]), out + g * 2 * (H), (H)); \
        else                                                                                  \
            deq_int4_sym_group(b + g * (H), h2f(sc[g]), out + g * 2 * (H), (H));              \
    }
    switch (half) {
    case 16: GROUPS(16); break;
    case 32: GROUPS(32); break;
    case 64: GROUPS(64); break;
    default: GROUPS(half); break;
    }
#undef GROUPS
}

void ftb_qstore_dequant_row(const ftb_qstore *q, int64_t r, float *out)
{
    const int64_t C = q->cols;
    switch (q->dtype) {
    case FTB_DTYPE_BF16: deq_bf16((const uint16_t *)q->q + r * C, out, C); break;
    case FTB_DTYPE_F16: deq_f16((const uint16_t *)q->q + r * C, out, C); break;
    case FTB_DTYPE_INT8: deq_int8((const int8_t *)q->q + r * C, ((const float *)q->scales)[r], out, C); break;
    case FTB_DTYPE_INT4:
    case FTB_DTYPE_INT4_ASYM: {
        const int64_t ng = C / q->group;
        deq_int4_row((const uint8_t *)q->q + r * (C / 2), (const uint16_t *)q->scales + r * ng,
                     q->dtype == FTB_DTYPE_INT4_ASYM ? (const uint16_t *)q->zeros + r * ng : NULL, C, q->group, out);
        break;
    }
    default: memset(out, 0, sizeof(float) * (size_t)C); break;
    }
}

static double deq_seconds;
static int64_t deq_elements;

void ftb_dequant_stats(double *seconds, int64_t *elements)
{
    if (seconds) *seconds = deq_seconds;
    if (elements) *elements = deq_elements;
}

void ftb_dequant_stats_reset(void)
{
    deq_seconds = 0;
    deq_elements = 0;
}

void ftb_dequant_account(double seconds, int64_t elements)
{
    deq_seconds += seconds;
    deq_elements += elements;
}

void ftb_qstore_dequant_rows(const ftb_qstore *q, int64_t r0, int64_t n, float *out)
{
    double t0 = ftb_now();
    const int64_t C = q->cols;
#pragma omp parallel for schedule(static) if (n * C >= 65536)
    for (int64_t i = 0; i < n; i++) ftb_qstore_dequant_row(q, r0 + i, out + i * C);
    deq_seconds += ftb_now() - t0;
    deq_elements += n * C;
}

/* ------------------------------------------------------------------------ */
/* Quantization                                                               */
/* ------------------------------------------------------------------------ */

/* A code from a rounded value: a NaN or an out-of-range value must never
 * reach an int conversion (undefined behaviour).  NaN weights quantize to
 * nan_code (the code of zero), ±inf to the ends of the range. */
static int to_code(float v, int lo, int hi, int nan_code)
{
    if (v != v) return nan_code;
    return v < (float)lo ? lo : v > (float)hi ? hi : (int)v;
}

static void quant_row(ftb_qstore *q, int64_t r, const float *w)
{
    const int64_t C = q->cols;
    switch (q->dtype) {
    case FTB_DTYPE_BF16: {
        uint16_t *d = (uint16_t *)q->owned[QPART_Q] + r * C;
        for (int64_t i = 0; i < C; i++) d[i] = ftb_f32_to_bf16(w[i]);
        break;
    }
    case FTB_DTYPE_F16: {
        uint16_t *d = (uint16_t *)q->owned[QPART_Q] + r * C;
        for (int64_t i = 0; i < C; i++) d[i] = ftb_f32_to_f16(w[i]);
        break;
    }
    case FTB_DTYPE_INT8: {
        int8_t *d = (int8_t *)q->owned[QPART_Q] + r * C;
        float mn = 0, mx = 0; /* over finite values only */
        for (int64_t i = 0; i < C; i++) {
            if (!isfinite(w[i])) continue;
            mn = w[i] < mn ? w[i] : mn;
            mx = w[i] > mx ? w[i] : mx;
        }
        float s = fmaxf(-mn / 128.0f, mx / 127.0f);
        ((float *)q->owned[QPART_SCALES])[r] = s;
        for (int64_t i = 0; i < C; i++) {
            float v = s > 0 ? rintf(w[i] / s) : 0.0f;
            d[i] = (int8_t)to_code(v, -128, 127, 0);
        }
        break;
    }
    case FTB_DTYPE_INT4:
    case FTB_DTYPE_INT4_ASYM: {
        const int G = q->group, half = G / 2;
        const int64_t ng = C / G;
        uint8_t *d = (uint8_t *)q->owned[QPART_Q] + r * (C / 2);
        uint16_t *sc = (uint16_t *)q->owned[QPART_SCALES] + r * ng;
        uint16_t *zp = q->dtype == FTB_DTYPE_INT4_ASYM ? (uint16_t *)q->owned[QPART_ZEROS] + r * ng : NULL;
        for (int64_t g = 0; g < ng; g++) {
            const float *x = w + g * G;
            float mn = INFINITY, mx = -INFINITY; /* over finite values only */
            for (int j = 0; j < G; j++) {
                if (!isfinite(x[j])) continue;
                mn = x[j] < mn ? x[j] : mn;
                mx = x[j] > mx ? x[j] : mx;
            }
            if (mn > mx) mn = mx = 0.0f; /* no finite value in the group */
            int codes[256], *c = codes;
            int *heap = G > 256 ? malloc(sizeof(int) * (size_t)G) : NULL;
            if (heap) c = heap;
            if (zp) {
                uint16_t zh = f16_down(fmaxf(mn, -65504.0f));
                float z = h2f(zh);
                uint16_t sh = f16_up(fminf((mx - z) / 15.0f, 65504.0f));
                float s = h2f(sh);
                sc[g] = sh;
                zp[g] = zh;
                for (int j = 0; j < G; j++) {
                    float v = s > 0 ? rintf((x[j] - z) / s) : 0.0f;
                    c[j] = to_code(v, 0, 15, to_code(rintf(-z / s), 0, 15, 0));
                }
            } else {
                float mn0 = mn < 0 ? mn : 0, mx0 = mx > 0 ? mx : 0;
                uint16_t sh = f16_up(fminf(fmaxf(-mn0 / 8.0f, mx0 / 7.0f), 65504.0f));
                float s = h2f(sh);
                sc[g] = sh;
                for (int j = 0; j < G; j++) {
                    float v = s > 0 ? rintf(x[j] / s) : 0.0f;
                    c[j] = to_code(v, -8, 7, 0) + 8;
                }
            }
            for (int j = 0; j < half; j++) d[g * half + j] = (uint8_t)(c[j] | (c[j + half] << 4));
            free(heap);
        }
        break;
    }
    default: break;
    }
}

void ftb_qstore_quantize(ftb_qstore *q, const float *src, ftb_quant_error *e)
{
    const int64_t R = q->rows, C = q->cols;
    double max_abs = 0, max_w = 0, sum_err = 0, sum_w = 0, sq_err = 0, sq_w = 0;
#pragma omp parallel reduction(max : max_abs, max_w) reduction(+ : sum_err, sum_w, sq_err, sq_w)
    {
        float *back = malloc(sizeof(float) * (size_t)C);
#pragma omp for schedule(dynamic, 16)
        for (int64_t r = 0; r < R; r++) {
            const float *w = src + r * C;
            quant_row(q, r, w);
            if (!back) continue;
            ftb_qstore_dequant_row(q, r, back);
            for (int64_t i = 0; i < C; i++) {
                double a = fabs((double)w[i]), d = fabs((double)w[i] - (double)back[i]);
                max_abs = d > max_abs ? d : max_abs;
                max_w = a > max_w ? a : max_w;
                sum_err += d;
                sum_w += a;
                sq_err += d * d;
                sq_w += a * a;
            }
        }
        free(back);
    }
    if (e) {
        e->dtype = q->dtype;
        e->group = q->group;
        e->numel = R * C;
        e->max_abs_err = max_abs;
        e->max_rel_err = max_w > 0 ? max_abs / max_w : 0;
        e->mean_rel_err = sum_w > 0 ? sum_err / sum_w : 0;
        e->rms_rel_err = sq_w > 0 ? sqrt(sq_err / sq_w) : 0;
    }
}

/* ------------------------------------------------------------------------ */
/* Reading tensors whatever their format                                      */
/* ------------------------------------------------------------------------ */

static int64_t tensor_rows(const ftb_tensor *t) { return t->ndim == 2 ? t->shape[0] : 1; }
static int64_t tensor_cols(const ftb_tensor *t) { return t->ndim == 2 ? t->shape[1] : t->numel; }

void ftb_tensor_read_rows(const ftb_tensor *t, int64_t row0, int64_t n, float *out)
{
    if (n <= 0) return;
    const int64_t C = tensor_cols(t);
    if (t->dtype == FTB_DTYPE_F32 || !t->quant) {
        if (t->data)
            memcpy(out, t->data + row0 * C, sizeof(float) * (size_t)(n * C));
        else
            memset(out, 0, sizeof(float) * (size_t)(n * C));
        return;
    }
    ftb_qstore_dequant_rows(t->quant, row0, n, out);
}

int64_t ftb_tensor_storage_bytes(const ftb_tensor *t)
{
    if (t->dtype == FTB_DTYPE_F32 || !t->quant) return 4 * t->numel;
    const ftb_qstore *q = t->quant;
    return ftb_dtype_bytes(q->dtype, q->rows, q->cols, q->group);
}

/* ------------------------------------------------------------------------ */
/* Products through tiles of dequantized weights                              */
/* ------------------------------------------------------------------------ */

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
    const int64_t C = tensor_cols(W);
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

static int is_mapped(const ftb_tensor *W)
{
    return W->dtype == FTB_DTYPE_F32 || !W->quant ? W->mapped : ((const ftb_qstore *)W->quant)->mapped;
}

/* Storage bytes of one row of W (all parts of its format). */
static int64_t storage_row_bytes(const ftb_tensor *W)
{
    const int64_t C = tensor_cols(W);
    if (W->dtype == FTB_DTYPE_F32 || !W->quant) return 4 * C;
    const ftb_qstore *q = W->quant;
    int64_t b = 0;
    for (int p = 0; p < 3; p++) b += (int64_t)ftb_qstore_part_bytes(q->dtype, 1, q->cols, q->group, p);
    return b;
}

/* The read perturbation of the run in progress (set by transformer.c for
 * an inference forward of a model that has one): every product reads W
 * through a tile, to which it is added. */
static ftb_read_perturb_fn read_fn;
static void *read_ctx;

void ftb_quant_set_read_perturbation(ftb_read_perturb_fn fn, void *ctx)
{
    read_fn = fn;
    read_ctx = fn ? ctx : NULL;
}

int ftb_quant_read_perturbed(void) { return read_fn != NULL; }

void ftb_linear_apply_ex(const ftb_tensor *W, int N, const float *x, float *y, float beta, int stream)
{
    const int64_t out = tensor_rows(W), in = tensor_cols(W);
    const int quantized = W->dtype != FTB_DTYPE_F32 && W->quant;
    const int perturbed = read_fn != NULL, copied = quantized || perturbed;
    stream = stream && is_mapped(W);
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
    const int64_t row_bytes = stream ? storage_row_bytes(W) : 0;
    for (int64_t r0 = 0; r0 < out; r0 += tr) {
        int64_t n = out - r0 < tr ? out - r0 : tr;
        const float *w = W->data + (quantized ? 0 : r0 * in);
        ftb_mem_account(FTB_MEM_WEIGHTS, n * row_bytes);
        if (quantized)
            ftb_qstore_dequant_rows(W->quant, r0, n, tile);
        else if (perturbed)
            memcpy(tile, w, sizeof(float) * (size_t)(n * in));
        if (copied) w = tile;
        if (perturbed) read_fn(read_ctx, W, r0 * in, n * in, tile);
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
    const int64_t out = tensor_rows(W), in = tensor_cols(W);
    const int quantized = W->dtype != FTB_DTYPE_F32 && W->quant;
    stream = stream && is_mapped(W);
    if (!quantized && !stream) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, (int)in, (int)out, 1.0f, dy, (int)out, W->data,
                    (int)in, beta, dx, (int)in);
        return;
    }
    const int64_t tr = ftb_quant_tile_rows(out, in);
    float *tile = quantized ? tile_alloc(tr * in) : NULL;
    if (quantized && !tile) return;
    const int64_t row_bytes = stream ? storage_row_bytes(W) : 0; /* counted as in ftb_linear_apply_ex */
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

/* ------------------------------------------------------------------------ */
/* Quantizing a model                                                         */
/* ------------------------------------------------------------------------ */

static int tensor_layer(const ftb_tensor *t)
{
    int l;
    return sscanf(t->name, "model.layers.%d.", &l) == 1 ? l : -1;
}

int ftb_tensor_quantize(ftb_model *m, ftb_tensor *t, const char *format, int group, char *err, size_t errlen)
{
    if (m->cfg.tie_embeddings && t == &m->lm_head) t = &m->embed; /* one storage for both */
    int d = ftb_dtype_parse(format);
    if (d < 0) {
        snprintf(err, errlen, "tensor '%s': unknown storage format '%s' (f32, bf16, f16, int8, int4, int4-asym)",
                 t->name, format ? format : "(null)");
        return -1;
    }
    if (is_int4(d) && group == 0) group = FTB_QUANT_DEFAULT_GROUP;
    if (!is_int4(d)) group = 0;
    if ((int)t->dtype == d && t->group == group) return 0; /* already so */
    if (d == FTB_DTYPE_F32) {
        snprintf(err, errlen, "tensor '%s': stored as %s; it becomes fp32 only by being made trainable", t->name,
                 ftb_dtype_name(t->dtype));
        return -1;
    }
    if (t->ndim != 2 || t->numel == 0) {
        snprintf(err, errlen, "tensor '%s': only 2-D weights are stored as %s", t->name, ftb_dtype_name(d));
        return -1;
    }
    if (t->trainable || t->writable || t->grad) {
        snprintf(err, errlen, "tensor '%s': trainable, so it stays fp32", t->name);
        return -1;
    }
    if (t->dtype != FTB_DTYPE_F32 && t->dtype != FTB_DTYPE_BF16 && t->dtype != FTB_DTYPE_F16) {
        snprintf(err, errlen, "tensor '%s': already stored as %s (group %d); re-quantizing would compound the error",
                 t->name, ftb_dtype_name(t->dtype), t->group);
        return -1;
    }
    char why[256];
    if (ftb_qstore_check(d, group, t->shape[0], t->shape[1], why, sizeof why)) {
        snprintf(err, errlen, "tensor '%s': %s", t->name, why);
        return -1;
    }
    const float *src = t->data;
    float *tmp = NULL;
    if (t->dtype != FTB_DTYPE_F32) { /* bf16/f16 storage: through fp32 */
        tmp = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)t->numel);
        if (!tmp) {
            snprintf(err, errlen, "tensor '%s': out of memory converting it", t->name);
            return -1;
        }
        ftb_tensor_read_rows(t, 0, t->shape[0], tmp);
        src = tmp;
    }
    ftb_qstore *q = ftb_qstore_alloc((ftb_dtype)d, group, t->shape[0], t->shape[1]);
    if (!q) {
        ftb_free(tmp);
        snprintf(err, errlen, "tensor '%s': out of memory for its %s storage", t->name, ftb_dtype_name(d));
        return -1;
    }
    ftb_quant_error e;
    memset(&e, 0, sizeof e);
    ftb_qstore_quantize(q, src, &e);
    snprintf(e.name, sizeof e.name, "%s", t->name);
    e.layer = tensor_layer(t);
    ftb_model_record_error(m, &e);
    ftb_free(tmp);

    /* The old storage goes. */
    if (t->quant) {
        ftb_model_forget_qstore(m, t->quant);
    } else if (t->mapped) {
        ftb_model_release_mapped(m, t->data, sizeof(float) * (size_t)t->numel);
    } else {
        ftb_model_disown(m, t->data);
    }
    ftb_model_track_qstore(m, q);
    t->data = NULL;
    t->mapped = 0;
    t->dtype = (ftb_dtype)d;
    t->group = group;
    t->quant = q;
    ftb_model_retie(m);
    return 0;
}

int ftb_model_quantize(ftb_model *m, const char *format, int group, char *err, size_t errlen)
{
    if (ftb_dtype_parse(format) == FTB_DTYPE_F32) return 0;
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < FTB_LIN_COUNT; k++)
            if (ftb_tensor_quantize(m, ftb_layer_weight(&m->layers[l], (ftb_linear_kind)k), format, group, err, errlen))
                return -1;
    return 0;
}

int ftb_model_quantize_embeddings(ftb_model *m, const char *format, int group, char *err, size_t errlen)
{
    if (ftb_dtype_parse(format) == FTB_DTYPE_F32) return 0;
    if (ftb_tensor_quantize(m, &m->embed, format, group, err, errlen)) return -1;
    if (!m->cfg.tie_embeddings && ftb_tensor_quantize(m, &m->lm_head, format, group, err, errlen)) return -1;
    return 0;
}

int ftb_quant_compare(const ftb_model *ref, const ftb_model *m, ftb_quant_error *out, int cap, char *err, size_t errlen)
{
    int count = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ftb_tensor *t = m->params[i];
        if (t->dtype == FTB_DTYPE_F32) continue;
        const ftb_tensor *r = ftb_model_find((ftb_model *)ref, t->name);
        if (!r || r->ndim != t->ndim || r->shape[0] != t->shape[0] || r->shape[1] != t->shape[1]) {
            snprintf(err, errlen, "tensor '%s': the reference model has no tensor of this name and shape", t->name);
            return -1;
        }
        const int64_t R = tensor_rows(t), C = tensor_cols(t), tr = ftb_quant_tile_rows(R, C);
        float *a = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)(tr * C));
        float *b = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)(tr * C));
        if (!a || !b) {
            ftb_free(a);
            ftb_free(b);
            snprintf(err, errlen, "tensor '%s': out of memory comparing it", t->name);
            return -1;
        }
        double max_abs = 0, max_w = 0, sum_err = 0, sum_w = 0, sq_err = 0, sq_w = 0;
        for (int64_t r0 = 0; r0 < R; r0 += tr) {
            int64_t n = R - r0 < tr ? R - r0 : tr;
            ftb_tensor_read_rows(r, r0, n, a);
            ftb_tensor_read_rows(t, r0, n, b);
#pragma omp parallel for reduction(max : max_abs, max_w) reduction(+ : sum_err, sum_w, sq_err, sq_w)
            for (int64_t i = 0; i < n * C; i++) {
                double w = fabs((double)a[i]), d = fabs((double)a[i] - (double)b[i]);
                max_abs = d > max_abs ? d : max_abs;
                max_w = w > max_w ? w : max_w;
                sum_err += d;
                sum_w += w;
                sq_err += d * d;
                sq_w += w * w;
            }
        }
        ftb_free(a);
        ftb_free(b);
        if (count < cap && out) {
            ftb_quant_error *e = &out[count];
            memset(e, 0, sizeof *e);
            snprintf(e->name, sizeof e->name, "%s", t->name);
            e->layer = tensor_layer(t);
            e->dtype = t->dtype;
            e->group = t->group;
            e->numel = t->numel;
            e->max_abs_err = max_abs;
            e->max_rel_err = max_w > 0 ? max_abs / max_w : 0;
            e->mean_rel_err = sum_w > 0 ? sum_err / sum_w : 0;
            e->rms_rel_err = sq_w > 0 ? sqrt(sq_err / sq_w) : 0;
        }
        count++;
    }
    return count;
}

float ftb_quant_loss_delta(ftb_model *ref, ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, float *loss_ref,
                           float *loss_m, char *err, size_t errlen)
{
    float a = ftb_model_forward(ref, b, o, err, errlen);
    if (isnan(a)) return NAN;
    float c = ftb_model_forward(m, b, o, err, errlen);
    if (isnan(c)) return NAN;
    if (loss_ref) *loss_ref = a;
    if (loss_m) *loss_m = c;
    return c - a;
}

/* ------------------------------------------------------------------------ */
/* Residency                                                                  */
/* ------------------------------------------------------------------------ */

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

static int64_t mapped_bytes(const ftb_tensor *t) { return t->numel && is_mapped(t) ? ftb_tensor_storage_bytes(t) : 0; }

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
    if (m->residency != FTB_RESIDENT_LAZY_BLOCK || n <= 0 || !is_mapped(&m->embed)) return 0;
    /* A token repeated brings its row in once. */
    memcpy(scratch, tokens, sizeof(int32_t) * (size_t)n);
    qsort(scratch, (size_t)n, sizeof *scratch, compare_tokens);
    int64_t distinct = 1;
    for (int i = 1; i < n; i++) distinct += scratch[i] != scratch[i - 1];
    return distinct * storage_row_bytes(&m->embed);
}

int64_t ftb_residency_lookup_bound(const ftb_model *m, int64_t n)
{
    if (m->residency != FTB_RESIDENT_LAZY_BLOCK || n <= 0 || !is_mapped(&m->embed)) return 0;
    const int64_t rows = tensor_rows(&m->embed);
    return (n < rows ? n : rows) * storage_row_bytes(&m->embed);
}

int64_t ftb_residency_head_tile_bytes(const ftb_model *m)
{
    const ftb_tensor *W = &m->lm_head;
    if (m->residency != FTB_RESIDENT_LAZY_BLOCK || !W->numel || !is_mapped(W)) return 0;
    return ftb_quant_tile_rows(tensor_rows(W), tensor_cols(W)) * storage_row_bytes(W);
}
