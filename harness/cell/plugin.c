/* plugin.c — loading method plugins.  See plugin.h. */
#include "plugin.h"
#include "util.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the search path -------------------------------------------------------- */

/* The process's search path once composed (ftb_methods_search_path); what
 * ftb_method_open resolves names against.  Entries are separated by ':'. */
static char search_path[4 * PATH_MAX];
static int search_path_set;

/* Appends dir to path if it is a directory not yet listed. */
static void path_append(char *path, size_t n, const char *dir)
{
    if (!dir || !*dir || !ftb_is_dir(dir)) return;
    size_t len = strlen(dir);
    for (const char *p = path; *p;) {
        const char *colon = strchr(p, ':');
        size_t plen = colon ? (size_t)(colon - p) : strlen(p);
        if (plen == len && strncmp(p, dir, len) == 0) return;
        p += plen + (colon ? 1 : 0);
    }
    size_t used = strlen(path);
    if (used + len + 2 > n) return; /* would not fit: dropped rather than cut */
    snprintf(path + used, n - used, "%s%s", used ? ":" : "", dir);
}

/* Where this ftbench's own methods are: <exe dir>/methods (the build
 * tree), <exe dir>/../lib/ftbench/methods (installed), else
 * /usr/local/lib/ftbench/methods.  NULL if none exists. */
static const char *builtin_dir(void)
{
    static char dir[PATH_MAX];
    const char *exe = ftb_exe_dir();
    const char *cands[] = { "%s/methods", "%s/../lib/ftbench/methods", NULL };
    for (int i = 0; exe[0] && cands[i]; i++) {
        char cand[PATH_MAX];
        snprintf(cand, sizeof cand, cands[i], exe);
        if (ftb_is_dir(cand) && realpath(cand, dir)) return dir;
    }
    if (ftb_is_dir("/usr/local/lib/ftbench/methods")) return "/usr/local/lib/ftbench/methods";
    return NULL;
}

const char *ftb_methods_search_path(const char *user_dirs)
{
    char path[sizeof search_path] = "";
    const char *lists[2] = { user_dirs, getenv("FTBENCH_METHODS_DIR") };
    for (int i = 0; i < 2; i++) {
        if (!lists[i]) continue;
        char *copy = strdup(lists[i]), *save = NULL;
        for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d; d = strtok_r(NULL, ":", &save))
            path_append(path, sizeof path, d);
        free(copy);
    }
    path_append(path, sizeof path, builtin_dir());
    memcpy(search_path, path, sizeof search_path);
    search_path_set = 1;
    return search_path[0] ? search_path : NULL;
}

const char *ftb_methods_default_dir(void) { return ftb_methods_search_path(NULL); }

/* Calls fn on each directory of a search path until it returns nonzero. */
static int each_dir(const char *path, int (*fn)(const char *dir, void *ctx), void *ctx)
{
    for (const char *p = path; p && *p;) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        char dir[PATH_MAX];
        if (len && len < sizeof dir) {
            memcpy(dir, p, len);
            dir[len] = 0;
            int rc = fn(dir, ctx);
            if (rc) return rc;
        }
        p += len + (colon ? 1 : 0);
    }
    return 0;
}

static void label_of(const char *path, char *label, size_t n)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(label, n, "%s", base);
    size_t l = strlen(label);
    if (l > 3 && strcmp(label + l - 3, ".so") == 0) label[l - 3] = 0;
}

typedef struct {
    const char *name;
    char *path;
    size_t n;
} find_ctx;

static int find_in(const char *dir, void *ctx)
{
    find_ctx *f = ctx;
    snprintf(f->path, f->n, "%s/%s.so", dir, f->name);
    return ftb_is_file(f->path);
}

int ftb_plugin_resolve(const char *name_or_path, const char *dirs, char *path, size_t n, char *label, size_t label_n,
                       char *err, size_t errlen)
{
    if (!name_or_path || !*name_or_path) return ftb_errf(err, errlen, "empty method name");
    size_t l = strlen(name_or_path);
    int is_path = strchr(name_or_path, '/') || (l > 3 && strcmp(name_or_path + l - 3, ".so") == 0);
    if (is_path) {
        if (!ftb_is_file(name_or_path))
            return ftb_errf(err, errlen, "method %s: %s", name_or_path,
                            access(name_or_path, F_OK) == 0 ? "not a regular file" : "no such file");
        snprintf(path, n, "%s", name_or_path);
        label_of(name_or_path, label, label_n);
        return 0;
    }
    if (!dirs || !*dirs)
        return ftb_errf(err, errlen,
                        "unknown method '%s': no methods directory found (give --methods-dir or FTBENCH_METHODS_DIR)",
                        name_or_path);
    find_ctx f = { name_or_path, path, n };
    if (each_dir(dirs, find_in, &f)) {
        snprintf(label, label_n, "%s", name_or_path);
        return 0;
    }
    char **labels = NULL;
    int count = 0;
    char avail[512] = "none";
    if (ftb_plugin_list(dirs, &labels, &count, NULL, 0) == 0 && count) {
        avail[0] = 0;
        for (int i = 0; i < count; i++) {
            size_t used = strlen(avail);
            snprintf(avail + used, sizeof avail - used, "%s%s", i ? ", " : "", labels[i]);
        }
    }
    ftb_plugin_free_list(labels, count);
    return ftb_errf(err, errlen, "unknown method '%s': no %s.so in %s (available: %s)", name_or_path, name_or_path,
                    dirs, avail);
}

/* The directories plugins were loaded from, searched by ftb_method_open
 * after the search path: a wrapper loaded by path (--method /x/gc.so)
 * still finds the methods beside it (/x/lora.so), as before ABI 3. */
static char loaded_dirs[4 * PATH_MAX];

static void remember_plugin_dir(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    path_append(loaded_dirs, sizeof loaded_dirs, dir);
}

int ftb_plugin_open(const char *path, ftb_plugin *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    snprintf(p->path, sizeof p->path, "%s", path);
    label_of(path, p->label, sizeof p->label);
    /* RTLD_NOW: a plugin calling a core function this ftbench lacks fails
     * here, with the symbol named, rather than in the middle of a step. */
    dlerror();
    p->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!p->handle) return ftb_errf(err, errlen, "method '%s' (%s): cannot load: %s", p->label, path, dlerror());
    dlerror();
    void *sym = dlsym(p->handle, FTB_METHOD_ENTRY);
    if (!sym) {
        ftb_errf(err, errlen, "method '%s' (%s) does not export %s()", p->label, path, FTB_METHOD_ENTRY);
        ftb_plugin_close(p);
        return -1;
    }
    ftb_method_entry_fn entry;
    /* POSIX guarantees object↔function pointer conversion for dlsym. */
    memcpy(&entry, &sym, sizeof entry);
    const ftb_method *m = entry();
    if (!m) {
        ftb_errf(err, errlen, "method '%s' (%s): %s() returned NULL", p->label, path, FTB_METHOD_ENTRY);
        ftb_plugin_close(p);
        return -1;
    }
    if (m->abi_version < FTB_ABI_MIN_VERSION || m->abi_version > FTB_ABI_VERSION) {
        ftb_errf(err, errlen,
                 "method '%s' (%s) was built for ABI %u, this ftbench has ABI %d (and loads %d..%d): rebuild it "
                 "against include/ftbench_method.h",
                 p->label, path, m->abi_version, FTB_ABI_VERSION, FTB_ABI_MIN_VERSION, FTB_ABI_VERSION);
        ftb_plugin_close(p);
        return -1;
    }
    if (!m->init || !m->step) {
        ftb_errf(err, errlen, "method '%s' (%s) has no %s callback", p->label, path, !m->init ? "init" : "step");
        ftb_plugin_close(p);
        return -1;
    }
    p->method = m;
    remember_plugin_dir(path);
    return 0;
}

ftb_gradient_fn ftb_plugin_gradient(const ftb_method *m)
{
    /* A v1 struct ends at destroy: its memory holds nothing past it. */
    if (!m || m->abi_version < 2) return NULL;
    return m->gradient;
}

ftb_memory_model_fn ftb_plugin_memory_model(const ftb_method *m)
{
    if (!m || m->abi_version < 2) return NULL;
    return m->memory_model;
}

int ftb_method_plan(const ftb_method *m, const ftb_model_shape *shape, const ftb_options *o, const ftb_run_opts *run,
                    int B, int T, ftb_memory_estimate *out, char *err, size_t errlen)
{
    if (!m || m->abi_version < 3 || !m->memory_plan)
        return ftb_errf(err, errlen, "method %s has no shape-only memory plan", m && m->name ? m->name : "?");
    ftb_plan *p = ftb_plan_new(shape, run, err, errlen);
    if (!p) return -1;
    err[0] = 0;
    int rc = m->memory_plan(p, o, B, T, out, err, errlen);
    if (rc && !err[0]) ftb_errf(err, errlen, "method %s: no plan for these options", m->name ? m->name : "?");
    ftb_plan_free(p);
    return rc ? -1 : 0;
}

/* ---- methods that open other methods (ftb_method_open) ------------------------ */

typedef struct opened {
    ftb_plugin plug;
    struct opened *next;
} opened;
static opened *opened_list; /* init and destroy run on one thread: no lock */

/* Every key of o must be an option m documents. */
static int check_options(const ftb_method *m, const char *label, const ftb_options *o, char *err, size_t errlen)
{
    for (int i = 0; o && i < o->n; i++) {
        const ftb_option_doc *d = m->options;
        while (d && d->name && strcmp(d->name, o->keys[i]) != 0) d++;
        if (d && d->name) continue;
        char names[256] = "";
        for (d = m->options; d && d->name; d++) {
            size_t used = strlen(names);
            snprintf(names + used, sizeof names - used, "%s%s", used ? ", " : "", d->name);
        }
        return ftb_errf(err, errlen, "method %s has no option '%s' (%s%s)", label, o->keys[i],
                        names[0] ? "its options: " : "it takes none", names);
    }
    return 0;
}

const ftb_method *ftb_method_open(const char *name_or_path, const ftb_options *options, char *err, size_t errlen)
{
    char path[PATH_MAX], label[128];
    if (!search_path_set) ftb_methods_search_path(NULL);
    char dirs[sizeof search_path + sizeof loaded_dirs] = "";
    snprintf(dirs, sizeof dirs, "%s", search_path);
    for (const char *d = loaded_dirs; *d;) { /* then where plugins were loaded from */
        const char *colon = strchr(d, ':');
        size_t len = colon ? (size_t)(colon - d) : strlen(d);
        char one[PATH_MAX];
        snprintf(one, sizeof one, "%.*s", (int)len, d);
        path_append(dirs, sizeof dirs, one);
        d += len + (colon ? 1 : 0);
    }
    char why[FTB_ERR_LEN];
    if (ftb_plugin_resolve(name_or_path, dirs[0] ? dirs : NULL, path, sizeof path, label, sizeof label, why,
                           sizeof why)) {
        ftb_errf(err, errlen, "method '%s' is not available: %s", name_or_path, why);
        return NULL;
    }
    opened *o = calloc(1, sizeof *o);
    if (!o) {
        ftb_errf(err, errlen, "out of memory opening method %s", label);
        return NULL;
    }
    if (ftb_plugin_open(path, &o->plug, err, errlen)) {
        free(o);
        return NULL;
    }
    const ftb_method *m = o->plug.method;
    if (check_options(m, label, options, err, errlen) == 0) {
        o->next = opened_list;
        opened_list = o;
        return m;
    }
    ftb_plugin_close(&o->plug);
    free(o);
    return NULL;
}

void ftb_method_close(const ftb_method *m)
{
    for (opened **p = &opened_list; *p; p = &(*p)->next)
        if ((*p)->plug.method == m) {
            opened *o = *p;
            *p = o->next;
            ftb_plugin_close(&o->plug);
            free(o);
            return;
        }
}

const char *ftb_method_memory_estimate(const ftb_method *m, void *state, const ftb_session *s, int B, int T,
                                       int ran_backward, ftb_memory_estimate *out)
{
    ftb_memory_model_fn own = ftb_plugin_memory_model(m);
    if (own && own(state, s, B, T, out) == 0) return "method";
    ftb_memory_estimate_step(s->model, &s->run, B, T, ran_backward, NULL, out);
    return ran_backward ? "core schedule, training step" : "core schedule, inference forward";
}

void ftb_plugin_close(ftb_plugin *p)
{
    if (p->handle) dlclose(p->handle);
    p->handle = NULL;
    p->method = NULL;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

typedef struct {
    char **list;
    int count, cap;
    char *err;
    size_t errlen;
} list_ctx;

static int list_has(const list_ctx *c, const char *label, size_t len)
{
    for (int i = 0; i < c->count; i++)
        if (strlen(c->list[i]) == len && strncmp(c->list[i], label, len) == 0) return 1;
    return 0;
}

static int list_dir(const char *dir, void *ctx)
{
    list_ctx *c = ctx;
    DIR *d = opendir(dir);
    if (!d) return ftb_errf(c->err, c->errlen, "cannot read methods directory %s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len <= 3 || strcmp(e->d_name + len - 3, ".so") != 0 || e->d_name[0] == '.') continue;
        if (list_has(c, e->d_name, len - 3)) continue; /* an earlier directory's wins */
        if (c->count == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 8;
            char **nl = realloc(c->list, (size_t)c->cap * sizeof *c->list);
            if (!nl) break;
            c->list = nl;
        }
        c->list[c->count] = strndup(e->d_name, len - 3);
        if (c->list[c->count]) c->count++;
    }
    closedir(d);
    return 0;
}

int ftb_plugin_list(const char *dirs, char ***labels, int *n, char *err, size_t errlen)
{
    list_ctx c = { NULL, 0, 0, err, errlen };
    int rc = each_dir(dirs, list_dir, &c);
    if (c.count) qsort(c.list, (size_t)c.count, sizeof *c.list, cmp_str);
    *labels = c.list;
    *n = c.count;
    return rc ? -1 : 0;
}

void ftb_plugin_free_list(char **labels, int n)
{
    for (int i = 0; i < n; i++) free(labels[i]);
    free(labels);
}

static char *describe_json(const ftb_method *m)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(m->name ? m->name : ""));
    json_object_set_new(o, "summary", json_string(m->summary ? m->summary : ""));
    json_object_set_new(o, "abi", json_integer(m->abi_version));
    json_t *opts = json_array();
    for (const ftb_option_doc *d = m->options; d && d->name; d++) {
        json_t *x = json_object();
        json_object_set_new(x, "name", json_string(d->name));
        json_object_set_new(x, "default", d->default_value ? json_string(d->default_value) : json_null());
        json_object_set_new(x, "help", json_string(d->help ? d->help : ""));
        json_array_append_new(opts, x);
    }
    json_object_set_new(o, "options", opts);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

int ftb_plugin_probe(const char *path, char **json, char *err, size_t errlen)
{
    *json = NULL;
    int fds[2];
    if (pipe(fds) != 0) return ftb_errf(err, errlen, "pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return ftb_errf(err, errlen, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        close(fds[0]);
        ftb_plugin p;
        char e[FTB_ERR_LEN];
        int ok = ftb_plugin_open(path, &p, e, sizeof e) == 0;
        char *s = ok ? describe_json(p.method) : NULL;
        /* First byte: 'O' ok + JSON, or 'E' + message. */
        const char *body = ok ? (s ? s : "{}") : e;
        size_t len = strlen(body);
        char tag = ok ? 'O' : 'E';
        if (write(fds[1], &tag, 1) == 1) {
            for (size_t off = 0; off < len;) {
                ssize_t w = write(fds[1], body + off, len - off);
                if (w <= 0) break;
                off += (size_t)w;
            }
        }
        _exit(ok ? 0 : 3);
    }
    close(fds[1]);
    size_t cap = 1024, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 512 > cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) break;
            buf = nb;
        }
        ssize_t r = read(fds[0], buf + n, cap - n - 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fds[0]);
    buf[n] = 0;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    int rc = 0;
    if (WIFSIGNALED(status)) {
        char label[128];
        label_of(path, label, sizeof label);
        rc = ftb_errf(err, errlen, "method '%s' (%s) crashed while loading: %s (signal %d)", label, path,
                      ftb_signal_name(WTERMSIG(status)), WTERMSIG(status));
    } else if (n > 0 && buf[0] == 'O') {
        *json = strdup(buf + 1);
    } else if (n > 0 && buf[0] == 'E') {
        rc = ftb_errf(err, errlen, "%s", buf + 1);
    } else {
        rc = ftb_errf(err, errlen, "method %s: loader exited with status %d", path,
                      WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    free(buf);
    return rc;
}
