/* bench_core.c — `ftbench bench-core`: one full fine-tuning step (forward,
 * backward, AdamW) of a zoo model, its achieved GFLOP/s beside this
 * machine's sgemm rate on the very same GEMM shapes, measured in the same
 * run, and how much of the process's peak RSS the core's categories explain.
 * A benchmark, not a test: it prints figures and passes no verdict beyond
 * saying whether the 60% target was met. */
#include "ftbench.h"
#include "util.h"

#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ftb_cmd_bench_core(int argc, char **argv);

/* Seconds for C = op(A)·op(B) of one shape, best of reps. */
static double time_gemm(int transa, int transb, int M, int N, int K, float *a, float *b, float *c, int reps)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = ftb_now();
        cblas_sgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans, transb ? CblasTrans : CblasNoTrans, M, N, K,
                    1.0f, a, transa ? M : K, b, transb ? K : N, 0.0f, c, N);
        double t = ftb_now() - t0;
        if (t < best) best = t;
    }
    return best;
}

/* The sgemm rate on the step's own linear-layer shapes: for each linear
 * (rows N, in, out) the three products of forward and backward, weighted by
 * how often each occurs in the step. */
static double sgemm_rate_for_model(const ftb_config *c, int N, int head_rows)
{
    int Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim;
    struct {
        int in, out, count, rows;
    } lin[] = {
        { c->dim, Q, c->n_layers, N },          { c->dim, KV, 2 * c->n_layers, N },
        { Q, c->dim, c->n_layers, N },          { c->dim, c->ffn_dim, 2 * c->n_layers, N },
        { c->ffn_dim, c->dim, c->n_layers, N }, { c->dim, c->vocab_size, (N + head_rows - 1) / head_rows, head_rows },
    };
    size_t maxa = 0, maxw = 0, maxc = 0;
    for (size_t i = 0; i < sizeof lin / sizeof *lin; i++) {
        size_t a = (size_t)lin[i].rows * (lin[i].in > lin[i].out ? lin[i].in : lin[i].out);
        size_t w = (size_t)lin[i].in * lin[i].out;
        if (a > maxa) maxa = a;
        if (w > maxw) maxw = w;
        if (a > maxc) maxc = a;
        if (w > maxc) maxc = w;
    }
    float *A = malloc(maxa * sizeof(float)), *W = malloc(maxw * sizeof(float)), *C = malloc(maxc * sizeof(float));
    if (!A || !W || !C) {
        free(A);
        free(W);
        free(C);
        return 0;
    }
    ftb_fill_normal(A, (int64_t)maxa, 1.0f, 1);
    ftb_fill_normal(W, (int64_t)maxw, 0.02f, 2);
    double flops = 0, secs = 0;
    for (size_t i = 0; i < sizeof lin / sizeof *lin; i++) {
        int R = lin[i].rows, in = lin[i].in, out = lin[i].out;
        double f = 2.0 * R * in * out;
        /* y = x·Wᵀ;  dx = dy·W;  dW = dyᵀ·x */
        double t = time_gemm(0, 1, R, out, in, A, W, C, 2) + time_gemm(0, 0, R, in, out, A, W, C, 2) +
                   time_gemm(1, 0, out, in, R, A, A, C, 2);
        flops += 3 * f * lin[i].count;
        secs += t * lin[i].count;
    }
    free(A);
    free(W);
    free(C);
    return flops / secs / 1e9;
}

int ftb_cmd_bench_core(int argc, char **argv)
{
    const char *model_name = "qwen2.5-0.5b";
    long seq = 512, batch = 1, steps = 2, threads = 0;
    ftb_run_opts run;
    ftb_run_opts_default(&run);
    static struct option longopts[] = { { "model", 1, 0, 'm' }, { "seq", 1, 0, 's' },     { "batch", 1, 0, 'b' },
                                        { "steps", 1, 0, 'n' }, { "threads", 1, 0, 't' }, { "attention", 1, 0, 'a' },
                                        { "loss", 1, 0, 'l' },  { "help", 0, 0, 'h' },    { 0, 0, 0, 0 } };
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'm': model_name = optarg; break;
        case 's':
            if (ftb_parse_long(optarg, 1, 1 << 20, &seq)) goto bad;
            break;
        case 'b':
            if (ftb_parse_long(optarg, 1, 4096, &batch)) goto bad;
            break;
        case 'n':
            if (ftb_parse_long(optarg, 1, 1000, &steps)) goto bad;
            break;
        case 't':
            if (ftb_parse_long(optarg, 1, 1024, &threads)) goto bad;
            break;
        case 'a':
            if (strcmp(optarg, "flash") == 0)
                run.attention = FTB_ATTN_FLASH;
            else if (strcmp(optarg, "eager") == 0)
                run.attention = FTB_ATTN_EAGER;
            else
                goto bad;
            break;
        case 'l':
            if (strcmp(optarg, "chunked") == 0)
                run.loss = FTB_LOSS_CHUNKED;
            else if (strcmp(optarg, "full") == 0)
                run.loss = FTB_LOSS_FULL;
            else
                goto bad;
            break;
        case 'h':
            printf("usage: ftbench bench-core [--model NAME] [--seq N] [--batch N] [--steps N] [--threads N]\n"
                   "                          [--attention flash|eager] [--loss chunked|full]\n"
                   "One full fine-tuning step (forward + backward + AdamW) of a zoo model with seeded\n"
                   "weights: tokens/s, achieved GFLOP/s beside cblas_sgemm on the same shapes, and\n"
                   "the core's memory categories against the process's peak RSS.\n");
            return 0;
        default: return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ftbench bench-core: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    ftb_config cfg;
    if (ftb_zoo_get(model_name, &cfg)) {
        fprintf(stderr, "ftbench bench-core: unknown model '%s' (see: ftbench list)\n", model_name);
        return 2;
    }
    if (threads) ftb_set_threads((int)threads);
    int nthreads = ftb_get_threads();
    char err[FTB_ERR_LEN];
    const int N = (int)(seq * batch);

    printf("bench-core: %s, T=%ld, batch %ld, %d threads, BLAS kernel %s (%s), CPU: %s\n", cfg.name, seq, batch,
           nthreads, ftb_blas_corename(), ftb_blas_selection(), ftb_cpu_features());
    double sgemm = sgemm_rate_for_model(
        &cfg, N, run.loss == FTB_LOSS_FULL ? N : (run.loss_chunk_rows < N ? run.loss_chunk_rows : N));
    printf("  sgemm on this step's shapes:  %8.1f GFLOP/s\n", sgemm);

    /* Baseline after the BLAS library has its buffers: the step's growth
     * above it is what the core's categories must explain. */
    FILE *cr = fopen("/proc/self/clear_refs", "w");
    if (cr) {
        fputs("5", cr);
        fclose(cr);
    }
    int64_t rss_base = ftb_self_vmrss();
    ftb_mem_reset_peaks();

    ftb_model *m = ftb_model_create(&cfg, 1234, err, sizeof err);
    if (!m) {
        fprintf(stderr, "ftbench bench-core: %s\n", err);
        return 1;
    }
    ftb_model_set_trainable(m, 1);
    ftb_adamw opt;
    if (ftb_model_alloc_grads(m, err, sizeof err) || ftb_adamw_init(&opt, m, NULL, 0, 1e-5f, 0.0f, err, sizeof err)) {
        fprintf(stderr, "ftbench bench-core: %s\n", err);
        ftb_model_free(m);
        return 1;
    }
    int32_t *tokens = malloc(sizeof(int32_t) * N), *targets = malloc(sizeof(int32_t) * N);
    ftb_rng rng;
    ftb_rng_seed(&rng, 99);
    for (int i = 0; i < N; i++) tokens[i] = (int32_t)(ftb_rng_u64(&rng) % (uint64_t)cfg.vocab_size);
    for (int i = 0; i < N; i++) targets[i] = (i + 1) % (int)seq ? tokens[i + 1] : FTB_IGNORE_INDEX;
    ftb_batch b = { (int)batch, (int)seq, tokens, targets };

    double best = 1e30, tf = 0, to = 0;
    float loss = 0;
    for (long s = 0; s <= steps; s++) { /* step 0 warms up */
        double t0 = ftb_now();
        ftb_model_zero_grads(m);
        loss = ftb_model_forward_backward(m, &b, &run, err, sizeof err);
        double t1 = ftb_now();
        ftb_mem_set_phase("optim");
        ftb_adamw_step(&opt);
        double t2 = ftb_now();
        if (isnan(loss)) {
            fprintf(stderr, "ftbench bench-core: %s\n", err);
            break;
        }
        if (s > 0 && t2 - t0 < best) {
            best = t2 - t0;
            tf = t1 - t0;
            to = t2 - t1;
        }
    }
    /* Useful FLOPs: 6 per GEMM weight per token (forward, input grad, weight
     * grad), plus causal attention: QKᵀ and PV over half the T×T pairs, so
     * 2·T²·hd per head forward and twice that backward.  Flash's
     * recomputation is overhead and is not counted. */
    const int64_t Q = (int64_t)cfg.n_heads * cfg.head_dim, KV = (int64_t)cfg.n_kv_heads * cfg.head_dim;
    const int64_t gemm_weights =
        cfg.n_layers * (2 * cfg.dim * Q + 2 * cfg.dim * KV + 3 * (int64_t)cfg.dim * cfg.ffn_dim) +
        (int64_t)cfg.vocab_size * cfg.dim;
    double attn = 3.0 * 2.0 * batch * cfg.n_heads * (double)seq * seq * cfg.head_dim * cfg.n_layers;
    double flops = 6.0 * N * (double)gemm_weights + attn;
    double achieved = flops / best / 1e9;

    ftb_mem_stats st;
    ftb_mem_get_stats(&st);
    int64_t hwm = ftb_self_vmhwm();
    size_t ja = 0, jact = 0, jres = 0;
    int have_je = ftb_jemalloc_stats(&ja, &jact, &jres) == 0;
    printf("  step (fwd+bwd+AdamW):          %8.3f s  (fwd+bwd %.3f s, optimizer %.3f s), loss %.4f\n", best, tf, to,
           loss);
    printf("  tokens/s:                      %8.1f\n", N / best);
    printf("  achieved:                      %8.1f GFLOP/s = %.0f%% of the sgemm rate (target >= 60%%)\n", achieved,
           100.0 * achieved / sgemm);
    printf("  memory (MiB)                   peak of the sum, split at that moment:\n");
    for (int c = 0; c < FTB_MEM_NCAT; c++)
        printf("    %-28s %10.1f   (own peak %.1f)\n", ftb_mem_category_name(c), st.peak_total_at[c] / 1048576.0,
               st.peak[c] / 1048576.0);
    printf("    %-28s %10.1f\n", "core total at peak", st.peak_total / 1048576.0);
    printf("  process peak RSS above baseline: %8.1f MiB (baseline %.1f MiB, VmHWM %.1f MiB)\n",
           (hwm - rss_base) / 1048576.0, rss_base / 1048576.0, hwm / 1048576.0);
    printf("  core total / RSS growth:       %8.1f%%\n", 100.0 * st.peak_total / (double)(hwm - rss_base));
    if (have_je)
        printf("  jemalloc: allocated %.1f MiB, active %.1f MiB, resident %.1f MiB\n", ja / 1048576.0, jact / 1048576.0,
               jres / 1048576.0);
    free(tokens);
    free(targets);
    ftb_adamw_free(&opt);
    ftb_model_free(m);
    return isnan(loss) ? 1 : 0;
bad : {
    /* Named from the option table: argv[optind - 1] is the value itself
     * when it came as a separate argument ("--seq -1"). */
    const char *name = "?";
    for (const struct option *o = longopts; o->name; o++)
        if (o->val == ch) name = o->name;
    fprintf(stderr, "ftbench bench-core: --%s: bad value '%s'\n", name, optarg);
    return 2;
}
}
