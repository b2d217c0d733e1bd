/* memcheck_step.c — one tiny training step of each method, in one process
 * and with everything freed again, for valgrind (make memcheck,
 * ci/memcheck.sh).  The cell child of `ftbench run` leaves its teardown to
 * _exit, so a leak check there reports what was never meant to be freed;
 * here every byte must come back: the core's accounting is checked, and
 * valgrind checks the rest.
 *
 *   memcheck_step METHODS_DIR [METHOD...]     (no METHOD: every .so there)
 *
 * The model is the zoo's "tiny", saved as a checkpoint and loaded back
 * mapped (so the checkpoint writer and reader run too); 16 tokens, 1
 * thread.  Exit 0 if every step ran and nothing stayed allocated. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftbench.h"
#include "plugin.h"

static int step_one(const char *dir, const char *name, const char *ckpt)
{
    char path[4096], err[FTB_ERR_LEN] = "";
    snprintf(path, sizeof path, "%s/%s.so", dir, name);
    ftb_plugin p;
    if (ftb_plugin_open(path, &p, err, sizeof err)) {
        fprintf(stderr, "memcheck_step: %s: %s\n", name, err);
        return -1;
    }
    int rc = -1;
    ftb_model *m = ftb_model_load(ckpt, 1, err, sizeof err);
    if (m) {
        ftb_options none = { 0, NULL, NULL };
        ftb_session s;
        memset(&s, 0, sizeof s);
        s.model = m;
        ftb_run_opts_default(&s.run);
        s.options = &none;
        s.seed = 5;
        s.lr = 1e-3f;
        s.total_steps = 1;
        err[0] = 0;
        void *st = p.method->init(&s, err, sizeof err);
        if (st) {
            enum { T = 16 };
            int32_t tokens[T], targets[T];
            for (int i = 0; i < T; i++) tokens[i] = (i * 7 + 3) % m->cfg.vocab_size;
            for (int i = 0; i < T; i++) targets[i] = i + 1 < T ? tokens[i + 1] : FTB_IGNORE_INDEX;
            ftb_batch b = { 1, T, tokens, targets };
            ftb_step_result res;
            memset(&res, 0, sizeof res);
            rc = p.method->step(st, &s, &b, &res, err, sizeof err);
            if (rc == 0) printf("%-8s loss %.4f, %d forward pass(es)\n", name, res.loss, res.forward_passes);
            p.method->destroy(st);
        }
        ftb_model_free(m);
    }
    if (rc) fprintf(stderr, "memcheck_step: %s: %s\n", name, err[0] ? err : "failed without a message");
    ftb_plugin_close(&p);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: memcheck_step METHODS_DIR [METHOD...]\n");
        return 2;
    }
    ftb_set_threads(1);
    char ckpt[] = "/tmp/ftb-memcheck-XXXXXX", err[FTB_ERR_LEN];
    if (!mkdtemp(ckpt)) {
        perror("memcheck_step: mkdtemp");
        return 1;
    }
    ftb_config cfg;
    ftb_zoo_get("tiny", &cfg);
    ftb_model *m = ftb_model_create(&cfg, 7, err, sizeof err);
    if (!m || ftb_model_save(m, ckpt, err, sizeof err)) {
        fprintf(stderr, "memcheck_step: writing the checkpoint: %s\n", err);
        return 1;
    }
    ftb_model_free(m);

    char **names = NULL;
    int n = 0, failed = 0;
    if (argc > 2) {
        names = argv + 2;
        n = argc - 2;
    } else if (ftb_plugin_list(argv[1], &names, &n, err, sizeof err)) {
        fprintf(stderr, "memcheck_step: %s\n", err);
        return 1;
    }
    for (int i = 0; i < n; i++) failed += step_one(argv[1], names[i], ckpt) != 0;
    if (argc == 2) ftb_plugin_free_list(names, n);

    char f[64];
    snprintf(f, sizeof f, "%s/config.json", ckpt);
    unlink(f);
    snprintf(f, sizeof f, "%s/model.safetensors", ckpt);
    unlink(f);
    rmdir(ckpt);
    ftb_mem_stats st;
    ftb_mem_get_stats(&st);
    if (st.live_total != 0) {
        fprintf(stderr, "memcheck_step: %lld core bytes still allocated at the end\n", (long long)st.live_total);
        failed++;
    }
    printf("%d of %d methods stepped\n", n - failed, n);
    return failed ? 1 : 0;
}
