/* quant.c — frozen base weights stored as bf16, f16, int8 or int4 and
 * computed in fp32: the formats, fp32 ↔ half conversions, storage,
 * quantization (with its error measured) and dequantization (docs/QUANT.md).
 * Products through dequantized tiles: quant_linear.c; quantizing a model:
 * quant_model.c; error against a reference: quant_fidelity.c; residency of
 * mapped weights: residency.c.
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
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (ftb_dtype_is_int4(d) && group <= 0) group = FTB_QUANT_DEFAULT_GROUP;
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
    if (ftb_dtype_is_int4(d)) {
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
    q->group = ftb_dtype_is_int4(d) ? group : 0;
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


void ftb_tensor_read_rows(const ftb_tensor *t, int64_t row0, int64_t n, float *out)
{
    if (n <= 0) return;
    const int64_t C = ftb_tensor_cols(t);
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

int ftb_tensor_is_mapped(const ftb_tensor *W)
{
    return W->dtype == FTB_DTYPE_F32 || !W->quant ? W->mapped : ((const ftb_qstore *)W->quant)->mapped;
}

/* Storage bytes of one row of W (all parts of its format). */
int64_t ftb_tensor_row_bytes(const ftb_tensor *W)
{
    const int64_t C = ftb_tensor_cols(W);
    if (W->dtype == FTB_DTYPE_F32 || !W->quant) return 4 * C;
    const ftb_qstore *q = W->quant;
    int64_t b = 0;
    for (int p = 0; p < 3; p++) b += (int64_t)ftb_qstore_part_bytes(q->dtype, 1, q->cols, q->group, p);
    return b;
}
