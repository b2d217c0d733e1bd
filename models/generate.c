/* generate.c — logits and greedy decoding on top of the core's own
 * inference forward, so every method's hooks (LoRA, IA3, LARS, ...) apply
 * to what is generated exactly as they apply in training.
 *
 * The forward runs to the final norm (ftb_model_forward_hidden) and only the
 * rows asked for go through the LM head: the N×V logits of a whole sequence
 * never exist.  Greedy decoding recomputes the whole prefix for each new
 * token (no KV cache): answers here are a few tokens, so that costs
 * (answer length) forwards of the prompt, and keeps one code path — the one
 * training uses — for everything a hook can see. */
#include "ftbench.h"
#include "model_internal.h"
#include "quant.h"

#include <stdlib.h>
#include <string.h>

int32_t ftb_argmax(const float *logits, int V)
{
    int32_t best = 0;
    for (int j = 1; j < V; j++)
        if (logits[j] > logits[best]) best = j; /* ties: the lowest id, deterministically */
    return best;
}

int ftb_model_logits(ftb_model *m, const ftb_batch *b, const ftb_run_opts *o, const int *rows, int n_rows,
                     float *logits, char *err, size_t errlen)
{
    const int D = m->cfg.dim;
    const int64_t N = (int64_t)b->B * b->T;
    for (int i = 0; i < n_rows; i++)
        if (rows[i] < 0 || rows[i] >= N) {
            snprintf(err, errlen, "logits: row %d is outside the batch's %lld positions", rows[i], (long long)N);
            return -1;
        }
    float *hidden = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)N * D);
    float *picked = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)(n_rows ? n_rows : 1) * D);
    int rc = ftb_model_forward_hidden(m, b, o, hidden, err, errlen);
    if (rc == 0 && n_rows > 0) {
        for (int i = 0; i < n_rows; i++)
            memcpy(picked + (int64_t)i * D, hidden + (int64_t)rows[i] * D, sizeof(float) * D);
        ftb_mem_set_phase("logits");
        void *ctx; /* a read perturbation covers the head here as in the forward (docs/CORE.md) */
        ftb_read_perturb_fn perturb = ftb_model_read_perturbation(m, &ctx);
        ftb_quant_set_read_perturbation(perturb, ctx);
        /* lazy residency: the head streams (and counts) its tiles as in the forward */
        ftb_linear_apply_ex(&m->lm_head, n_rows, picked, logits, 0.0f, m->residency == FTB_RESIDENT_LAZY_BLOCK);
        ftb_quant_set_read_perturbation(NULL, NULL);
        if (perturb) ftb_quant_workspace_release();
    }
    ftb_free(picked);
    ftb_free(hidden);
    return rc;
}

int ftb_next_token_logits(ftb_model *m, const ftb_run_opts *o, const int32_t *tokens, int n, int n_prompt,
                          float *logits, char *err, size_t errlen)
{
    if (n < 1) {
        snprintf(err, errlen, "logits: empty prompt");
        return -1;
    }
    if (n_prompt > n) {
        snprintf(err, errlen, "logits: a prompt of %d tokens in a prefix of %d", n_prompt, n);
        return -1;
    }
    int32_t *targets = malloc(sizeof(int32_t) * (size_t)n);
    if (!targets) {
        snprintf(err, errlen, "logits: out of memory");
        return -1;
    }
    /* The loss mask a training row of prompt → answer has, so that a hook
     * that reads it (LARS pool=prompt: the prompt is what precedes the
     * first kept target) sees the same prompt as in training: kept from the
     * prompt's last position on, the generated tokens as targets.  The last
     * position's target is the token being predicted, unknown: 0 stands in
     * for it (the forward computes no loss).  n_prompt ≤ 0: no mask. */
    for (int i = 0; i < n; i++)
        targets[i] = n_prompt <= 0 || i < n_prompt - 1 ? FTB_IGNORE_INDEX : i + 1 < n ? tokens[i + 1] : 0;
    ftb_batch b = { 1, n, tokens, targets };
    int last = n - 1;
    int rc = ftb_model_logits(m, &b, o, &last, 1, logits, err, errlen);
    free(targets);
    return rc;
}

int ftb_generate_greedy(ftb_model *m, const ftb_run_opts *o, const int32_t *prompt, int n_prompt, int max_new,
                        const int32_t *stop, int n_stop, int32_t *out, char *err, size_t errlen)
{
    const int V = m->cfg.vocab_size;
    if (n_prompt < 1 || max_new < 0) {
        snprintf(err, errlen, "generate: needs a prompt and max_new >= 0");
        return -1;
    }
    int32_t *seq = malloc(sizeof(int32_t) * (size_t)(n_prompt + max_new + 1));
    float *logits = ftb_alloc(FTB_MEM_WORKSPACE, sizeof(float) * (size_t)V);
    if (!seq) {
        ftb_free(logits);
        snprintf(err, errlen, "generate: out of memory");
        return -1;
    }
    memcpy(seq, prompt, sizeof(int32_t) * (size_t)n_prompt);
    int n = n_prompt, made = 0, rc = 0;
    while (made < max_new) {
        if (ftb_next_token_logits(m, o, seq, n, n_prompt, logits, err, errlen)) {
            rc = -1;
            break;
        }
        seq[n++] = out[made++] = ftb_argmax(logits, V);
        if (n_stop > 0 && made >= n_stop && !memcmp(out + made - n_stop, stop, sizeof(int32_t) * (size_t)n_stop)) break;
    }
    free(seq);
    ftb_free(logits);
    return rc ? -1 : made;
}
