/* gc — gradient checkpointing (Chen et al., 2016, "Training Deep Nets with
 * Sublinear Memory Cost"), as a wrapper around any backprop method: every
 * block keeps only its input (FTB_KEEP_INPUT) and is recomputed, one block
 * at a time, during backward.  Gradients are those of the inner method,
 * bit for bit; what changes is how many blocks' activations are alive.
 *
 * The inner method (--opt inner=lora|full|ia3|lars, default lora) is the
 * plugin <dir>/<inner>.so next to this one: gc finds its own directory with
 * dladdr, loads the inner plugin there, and hands it the options meant for
 * it — every option but gc's own `inner`, with an `inner.` prefix stripped
 * (inner.rank=16 and rank=16 both reach the inner method as rank=16; the
 * prefixed one wins if both are given).  gc sets the keep policy before the
 * inner init (so an inner method that reads it sees it) and again after (so
 * one that sets its own is overridden), then delegates step, trainable and
 * destroy.
 *
 * The option list gc shows (and the harness checks --opt against) is its
 * own plus those of the backprop plugins found next to it, built when the
 * plugin is first asked for its description. */
#include "ftbench.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define INNER_PREFIX  "inner."
#define DEFAULT_INNER "lora"

typedef struct {
    void *handle; /* the inner plugin, dlopen'ed by gc */
    const ftb_method *inner;
    void *inner_state;
    ftb_keep_policy *keep;       /* s->run.keep points here until destroy */
    const char **keys, **values; /* the inner's options (strings are the host's) */
    ftb_options inner_options;
} gc_state;

/* The directory this plugin was loaded from ("." if the path had none). */
static int own_directory(char *dir, size_t n)
{
    Dl_info info;
    if (!dladdr((void *)&own_directory, &info) || !info.dli_fname) return -1;
    const char *slash = strrchr(info.dli_fname, '/');
    if (!slash)
        snprintf(dir, n, ".");
    else
        snprintf(dir, n, "%.*s", (int)(slash - info.dli_fname), info.dli_fname);
    return 0;
}

/* Loads <gc's dir>/<name>.so and checks it as the host checks a plugin. */
static int open_sibling_method(const char *name, void **handle, const ftb_method **method, char *err, size_t errlen)
{
    char dir[PATH_MAX], path[PATH_MAX + 256];
    *handle = NULL;
    *method = NULL;
    if (own_directory(dir, sizeof dir)) {
        snprintf(err, errlen, "gc: cannot tell which directory the gc plugin was loaded from");
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s.so", dir, name);
    if (access(path, F_OK) != 0) {
        snprintf(err, errlen, "gc: inner method '%s' is not available: no %s.so in %s", name, name, dir);
        return -1;
    }
    dlerror();
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(err, errlen, "gc: cannot load inner method '%s' (%s): %s", name, path, dlerror());
        return -1;
    }
    void *sym = dlsym(h, FTB_METHOD_ENTRY);
    ftb_method_entry_fn entry = NULL;
    const ftb_method *m = NULL;
    if (sym) {
        memcpy(&entry, &sym, sizeof entry); /* POSIX: dlsym's object pointer is the function */
        m = entry();
    }
    if (!m) {
        snprintf(err, errlen, "gc: %s is not a method plugin (no %s() or it returned NULL)", path, FTB_METHOD_ENTRY);
    } else if (m->abi_version != FTB_ABI_VERSION) {
        snprintf(err, errlen, "gc: inner method '%s' was built for ABI %u, this ftbench has ABI %d", name,
                 m->abi_version, FTB_ABI_VERSION);
        m = NULL;
    } else if (!m->init || !m->step || !m->destroy) {
        snprintf(err, errlen, "gc: inner method '%s' lacks an init, step or destroy callback", name);
        m = NULL;
    }
    if (!m) {
        dlclose(h);
        return -1;
    }
    *handle = h;
    *method = m;
    return 0;
}

static int is_documented(const ftb_method *m, const char *key)
{
    for (const ftb_option_doc *d = m->options; d && d->name; d++)
        if (strcmp(d->name, key) == 0) return 1;
    return 0;
}

/* The inner method's options: unprefixed ones first, then the `inner.`
 * ones, so that (the last given winning) a prefixed option overrides.
 * Each must be one the inner method documents. */
static int build_inner_options(gc_state *st, const ftb_options *o, const char *inner_name, char *err, size_t errlen)
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
            if (!is_documented(st->inner, k)) {
                char names[256] = "";
                for (const ftb_option_doc *d = st->inner->options; d && d->name; d++) {
                    size_t used = strlen(names);
                    snprintf(names + used, sizeof names - used, "%s%s", used ? ", " : "", d->name);
                }
                snprintf(err, errlen, "option %s: the inner method %s has no option '%s' (%s%s)", o->keys[i],
                         inner_name, k, names[0] ? "its options: " : "it takes none", names);
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
    for (int l = 0; l < s->model->cfg.n_layers; l++) st->keep[l] = FTB_KEEP_INPUT;
    s->run.keep = st->keep;
}

static void gc_destroy(void *state);

static void *gc_init(ftb_session *s, char *err, size_t errlen)
{
    const char *inner_name = ftb_opt_str(s->options, "inner", DEFAULT_INNER);
    if (!*inner_name || strchr(inner_name, '/') || strcmp(inner_name, "gc") == 0) {
        snprintf(err, errlen, "option inner: '%s' is not a method to wrap (lora, full, ia3, lars, ...)", inner_name);
        return NULL;
    }
    gc_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "gc: out of memory");
        return NULL;
    }
    st->keep = calloc((size_t)s->model->cfg.n_layers, sizeof *st->keep);
    if (!st->keep) {
        snprintf(err, errlen, "gc: out of memory");
        goto fail;
    }
    if (open_sibling_method(inner_name, &st->handle, &st->inner, err, errlen)) goto fail;
    if (build_inner_options(st, s->options, inner_name, err, errlen)) goto fail;

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
    if (st->inner_state) st->inner->destroy(st->inner_state);
    if (st->handle) dlclose(st->handle);
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

/* ---- the option list ------------------------------------------------------ */

/* Backprop plugins whose options gc lists when they sit next to it. */
static const char *const listed_inner_methods[] = { "lora", "full", "ia3", "lars" };

static ftb_option_doc *option_docs; /* gc's own + the inner plugins' */
static int n_option_docs;

static const ftb_option_doc gc_own_option = {
    "inner", DEFAULT_INNER,
    "backprop method whose blocks are recomputed: lora, full, ia3, lars or any "
    "plugin in this directory; its options pass through (an inner. prefix is stripped)"
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
    void *handles[sizeof listed_inner_methods / sizeof *listed_inner_methods] = { 0 };
    const ftb_method *methods[sizeof listed_inner_methods / sizeof *listed_inner_methods] = { 0 };
    const int n_listed = (int)(sizeof listed_inner_methods / sizeof *listed_inner_methods);
    char err[FTB_ERR_LEN];
    for (int i = 0; i < n_listed; i++)
        if (open_sibling_method(listed_inner_methods[i], &handles[i], &methods[i], err, sizeof err) == 0)
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
        if (handles[i]) dlclose(handles[i]);
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
    FTB_ABI_VERSION,
    "gc",
    "gradient checkpointing: every block recomputed in backward, around an inner method",
    NULL,
    gc_init,
    gc_step,
    gc_trainable,
    gc_destroy,
    .memory_model = gc_memory_model,
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
