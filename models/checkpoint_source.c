/*
 * checkpoint_source.c — where a checkpoint's tensors are: model.safetensors,
 * or model.safetensors.index.json and the shards it names, each opened (and
 * mapped) on first use and staying inside the checkpoint directory.
 */
#include "checkpoint_internal.h"
#include "ftbench.h"
#include "model_internal.h"
#include "safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void ftb_ckpt_source_close(checkpoint_source *src)
{
    for (int i = 0; i < src->n_shards; i++) {
        ftb_st_close(&src->shards[i].file);
        free(src->shards[i].file_name);
        free(src->shards[i].path);
    }
    free(src->shards);
    free(src->index_path);
    if (src->index_root) json_decref(src->index_root);
    memset(src, 0, sizeof *src);
}

/* The shard called file_name, opened on first use.  tensor names the tensor
 * that needed it, for the error message. */
static shard *source_shard(checkpoint_source *src, const char *file_name, const char *tensor, char *err, size_t errlen)
{
    for (int i = 0; i < src->n_shards; i++)
        if (!strcmp(src->shards[i].file_name, file_name)) return &src->shards[i];
    if (src->n_shards == src->cap_shards) {
        int cap = src->cap_shards ? 2 * src->cap_shards : 4;
        shard *grown = realloc(src->shards, (size_t)cap * sizeof *grown);
        if (!grown) {
            ck_error(err, errlen, "%s: out of memory", src->dir);
            return NULL;
        }
        src->shards = grown;
        src->cap_shards = cap;
    }
    shard *s = &src->shards[src->n_shards];
    memset(s, 0, sizeof *s);
    s->file_name = strdup(file_name);
    s->path = ftb_path_join(src->dir, file_name);
    if (!s->file_name || !s->path) {
        free(s->file_name);
        free(s->path);
        ck_error(err, errlen, "%s: out of memory", src->dir);
        return NULL;
    }
    src->n_shards++;
    char why[FTB_ERR_LEN];
    if (ftb_st_open(s->path, &s->file, why, sizeof why) != 0) {
        if (src->index_path && access(s->path, F_OK) != 0)
            ck_error(err, errlen, "%s: tensor '%s': shard named in %s cannot be opened: %s", s->path, tensor,
                     INDEX_FILE, strerror(errno));
        else
            ck_error(err, errlen, "%s", why);
        return NULL;
    }
    s->open = 1;
    return s;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* A shard name must stay inside the checkpoint directory. */
static int shard_name_ok(const char *name)
{
    return *name && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

int ftb_ckpt_source_open(checkpoint_source *src, const char *dir, char *err, size_t errlen)
{
    memset(src, 0, sizeof *src);
    src->dir = dir;
    char *single = ftb_path_join(dir, SINGLE_FILE);
    char *index = ftb_path_join(dir, INDEX_FILE);
    if (!single || !index) {
        free(single);
        free(index);
        ck_error(err, errlen, "%s: out of memory", dir);
        return -1;
    }
    int has_single = file_exists(single), has_index = file_exists(index);
    free(single);
    if (has_single || !has_index) {
        free(index);
        if (!has_single) {
            ck_error(err, errlen, "%s: neither %s nor %s found", dir, SINGLE_FILE, INDEX_FILE);
            return -1;
        }
        return 0;
    }

    src->index_path = index;
    src->index_root = ftb_ckpt_json_object(index, err, errlen);
    if (!src->index_root) return -1;
    src->weight_map = json_object_get(src->index_root, "weight_map");
    if (!src->weight_map) {
        ck_error(err, errlen, "%s: no \"weight_map\" object", index);
        return -1;
    }
    if (!json_is_object(src->weight_map)) {
        ck_error(err, errlen, "%s: \"weight_map\" is %s, not an object", index, ftb_ckpt_json_kind(src->weight_map));
        return -1;
    }
    const char *tensor;
    json_t *file;
    json_object_foreach(src->weight_map, tensor, file)
    {
        if (!json_is_string(file) || !shard_name_ok(json_string_value(file))) {
            ck_error(err, errlen, "%s: tensor '%s': weight_map entry is not a file name in this directory", index,
                     tensor);
            return -1;
        }
    }
    return 0;
}

/* Finds where tensor name lives; *where is the file to blame if it is not
 * there.  Returns the shard (opened) and sets *found, or NULL on error. */
shard *ftb_ckpt_source_locate(checkpoint_source *src, const char *name, const ftb_st_tensor **found, char *err,
                              size_t errlen)
{
    *found = NULL;
    const char *file_name = SINGLE_FILE;
    if (src->index_path) {
        json_t *entry = json_object_get(src->weight_map, name);
        if (!entry) {
            ck_error(err, errlen, "%s: tensor '%s': missing from weight_map", src->index_path, name);
            return NULL;
        }
        file_name = json_string_value(entry);
    }
    shard *s = source_shard(src, file_name, name, err, errlen);
    if (!s) return NULL;
    *found = ftb_st_find(&s->file, name);
    if (!*found) {
        if (src->index_path)
            ck_error(err, errlen, "%s: tensor '%s': missing (%s places it in this shard)", s->path, name, INDEX_FILE);
        else
            ck_error(err, errlen, "%s: tensor '%s': missing", s->path, name);
        return NULL;
    }
    return s;
}
/* The model takes over the shard's mapping (once): from here on an error
 * path must not unmap this file again. */
void ftb_ckpt_give_mapping(ftb_model *m, shard *s)
{
    if (s->mapping_given) return;
    ftb_model_add_mapping(m, s->file.map, s->file.map_len);
    ftb_st_release_mapping(&s->file);
    s->mapping_given = 1;
}
