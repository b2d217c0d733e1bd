/* gc — gradient checkpointing (Chen et al., 2016, "Training Deep Nets with
 * Sublinear Memory Cost"), as a wrapper around any backprop method: every
 * block keeps only its input (FTB_KEEP_INPUT) and is recomputed, one block
 * at a time, during backward.  Gradients are those of the inner method,
 * bit for bit; what changes is how many blocks' activations are alive.
 *
 * The inner method (--opt inner=lora|full|ia3|lars or a path to a plugin,
 * default lora) is opened by the host's own loader (ftb_method_open: the
 * plugin search path, the ABI check), and gc hands it the options meant for
 * it — every option but gc's own `inner`, with an `inner.` prefix stripped
 * (inner.rank=16 and rank=16 both reach the inner method as rank=16; the
 * prefixed one wins if both are given); the host checks that the inner
 * method documents each.  gc sets the keep policy before the
 * inner init (so an inner method that reads it sees it) and again after (so
 * one that sets its own is overridden), then delegates step, trainable and
 * destroy.
 *
 * The option list gc shows (and the harness checks --opt against) is its
 * own plus those of the backprop plugins on the search path, built when the
 * plugin is first asked for its description. */
#include "ftbench_method.h"

#include <stdlib.h>
#include <string.h>

#define INNER_PREFIX  "inner."
#define DEFAULT_INNER "lora"

typedef struct {
    const ftb_method *inner; /* opened with ftb_method_open */
    void *inner_state;
    ftb_keep_policy *keep;       /* s->run.keep points here until destroy */
    const char **keys, **values; /* the inner's options (strings are the host's) */
    ftb_options inner_options;
} gc_state;

static int is_documented(const ftb_method *m, const char *key)
{
    for (const ftb_option_doc *d = m->options; d && d->name; d++)
        if (strcmp(d->name, key) == 0) return 1;
    return 0;
}

/* The inner method's options: unprefixed ones first, then the `inner.`
 * ones, so that (the last given winning) a prefixed option overrides. */
static int build_inner_options(gc_state *st, const ftb_options *o, char *err, size_t errlen)
{
    int n = o ? o->n : 0, count = 0;
    st->keys = calloc((size_t)n + 1, sizeof *st->keys);
    st->values = calloc((size_t)n + 1, sizeof *st->values);
    if (!st->keys || !st->values) {
        snprintf(err, errlen, "gc: out of memory");
        return -1;
    }
    const size_t plen = strlen(INNER_PREFIX);
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            const char *k = o->keys[i];
            int prefixed = strncmp(k, INNER_PREFIX, plen) == 0;
            if (strcmp(k, "inner") == 0 || prefixed != pass) continue;
            if (prefixed) k += plen;
            if (!*k) {
                snprintf(err, errlen, "option %s: no option name after the prefix", o->keys[i]);
                return -1;
            }
            st->keys[count] = k;
            st->values[count] = o->values[i];
            count++;
        }
    st->inner_options = (ftb_options){ count, st->keys, st->values };
    return 0;
}

static void set_recompute_every_block(gc_state *st, ftb_session *s)
{
    for (int l = 0; l < ftb_model_config(s->model)->n_layers; l++) st->keep[l] = FTB_KEEP_INPUT;
    s->run.keep = st->keep;
}

static void gc_destroy(void *state);

static void *gc_init(ftb_session *s, char *err, size_t errlen)
{
    const char *inner_name = ftb_opt_str(s->options, "inner", DEFAULT_INNER);
    const char *base = strrchr(inner_name, '/') ? strrchr(inner_name, '/') + 1 : inner_name;
    if (!*base || strcmp(base, "gc") == 0 || strcmp(base, "gc.so") == 0) {
        snprintf(err, errlen, "option inner: '%s' is not a method to wrap (lora, full, ia3, lars, ...)", inner_name);
        return NULL;
    }
    gc_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "gc: out of memory");
        return NULL;
    }
    st->keep = calloc((size_t)ftb_model_config(s->model)->n_layers, sizeof *st->keep);
    if (!st->keep) {
        snprintf(err, errlen, "gc: out of memory");
        goto fail;
    }
    if (build_inner_options(st, s->options, err, errlen)) goto fail;
    char why[FTB_ERR_LEN];
    if (!(st->inner = ftb_method_open(inner_name, &st->inner_options, why, sizeof why))) {
        snprintf(err, errlen, "gc: option inner=%s: the inner %s", inner_name, why);
        goto fail;
    }

    const ftb_run_opts host_run = s->run;
    set_recompute_every_block(st, s);
    const ftb_options *host_options = s->options;
    s->options = &st->inner_options;
    st->inner_state = st->inner->init(s, err, errlen);
    s->options = host_options;
    if (!st->inner_state) {
        s->run = host_run; /* the session must not point into gc's (or the inner's) freed state */
        if (!err[0]) snprintf(err, errlen, "gc: the inner method %s failed to initialise", inner_name);
        goto fail;
    }
    set_recompute_every_block(st, s);
    return st;
fail:
    gc_destroy(st);
    return NULL;
}

static int gc_step(void *state, ftb_session *s, const ftb_batch *b, ftb_step_result *out, char *err, size_t errlen)
{
    gc_state *st = state;
    const ftb_options *host_options = s->options;
    s->options = &st->inner_options; /* the inner method sees what it saw at init */
    int rc = st->inner->step(st->inner_state, s, b, out, err, errlen);
    s->options = host_options;
    return rc;
}

static int gc_trainable(void *state, ftb_tensor ***tensors)
{
    gc_state *st = state;
    if (!st->inner->trainable) {
        *tensors = NULL;
        return 0;
    }
    return st->inner->trainable(st->inner_state, tensors);
}

static void gc_destroy(void *state)
{
    gc_state *st = state;
    if (!st) return;
    if (st->inner_state && st->inner->destroy) st->inner->destroy(st->inner_state);
    if (st->inner) ftb_method_close(st->inner);
    free(st->keep);
    free(st->keys);
    free(st->values);
    free(st);
}

/* The inner method's model, under the keep policies gc has set in s->run. */
static int gc_memory_model(void *state, const ftb_session *s, int B, int T, ftb_memory_estimate *out)
{
    gc_state *st = state;
    if (st->inner->abi_version >= 2 && st->inner->memory_model)
        return st->inner->memory_model(st->inner_state, s, B, T, out);
    ftb_memory_estimate_step(s->model, &s->run, B, T, 1, NULL, out);
    return 0;
}

/* Shape-only (`ftbench plan`): the inner method's plan with every block
 * recomputed (set before, as gc_init sets it before the inner init, and
 * again after). */
static int gc_plan(ftb_plan *p, const ftb_options *o, int B, int T, ftb_memory_estimate *out, char *err, size_t errlen)
{
    const char *inner_name = ftb_opt_str(o, "inner", DEFAULT_INNER);
    gc_state st = { 0 };
    char why[FTB_ERR_LEN];
    int rc = -1;
    if (build_inner_options(&st, o, err, errlen)) goto out;
    if (!(st.inner = ftb_method_open(inner_name, &st.inner_options, why, sizeof why))) {
        snprintf(err, errlen, "gc: option inner=%s: the inner %s", inner_name, why);
        goto out;
    }
    if (st.inner->abi_version < 3 || !st.inner->memory_plan) {
        snprintf(err, errlen, "gc: the inner method %s has no plan", inner_name);
        goto out;
    }
    ftb_plan_keep_all(p, FTB_KEEP_INPUT);
    /* the inner plan estimates under the plan's keep policies: an inner
     * method that sets its own would override gc's, so they are reset and
     * the estimate repeated if it did */
    rc = st.inner->memory_plan(p, &st.inner_options, B, T, out, err, errlen);
    const ftb_run_opts *run = ftb_plan_run(p);
    int overridden = 0;
    for (int l = 0; rc == 0 && l < ftb_model_config(ftb_plan_model(p))->n_layers; l++)
        overridden |= !run->keep || run->keep[l] != FTB_KEEP_INPUT;
    if (overridden) {
        snprintf(err, errlen, "gc: the inner method %s sets its own keep policies: no plan", inner_name);
        rc = -1;
    }
out:
    if (st.inner) ftb_method_close(st.inner);
    free(st.keys);
    free(st.values);
    return rc;
}

/* ---- the option list ------------------------------------------------------ */

/* Backprop plugins whose options gc lists when they sit next to it. */
static const char *const listed_inner_methods[] = { "lora", "full", "ia3", "lars" };

static ftb_option_doc *option_docs; /* gc's own + the inner plugins' */
static int n_option_docs;

static const ftb_option_doc gc_own_option = {
    "inner", DEFAULT_INNER,
    "backprop method whose blocks are recomputed: lora, full, ia3, lars, any plugin on the search path or a "
    "path to one (/path/x.so); its options pass through (an inner. prefix is stripped)"
};

static int docs_have(const char *name)
{
    for (int i = 0; i < n_option_docs; i++)
        if (strcmp(option_docs[i].name, name) == 0) return 1;
    return 0;
}

static void add_doc(const char *name, const char *def, const char *help)
{
    ftb_option_doc *d = &option_docs[n_option_docs++];
    d->name = strdup(name);
    d->default_value = strdup(def ? def : "");
    d->help = strdup(help ? help : "");
}

/* Each inner option twice: as KEY (what `--opt KEY=...` checks against) and
 * as inner.KEY (what `--opt gc.inner.KEY=...` checks against). */
static void build_option_docs(void)
{
    int cap = 1;
    const ftb_method *methods[sizeof listed_inner_methods / sizeof *listed_inner_methods] = { 0 };
    const int n_listed = (int)(sizeof listed_inner_methods / sizeof *listed_inner_methods);
    char err[FTB_ERR_LEN];
    for (int i = 0; i < n_listed; i++)
        if ((methods[i] = ftb_method_open(listed_inner_methods[i], NULL, err, sizeof err)))
            for (const ftb_option_doc *d = methods[i]->options; d && d->name; d++) cap += 2;
    option_docs = calloc((size_t)cap + 1, sizeof *option_docs); /* + the terminator */
    if (option_docs) {
        option_docs[n_option_docs++] = gc_own_option;
        for (int i = 0; i < n_listed; i++)
            for (const ftb_option_doc *d = methods[i] ? methods[i]->options : NULL; d && d->name; d++) {
                if (docs_have(d->name)) continue; /* the first plugin listing it describes it */
                char name[256], help[768], users[128] = "";
                for (int j = i; j < n_listed; j++) /* which inner methods take it */
                    if (methods[j] && is_documented(methods[j], d->name)) {
                        size_t used = strlen(users);
                        snprintf(users + used, sizeof users - used, "%s%s", used ? "," : "", listed_inner_methods[j]);
                    }
                int shared = strchr(users, ',') != NULL; /* defaults may differ: say whose is shown */
                snprintf(help, sizeof help, "(inner %s) %s%s%s", users, d->help ? d->help : "",
                         shared ? "; default shown: " : "", shared ? listed_inner_methods[i] : "");
                add_doc(d->name, d->default_value, help);
                snprintf(name, sizeof name, INNER_PREFIX "%s", d->name);
                snprintf(help, sizeof help, "same as %s", d->name);
                add_doc(name, d->default_value, help);
            }
    }
    for (int i = 0; i < n_listed; i++) /* their strings are copied: unload them */
        if (methods[i]) ftb_method_close(methods[i]);
}

/* The strings are gc's for the process's life, unless gc itself is
 * unloaded: then they go with it. */
__attribute__((destructor)) static void free_option_docs(void)
{
    for (int i = 1; i < n_option_docs; i++) { /* [0] is the static own option */
        free((char *)option_docs[i].name);
        free((char *)option_docs[i].default_value);
        free((char *)option_docs[i].help);
    }
    free(option_docs);
    option_docs = NULL;
    n_option_docs = 0;
}

static ftb_method gc_method = {
    .abi_version = FTB_ABI_VERSION,
    .name = "gc",
    .summary = "gradient checkpointing: every block recomputed in backward, around an inner method",
    .init = gc_init,
    .step = gc_step,
    .trainable = gc_trainable,
    .destroy = gc_destroy,
    .memory_model = gc_memory_model,
    .memory_plan = gc_plan,
};

const ftb_method *ftbench_method(void)
{
    static const ftb_option_doc own_only[] = {
        { "inner", DEFAULT_INNER, "backprop method whose blocks are recomputed (lora, full, ia3, lars)" },
        { NULL, NULL, NULL },
    };
    if (!option_docs) build_option_docs();
    gc_method.options = option_docs ? option_docs : own_only;
    return &gc_method;
}
