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

const char *ftb_methods_default_dir(void)
{
    static char dir[PATH_MAX];
    const char *env = getenv("FTBENCH_METHODS_DIR");
    if (env && *env && ftb_is_dir(env)) return env;
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

static void label_of(const char *path, char *label, size_t n)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(label, n, "%s", base);
    size_t l = strlen(label);
    if (l > 3 && strcmp(label + l - 3, ".so") == 0) label[l - 3] = 0;
}

int ftb_plugin_resolve(const char *name_or_path, const char *dir, char *path, size_t n, char *label, size_t label_n,
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
    if (!dir)
        return ftb_errf(err, errlen, "unknown method '%s': no methods directory found (give --methods-dir)",
                        name_or_path);
    snprintf(path, n, "%s/%s.so", dir, name_or_path);
    if (ftb_is_file(path)) {
        snprintf(label, label_n, "%s", name_or_path);
        return 0;
    }
    char **labels = NULL;
    int count = 0;
    char avail[512] = "none";
    if (ftb_plugin_list(dir, &labels, &count, NULL, 0) == 0 && count) {
        avail[0] = 0;
        for (int i = 0; i < count; i++) {
            size_t used = strlen(avail);
            snprintf(avail + used, sizeof avail - used, "%s%s", i ? ", " : "", labels[i]);
        }
    }
    ftb_plugin_free_list(labels, count);
    return ftb_errf(err, errlen, "unknown method '%s': no %s.so in %s (available: %s)", name_or_path, name_or_path, dir,
                    avail);
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
        ftb_errf(err, errlen, "method '%s' (%s) was built for ABI %u, this ftbench has ABI %d (and loads %d..%d)",
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

int ftb_plugin_list(const char *dir, char ***labels, int *n, char *err, size_t errlen)
{
    *labels = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return ftb_errf(err, errlen, "cannot read methods directory %s: %s", dir, strerror(errno));
    char **list = NULL;
    int count = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len <= 3 || strcmp(e->d_name + len - 3, ".so") != 0 || e->d_name[0] == '.') continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 8;
            char **nl = realloc(list, (size_t)cap * sizeof *list);
            if (!nl) break;
            list = nl;
        }
        list[count] = strndup(e->d_name, len - 3);
        if (list[count]) count++;
    }
    closedir(d);
    if (count) qsort(list, (size_t)count, sizeof *list, cmp_str);
    *labels = list;
    *n = count;
    return 0;
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
