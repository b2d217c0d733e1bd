/*
 * plugin.h — fine-tuning methods as shared objects.  A method is found by
 * name (<dir>/<name>.so, the first of the search path's directories that
 * has it) or by path, and must export FTB_METHOD_ENTRY returning a
 * ftb_method of an ABI version this ftbench loads
 * (FTB_ABI_MIN_VERSION..FTB_ABI_VERSION).  The harness names no method:
 * whatever .so files the search path holds are the methods.  Methods that
 * wrap another (gc, mebp) open it through the same loader
 * (ftb_method_open, include/ftbench_method.h).
 */
#ifndef FTB_HARNESS_PLUGIN_H
#define FTB_HARNESS_PLUGIN_H

#include "ftbench.h"
#include <limits.h>

typedef struct {
    void *handle;
    const ftb_method *method;
    char path[PATH_MAX];
    char label[128]; /* file name without .so: how the user named it */
} ftb_plugin;

/* The plugin search path, colon-separated (docs/PLUGINS.md, "Where
 * methods are found"): the directories of user_dirs (--methods-dir; NULL:
 * none) first, then those of $FTBENCH_METHODS_DIR, then the built-in
 * directory (<exe dir>/methods in the build tree, <exe
 * dir>/../lib/ftbench/methods installed, else /usr/local/lib/ftbench/methods).
 * Entries that are not directories are left out.  It becomes the process's
 * path, which ftb_method_open uses.  NULL if it is empty. */
const char *ftb_methods_search_path(const char *user_dirs);
/* ftb_methods_search_path(NULL). */
const char *ftb_methods_default_dir(void);

/* A name without '/' and without ".so" is looked up as <dir>/<name>.so in
 * each directory of the search path dirs (one directory is a path too);
 * anything else is a path.  0, or -1 with err listing what is available. */
int ftb_plugin_resolve(const char *name_or_path, const char *dirs, char *path, size_t n, char *label, size_t label_n,
                       char *err, size_t errlen);

/* dlopen + entry point + ABI check, in this process. */
int ftb_plugin_open(const char *path, ftb_plugin *p, char *err, size_t errlen);
void ftb_plugin_close(ftb_plugin *p);

/* The method's gradient callback (ABI 2), or NULL: for a v1 plugin, whose
 * struct ends before that field, without reading past its end. */
typedef int (*ftb_gradient_fn)(void *state, ftb_session *s, const ftb_batch *b, int exact, float *loss, char *err,
                               size_t errlen);
ftb_gradient_fn ftb_plugin_gradient(const ftb_method *m);
/* The method's analytic memory model (ABI 2), or NULL (v1, or none). */
typedef int (*ftb_memory_model_fn)(void *state, const ftb_session *s, int B, int T, ftb_memory_estimate *out);
ftb_memory_model_fn ftb_plugin_memory_model(const ftb_method *m);
/* The prediction the harness records for one step of the method: its own
 * model, or else the core's schedule — a training step, or one inference
 * forward when ran_backward is 0 (a zeroth-order method).  Returns what it
 * used: "method", "core schedule, training step" or "core schedule,
 * inference forward". */
const char *ftb_method_memory_estimate(const ftb_method *m, void *state, const ftb_session *s, int B, int T,
                                       int ran_backward, ftb_memory_estimate *out);

/* The method's shape-only plan (ABI 3) for B×T tokens on shape under run:
 * 0, or -1 with err (no plan: a method of an older ABI or without one, or
 * options it cannot plan). */
int ftb_method_plan(const ftb_method *m, const ftb_model_shape *shape, const ftb_options *o, const ftb_run_opts *run,
                    int B, int T, ftb_memory_estimate *out, char *err, size_t errlen);

/* Sorted labels of the *.so files in the directories of the search path
 * dirs (a name in two: listed once, the first directory's).  Free with
 * ftb_plugin_free_list. */
int ftb_plugin_list(const char *dirs, char ***labels, int *n, char *err, size_t errlen);
void ftb_plugin_free_list(char **labels, int n);

/* Loads the plugin in a forked child, so a plugin whose constructor
 * crashes cannot take the harness down.  Returns 0 and a JSON description
 * ({"name","summary","abi","options":[{"name","default","help"}]}) in *json
 * (malloc'd), or -1 with err (load error, or the signal that killed it). */
int ftb_plugin_probe(const char *path, char **json, char *err, size_t errlen);

#endif
