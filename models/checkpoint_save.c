/*
 * checkpoint_save.c — a model saved as a Hugging Face checkpoint:
 * model.safetensors first (fp32, or tensors stored in another format as
 * they are stored, with their metadata), then config.json, each through an
 * atomic file, so an interrupted save never leaves a torn checkpoint.
 */
#include "atomic_file.h"
#include "checkpoint_internal.h"
#include "ftbench.h"
#include "model_internal.h"
#include "quant.h"
#include "safetensors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tensors stored in another format are written as they are stored, under
 * their own name, with their scales ("<name>.scales") and zeros
 * ("<name>.zeros"), and a metadata entry QUANT_META_PREFIX<name> =
 * "<format>[/<group>]" that tells the loader how to read them. */
static int save_weights(const ftb_model *m, const char *path, char *err, size_t errlen)
{
    ftb_st_item *items = calloc((size_t)(3 * m->n_params + 1), sizeof *items);
    json_t *meta = json_object();
    if (!items || !meta) {
        free(items);
        json_decref(meta);
        ck_error(err, errlen, "%s: out of memory", path);
        return -1;
    }
    int n = 0, nq = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ftb_tensor *t = m->params[i];
        /* A tied lm_head is the embedding; HF omits it and re-ties on load. */
        if (m->cfg.tie_embeddings && !strcmp(t->name, "lm_head.weight")) continue;
        if (t->numel == 0) continue; /* absent bias */
        if (strlen(t->name) + 8 >= sizeof items[0].name) {
            ck_error(err, errlen, "%s: tensor '%s': name too long", path, t->name);
            goto fail;
        }
        ftb_st_item *it = &items[n++];
        snprintf(it->name, sizeof it->name, "%s", t->name);
        it->ndim = t->ndim;
        it->shape[0] = t->shape[0];
        it->shape[1] = t->shape[1];
        if (t->dtype == FTB_DTYPE_F32 || !t->quant) {
            if (!t->data) {
                ck_error(err, errlen, "%s: tensor '%s': no data", path, t->name);
                goto fail;
            }
            it->dtype = "F32";
            it->bytes = t->data;
            it->nbytes = (uint64_t)t->numel * 4;
            it->align = 4;
            continue;
        }
        const ftb_qstore *q = t->quant;
        static const char *main_dtype[FTB_DTYPE_COUNT] = { "F32", "BF16", "F16", "I8", "U8", "U8" };
        it->dtype = main_dtype[q->dtype];
        it->bytes = q->q;
        it->nbytes = ftb_qstore_part_bytes(q->dtype, q->rows, q->cols, q->group, QPART_Q);
        it->align = q->dtype == FTB_DTYPE_BF16 || q->dtype == FTB_DTYPE_F16 ? 2 : 1;
        if (q->dtype == FTB_DTYPE_INT4 || q->dtype == FTB_DTYPE_INT4_ASYM) it->shape[1] = q->cols / 2;
        for (int part = QPART_SCALES; part <= QPART_ZEROS; part++) {
            uint64_t b = ftb_qstore_part_bytes(q->dtype, q->rows, q->cols, q->group, part);
            if (!b) continue;
            ftb_st_item *c = &items[n++];
            snprintf(c->name, sizeof c->name, "%s%s", t->name, part == QPART_SCALES ? ".scales" : ".zeros");
            c->bytes = part == QPART_SCALES ? q->scales : q->zeros;
            c->nbytes = b;
            if (q->dtype == FTB_DTYPE_INT8) {
                c->dtype = "F32";
                c->ndim = 1;
                c->shape[0] = q->rows;
                c->align = 4;
            } else {
                c->dtype = "F16";
                c->ndim = 2;
                c->shape[0] = q->rows;
                c->shape[1] = q->cols / q->group;
                c->align = 2;
            }
        }
        char desc[64];
        if (q->group)
            snprintf(desc, sizeof desc, "%s/%d", ftb_dtype_name(q->dtype), q->group);
        else
            snprintf(desc, sizeof desc, "%s", ftb_dtype_name(q->dtype));
        char key[160];
        snprintf(key, sizeof key, "%s%s", QUANT_META_PREFIX, t->name);
        json_object_set_new(meta, key, json_string(desc));
        nq++;
    }
    if (nq) json_object_set_new(meta, QUANT_META_VERSION_KEY, json_string("1"));
    int rc = ftb_st_write_items(path, items, n, meta, err, errlen);
    free(items);
    json_decref(meta);
    return rc;
fail:
    free(items);
    json_decref(meta);
    return -1;
}

int ftb_model_save(const ftb_model *m, const char *dir, char *err, size_t errlen)
{
    if (ftb_mkdirs(dir, err, errlen) != 0) return -1;
    char *config_path = ftb_path_join(dir, "config.json");
    char *weights_path = ftb_path_join(dir, SINGLE_FILE);
    json_t *config = ftb_ckpt_config_to_json(&m->cfg);
    /* Nine significant digits round-trip any float. */
    char *text = config ? json_dumps(config, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(config);
    int rc = -1;
    if (!config_path || !weights_path || !text) {
        ck_error(err, errlen, "%s: out of memory", dir);
        goto done;
    }

    /* Weights first: a config.json next to a missing model.safetensors would
     * be a checkpoint that looks complete but is not. */
    rc = save_weights(m, weights_path, err, errlen);
    if (rc != 0) goto done;

    ftb_atomic_file af;
    size_t len = strlen(text);
    rc = ftb_atomic_begin(&af, config_path, err, errlen);
    if (rc == 0) rc = ftb_atomic_write(&af, text, len, err, errlen);
    if (rc == 0) rc = ftb_atomic_write(&af, "\n", 1, err, errlen);
    if (rc == 0)
        rc = ftb_atomic_commit(&af, err, errlen);
    else if (af.tmp_path)
        ftb_atomic_abort(&af);

done:
    free(text);
    free(config_path);
    free(weights_path);
    return rc;
}
