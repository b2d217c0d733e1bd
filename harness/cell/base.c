/* base.c — base weight formats, residency and the prepared checkpoints the
 * cells map.  See base.h. */
#include "base.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define LOSS_TOKENS 128 /* tokens of the batch the loss difference is measured on */

void ftb_base_spec_default(ftb_base_spec *b)
{
    memset(b, 0, sizeof *b);
    b->dtype = FTB_DTYPE_F32;
    b->embed_dtype = FTB_DTYPE_F32;
    b->group = FTB_QUANT_DEFAULT_GROUP;
    b->residency = FTB_RESIDENT_ALL;
}

static int is_int4(ftb_dtype d) { return d == FTB_DTYPE_INT4 || d == FTB_DTYPE_INT4_ASYM; }

int ftb_base_parse_option(ftb_base_spec *b, const char *opt, const char *val, char *err, size_t errlen)
{
    if (!strcmp(opt, "--base-dtype") || !strcmp(opt, "--embed-dtype")) {
        int d = ftb_dtype_parse(val);
        if (d < 0) return ftb_errf(err, errlen, "%s: '%s' is not f32, bf16, f16, int8, int4 or int4-asym", opt, val);
        if (!strcmp(opt, "--base-dtype")) {
            b->dtype = (ftb_dtype)d;
            /* The embedding follows the linears unless --embed-dtype is given. */
            if (!(b->dtype_given & 2)) b->embed_dtype = (ftb_dtype)d;
            b->dtype_given |= 1;
        } else {
            b->embed_dtype = (ftb_dtype)d;
            b->dtype_given |= 2;
        }
        return 0;
    }
    if (!strcmp(opt, "--group")) {
        long g;
        if (ftb_parse_long(val, 1, 1 << 20, &g) != 0 || g % 2)
            return ftb_errf(err, errlen, "--group: '%s' is not an even positive integer (int4 group size: 32, 64, 128)",
                            val);
        b->group = (int)g;
        b->group_given = 1;
        return 0;
    }
    if (!strcmp(opt, "--residency")) {
        if (!strcmp(val, "all"))
            b->residency = FTB_RESIDENT_ALL;
        else if (!strcmp(val, "lazy"))
            b->residency = FTB_RESIDENT_LAZY_BLOCK;
        else
            return ftb_errf(err, errlen, "--residency: '%s' is not all or lazy", val);
        b->residency_given = 1;
        return 0;
    }
    return ftb_errf(err, errlen, "%s: not a base weight option", opt);
}

int ftb_base_check(const ftb_base_spec *b, const ftb_config *cfg, const char *model, char *err, size_t errlen)
{
    const int lin4 = is_int4(b->dtype), emb4 = is_int4(b->embed_dtype);
    if (b->group_given && !lin4 && !emb4)
        return ftb_errf(err, errlen, "--group %d: only int4 and int4-asym have groups (--base-dtype is %s)", b->group,
                        ftb_dtype_name(b->dtype));
    /* The rows a group runs along: the linears' input dimensions, and the
     * embedding's hidden size. */
    struct {
        const char *what;
        int len, applies;
    } rows[] = {
        { "q/k/v/gate/up (hidden size)", cfg->dim, lin4 },
        { "o_proj (heads x head_dim)", cfg->n_heads * cfg->head_dim, lin4 },
        { "down_proj (intermediate size)", cfg->ffn_dim, lin4 },
        { "the embedding (hidden size)", cfg->dim, emb4 },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (rows[i].applies && rows[i].len % b->group)
            return ftb_errf(err, errlen, "--group %d does not divide the row length %d of %s's %s%s", b->group,
                            rows[i].len, model, rows[i].what, b->group_given ? "" : " (give --group)");
    return 0;
}

int ftb_base_needs_prepare(const ftb_base_spec *b, const char *checkpoint)
{
    return checkpoint ? b->dtype_given != 0 : (b->dtype_given || b->residency_given);
}

/* "<dtype>[-g<G>][-emb-<dtype>]" */
static void format_part(const ftb_base_spec *b, char *out, size_t n)
{
    char g[24] = "", e[48] = "";
    if (is_int4(b->dtype) || is_int4(b->embed_dtype)) snprintf(g, sizeof g, "-g%d", b->group);
    if (b->embed_dtype != b->dtype) snprintf(e, sizeof e, "-emb-%s", ftb_dtype_name(b->embed_dtype));
    snprintf(out, n, "%s%s%s", ftb_dtype_name(b->dtype), g, e);
}

void ftb_base_key_part(const ftb_base_spec *b, char *out, size_t n)
{
    char f[96] = "";
    if (b->dtype_given || b->residency_given) format_part(b, f, sizeof f);
    snprintf(out, n, "%s%s%s", f, f[0] && b->residency == FTB_RESIDENT_LAZY_BLOCK ? "." : "",
             b->residency == FTB_RESIDENT_LAZY_BLOCK ? "lazy" : "");
}

void ftb_base_cache_root(char *out, size_t n)
{
    const char *e = getenv("FTBENCH_MODEL_CACHE");
    if (e && *e) {
        snprintf(out, n, "%s", e);
        return;
    }
    e = getenv("XDG_CACHE_HOME");
    if (e && *e) {
        snprintf(out, n, "%s/ftbench/models", e);
        return;
    }
    e = getenv("HOME");
    snprintf(out, n, "%s/.cache/ftbench/models", e && *e ? e : "/var/tmp");
}

/* A checkpoint's identity: its real path and every file's name, size and
 * modification time (a re-downloaded checkpoint gets a new cache entry). */
static uint64_t checkpoint_hash(const char *dir)
{
    char real[PATH_MAX];
    if (!realpath(dir, real)) snprintf(real, sizeof real, "%s", dir);
    uint64_t h = ftb_fnv1a(real, strlen(real) + 1, FTB_FNV_INIT);
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        char p[PATH_MAX + 300];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]->d_name);
        struct stat st;
        if (names[i]->d_name[0] != '.' && stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            int64_t v[2] = { (int64_t)st.st_size, (int64_t)st.st_mtime };
            h = ftb_fnv1a(names[i]->d_name, strlen(names[i]->d_name) + 1, h);
            h = ftb_fnv1a(v, sizeof v, h);
        }
        free(names[i]);
    }
    free(names);
    return h;
}

uint64_t ftb_base_checkpoint_hash(const char *dir) { return checkpoint_hash(dir); }

static void cache_dir(const ftb_base_spec *b, const char *model, const char *checkpoint, uint64_t seed, char *out,
                      size_t n)
{
    char root[PATH_MAX], f[96];
    ftb_base_cache_root(root, sizeof root);
    format_part(b, f, sizeof f);
    if (checkpoint)
        snprintf(out, n, "%.3000s/ckpt-%.200s-%016llx-%s", root, model, (unsigned long long)checkpoint_hash(checkpoint),
                 f);
    else
        snprintf(out, n, "%.3000s/%.200s-seed%llu-%s", root, model, (unsigned long long)seed, f);
}

/* ---- making one -------------------------------------------------------------- */

static int rm_entry(const char *p, const struct stat *s, int f, struct FTW *w)
{
    (void)s;
    (void)f;
    (void)w;
    return remove(p);
}

static json_t *error_summary(const ftb_model *m, json_t **tensors)
{
    int n = ftb_model_quant_errors(m, NULL, 0);
    ftb_quant_error *e = calloc((size_t)(n ? n : 1), sizeof *e);
    ftb_model_quant_errors(m, e, n);
    double lin_rms = 0, lin_mean = 0, lin_max = 0, emb_rms = 0, emb_max = 0;
    int nl = 0, ne = 0;
    *tensors = json_array();
    for (int i = 0; i < n; i++) {
        if (e[i].layer >= 0) {
            lin_rms += e[i].rms_rel_err;
            lin_mean += e[i].mean_rel_err;
            lin_max = fmax(lin_max, e[i].max_rel_err);
            nl++;
        } else {
            emb_rms = fmax(emb_rms, e[i].rms_rel_err);
            emb_max = fmax(emb_max, e[i].max_rel_err);
            ne++;
        }
        json_t *t = json_object();
        json_object_set_new(t, "name", json_string(e[i].name));
        json_object_set_new(t, "layer", json_integer(e[i].layer));
        json_object_set_new(t, "dtype", json_string(ftb_dtype_name(e[i].dtype)));
        json_object_set_new(t, "rms_rel_err", json_real(e[i].rms_rel_err));
        json_object_set_new(t, "mean_rel_err", json_real(e[i].mean_rel_err));
        json_object_set_new(t, "max_rel_err", json_real(e[i].max_rel_err));
        json_object_set_new(t, "max_abs_err", json_real(e[i].max_abs_err));
        json_array_append_new(*tensors, t);
    }
    free(e);
    json_t *s = json_object();
    json_object_set_new(s, "linear_tensors", json_integer(nl));
    json_object_set_new(s, "linear_rms_rel_err_mean", json_real(nl ? lin_rms / nl : 0));
    json_object_set_new(s, "linear_mean_rel_err_mean", json_real(nl ? lin_mean / nl : 0));
    json_object_set_new(s, "linear_max_rel_err_worst", json_real(lin_max));
    json_object_set_new(s, "embedding_tensors", json_integer(ne));
    json_object_set_new(s, "embedding_rms_rel_err", json_real(emb_rms));
    json_object_set_new(s, "embedding_max_rel_err", json_real(emb_max));
    return s;
}

static float batch_loss(ftb_model *m, const int32_t *tok, const int32_t *tgt, int T, char *err, size_t errlen)
{
    ftb_batch bt = { 1, T, tok, tgt };
    return ftb_model_forward(m, &bt, NULL, err, errlen);
}

/* In the preparing child: build or load, quantize, save into tmp, describe. */
static int make_base(const ftb_base_spec *b, const ftb_config *cfg, const char *model, const char *checkpoint,
                     uint64_t seed, const char *tmp, char *err, size_t errlen)
{
    double t0 = ftb_now();
    const char *fmt = ftb_dtype_name(b->dtype), *efmt = ftb_dtype_name(b->embed_dtype);
    json_t *info = json_object(), *loss = NULL;
    ftb_model *m;
    if (checkpoint) {
        m = ftb_model_load_quantized(checkpoint, 1, fmt, b->group, efmt, err, errlen);
        if (!m) return -1;
    } else {
        m = ftb_model_create(cfg, seed, err, errlen);
        if (!m) return -1;
        /* The loss difference against fp32 on one seeded batch. */
        int T = cfg->max_seq < LOSS_TOKENS ? cfg->max_seq : LOSS_TOKENS;
        int32_t *tok = malloc(sizeof(int32_t) * (size_t)T), *tgt = malloc(sizeof(int32_t) * (size_t)T);
        ftb_rng r;
        ftb_rng_seed(&r, seed ^ 0x62617365ULL);
        for (int i = 0; i < T; i++) tok[i] = (int32_t)(ftb_rng_u64(&r) % (uint64_t)cfg->vocab_size);
        for (int i = 0; i < T; i++) tgt[i] = i + 1 < T ? tok[i + 1] : FTB_IGNORE_INDEX;
        float l32 = batch_loss(m, tok, tgt, T, err, errlen);
        if (ftb_model_quantize(m, fmt, b->group, err, errlen) != 0 ||
            (b->embed_dtype != FTB_DTYPE_F32 && ftb_model_quantize_embeddings(m, efmt, b->group, err, errlen) != 0)) {
            ftb_model_free(m);
            free(tok);
            free(tgt);
            return -1;
        }
        float lq = batch_loss(m, tok, tgt, T, err, errlen);
        loss = json_object();
        json_object_set_new(loss, "tokens", json_integer(T));
        json_object_set_new(loss, "loss_f32", isfinite(l32) ? json_real(l32) : json_null());
        json_object_set_new(loss, "loss_quantized", isfinite(lq) ? json_real(lq) : json_null());
        json_object_set_new(loss, "delta", isfinite(lq - l32) ? json_real(lq - l32) : json_null());
        free(tok);
        free(tgt);
    }
    if (ftb_model_save(m, tmp, err, errlen) != 0) {
        ftb_model_free(m);
        return -1;
    }
    int64_t bytes = 0;
    for (int i = 0; i < m->n_params; i++) bytes += ftb_tensor_storage_bytes(m->params[i]);
    json_t *tensors = NULL;
    json_t *errs = error_summary(m, &tensors);
    ftb_model_free(m);

    json_object_set_new(info, "format_version", json_integer(FTB_BASE_FORMAT_VERSION));
    json_object_set_new(info, "model", json_string(model));
    json_object_set_new(info, "source", json_string(checkpoint ? "checkpoint" : "zoo"));
    if (checkpoint)
        json_object_set_new(info, "checkpoint", json_string(checkpoint));
    else
        json_object_set_new(info, "seed", json_integer((json_int_t)seed));
    json_object_set_new(info, "dtype", json_string(fmt));
    json_object_set_new(info, "embed_dtype", json_string(efmt));
    json_object_set_new(info, "group",
                        is_int4(b->dtype) || is_int4(b->embed_dtype) ? json_integer(b->group) : json_null());
    json_object_set_new(info, "storage_bytes", json_integer(bytes));
    json_object_set_new(info, "prepare_seconds", json_real(ftb_now() - t0));
    json_object_set_new(info, "quantization_error", errs);
    if (loss) json_object_set_new(info, "loss_difference", loss);
    json_object_set_new(info, "tensors", tensors);
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", tmp, FTB_BASE_INFO_FILE);
    int rc = json_dump_file(info, path, JSON_INDENT(1)) == 0 ? 0 : ftb_errf(err, errlen, "cannot write %s", path);
    json_decref(info);
    return rc;
}

/* The info of an existing entry if it describes this base; NULL otherwise. */
static json_t *load_info(const char *dir, const ftb_base_spec *b, const char *model, const char *checkpoint,
                         uint64_t seed)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, FTB_BASE_INFO_FILE);
    json_t *j = json_load_file(path, 0, NULL);
    if (!j) return NULL;
    const char *m = json_string_value(json_object_get(j, "model"));
    const char *d = json_string_value(json_object_get(j, "dtype"));
    const char *e = json_string_value(json_object_get(j, "embed_dtype"));
    int ok = json_integer_value(json_object_get(j, "format_version")) == FTB_BASE_FORMAT_VERSION && m &&
             !strcmp(m, model) && d && !strcmp(d, ftb_dtype_name(b->dtype)) && e &&
             !strcmp(e, ftb_dtype_name(b->embed_dtype));
    if (ok && !checkpoint) ok = (uint64_t)json_integer_value(json_object_get(j, "seed")) == seed;
    if (ok && (is_int4(b->dtype) || is_int4(b->embed_dtype)))
        ok = json_integer_value(json_object_get(j, "group")) == b->group;
    if (!ok) {
        json_decref(j);
        return NULL;
    }
    return j;
}

int ftb_base_prepare(const ftb_base_spec *b, const ftb_config *cfg, const char *model, const char *checkpoint,
                     uint64_t seed, int threads, int quiet, char *dir, size_t dirn, json_t **info, char *err,
                     size_t errlen)
{
    *info = NULL;
    cache_dir(b, model, checkpoint, seed, dir, dirn);
    if ((*info = load_info(dir, b, model, checkpoint, seed))) return 0;
    if (ftb_is_dir(dir)) {
        /* The cache is ftbench's own: an entry an older ftbench prepared
         * (another base format version) is made again, not an error the
         * user must clear by hand.  A directory that is not a prepared base
         * at all is left alone. */
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/%s", dir, FTB_BASE_INFO_FILE);
        json_t *old = json_load_file(path, 0, NULL);
        json_t *ver = json_object_get(old, "format_version");
        int outdated = json_is_integer(ver) && json_integer_value(ver) != FTB_BASE_FORMAT_VERSION;
        long long old_ver = json_is_integer(ver) ? (long long)json_integer_value(ver) : -1;
        json_decref(old);
        if (!outdated)
            return ftb_errf(err, errlen, "%s exists but holds no base prepared for this model and format; remove it",
                            dir);
        char aside[PATH_MAX + 64];
        snprintf(aside, sizeof aside, "%.4000s.outdated-%d", dir, (int)getpid());
        /* Moved aside first (a cell of an older run may still map its file:
         * the mapping outlives the name); a concurrent preparer that moved
         * it first is fine (ENOENT). */
        if (rename(dir, aside) != 0 && errno != ENOENT)
            return ftb_errf(err, errlen, "%s: prepared by an older ftbench and cannot be replaced: %s", dir,
                            strerror(errno));
        if (!quiet)
            fprintf(stderr,
                    "ftbench: %s was prepared by an older ftbench (base format %lld, now %d): preparing it again\n",
                    dir, old_ver, FTB_BASE_FORMAT_VERSION);
        nftw(aside, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash) *slash = 0;
    if (ftb_mkdirs(parent, err, errlen) != 0) return -1;
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%.4000s.tmp-%d", dir, (int)getpid());
    if (!quiet)
        fprintf(stderr, "ftbench: preparing the %s base of %s (once, outside any measurement) in %s\n",
                strrchr(dir, '/') + 1, model, dir);
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
        /* BLAS and OpenMP start here, never in the parent every cell is
         * forked from. */
        close(fds[0]);
        char e[FTB_ERR_LEN] = "";
        ftb_set_threads(threads);
        int rc = make_base(b, cfg, model, checkpoint, seed, tmp, e, sizeof e);
        if (rc != 0 && write(fds[1], e, strlen(e)) < 0) { /* the parent reports a failure without a message */
        }
        _exit(rc == 0 ? 0 : 1);
    }
    close(fds[1]);
    char msg[FTB_ERR_LEN] = "";
    size_t got = 0;
    ssize_t r;
    while (got < sizeof msg - 1 && (r = read(fds[0], msg + got, sizeof msg - 1 - got)) > 0) got += (size_t)r;
    msg[got] = 0;
    close(fds[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        if (WIFSIGNALED(st))
            return ftb_errf(err, errlen, "preparing the base in %s: killed by %s", dir, ftb_signal_name(WTERMSIG(st)));
        return ftb_errf(err, errlen, "preparing the base in %s: %s", dir, msg[0] ? msg : "failed");
    }
    /* Atomic: a concurrent preparer that finished first keeps its entry. */
    if (rename(tmp, dir) != 0) nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (!(*info = load_info(dir, b, model, checkpoint, seed)))
        return ftb_errf(err, errlen, "%s: the prepared base has no valid %s", dir, FTB_BASE_INFO_FILE);
    return 0;
}

json_t *ftb_base_record_json(const ftb_base_spec *b, const char *dir, json_t *info)
{
    json_t *o = json_object();
    json_object_set_new(o, "dtype", json_string(ftb_dtype_name(b->dtype)));
    json_object_set_new(o, "embed_dtype", json_string(ftb_dtype_name(b->embed_dtype)));
    json_object_set_new(o, "group",
                        is_int4(b->dtype) || is_int4(b->embed_dtype) ? json_integer(b->group) : json_null());
    json_object_set_new(o, "residency", json_string(b->residency == FTB_RESIDENT_LAZY_BLOCK ? "lazy" : "all"));
    json_object_set_new(o, "given", json_boolean(b->dtype_given || b->residency_given));
    if (dir && dir[0]) json_object_set_new(o, "prepared_checkpoint", json_string(dir));
    if (info) {
        static const char *const keys[] = { "storage_bytes", "prepare_seconds", "quantization_error", "loss_difference",
                                            NULL };
        for (int i = 0; keys[i]; i++) {
            json_t *v = json_object_get(info, keys[i]);
            if (v) json_object_set(o, keys[i], v);
        }
    }
    return o;
}
