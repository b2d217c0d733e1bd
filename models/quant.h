/* quant.h — core-private storage of tensors kept in a format other than fp32
 * (bf16, f16, int8, int4; docs/QUANT.md), their dequantization and the
 * residency of mapped weights.  Not part of the public interface. */
#ifndef FTB_QUANT_H
#define FTB_QUANT_H
#include "ftbench.h"

/* Layout of one stored tensor [rows, cols]:
 *   bf16, f16   q: uint16 [rows·cols]
 *   int8        q: int8 [rows·cols]; scales: float [rows]
 *   int4        q: uint8 [rows·cols/2]: within each group of `group`
 *               elements of a row, byte j holds element j in its low nibble
 *               and element j + group/2 in its high nibble (llama.cpp's
 *               q4_0 order, so a group dequantizes as two contiguous runs);
 *               scales: f16 [rows·cols/group]; int4-asym also zeros: f16
 *               [rows·cols/group].
 *   sym:  w = scale · (nibble − 8)        asym: w = scale · nibble + zero  */
typedef struct ftb_qstore {
    ftb_dtype dtype;
    int group;
    int64_t rows, cols;
    const void *q, *scales, *zeros;
    void *owned[3]; /* ftb_alloc'd (FTB_MEM_WEIGHTS) parts, or NULL    */
    int mapped;     /* the parts point into a file mapping             */
} ftb_qstore;

enum { QPART_Q = 0, QPART_SCALES, QPART_ZEROS };

static inline int ftb_dtype_is_int4(ftb_dtype d) { return d == FTB_DTYPE_INT4 || d == FTB_DTYPE_INT4_ASYM; }

/* A tensor seen as a matrix: [shape[0], shape[1]] if 2-D, else one row. */
static inline int64_t ftb_tensor_rows(const ftb_tensor *t) { return t->ndim == 2 ? t->shape[0] : 1; }
static inline int64_t ftb_tensor_cols(const ftb_tensor *t) { return t->ndim == 2 ? t->shape[1] : t->numel; }
/* Whether t's storage (fp32 data or quantized parts) points into a mapping. */
int ftb_tensor_is_mapped(const ftb_tensor *t);
/* Storage bytes of one row of t (all parts of its format). */
int64_t ftb_tensor_row_bytes(const ftb_tensor *t);
/* The block index in t's name ("model.layers.<l>."), or -1 (quant_model.c). */
int ftb_tensor_layer(const ftb_tensor *t);

/* Bytes of one part of the storage (0 if the format has no such part). */
size_t ftb_qstore_part_bytes(ftb_dtype d, int64_t rows, int64_t cols, int group, int part);
/* Checks a (dtype, group, shape) combination; 0 or -1 with a reason in why. */
int ftb_qstore_check(ftb_dtype d, int group, int64_t rows, int64_t cols, char *why, size_t len);
/* Owned storage with uninitialised contents; NULL when out of memory. */
ftb_qstore *ftb_qstore_alloc(ftb_dtype d, int group, int64_t rows, int64_t cols);
/* Frees owned parts (and the descriptor); mapped parts are left alone. */
void ftb_qstore_free(ftb_qstore *q);

/* Quantizes src [rows, cols] into q (whose parts must be writable), and
 * measures the error of every element (e may be NULL). */
void ftb_qstore_quantize(ftb_qstore *q, const float *src, ftb_quant_error *e);
/* One row of q as fp32 (no threading). */
void ftb_qstore_dequant_row(const ftb_qstore *q, int64_t row, float *out);
/* Rows [r0, r0+n) into out [n, cols], threaded across rows and timed into
 * the dequantization statistics. */
void ftb_qstore_dequant_rows(const ftb_qstore *q, int64_t r0, int64_t n, float *out);

/* Adds to the dequantization statistics (work done outside the above). */
void ftb_dequant_account(double seconds, int64_t elements);

/* fp32 ↔ half formats (round to nearest even; f16 saturates at ±65504). */
uint16_t ftb_f32_to_bf16(float x);
uint16_t ftb_f32_to_f16(float x);

/* ftb_linear_apply[_t] that, when stream is set and W is mapped, goes
 * through W in row tiles even in fp32 and drops each tile's pages once used:
 * the LM head under lazy residency never holds more than a tile. */
void ftb_linear_apply_ex(const ftb_tensor *W, int N, const float *x, float *y, float beta, int stream);
void ftb_linear_apply_t_ex(const ftb_tensor *W, int N, const float *dy, float *dx, float beta, int stream);

/* The read perturbation (ftb_model_set_read_perturbation) of the inference
 * forward in progress, or NULL between runs: while set, ftb_linear_apply
 * takes the tile path for fp32 weights too and adds the perturbation to each
 * tile.  Backward products (ftb_linear_apply_t_ex) never see it. */
void ftb_quant_set_read_perturbation(ftb_read_perturb_fn fn, void *ctx);
int ftb_quant_read_perturbed(void);
/* Adds the perturbation to a tile of W: elements [offset, offset+n) of W in
 * row-major order (read_perturb.c; only while one is set). */
void ftb_quant_perturb_tile(const ftb_tensor *W, int64_t offset, int64_t n, float *tile);

/* Frees the dequantization tile kept between products (end of a run). */
void ftb_quant_workspace_release(void);

/* Allocates the kept tile at `floats` now (a forward that will need its
 * largest tile holds it from the start: the memory model's schedule).
 * 0, or -1 when the allocation fails. */
int ftb_quant_reserve_tile(int64_t floats);
/* The largest tile any product over m's 2-D weights asks for: the quantized
 * ones, or every one (include_f32: the read-perturbation path). */
int64_t ftb_quant_largest_tile(const ftb_model *m, int include_f32);

/* Rows of the tiles ftb_linear_apply uses for a weight of `cols` columns. */
int64_t ftb_quant_tile_rows(int64_t rows, int64_t cols);

/* Core-private per-model bookkeeping (model.c). */
void ftb_model_track_qstore(ftb_model *m, ftb_qstore *q);
void ftb_model_forget_qstore(ftb_model *m, ftb_qstore *q); /* frees it */
/* Frees an owned buffer (ftb_model_own) before the model is freed. */
void ftb_model_disown(ftb_model *m, void *buffer);
void ftb_model_record_error(ftb_model *m, const ftb_quant_error *e);
/* Bytes [p, p+bytes) of a mapping no longer hold anything the model uses:
 * their pages are dropped and they stop counting as weights. */
void ftb_model_release_mapped(ftb_model *m, const void *p, size_t bytes);
/* Ties lm_head to embed (data, storage format, flags) when the config says so. */
void ftb_model_retie(ftb_model *m);

/* Bytes of the model's mappings it still uses (model.c): counted as weights
 * whole when all resident, not at all under lazy residency. */
int64_t ftb_model_mapped_accounted(const ftb_model *m);

/* Lazy residency units: a block index, or one of these.  Entering brings the
 * unit's mapped tensors in and counts them as weights until it is left
 * (docs/CORE.md, "Mapped weights count as resident").  The embedding and the
 * LM head count only what they bring in: the rows looked up
 * (ftb_residency_lookup_bytes) and the head's current tile
 * (ftb_linear_apply_ex with stream set). */
enum { RES_EMBED = -1, RES_HEAD = -2 };
void ftb_residency_enter(ftb_model *m, int unit);
void ftb_residency_leave(ftb_model *m, int unit);
/* What entering `unit` counts as weights: its mapped tensors' storage bytes
 * under lazy residency (for RES_HEAD the final norm only, for RES_EMBED
 * nothing), else 0.  The memory model adds the same. */
int64_t ftb_residency_unit_bytes(const ftb_model *m, int unit);
/* Bytes of the distinct embedding rows among tokens[0..n) when the embedding
 * is mapped and residency is lazy (else 0): what a lookup brings in.
 * scratch holds n int32 (the lookup's output buffer, not yet written). */
int64_t ftb_residency_lookup_bytes(const ftb_model *m, const int32_t *tokens, int n, int32_t *scratch);
/* Its bound for any n tokens: min(n, vocabulary) rows. */
int64_t ftb_residency_lookup_bound(const ftb_model *m, int64_t n);
/* The largest streamed tile of the mapped LM head under lazy residency, in
 * bytes of its storage (else 0): what the head holds at once. */
int64_t ftb_residency_head_tile_bytes(const ftb_model *m);

#endif
