/* v1sgd: a method built for ABI 1, whose ftb_method ends at destroy (the
 * struct is declared here as ABI 1 declared it).  It trains the final norm
 * and the norms of the last block with plain SGD, by backprop.  ABI 3 made
 * the structs plugins hold by value growable (docs/PLUGINS.md, "ABI
 * history"), which older plugins' layouts are not: the host refuses it,
 * naming both versions, having read nothing but its abi_version.
 *
 * The struct is placed at the very end of a readable page followed by an
 * inaccessible one: a host that reads ABI 2's `gradient` field from it
 * faults instead of reading garbage, so the test that loads it can fail. */
#include "ftbench_method.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
    uint32_t abi_version;
    const char *name;
    const char *summary;
    const ftb_option_doc *options;
    void *(*init)(ftb_session *s, char *err, size_t errlen);
    int (*step)(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen);
    int (*trainable)(void *state, ftb_tensor ***tensors);
    void (*destroy)(void *state);
} ftb_method_v1;

typedef struct {
    ftb_tensor *params[3];
    int n;
} v1_state;

static const ftb_option_doc v1_options[] = { { NULL, NULL, NULL } };

static void *v1_init(ftb_session *s, char *err, size_t errlen)
{
    ftb_model *m = s->model;
    v1_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "v1sgd: out of memory");
        return NULL;
    }
    ftb_model_set_trainable(m, 0);
    st->params[st->n++] = ftb_model_part_tensor(m, FTB_TENSOR_FINAL_NORM);
    ftb_tensor **all;
    const int n = ftb_model_params(m, &all);
    char attn[96], mlp[96];
    snprintf(attn, sizeof attn, "model.layers.%d.input_layernorm.weight", ftb_model_config(m)->n_layers - 1);
    snprintf(mlp, sizeof mlp, "model.layers.%d.post_attention_layernorm.weight", ftb_model_config(m)->n_layers - 1);
    for (int i = 0; i < n; i++)
        if (!strcmp(all[i]->name, attn) || !strcmp(all[i]->name, mlp)) st->params[st->n++] = all[i];
    for (int i = 0; i < st->n; i++) st->params[i]->trainable = 1;
    if (ftb_model_alloc_grads(m, err, errlen)) {
        free(st);
        return NULL;
    }
    return st;
}

static int v1_step(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    v1_state *st = state;
    for (int i = 0; i < st->n; i++) memset(st->params[i]->grad, 0, sizeof(float) * (size_t)st->params[i]->numel);
    out->loss = ftb_model_forward_backward(s->model, b, &s->run, err, errlen);
    if (out->loss != out->loss) return -1;
    ftb_last_run_times(&out->t_forward, &out->t_backward);
    for (int i = 0; i < st->n; i++)
        for (int64_t j = 0; j < st->params[i]->numel; j++) st->params[i]->data[j] -= s->lr * st->params[i]->grad[j];
    out->forward_passes = 1;
    return 0;
}

static int v1_trainable(void *state, ftb_tensor ***tensors)
{
    v1_state *st = state;
    *tensors = st->params;
    return st->n;
}

static void v1_destroy(void *state) { free(state); }

static const ftb_method_v1 v1_method = {
    1, "v1sgd", "test: an ABI 1 plugin (SGD on the last norms)", v1_options, v1_init, v1_step, v1_trainable, v1_destroy,
};

const ftb_method *ftbench_method(void)
{
    static ftb_method_v1 *placed;
    if (!placed) {
        long page = sysconf(_SC_PAGESIZE);
        char *p = mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return NULL;
        if (mprotect(p + page, (size_t)page, PROT_NONE) != 0) return NULL;
        placed = (ftb_method_v1 *)(p + page - sizeof v1_method);
        memcpy(placed, &v1_method, sizeof v1_method);
    }
    return (const ftb_method *)(const void *)placed;
}
